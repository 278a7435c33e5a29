"""
The plain values of the call controller's interface (pure: no Twisted, no I/O): what a
call policy gets (:class:`CallRequest`) and raises (:class:`CallRefused`), and what call event
listeners get (:class:`CallInfo`). Re-exported by :obj:`clicktodial.calls.policy` and
:obj:`clicktodial.calls.events`.
"""

from __future__ import annotations

import attrs

from clicktodial.store.values import FINAL_STATES, PUBLIC_STATES, CallRecord, User

__all__ = ["PUBLIC_STATES", "CallInfo", "CallRefused", "CallRequest"]


class CallRefused(Exception):
    """
    A call may not be placed.

    :ivar reason: ``unknown-user``, ``disabled-user``, ``same-user``,
        ``forbidden``, ``caller-limit``, ``callee-limit`` or ``total-limit``.
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
    controller, or rebuilt from its record (:func:`from_record`). Why this is not the
    :class:`CallRecord`: see there.

    :ivar call_id: the call record's id (a UUID4 in hex, not a SIP Call-ID).
    :ivar state: one of :data:`PUBLIC_STATES`.
    :ivar end_reason: once over, one of the store's
        :data:`END_REASONS <clicktodial.store.values.END_REASONS>`.
    :ivar sip_status: the SIP status that ended the call, if one did.
    :ivar who_hung_up: ``caller``, ``callee`` or ``system``, once over.
    :ivar media_relay: ``off`` (the phones send media to each other), ``pending``
        (``[media] relay = auto`` has not decided yet), ``relayed`` (through
        the media relay) or ``unrelayed`` (the relay failed and the call went
        on without it); ``None`` for a call rebuilt from its record, which does not
        keep it.
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
    media_relay: str | None = "off"
    #: A call to a telephone number (docs/dialplan.md): E.164, class, trunk, refusal.
    number: str | None = None
    destination_class: str | None = None
    trunk: str | None = None
    refusal: str | None = None

    @property
    def active(self) -> bool:
        """Whether the call is still in progress."""
        return self.state not in FINAL_STATES

    @property
    def duration(self) -> float | None:
        """Seconds connected, once a connected call has ended (to the millisecond)."""
        if self.connected_at is None or self.ended_at is None:
            return None
        return max(0.0, round(self.ended_at - self.connected_at, 3))

    @classmethod
    def from_record(cls, record: CallRecord) -> CallInfo:
        """The call as its record tells it (``media_relay`` None: the record has none)."""
        return cls(
            call_id=record.call_id,
            caller=record.caller,
            callee=record.callee,
            state=record.public_state,
            created_at=record.created_at,
            caller_answered_at=record.caller_answered_at,
            callee_answered_at=record.callee_answered_at,
            connected_at=record.connected_at,
            ended_at=record.ended_at,
            end_reason=record.end_reason,
            sip_status=record.sip_status,
            who_hung_up=record.who_hung_up,
            number=record.number,
            destination_class=record.destination_class,
            trunk=record.trunk,
            refusal=record.refusal,
            media_relay=None,
        )
