"""
Call state publication: the L{CallInfo} value every listener gets, and the
L{CallEvents} fan-out the controller publishes through.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.logger import Logger

from clicktodial.interfaces import ICallEventListener

__all__ = ["PUBLIC_STATES", "CallEvents", "CallInfo"]

log = Logger(namespace="clicktodial.calls.events")

#: The states a call shows to the outside, in the order a call goes through
#: them; it ends in C{ended} (it was connected) or C{failed} (it never was).
PUBLIC_STATES = ("calling-caller", "calling-callee", "connected", "ended", "failed")


@attrs.frozen
class CallInfo:
    """
    A click-to-dial call as the outside sees it at one moment.

    @ivar call_id: the call record's id (a UUID4 in hex, not a SIP Call-ID).
    @ivar state: one of L{PUBLIC_STATES}.
    @ivar end_reason: once over, one of the store's
        L{END_REASONS<clicktodial.store.values.END_REASONS>}.
    @ivar sip_status: the SIP status that ended the call, if one did.
    @ivar who_hung_up: C{caller}, C{callee} or C{system}, once over.
    @ivar media_relay: C{off} (the phones send media to each other), C{pending}
        (C{[media] relay = auto} has not decided yet), C{relayed} (through
        the media relay) or C{unrelayed} (the relay failed and the call went
        on without it).
    """

    call_id: str
    caller: str
    callee: str
    state: str
    created_at: float
    caller_answered_at: float | None = None
    callee_answered_at: float | None = None
    connected_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    sip_status: int | None = None
    who_hung_up: str | None = None
    media_relay: str = "off"

    @property
    def active(self) -> bool:
        """Whether the call is still in progress."""
        return self.state not in ("ended", "failed")


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
