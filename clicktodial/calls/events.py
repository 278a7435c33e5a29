"""
Call state publication: the :class:`CallEvents` fan-out the controller publishes
through (the :class:`CallInfo` value every listener gets is in :obj:`clicktodial.calls.values`).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

from clicktodial.calls.values import PUBLIC_STATES, CallInfo
from clicktodial.interfaces import ICallEventListener

__all__ = ["PUBLIC_STATES", "CallEvents", "CallInfo"]

log = Logger(namespace="clicktodial.calls.events")


class CallEvents:
    """The listeners of call state changes; a listener's exception is logged, not raised."""

    def __init__(self) -> None:
        self._listeners: list[ICallEventListener] = []

    def subscribe(self, listener: ICallEventListener) -> Callable[[], None]:
        """Add ``listener``; returns the function that removes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def publish(self, info: CallInfo) -> None:
        """Tell every listener about ``info``."""
        for listener in list(self._listeners):
            try:
                listener.call_state_changed(info)
            except Exception:
                log.failure("call event listener failed", call_id=info.call_id)
