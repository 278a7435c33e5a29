"""
What the modules of the user-agent core share: the typing Protocols of the
transaction layer they drive and of the core they sit in, the call states,
the exceptions, and small helpers.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol, TypeVar

from twisted.internet.interfaces import IReactorTime

from clicktodial.sip.address import Destination
from clicktodial.sip.message import Request, Response
from clicktodial.sip.sdp import is_sdp
from clicktodial.sip.transactions import Timers
from clicktodial.sip.uri import URI
from clicktodial.timers import Lingering, TimerQueues

if TYPE_CHECKING:
    from clicktodial.sip.interfaces import ISIPTransport
    from clicktodial.sip.ua.session import Session
    from clicktodial.sip.ua.uac import OutgoingCall

__all__ = [
    "ALLOWED_METHODS",
    "CallState",
    "ClientTransactionLike",
    "RequestPending",
    "ResponseCallback",
    "ServerTransactionLike",
    "TransactionLayerLike",
    "UACore",
    "sdp_of",
]

_T = TypeVar("_T")

#: Methods this core understands; others get 501 from the default handlers
#: and are listed in Allow (RFC 3261 §20.5).
ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "UPDATE")

ResponseCallback = Callable[[Response], None]


class ClientTransactionLike(Protocol):
    """What the core uses of a client transaction (see the transaction layer)."""

    @property
    def request(self) -> Request: ...

    @property
    def destination(self) -> Destination: ...

    def cancel_request(self) -> Request: ...

    def terminate(self) -> None:
        """End the transaction now, without a response (RFC 3261 §9.1)."""


class ServerTransactionLike(Protocol):
    """What the core uses of a server transaction."""

    @property
    def request(self) -> Request: ...

    @property
    def source(self) -> object: ...

    def respond(self, response: Response) -> None: ...


class TransactionLayerLike(Protocol):
    """What the core uses of the transaction layer."""

    @property
    def transport(self) -> ISIPTransport: ...

    @property
    def timers(self) -> Timers: ...

    @property
    def linger_timers(self) -> TimerQueues:
        """The queues of timers that usually fire (the core's 64*T1 windows join them)."""

    @property
    def guard_timers(self) -> TimerQueues:
        """The queues of timers that usually are cancelled (2xx retransmission, CANCEL)."""

    def send_request(
        self, request: Request, destination: Destination, on_response: ResponseCallback
    ) -> ClientTransactionLike: ...

    def send_ack(self, ack: Request, destination: Destination) -> bool: ...

    def transmit_response(self, response: Response, source: object) -> bool: ...


class UACore(Protocol):
    """
    What sessions and calls use of the core that holds them (the
    :class:`UserAgent <clicktodial.sip.ua.core.UserAgent>`): the clock, the
    transaction layer, and the bookkeeping of sessions and calls.
    """

    @property
    def clock(self) -> IReactorTime: ...

    @property
    def timers(self) -> Timers: ...

    @property
    def rng(self) -> random.Random: ...

    @property
    def pin_flows(self) -> bool: ...

    @property
    def transactions(self) -> TransactionLayerLike: ...

    def contact_for(self, request: Request) -> URI: ...

    def notify(self, callback: Callable[..., None], *args: object) -> None:
        """Call the application; its exceptions are logged, never raised."""

    def linger(self, fired: Callable[[], object], delay: float | None = None) -> Lingering:
        """Call ``fired`` after ``delay`` (64*T1 by default)."""

    def linger_on(self, owner: _T, fired: Callable[[_T], object]) -> Lingering:
        """Call ``fired(owner)`` after 64*T1, keeping no bound method."""

    def keep_ack_on(self, owner: _T, fired: Callable[[_T], object]) -> Lingering:
        """Call ``fired(owner)`` after 64*T1 + T4 (the life of an ACK we sent)."""

    def add_session(self, session: Session) -> None: ...

    def forget_session(self, session: Session) -> None: ...

    def incoming_finished(self, server_tx: ServerTransactionLike) -> None:
        """The INVITE of ``server_tx`` got its final response."""

    def outgoing_finished(self, call: OutgoingCall) -> None:
        """``call`` holds nothing in the core any more."""

    def send_response_direct(self, response: Response, source: object) -> None: ...

    def build_response(
        self,
        request: Request,
        status: int,
        reason: str | None,
        *,
        to_tag: str | None,
        contact: bool = False,
        record_route: bool = False,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Response: ...

    def count_unexpected(self, machine: str, state: str, event: str) -> None:
        """An input with no transition arrived (logged once, counted)."""


class RequestPending(Exception):
    """
    A re-INVITE cannot start: another INVITE transaction of the dialog is
    still in progress (RFC 3261 §14.1).
    """


class CallState(enum.StrEnum):
    """Where an INVITE that creates a session is (our names; §13 has none)."""

    CALLING = "calling"  # UAC: INVITE sent, nothing heard
    PROCEEDING = "proceeding"  # a provisional response was sent/received
    ANSWERED = "answered"  # a 2xx was sent/received
    FAILED = "failed"  # a 300-699 (or local 408/503) ended it
    CANCELLED = "cancelled"  # CANCEL made it end (487, or 2xx then BYE)


def sdp_of(message: Request | Response) -> bytes | None:
    """The message's session description, or None if it carries none."""
    if is_sdp(message.headers.get("Content-Type"), message.body):
        return message.body
    return None
