"""
The user-agent core (RFC 3261 §8, §12-§15): the transaction user that turns
transactions into calls.

:class:`UserAgent` sits on a
:class:`~clicktodial.sip.transactions.TransactionLayer` as its :class:`ITransactionUser`.
It keeps the dialogs (:class:`Dialog`) of the INVITE sessions it takes part in and:

* as a UAC, starts calls (:meth:`UserAgent.invite` -> :class:`OutgoingCall`), cancels
  them (§9.1), ACKs every 2xx — retransmissions and forks included — with the
  same ACK (§13.2.2.4), and BYEs the extra dialogs of a forked INVITE;
* as a UAS, hands new INVITEs to an :class:`IIncomingCallHandler` as
  :class:`IncomingCall`s, retransmits its 2xx until the ACK comes (§13.3.1.4) and
  ends the session with a BYE if it never does;
* inside dialogs, checks CSeq order (§12.2.2), answers requests for unknown
  dialogs with 481, detects merged requests (§8.2.2.2, 482), resolves
  re-INVITE glare (§14: 491 / 500, and the randomized retry of §14.1), and
  tracks the SDP offer/answer state (RFC 3264 via §13.2.1, §13.3.1, §14);
* hands every session event to the session's :class:`ISessionHandler`.

The application — later the click-to-dial B2BUA — sees :class:`Session`s (one per
dialog), never transactions.  Everything timed uses the injected clock; when a
session ends nothing of it stays behind (:meth:`UserAgent.active_count`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, TypeVar

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from clicktodial.log import LOG_LEVELS
from clicktodial.sip.address import Destination
from clicktodial.sip.dialog import (
    DialogError,
    DialogID,
    OutOfOrderRequest,
    destination_for_uri,
    request_dialog_id,
    response_dialog_id,
)
from clicktodial.sip.headers import HeaderParseError, NameAddr
from clicktodial.sip.interfaces import (
    IClientCredentials,
    IIncomingCallHandler,
    ISessionHandler,
    ITransactionUser,
)
from clicktodial.sip.message import Request, Response, make_response, new_call_id, new_tag
from clicktodial.sip.precheck import ACCEPTED_TYPES, SUPPORTED_OPTIONS, uas_precheck
from clicktodial.sip.sdp import SDP_CONTENT_TYPE, OfferAnswerError, OfferCarrier, Party
from clicktodial.sip.transactions import Timers
from clicktodial.sip.ua.session import Session
from clicktodial.sip.ua.shared import (
    ALLOWED_METHODS,
    ServerTransactionLike,
    TransactionLayerLike,
)
from clicktodial.sip.ua.uac import OutgoingCall
from clicktodial.sip.ua.uas import IncomingCall, IncomingRequest
from clicktodial.sip.uri import URI
from clicktodial.timers import Lingering, LingerQueue

__all__ = ["UserAgent", "default_precheck"]

_T = TypeVar("_T")

log = Logger(namespace="clicktodial.sip.ua")


def default_precheck(request: Request) -> Response | None:
    """
    The RFC 3261 §8.2.1-§8.2.3 checks of :func:`clicktodial.sip.precheck.uas_precheck`
    for the methods this core handles: 501, 416, 420, 415 or None.
    """
    return uas_precheck(request, ALLOWED_METHODS, SUPPORTED_OPTIONS, ACCEPTED_TYPES)


class _Unattached:
    """:attr:`UserAgent.transactions` before :meth:`UserAgent.attach`: any use says so."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("UserAgent.attach() the transaction layer first")


_UNATTACHED: Any = _Unattached()


# ---------------------------------------------------------------------------
# The core


