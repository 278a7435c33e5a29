"""
The SIP stack's internal seams: between the transport, the transaction layer, the UA core
and the transaction users (registrar, call legs). Not plugin API (that is
:mod:`clicktodial.interfaces`). Message types are :class:`clicktodial.sip.message.Request` /
``Response``; destinations are :class:`clicktodial.sip.address.Destination`. Annotations are
strings, so this module imports nothing from the SIP stack at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from clicktodial.sip.address import Destination
    from clicktodial.sip.message import Request, Response
    from clicktodial.sip.transactions import ServerTransaction
    from clicktodial.sip.ua import IncomingCall, IncomingRequest, OutgoingCall, Session

__all__ = [
    "IClientCredentials",
    "IFlowKeeper",
    "IIncomingCallHandler",
    "IMessageHandler",
    "ISIPTap",
    "ISIPTransport",
    "ISendFailureHandler",
    "ISessionHandler",
    "ISourceLimit",
    "ITransactionUser",
]


class IMessageHandler(Interface):
    """
    What a SIP transport hands parsed messages to (the transaction layer).
    Implementations never raise: bad input is logged and answered or
    dropped.
    """

    def request_received(request: Request, source: object) -> None:
        """
        A request arrived.

        :param source: where it came from (the transport's ``Destination``
            or connection handle); handed back to
            :meth:`ISIPTransport.send_response` with every response to it.
        """

    def response_received(response: Response, source: object) -> None:
        """A response arrived from ``source``."""


class ISourceLimit(Interface):
    """
    The per-source rate limit a SIP transport applies to what it receives,
    before parsing it (like Kamailio's pike; docs/deploy.md, "Protection
    under load").
    """

    def allow(host: str) -> bool:
        """
        Count one datagram (parsed or not), stream message or new connection
        from IP address ``host`` (the text the socket gives); whether to
        handle it.  Called for every datagram before anything else is done
        with it: for a banned source it costs one dictionary look-up.  Never
        raises.
        """

    def banned() -> dict[str, float]:
        """
        The sources banned now: each source's key (an IPv4 address, or an
        IPv6 network such as ``2001:db8:1:2::/64``) and the time
        (``IReactorTime.seconds``) its ban ends.
        """

    def on_ban(observer: Callable[[], object]) -> None:
        """Call ``observer`` (no arguments) each time a source gets banned."""


class ISIPTransport(Interface):
    """
    Sends SIP messages over UDP/TCP/TLS (RFC 3261 §18).  A transport error
    (ICMP unreachable, connection refused, no route) is raised as
    ``clicktodial.sip.transport.TransportError`` (or ``OSError``); the
    transaction layer turns it into a local 503 (§17.1.4).
    """

    def send_request(request: Request, destination: Destination) -> None:
        """
        Send ``request`` to ``destination`` (§18.1.1).

        :raises clicktodial.sip.transport.TransportError: it cannot be sent.
        """

    def send_response(response: Response, source: object = None) -> None:
        """
        Send ``response`` where §18.2.2 says (the top Via's ``received`` /
        ``rport``, or ``source``, the handle the request came with).

        :raises clicktodial.sip.transport.TransportError: it cannot be sent.
        """

    def local_address(transport: str) -> tuple[str, int]:
        """
        The ``(host, port)`` to put in the sent-by of a Via for ``transport``
        (``"UDP"``, ``"TCP"``, ``"TLS"``).

        :raises clicktodial.sip.transport.TransportError: no such transport.
        """


class ISIPTap(Interface):
    """
    Sees every SIP message the transport sends or receives, as octets, e.g. to keep the
    messages of calls (:class:`clicktodial.calls.trace.CallTracer`). Called on the reactor
    thread for every message while it is :attr:`watching`: it must be cheap and must not
    raise.
    """

    watching = Attribute(
        "Whether the tap wants messages now: a plain attribute the transport reads for every"
        " message. While it is false the transport neither calls message_passed nor spends"
        " anything else on the tap (a tracer that watches no call)."
    )

    def message_passed(
        direction: str,
        message: Request | Response,
        data: bytes,
        transport: str,
        local: tuple[str, int],
        remote: tuple[str, int],
    ) -> None:
        """
        ``message`` (``data``: its octets as on the wire) was sent (``direction`` ``out``) or
        received (``in``) over ``transport`` between ``local`` and ``remote``
        (host, port).
        """


class ISendFailureHandler(Interface):
    """
    Optional capability of an :class:`IMessageHandler`: told when a request the
    transport accepted could not be delivered after all (a connection that
    could not be opened: refused, unreachable, timed out).  Errors known
    while sending are raised by :meth:`ISIPTransport.send_request` instead.
    """

    def request_failed(request: Request, destination: Destination, reason: str) -> None:
        """
        ``request``, sent to ``destination``, never left: RFC 3261 §8.1.3.1 /
        §17.1.4, its client transaction ends at once with a local 503.
        Never raises.
        """


class IFlowKeeper(Interface):
    """
    Keeps the stream connections (TCP, TLS) phones registered over open
    while their bindings live: such a connection is the phone's only way in
    when it is behind NAT (RFC 5626 §5.3, RFC 3261 §18).  Provided by the
    SIP transport; the registrar calls it after each REGISTER it stored.
    """

    flow_timer = Attribute(
        "Seconds (int) within which a phone should send a keep-alive on an RFC 5626"
        " flow over TCP or TLS: the Flow-Timer of a 200 to REGISTER (§4.4.1)."
    )

    def keep_flow(source: object, aor: str, until: float) -> None:
        """
        The connection ``source`` (the handle a REGISTER came with) carries
        bindings of ``aor`` until POSIX time ``until``: keep it open at least
        that long (plus a margin).  A ``until`` in the past (a de-REGISTER)
        releases what ``aor`` held.  A datagram source, or a connection that
        is gone or closing, is ignored.  Never raises.
        """


class ITransactionUser(Interface):
    """
    What the transaction layer calls (RFC 3261 §17: the "TU", our UA core).
    Responses to requests it sent go to the callback it passed to
    ``TransactionLayer.send_request``, not here.
    """

    def request_received(server_tx: ServerTransaction, request: Request) -> None:
        """
        A new request (never a retransmission, never ACK or CANCEL) created
        ``server_tx``; answer with ``server_tx.respond(response)``.  An INVITE
        not answered within 200 ms gets 100 Trying from the transaction.
        """

    def cancel_received(server_tx: ServerTransaction) -> None:
        """
        A CANCEL matched the INVITE server transaction ``server_tx``, which
        has no final response yet (RFC 3261 §9.2).  The layer already sent
        200 to the CANCEL; the user should answer the INVITE 487.
        """

    def ack_received(request: Request, source: object) -> None:
        """
        An ACK for a 2xx arrived (it matched no transaction, or one in
        RFC 6026 ``accepted``); ACKs for 300-699 are absorbed by the layer.
        """

    def stray_response(response: Response) -> None:
        """
        A response matched no client transaction (e.g. a 2xx retransmitted
        after Timer M: the user may ACK it again, RFC 6026 §7.2).
        """


# Appended by the dialog / user-agent core work (clicktodial.sip.ua).
# The application side of the UA core: the click-to-dial B2BUA implements
# these, one ISessionHandler per call leg.


class ISessionHandler(Interface):
    """
    Receives the events of one call leg: an INVITE we sent (:class:`OutgoingCall`)
    or received (:class:`IncomingCall`) and the :class:`Session`s (dialogs) it creates.
    Methods are called on the reactor thread and must not raise (exceptions
    are logged and swallowed).  A session surfaced to the handler ends with
    exactly one ``session_terminated``; a call that never got a 2xx ends with
    ``call_failed`` (UAC) or ``call_cancelled`` / the application's own
    ``reject`` (UAS).
    """

    def call_provisional(call: OutgoingCall, response: Response, session: Session | None) -> None:
        """
        UAC: a 1xx arrived.  ``session`` is the early dialog it created or
        updated (a 101-199 with a To tag), else None.
        """

    def call_answered(call: OutgoingCall, session: Session, response: Response) -> None:
        """
        UAC: the first 2xx arrived; ``session`` is confirmed.  If the INVITE
        had no offer, the 2xx carries one and the application must call
        ``session.ack(answer)``; otherwise the core has ACKed already.
        2xx from other forks are ACKed and BYEd without an event.
        """

    def call_failed(call: OutgoingCall, response: Response) -> None:
        """
        UAC: the INVITE ended without a session: a 300-699, a local 408
        (timeout) or 503 (transport error), or a local 487 when
        ``call.cancel()`` made it end (also when a 2xx crossed the CANCEL, or
        came for an early dialog the application had BYEd: that 2xx is
        ACKed and BYEd).
        """

    def call_cancelled(call: IncomingCall) -> None:
        """UAS: the caller sent CANCEL (RFC 3261 §9.2); the core answered 487."""

    def session_confirmed(session: Session, ack: Request) -> None:
        """
        UAS: the ACK for our 2xx (to the INVITE or a re-INVITE) arrived;
        its body, if any, was the answer to the offer in our 2xx.
        """

    def request_received(session: Session, request: IncomingRequest) -> None:
        """
        A request inside the session other than BYE, ACK, CANCEL (re-INVITE,
        UPDATE, INFO, OPTIONS, ...): answer with ``request.respond(...)``, now
        or later.  Glare, CSeq order and offer conflicts were handled before.
        """

    def session_terminated(session: Session, reason: str) -> None:
        """
        The session ended: ``"local-bye"``, ``"remote-bye"``, ``"no-ack"`` (our
        2xx was never ACKed, §13.3.1.4), ``"remote-481"``, ``"timeout"``.
        Nothing of it remains in the core afterwards.
        """


class IIncomingCallHandler(Interface):
    """What the UA core hands requests outside any dialog to."""

    def incoming_call(call: IncomingCall) -> ISessionHandler | None:
        """
        A new INVITE.  Answer it with ``call.provisional()``,
        ``call.accept(sdp)`` or ``call.reject(status)``, now or later.

        :return: the handler for this call's events (None keeps a default
            that ignores them).
        """

    def request_received(request: IncomingRequest) -> None:
        """
        A request outside any dialog other than INVITE (OPTIONS, MESSAGE,
        ...): answer with ``request.respond(...)``.
        """


class IClientCredentials(Interface):
    """
    Where a UAC finds what answers a 401/407 digest challenge (RFC 3261
    §22.2): given per outgoing call (``UserAgent.invite(..., credentials=)``)
    and kept by its sessions for the requests they send in the dialog.
    """

    def credentials_for(realm: str) -> tuple[str, str] | None:
        """
        The ``(username, password)`` to answer a challenge of ``realm`` with,
        or None: then the 401/407 is the request's final answer.  Called on
        the reactor thread; must not block or raise.
        """
