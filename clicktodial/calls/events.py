"""
Call state publication: the :class:`CallEvents` fan-out the controller publishes
through (the :class:`CallInfo` value every listener gets is in :obj:`clicktodial.calls.values`).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

from clicktodial.calls.values import PUBLIC_STATES, CallInfo
from clicktodial.interfaces import ICallEventListener, ICallOutcomeListener
from clicktodial.store.values import FINAL_STATES

__all__ = ["PUBLIC_STATES", "CallEvents", "CallInfo"]

log = Logger(namespace="clicktodial.calls.events")


class CallEvents:
    """
    The listeners of call state changes; a listener's exception is logged, not raised.
    An :class:`ICallOutcomeListener` is told of the final states only.
    """

    def __init__(self) -> None:
        self._listeners: list[ICallEventListener] = []
        self._outcome_listeners: list[ICallEventListener] = []
        #: The states some listener wants (:meth:`wants`), kept up to date by (un)subscribe:
        #: a set look-up for the controller at every change of state.
        self.wanted: frozenset[str] = frozenset()

    def subscribe(self, listener: ICallEventListener) -> Callable[[], None]:
        """Add ``listener``; returns the function that removes it."""
        listeners = (
            self._outcome_listeners
            if ICallOutcomeListener.providedBy(listener)
            else self._listeners
        )
        listeners.append(listener)
        self._update_wanted()

        def unsubscribe() -> None:
            if listener in listeners:
                listeners.remove(listener)
                self._update_wanted()

        return unsubscribe

    def _update_wanted(self) -> None:
        if self._listeners:
            self.wanted = frozenset(PUBLIC_STATES)
        elif self._outcome_listeners:
            self.wanted = FINAL_STATES
        else:
            self.wanted = frozenset()

    def wants(self, state: str) -> bool:
        """Whether a call entering ``state`` has listeners (else nothing need be made)."""
        return state in self.wanted

    def publish(self, info: CallInfo) -> None:
        """Tell every listener about ``info``."""
        listeners = self._listeners
        if self._outcome_listeners and info.state in FINAL_STATES:
            listeners = listeners + self._outcome_listeners
        for listener in list(listeners):
            try:
                listener.call_state_changed(info)
            except Exception:
                log.failure("call event listener failed", call_id=info.call_id)