class _SessionIndex:
    """
    The sessions by dialog ID (RFC 3261 §12), filed under their Call-ID alone: the key is
    the Call-ID string the dialog already keeps, where a :class:`DialogID` key per session
    would cost ~80 bytes more a dialog, two per held call.  The few Call-IDs with several
    dialogs (forks of one INVITE, §13.2.2.4) keep a tuple of sessions.
    """

    __slots__ = ("_by_call_id", "_count")

    def __init__(self) -> None:
        self._by_call_id: dict[str, Session | tuple[Session, ...]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def get(self, dialog_id: DialogID) -> Session | None:
        """The session whose dialog has ``dialog_id``, or None."""
        entry = self._by_call_id.get(dialog_id.call_id)
        if entry is None:
            return None
        for session in (entry,) if isinstance(entry, Session) else entry:
            dialog = session.dialog
            if (
                dialog.local_tag == dialog_id.local_tag
                and dialog.remote_tag == dialog_id.remote_tag
            ):
                return session
        return None

    def add(self, session: Session) -> None:
        """File ``session`` (replacing one with the same dialog ID)."""
        self.remove(self.get(session.id))
        call_id = session.dialog.call_id
        entry = self._by_call_id.get(call_id)
        if entry is None:
            self._by_call_id[call_id] = session
        elif isinstance(entry, Session):
            self._by_call_id[call_id] = (entry, session)
        else:
            self._by_call_id[call_id] = (*entry, session)
        self._count += 1

    def remove(self, session: Session | None) -> None:
        """Forget ``session`` if it is filed."""
        if session is None:
            return
        call_id = session.dialog.call_id
        entry = self._by_call_id.get(call_id)
        if entry is session:
            del self._by_call_id[call_id]
        elif isinstance(entry, tuple) and session in entry:
            rest = tuple(s for s in entry if s is not session)
            self._by_call_id[call_id] = rest[0] if len(rest) == 1 else rest
        else:
            return
        self._count -= 1

    def values(self) -> list[Session]:
        """Every session filed."""
        return [
            session
            for entry in self._by_call_id.values()
            for session in ((entry,) if isinstance(entry, Session) else entry)
        ]


@implementer(ITransactionUser)
class UserAgent:
    """
    The user-agent core: :class:`ITransactionUser` of a transaction layer.

    Build the layer with the core as its user, or build the core first and
    :func:`attach` the layer::

        ua = UserAgent(clock, handler, contact=URI("sip", None, "127.0.0.1", 5060))
        ua.attach(TransactionLayer(clock, transport, ua, timers))

    :ivar clock: the injected clock.
    :ivar handler: the :class:`IIncomingCallHandler` for new INVITEs and
        out-of-dialog requests.
    :ivar contact: the Contact URI we put in dialog-creating messages, or
        None to build one from the transport's local address.
    :ivar timers: T1/T2/T4 (2xx retransmission, 491 retry, fork window);
        the layer's when not given.
    :ivar rng: the random source for the §14.1 retry delay.
    :ivar precheck: the RFC 3261 §8.2.1-§8.2.3 checks run on each new
        request (:func:`default_precheck` unless given; None for none): returns
        the rejection to send, or None to go on.
    :ivar pin_flows: whether every dialog is pinned to the flow that set it
        up (docs/security.md, "What a phone can steer: nothing"): the
        requests and ACKs of a dialog we INVITEd go where the INVITE went (or
        to the ``flow`` given to :func:`invite`), those of a dialog a peer INVITEd
        go back to the INVITE's source (its connection, or address), whatever
        the peer's Contact and Record-Route say; they only make the
        Request-URI and Route of §12.2.1.1.  False: the next hop is the
        first route or the remote target (§12.2.1.1 with §8.1.2), for a UA
        among peers it trusts.
    """

    def __init__(
        self,
        clock: IReactorTime,
        handler: IIncomingCallHandler,
        *,
        transactions: TransactionLayerLike | None = None,
        contact: URI | None = None,
        timers: Timers | None = None,
        rng: random.Random | None = None,
        user_agent: str | None = "clicktodial",
        precheck: Callable[[Request], Response | None] | None = default_precheck,
        pin_flows: bool = False,
    ) -> None:
        self.clock = clock
        self.handler = handler
        self.contact = contact
        self.pin_flows = pin_flows
        self._timers = timers
        self.rng = rng if rng is not None else random.Random()
        self.user_agent = user_agent
        self.precheck = precheck
        #: The transaction layer (:func:`attach` it first): a plain attribute, read on
        #: every request, ACK and response of a call.
        self.transactions: TransactionLayerLike = (
            _UNATTACHED if transactions is None else transactions
        )
        #: The layer's queues of the 64*T1 windows and of the ACKs' 64*T1 + T4, found
        #: once (on first use after :func:`attach`).
        self._windows: LingerQueue | None = None
        self._ack_keeping: LingerQueue | None = None
        self._sessions = _SessionIndex()
        self._contacts: dict[tuple[str, str, int], URI] = {}
        self._outgoing: set[OutgoingCall] = set()
        self._incoming: dict[ServerTransactionLike, IncomingCall] = {}
        # §8.2.2.2: (From tag, Call-ID, CSeq, method) of requests without To
        # tag -> (branch, expiry timer).
        #: §8.2.2.2 merged requests: the top Via branch of each new request, by
        #: (From tag, Call-ID, CSeq number, method), for 64*T1.
        self._recent: dict[tuple[str | None, str, int, str], str | None] = {}
        #: Inputs a state machine of the core had no transition for, by
        #: "machine state/input" (a small fixed set): ``/metrics`` reads it.
        self.unexpected_inputs: dict[str, int] = {}

    # -- wiring --------------------------------------------------------------

    def serve_incoming(self, handler: IIncomingCallHandler) -> None:
        """
        Hand new INVITEs and out-of-dialog requests to ``handler`` from now on: the one
        way to plug in the application that is built after the core it uses (the call
        controller places its calls through this core and serves the calls it receives).
        """
        self.handler = handler

    def attach(self, transactions: TransactionLayerLike) -> None:
        """Send through ``transactions`` (the layer whose user we are)."""
        self.transactions = transactions
        self._windows = self._ack_keeping = None

    @property
    def timers(self) -> Timers:
        """The timer values in use."""
        if self._timers is not None:
            return self._timers
        return self.transactions.timers

    def contact_for(self, request: Request) -> URI:
        """Our Contact URI for a dialog set up by ``request`` (over its transport)."""
        if self.contact is not None:
            return self.contact
        transport = request.top_via.transport if "Via" in request.headers else "UDP"
        return self._contact_for_transport(transport)

    def _contact_for_transport(self, transport: str) -> URI:
        if self.contact is not None:
            return self.contact
        host, port = self.transactions.transport.local_address(transport)
        # One URI per address, shared by every dialog that uses it (a held call's two
        # dialogs would otherwise keep two copies of the same ~0.5 KB object). Nothing
        # changes a dialog's local_contact in place.
        key = (transport.upper(), host, port)
        uri = self._contacts.get(key)
        if uri is None:
            params: dict[str, str | None] = {}
            if transport.upper() != "UDP":
                params["transport"] = transport.lower()
            uri = self._contacts[key] = URI("sip", None, host, port, params)
        return uri

    # -- bookkeeping ---------------------------------------------------------

    @property
    def sessions(self) -> list[Session]:
        """The sessions (early or confirmed) alive now."""
        return self._sessions.values()

    @property
    def active_count(self) -> int:
        """Sessions, calls in progress and merge-detection entries held: 0 when idle."""
        return len(self._sessions) + len(self._outgoing) + len(self._incoming) + len(self._recent)

    def find_session(self, dialog_id: DialogID) -> Session | None:
        """The session with this dialog ID, if alive."""
        return self._sessions.get(dialog_id)

    def add_session(self, session: Session) -> None:
        self._sessions.add(session)

    def forget_session(self, session: Session) -> None:
        self._sessions.remove(session)

    def count_unexpected(self, machine: str, state: str, event: str) -> None:
        """An input with no transition arrived: logged the first time, always counted."""
        key = f"{machine} {state}/{event}"
        seen = self.unexpected_inputs.get(key, 0)
        self.unexpected_inputs[key] = seen + 1
        if not seen:
            log.warn(
                "{machine} in state {state!r} has no transition for {event!r}: ignored"
                " (logged once, counted in clicktodial_sip_unexpected_inputs)",
                machine=machine,
                state=state,
                event=event,
            )

    def incoming_finished(self, server_tx: ServerTransactionLike) -> None:
        """The INVITE of ``server_tx`` got its final response."""
        self._incoming.pop(server_tx, None)

    def outgoing_finished(self, call: OutgoingCall) -> None:
        """``call`` holds nothing in the core any more."""
        self._outgoing.discard(call)

    def notify(self, callback: Callable[..., None], *args: object) -> None:
        """Call the application; its exceptions are logged, never raised into the stack."""
        try:
            callback(*args)
        except Exception:
            log.failure(
                "session handler {callback} failed",
                callback=getattr(callback, "__qualname__", repr(callback)),
            )

    # -- UAC -----------------------------------------------------------------

    def new_call_id(self) -> str:
        """A fresh Call-ID for a dialog of ours (:func:`invite` takes one, so that a caller can
        know it before the INVITE goes out)."""
        return new_call_id(self.contact.host if self.contact is not None else None)

    def invite(
        self,
        request_uri: URI,
        *,
        from_: NameAddr,
        to: NameAddr,
        handler: ISessionHandler,
        body: bytes = b"",
        content_type: str | None = SDP_CONTENT_TYPE,
        headers: Iterable[tuple[str, str]] = (),
        route: Sequence[NameAddr] = (),
        destination: Destination | None = None,
        flow: Destination | None = None,
        call_id: str | None = None,
        credentials: IClientCredentials | None = None,
    ) -> OutgoingCall:
        """
        Start a call: send an INVITE (RFC 3261 §13.2.1) to ``request_uri``
        (through the pre-loaded ``route``, e.g. an outbound proxy), with an
        SDP offer in ``body`` or none (the 2xx then brings the offer and the
        application answers with :meth:`Session.ack`).

        :param destination: where to send it; by default from the first
            route or the Request-URI (host, port, transport parameter).
        :param flow: where every request of the dialogs this INVITE creates
            goes (early, confirmed and other forks' alike: ACK, BYE,
            re-INVITE...), whatever the answers' Contact and Record-Route
            say; by default the INVITE's destination when the core pins flows
            (:func:`pin_flows`), else the §12.2.1.1 next hop.
        :param credentials: what answers a 401/407 to the INVITE and to the
            requests its sessions send (RFC 3261 §22.2); without them a
            401/407 is the INVITE's final answer.
        :return: the :class:`OutgoingCall`; its events go to ``handler``.
        """
        local_tag = from_.tag or new_tag()
        from_party = NameAddr(from_.uri, from_.display_name, {"tag": local_tag})
        to_party = NameAddr(to.uri, to.display_name)
        if call_id is None:
            call_id = self.new_call_id()
        fields: list[tuple[str, str]] = [("Max-Forwards", "70")]
        fields.extend(("Route", str(hop)) for hop in route)
        fields += [
            ("From", str(from_party)),
            ("To", str(to_party)),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
        ]
        if destination is None:
            destination = destination_for_uri(route[0].uri if route else request_uri)
        contact = self._contact_for_transport(destination.transport)
        fields.append(("Contact", f"<{contact}>"))
        fields.append(("Allow", ", ".join(ALLOWED_METHODS)))
        if self.user_agent:
            fields.append(("User-Agent", self.user_agent))
        fields.extend(headers)
        if body:
            fields.append(("Content-Type", content_type or SDP_CONTENT_TYPE))
        request = Request("INVITE", request_uri, fields, body)
        if flow is None and self.pin_flows:
            flow = destination
        call = OutgoingCall(self, request, destination, handler, flow, credentials)
        self._outgoing.add(call)
        if LOG_LEVELS.info:
            log.info("INVITE {uri}", uri=str(request_uri), call_id=call_id)
        call.start()
        return call

    def send_response_direct(self, response: Response, source: object) -> None:
        """Re-send a 2xx outside its transaction (RFC 3261 §13.3.1.4)."""
        self.transactions.transmit_response(response, source)

    # -- UAS: building responses --------------------------------------------

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
    ) -> Response:
        response = make_response(request, status, reason, to_tag=to_tag)
        if record_route:
            # §12.1.1: the UAS copies Record-Route into dialog-creating responses.
            for value in request.headers.get_all("Record-Route"):
                response.headers.add("Record-Route", value)
        if contact:
            response.headers.add("Contact", f"<{self.contact_for(request)}>")
        if status == 405 or (request.method == "INVITE" and 200 <= status < 300):
            response.headers.add("Allow", ", ".join(ALLOWED_METHODS))
        if self.user_agent:
            response.headers.add("Server", self.user_agent)
        for name, value in headers:
            response.headers.add(name, value)
        if body:
            response.headers.add("Content-Type", content_type or SDP_CONTENT_TYPE)
            response.body = body
        return response

    def _reply_reason(self, server_tx: ServerTransactionLike, status: int, reason: str) -> None:
        request = server_tx.request
        server_tx.respond(self.build_response(request, status, reason, to_tag=new_tag()))

    def _reply(
        self, server_tx: ServerTransactionLike, status: int, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        request = server_tx.request
        # Responses to requests outside a dialog need a To tag (§8.2.6.2).
        to_tag = None if request.to.tag is not None else new_tag()
        server_tx.respond(
            self.build_response(request, status, None, to_tag=to_tag, headers=headers)
        )

    # -- ITransactionUser ----------------------------------------------------

    def request_received(self, server_tx: ServerTransactionLike, request: Request) -> None:
        """A new request (not a retransmission) arrived (ITransactionUser)."""
        try:
            self._request_received(server_tx, request)
        except (HeaderParseError, DialogError) as e:
            log.warn(
                "bad {method} request: {error}",
                method=request.method,
                error=str(e),
                call_id=request.headers.get("Call-ID"),
            )
            self._reply(server_tx, 400)

    def _request_received(self, server_tx: ServerTransactionLike, request: Request) -> None:
        if self.precheck is not None:
            # §8.2.1-§8.2.2 checks (method, Require, URI scheme...).
            rejection = self.precheck(request)
            if rejection is not None:
                server_tx.respond(rejection)
                return
        dialog_id = request_dialog_id(request)
        if dialog_id is not None:
            self._in_dialog_request(server_tx, request, dialog_id)
            return
        if self._merged(request):
            # §8.2.2.2: the same request reached us over another path.
            self._reply(server_tx, 482)
            return
        if request.method == "INVITE":
            if not request.contacts:
                # §8.1.1.8/§12.1.1: the remote target of the dialog.
                self._reply_reason(server_tx, 400, "Bad Request (Missing Contact)")
                return
            self._new_call(server_tx)
        elif request.method == "BYE":
            # §15.1.2: a BYE outside any dialog.
            self._reply(server_tx, 481)
        else:
            incoming = IncomingRequest(self, server_tx, None)
            self.notify(self.handler.request_received, incoming)

    def _merged(self, request: Request) -> bool:
        key = (request.from_.tag, request.call_id, request.cseq.seq, request.method)
        branch = request.top_via.branch
        if key in self._recent:
            return self._recent[key] != branch
        # Remember it as long as its server transaction can live (64*T1).
        self._recent[key] = branch
        self.linger(partial(self._recent.pop, key, None))
        return False

    def linger(self, fired: Callable[[], object], delay: float | None = None) -> Lingering:
        """
        Call ``fired`` after ``delay``, 64*T1 by default: the 64*T1 windows (merged
        requests, other forks' 2xx) and the 64*T1+T4 an ACK is kept for copies of its 2xx
        are entries of the transaction layer's lingering queues, on its one reactor
        timer (a fork window and the Timer M of the same 2xx fire on one wake-up).
        """
        return self._linger_queue(delay).call_later(fired)

    def linger_on(self, owner: _T, fired: Callable[[_T], object]) -> Lingering:
        """Call ``fired(owner)`` after 64*T1, keeping no bound method (``call_later_on``)."""
        queue = self._windows
        if queue is None:
            queue = self._windows = self._linger_queue(None)
        return queue.call_later_on(owner, fired)

    def keep_ack_on(self, owner: _T, fired: Callable[[_T], object]) -> Lingering:
        """
        Call ``fired(owner)`` after 64*T1 + T4: the time an ACK of ours may still be
        needed for copies of its 2xx (the UAS retransmits for 64*T1, a copy may still
        be in the network for T4).
        """
        queue = self._ack_keeping
        if queue is None:
            timers = self.timers
            queue = self._ack_keeping = self._linger_queue(timers.timeout + timers.t4)
        return queue.call_later_on(owner, fired)

    def _linger_queue(self, delay: float | None) -> LingerQueue:
        if delay is None:
            delay = self.timers.timeout
        return self.transactions.linger_timers.by_length[delay]

    def _new_call(self, server_tx: ServerTransactionLike) -> None:
        call = IncomingCall(self, server_tx)
        self._incoming[server_tx] = call
        if LOG_LEVELS.info:
            log.info(
                "incoming INVITE from {peer}",
                peer=str(call.request.from_.uri),
                call_id=call.request.call_id,
            )
        try:
            handler = self.handler.incoming_call(call)
        except Exception:
            log.failure("incoming call handler failed", call_id=call.request.call_id)
            if call.is_pending:
                call.reject(500)
            return
        if handler is not None:
            call.handler = handler
            if call.session is not None:
                call.session.handler = handler

    def _in_dialog_request(
        self, server_tx: ServerTransactionLike, request: Request, dialog_id: DialogID
    ) -> None:
        session = self._sessions.get(dialog_id)
        if session is None or session.is_terminated:
            # §12.2.2: a request for a dialog we do not know (or that we
            # ended and only keep to BYE once our 2xx is ACKed).
            self._reply(server_tx, 481)
            return
        try:
            session.dialog.receive_request(request)
        except OutOfOrderRequest:
            # §12.2.2: lower CSeq than the last one received.
            self._reply(server_tx, 500)
            return
        method = request.method
        if method == "BYE":
            self._reply(server_tx, 200)
            self._remote_bye(session)
            return
        incoming = IncomingRequest(self, server_tx, session)
        if method == "INVITE":
            if session.invite_out_pending:
                # §14.2: our own re-INVITE is in progress: glare.
                self._reply(server_tx, 491)
                return
            if session.invite_in_pending:
                # §14.2: an earlier INVITE is not yet answered.
                retry_after = str(self.rng.randint(0, 10))
                self._reply(server_tx, 500, [("Retry-After", retry_after)])
                return
        if method in ("INVITE", "UPDATE") and incoming.offer is not None:
            try:
                session.dialog.offer_answer.offer(
                    Party.REMOTE,
                    OfferCarrier.INVITE if method == "INVITE" else OfferCarrier.UPDATE,
                    incoming.offer,
                )
            except OfferAnswerError:
                # RFC 3264 §4 / RFC 3261 §14.2: one offer at a time.
                self._reply(server_tx, 491)
                return
        if method == "INVITE":
            session.invite_received(request, incoming)
        self.notify(session.handler.request_received, session, incoming)

    def _remote_bye(self, session: Session) -> None:
        """§15.1.2: BYE received: end the session (487 to a pending INVITE)."""
        for call in list(self._incoming.values()):
            if call.session is session:
                call.bye_received()
        session.bye_received()

    def cancel_received(self, server_tx: ServerTransactionLike) -> None:
        """A CANCEL matched an INVITE server transaction (ITransactionUser, §9.2)."""
        call = self._incoming.get(server_tx)
        if call is not None:
            call.cancel_received()
            return
        # A re-INVITE can be cancelled too (§9.2): reject it with 487 (its
        # offer is withdrawn; the application's later answer is refused).
        for session in self._sessions.values():
            pending = session.pending_reinvite
            if pending is not None and pending.server_tx is server_tx and not pending.responded:
                pending.respond(487)
                return

    def ack_received(self, request: Request, source: object) -> None:
        """An ACK for a 2xx arrived (ITransactionUser, §13.3.1.4)."""
        try:
            dialog_id = request_dialog_id(request)
            session = self._sessions.get(dialog_id) if dialog_id is not None else None
            if session is None:
                log.debug("ACK for no dialog", call_id=request.headers.get("Call-ID"))
                return
            session.ack_received(request)
        except HeaderParseError as e:
            log.warn("bad ACK: {error}", error=str(e))

    def stray_response(self, response: Response) -> None:
        """
        A response matching no client transaction (ITransactionUser): a 2xx
        to an INVITE of a session we know gets its ACK again (§13.2.2.4).
        """
        try:
            if not 200 <= response.status < 300 or response.cseq.method != "INVITE":
                return
            dialog_id = response_dialog_id(response)
            session = self._sessions.get(dialog_id) if dialog_id is not None else None
            if session is not None:
                session.resend_ack(response.cseq.seq)
            else:
                log.info("stray 2xx for no dialog dropped", call_id=response.call_id)
        except HeaderParseError as e:
            log.warn("bad stray response: {error}", error=str(e))
