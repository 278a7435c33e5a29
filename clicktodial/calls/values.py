"""
The plain values of the call controller's interface (pure: no Twisted, no I/O): what a
call policy gets (L{CallRequest}) and raises (L{CallRefused}), and what call event
listeners get (L{CallInfo}). Re-exported by L{clicktodial.calls.policy} and
L{clicktodial.calls.events}.
"""

from __future__ import annotations

import attrs

from clicktodial.store.values import FINAL_STATES, PUBLIC_STATES, CallRecord, User

__all__ = ["PUBLIC_STATES", "CallInfo", "CallRefused", "CallRequest"]


class CallRefused(Exception):
    """
    A call may not be placed.

    @ivar reason: C{unknown-user}, C{disabled-user}, C{same-user},
        C{forbidden}, C{caller-limit}, C{callee-limit} or C{total-limit}.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message


@attrs.frozen
class CallRequest:
    """
    A call to authorize, with the calls each party already takes part in
    (on this controller, including calls being set up).
    """

    caller: User
    callee: User
    caller_calls: int
    callee_calls: int
    total_calls: int


@attrs.frozen
class CallInfo:
    """
    A click-to-dial call as the outside sees it at one moment: live, from the
    controller, or rebuilt from its record (L{from_record}). Why this is not the
    L{CallRecord}: see there.

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
    #: A call to a telephone number (docs/dialplan.md): E.164, class, trunk, refusal.
    number: str | None = None
    destination_class: str | None = None
    trunk: str | None = None
    refusal: str | None = None

    @property
    def active(self) -> bool:
        """Whether the call is still in progress."""
        return self.state not in FINAL_STATES

    @classmethod
    def from_record(cls, record: CallRecord) -> CallInfo:
        """The call as its record tells it (no C{media_relay}: the record has none)."""
        return cls(
            call_id=record.call_id, caller=record.caller, callee=record.callee,
            state=record.public_state, created_at=record.created_at,
            caller_answered_at=record.caller_answered_at,
            callee_answered_at=record.callee_answered_at,
            connected_at=record.connected_at, ended_at=record.ended_at,
            end_reason=record.end_reason, sip_status=record.sip_status,
            who_hung_up=record.who_hung_up, number=record.number,
            destination_class=record.destination_class, trunk=record.trunk,
            refusal=record.refusal)
