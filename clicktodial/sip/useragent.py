"""
The user-agent core (RFC 3261 §8, §12-§15): the transaction user that turns
transactions into calls.

L{UserAgent} sits on a L{TransactionLayer<clicktodial.sip.transaction.TransactionLayer>}
as its L{ITransactionUser}.  It keeps the dialogs (L{Dialog}) of the INVITE
sessions it takes part in and:

* as a UAC, starts calls (L{UserAgent.invite} -> L{OutgoingCall}), cancels
  them (§9.1), ACKs every 2xx — retransmissions and forks included — with the
  same ACK (§13.2.2.4), and BYEs the extra dialogs of a forked INVITE;
* as a UAS, hands new INVITEs to an L{IIncomingCallHandler} as
  L{IncomingCall}s, retransmits its 2xx until the ACK comes (§13.3.1.4) and
  ends the session with a BYE if it never does;
* inside dialogs, checks CSeq order (§12.2.2), answers requests for unknown
  dialogs with 481, detects merged requests (§8.2.2.2, 482), resolves
  re-INVITE glare (§14: 491 / 500, and the randomized retry of §14.1), and
  tracks the SDP offer/answer state (RFC 3264 via §13.2.1, §13.3.1, §14);
* hands every session event to the session's L{ISessionHandler}.

The application — later the click-to-dial B2BUA — sees L{Session}s (one per
dialog), never transactions.  Everything timed uses the injected clock; when a
session ends nothing of it stays behind (L{UserAgent.active_count}).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from clicktodial.sip.address import Destination, Source
from clicktodial.sip.dialog import (
    Dialog,
    DialogError,
    DialogID,
    DialogState,
    OutOfOrderRequest,
    destination_for_uri,
    request_dialog_id,
    response_dialog_id,
    source_flow,
)
from clicktodial.sip.headers import HeaderParseError, NameAddr
from clicktodial.sip.interfaces import IIncomingCallHandler, ISessionHandler, ITransactionUser
from clicktodial.sip.message import (
    Request,
    Response,
    make_response,
    new_call_id,
    new_tag,
)
from clicktodial.sip.parser import MessageParseError, parse_message
from clicktodial.sip.precheck import ACCEPTED_TYPES, SUPPORTED_OPTIONS, uas_precheck
from clicktodial.sip.sdp import (
    SDP_CONTENT_TYPE,
    OfferAnswerError,
    OfferCarrier,
    Party,
    is_sdp,
)
from clicktodial.sip.transaction import Timers
from clicktodial.sip.uri import URI
from clicktodial.timers import Lingering, LingerQueue

if TYPE_CHECKING:
    from clicktodial.sip.interfaces import ISIPTransport

__all__ = [
    "CallState",
    "IncomingCall",
    "IncomingRequest",
    "OutgoingCall",
    "RequestPending",
    "Session",
    "SessionHandlerBase",
    "UserAgent",
    "default_precheck",
]

log = Logger(namespace="clicktodial.sip.useragent")

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

    def terminate(self) -> None: ...


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

    def send_request(
        self, request: Request, destination: Destination, on_response: ResponseCallback
    ) -> ClientTransactionLike: ...

    def send_ack(self, ack: Request, destination: Destination) -> bool: ...

    def transmit_response(self, response: Response, source: object) -> bool: ...


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


def _sdp_of(message: Request | Response) -> bytes | None:
    """The message's session description, or None if it carries none."""
    if is_sdp(message.headers.get("Content-Type"), message.body):
        return message.body
    return None


# ---------------------------------------------------------------------------
# Sessions


class _TwoXXRetransmitter:
    """
    RFC 3261 §13.3.1.4: the UAS core re-sends its 2xx to an INVITE at T1,
    doubling up to T2, until the ACK arrives; after 64*T1 without ACK it
    gives up and the session is ended.
    """

    def __init__(
        self,
        session: Session,
        response: Response,
        source: object,
    ) -> None:
        self.session = session
        self.response = response
        self.cseq = response.cseq.seq
        self.source = source
        ua = session.ua
        self._interval = ua.timers.t1
        self._retransmit: IDelayedCall | None = ua.clock.callLater(self._interval, self._fire)
        self._give_up: IDelayedCall | None = ua.clock.callLater(ua.timers.timeout, self._timeout)

    def _fire(self) -> None:
        ua = self.session.ua
        self._interval = min(self._interval * 2, ua.timers.t2)
        self._retransmit = ua.clock.callLater(self._interval, self._fire)
        ua.send_response_direct(self.response, self.source)

    def _timeout(self) -> None:
        self._give_up = None
        self.stop()
        self.session._no_ack()

    def stop(self) -> None:
        """Stop retransmitting (ACK arrived, or the session ended)."""
        for call in (self._retransmit, self._give_up):
            if call is not None and call.active():
                call.cancel()
        self._retransmit = self._give_up = None


class _ReinviteOut:
    """
    What a re-INVITE of ours waits with for its responses.  Once a final response is
    handled it keeps the CSeq number only: the client transaction lingers 64*T1 in
    C{accepted} to pass up copies of the 2xx, which need just their ACK again, and at a
    call rate R keeping the INVITE, its SDP and the callbacks would hold R*32 s of them.
    """

    __slots__ = ("session", "seq", "pending")

    def __init__(
        self,
        session: Session,
        request: Request,
        offer: bytes | None,
        on_response: ResponseCallback | None,
        retry_on_491: bool,
        again: tuple[bytes, str | None, tuple[tuple[str, str], ...]],
    ) -> None:
        self.session = session
        self.seq = request.cseq.seq
        self.pending: (
            tuple[
                Request,
                bytes | None,
                ResponseCallback | None,
                bool,
                tuple[bytes, str | None, tuple[tuple[str, str], ...]],
            ]
            | None
        ) = (request, offer, on_response, retry_on_491, again)

    def responded(self, response: Response) -> None:
        pending = self.pending
        if pending is None:
            # After the final response: a copy of the 2xx gets the same ACK again.
            if 200 <= response.status < 300:
                self.session._reinvite_copy(self.seq)
            return
        if response.status >= 200:
            self.pending = None
        self.session._reinvite_response(pending[0], response, *pending[1:])


class Session:
    """
    One dialog created by an INVITE, as the application drives it: send
    requests inside it, re-INVITE, ACK a 2xx that carried an offer, BYE.

    @ivar ua: the L{UserAgent}.
    @ivar dialog: the L{Dialog} (state, ID, route set, offer/answer).
    @ivar handler: the L{ISessionHandler} receiving this session's events.
    """

    __slots__ = (
        "ua",
        "dialog",
        "handler",
        "_acked",
        "_ack",
        "_unacked",
        "_retransmitter",
        "_invite_out",
        "_invite_in",
        "_reinvite_in",
        "_retry",
        "_bye_when_acked",
        "_extra_bye_headers",
        "_reported",
        "termination_reason",
    )

    def __init__(
        self, ua: UserAgent, dialog: Dialog, handler: ISessionHandler, invite: Request
    ) -> None:
        self.ua = ua
        self.dialog = dialog
        self.handler = handler
        #: UAC: the highest INVITE CSeq number ACKed (a 2xx for it or below is a copy)
        #: and its ACK as sent, re-sent for each copy of that 2xx. Only the latest ACK is
        #: kept, as bytes (a few hundred, where the message's objects take kilobytes):
        #: parsed again in the rare event of a copy.
        self._acked = 0
        self._ack: bytes | None = None
        #: UAC: the 2xx (per CSeq) the application still has to ACK (it
        #: carried an offer: the ACK carries the answer).
        self._unacked: dict[int, tuple[Request, Response]] = {}
        #: UAS: retransmitting our 2xx until the ACK comes.
        self._retransmitter: _TwoXXRetransmitter | None = None
        #: An INVITE we sent in this dialog and have no final response to.
        self._invite_out: Request | None = None
        #: An INVITE we received in this dialog and have not finally answered.
        self._invite_in: Request | None = None
        #: ... and the application's handle on it when it is a re-INVITE.
        self._reinvite_in: IncomingRequest | None = None
        self._retry: IDelayedCall | None = None
        self._bye_when_acked = False
        self._extra_bye_headers: tuple[tuple[str, str], ...] = ()
        self._reported = False
        self.termination_reason: str | None = None

    def __repr__(self) -> str:
        return f"<Session {self.dialog!r}>"

    @property
    def id(self) -> DialogID:
        """The dialog ID."""
        return self.dialog.id

    @property
    def state(self) -> DialogState:
        """The dialog state."""
        return self.dialog.state

    @property
    def is_terminated(self) -> bool:
        """Whether the session is over."""
        return self.dialog.state is DialogState.TERMINATED

    @property
    def invite_pending(self) -> bool:
        """Whether an INVITE transaction of this dialog is in progress either way."""
        return self._invite_out is not None or self._invite_in is not None

    # -- requests we send ----------------------------------------------------

    def request(
        self,
        method: str,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        on_response: ResponseCallback | None = None,
    ) -> Request:
        """
        Send a request inside the dialog (INFO, UPDATE, OPTIONS, MESSAGE,
        ...).  An UPDATE with SDP is an offer (RFC 3311).  A 481 or 408 to it
        ends the session (RFC 3261 §12.2.1.2).

        @return: the request sent.
        @raise OfferAnswerError: an UPDATE offer while one is outstanding.
        @raise ValueError: for INVITE, ACK, CANCEL, BYE (use their methods).
        """
        if method in ("INVITE", "ACK", "CANCEL", "BYE"):
            raise ValueError(f"use the Session method for {method}")
        self._check_alive()
        offer = (
            body if method == "UPDATE" and is_sdp(content_type or SDP_CONTENT_TYPE, body) else None
        )
        if offer is not None:
            self.dialog.offer_answer.offer(Party.LOCAL, OfferCarrier.UPDATE, offer)
        request = self.dialog.create_request(method, body, content_type, headers)

        def responded(response: Response) -> None:
            if response.status < 200:
                return
            self.dialog.receive_response(method, response)
            if offer is not None:
                self._settle_local_offer(response)
            if on_response is not None:
                on_response(response)
            self._check_dialog_failure(response)

        self.ua._send_in_dialog(self, request, responded)
        return request

    def reinvite(
        self,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        on_response: ResponseCallback | None = None,
        retry_on_491: bool = True,
    ) -> Request:
        """
        Send a re-INVITE (RFC 3261 §14.1), with an offer in ``body`` or
        without one (the 2xx then carries the peer's offer and the
        application answers with L{ack}).

        On 491 the re-INVITE is retried after the randomized delay of §14.1
        (``retry_on_491``), else the 491 goes to ``on_response``.  Other
        final responses go to ``on_response``; a 2xx without an offer is
        ACKed here.

        @return: the re-INVITE sent.
        @raise RequestPending: another INVITE of this dialog is in progress.
        @raise OfferAnswerError: an offer is outstanding.
        """
        self._check_alive()
        headers = tuple(headers)
        if (
            self.invite_pending
            or self._unacked
            or self._retransmitter is not None
            or self._retry is not None
        ):
            # Also while our 2xx waits for its ACK (RFC 6026 "accepted") or
            # a 491 retry is scheduled.
            raise RequestPending("an INVITE transaction of this dialog is in progress")
        offer = body if body and is_sdp(content_type or SDP_CONTENT_TYPE, body) else None
        if offer is not None:
            self.dialog.offer_answer.offer(Party.LOCAL, OfferCarrier.INVITE, offer)
        request = self.dialog.create_request("INVITE", body, content_type, headers)
        self._invite_out = request
        waiting = _ReinviteOut(
            self, request, offer, on_response, retry_on_491, (body, content_type, headers)
        )
        self.ua._send_in_dialog(self, request, waiting.responded)
        return request

    def _reinvite_copy(self, seq: int) -> None:
        """Another 2xx to our re-INVITE C{seq} after its first final response."""
        if seq <= self._acked or seq in self._unacked:
            self.ua._resend_ack(self, seq)

    def _reinvite_response(
        self,
        request: Request,
        response: Response,
        offer: bytes | None,
        on_response: ResponseCallback | None,
        retry_on_491: bool,
        again: tuple[bytes, str | None, tuple[tuple[str, str], ...]],
    ) -> None:
        seq = request.cseq.seq
        if 200 <= response.status < 300:
            if seq <= self._acked or seq in self._unacked:
                # A retransmitted 2xx: the same ACK again (§13.2.2.4).
                self.ua._resend_ack(self, seq)
                return
            if self._invite_out is request:
                self._invite_out = None
            if self.is_terminated:
                # Ended meanwhile: ACK, then the BYE already went out.
                self.ua._send_ack(self, request, self.dialog.create_ack(request))
                return
            self.dialog.receive_response("INVITE", response)
            self._accept_2xx(request, response, offer)
            if on_response is not None:
                on_response(response)
            return
        if response.status < 200:
            if on_response is not None:
                on_response(response)
            return
        if self._invite_out is request:
            self._invite_out = None
        if offer is not None:
            # §14.1: a failed re-INVITE leaves the session as it was.
            self.dialog.offer_answer.withdraw()
        if response.status == 491 and retry_on_491 and not self.is_terminated:
            self._schedule_retry(again, on_response)
            return
        if on_response is not None:
            on_response(response)
        self._check_dialog_failure(response)

    def _schedule_retry(
        self,
        again: tuple[bytes, str | None, tuple[tuple[str, str], ...]],
        on_response: ResponseCallback | None,
    ) -> None:
        # RFC 3261 §14.1: the owner of the Call-ID (the UAC of the dialog)
        # waits 2.1-4 s, the other side 0-2 s, in units of 10 ms.  The
        # ranges scale with T1 so tests with a small T1 stay quick.
        scale = self.ua.timers.t1 / 0.5
        if self.dialog.is_uac:
            delay = self.ua.rng.randint(210, 400) / 100
        else:
            delay = self.ua.rng.randint(0, 200) / 100
        body, content_type, headers = again

        def retry() -> None:
            self._retry = None
            if self.is_terminated:
                return
            try:
                self.reinvite(body, content_type, headers, on_response)
            except (RequestPending, OfferAnswerError):
                # The peer's re-INVITE won the race and is still running:
                # wait again.
                self._schedule_retry(again, on_response)

        log.info(
            "491 to re-INVITE: retrying in {delay}s",
            delay=delay * scale,
            call_id=self.dialog.call_id,
        )
        self._retry = self.ua.clock.callLater(delay * scale, retry)

    def _accept_2xx(self, invite: Request, response: Response, offer: bytes | None) -> None:
        """A first 2xx to an INVITE of ours in this dialog: offer/answer, ACK."""
        oa = self.dialog.offer_answer
        sdp = _sdp_of(response)
        seq = invite.cseq.seq
        if oa.expects_answer_from(Party.REMOTE):
            if sdp is not None:
                oa.answer(Party.REMOTE, sdp)
            else:
                log.warn("2xx to INVITE lacks the answer to our offer", call_id=self.dialog.call_id)
                oa.withdraw()
        elif sdp is not None and offer is None and not oa.offer_outstanding:
            # §13.2.1: no offer in the INVITE, so the 2xx has one and the
            # ACK must carry the answer: the application sends it (ack()).
            oa.offer(Party.REMOTE, OfferCarrier.RESPONSE_2XX, sdp)
            self._unacked[seq] = (invite, response)
            return
        self.ua._send_ack(self, invite, self.dialog.create_ack(invite))

    def ack(self, body: bytes = b"", content_type: str | None = None) -> None:
        """
        ACK a 2xx that carried an offer, with the answer in ``body`` (RFC
        3261 §13.2.1).  Later copies of that 2xx get the same ACK.

        @raise ValueError: no 2xx is waiting for an ACK from the application.
        """
        if not self._unacked:
            raise ValueError("no 2xx is waiting to be ACKed")
        seq = min(self._unacked)
        invite, _ = self._unacked.pop(seq)
        oa = self.dialog.offer_answer
        answer = body if is_sdp(content_type or SDP_CONTENT_TYPE, body) else None
        if oa.expects_answer_from(Party.LOCAL):
            if answer is not None:
                oa.answer(Party.LOCAL, answer)
            else:
                oa.withdraw()
        self.ua._send_ack(self, invite, self.dialog.create_ack(invite, body, content_type))
        if self._bye_when_acked:
            self._send_bye()

    def bye(self, headers: Iterable[tuple[str, str]] = ()) -> None:
        """
        End the session (RFC 3261 §15.1.1).  The session is terminated at
        once; as UAS, the BYE waits for the ACK of our 2xx (or for its
        timeout), as §15 requires.  Does nothing on a terminated session.

        @raise DialogError: as UAS on an early dialog (reject the call instead).
        """
        if self.is_terminated:
            return
        if not self.dialog.is_uac and self.dialog.state is DialogState.EARLY:
            # §15: the callee must not BYE an early dialog.
            raise DialogError("the callee ends an early dialog by rejecting the INVITE")
        self._extra_bye_headers = tuple(headers)
        self._end("local-bye", send_bye=True)

    def _retransmit_2xx(self, response: Response, source: object) -> None:
        """UAS: start retransmitting ``response`` until its ACK (§13.3.1.4)."""
        if self._retransmitter is not None:
            # A new INVITE came, so the peer had our previous 2xx: its ACK
            # was lost or is late; stop waiting for it.
            self._retransmitter.stop()
        self._retransmitter = _TwoXXRetransmitter(self, response, source)

    def _check_alive(self) -> None:
        if self.is_terminated:
            raise DialogError("the session is terminated")

    def _check_dialog_failure(self, response: Response) -> None:
        # §12.2.1.2: 481 or 408 to a request in the dialog ends it; after a
        # 408 the peer may still think it is up, so say BYE.
        if response.status == 481:
            self._end("remote-481", send_bye=False)
        elif response.status == 408:
            self._end("timeout", send_bye=True)

    def _settle_local_offer(self, response: Response) -> None:
        oa = self.dialog.offer_answer
        if not oa.expects_answer_from(Party.REMOTE):
            return
        sdp = _sdp_of(response)
        if 200 <= response.status < 300 and sdp is not None:
            oa.answer(Party.REMOTE, sdp)
        else:
            oa.withdraw()

    # -- ending --------------------------------------------------------------

    def _no_ack(self) -> None:
        """§13.3.1.4: no ACK for our 2xx within 64*T1: end with a BYE."""
        self._retransmitter = None
        log.warn("no ACK for 2xx within 64*T1: ending the session", call_id=self.dialog.call_id)
        if self._bye_when_acked:
            self._send_bye()
            return
        self._end("no-ack", send_bye=True)

    def _end(self, reason: str, send_bye: bool) -> None:
        """Terminate the session once: forget it, stop its timers, tell the app."""
        if self.is_terminated:
            return
        self.termination_reason = reason
        self.dialog.terminate()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        waiting_for_ack = self._retransmitter is not None and send_bye and reason != "no-ack"
        if waiting_for_ack:
            # §15: the callee must not BYE before the ACK (or its timeout):
            # keep retransmitting, BYE when the ACK comes.
            self._bye_when_acked = True
        else:
            if self._retransmitter is not None:
                self._retransmitter.stop()
                self._retransmitter = None
            self.ua._forget_session(self)
        if send_bye and not waiting_for_ack:
            if self._unacked:
                # The caller must ACK a 2xx before its BYE: an ACK without
                # an answer is the best we can do.
                self._bye_when_acked = True
                while self._unacked:
                    self.ack()
            else:
                self._send_bye()
        self._report_terminated(reason)

    def _send_bye(self) -> None:
        self._bye_when_acked = False
        if self._retransmitter is not None:
            self._retransmitter.stop()
            self._retransmitter = None
        self.ua._forget_session(self)
        bye = self.dialog.create_request("BYE", headers=self._extra_bye_headers)

        def responded(response: Response) -> None:
            if response.status >= 300:
                log.info(
                    "BYE answered {status}", status=response.status, call_id=self.dialog.call_id
                )

        self.ua._send_in_dialog(self, bye, responded)

    def _report_terminated(self, reason: str) -> None:
        if self._reported:
            return
        self._reported = True
        self.ua._notify(self.handler.session_terminated, self, reason)


# ---------------------------------------------------------------------------
# UAS: incoming requests


class IncomingRequest:
    """
    A request received inside a session (re-INVITE, UPDATE, INFO, ...) or
    outside any dialog (OPTIONS, MESSAGE...), for the application to answer
    with L{respond}.

    @ivar request: the request.
    @ivar session: its L{Session}, or None outside a dialog.
    @ivar responded: whether a final response was sent.
    """

    def __init__(
        self, ua: UserAgent, server_tx: ServerTransactionLike, session: Session | None
    ) -> None:
        self.ua = ua
        self.server_tx = server_tx
        self.request = server_tx.request
        self.session = session
        self.responded = False
        self.offer = _sdp_of(self.request)

    @property
    def method(self) -> str:
        """The request method."""
        return self.request.method

    def respond(
        self,
        status: int,
        reason: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Response:
        """
        Answer the request.  For a re-INVITE or UPDATE carrying an offer, a
        2xx must carry the answer; a re-INVITE without an offer needs an
        offer in its 2xx (answered in the ACK).  A 2xx to a re-INVITE is
        retransmitted until ACKed.

        @raise ValueError: after a final response, or when the 2xx lacks
            the SDP offer/answer requires.
        """
        if self.responded:
            raise ValueError("the request was already answered")
        session = self.session
        method = self.request.method
        final = status >= 200
        sdp = body if body and is_sdp(content_type or SDP_CONTENT_TYPE, body) else None
        if session is not None and method in ("INVITE", "UPDATE") and final:
            oa = session.dialog.offer_answer
            if 200 <= status < 300:
                if self.offer is not None:
                    if sdp is None:
                        raise ValueError(
                            f"a 2xx to an {method} with an offer must carry the answer"
                        )
                    oa.answer(Party.LOCAL, sdp)
                elif method == "INVITE":
                    if sdp is None:
                        raise ValueError("a 2xx to a re-INVITE without offer must carry an offer")
                    oa.offer(Party.LOCAL, OfferCarrier.RESPONSE_2XX, sdp)
            elif self.offer is not None:
                oa.withdraw()
        response = self.ua._build_response(
            self.request,
            status,
            reason,
            # §8.2.6.2: a response outside a dialog gets our tag.
            to_tag=new_tag() if self.request.to.tag is None else None,
            contact=session is not None and method in ("INVITE", "UPDATE") and status < 300,
            body=body,
            content_type=content_type,
            headers=headers,
        )
        if final:
            self.responded = True
            if session is not None and session._reinvite_in is self:
                session._reinvite_in = None
                session._invite_in = None
        self.server_tx.respond(response)
        if session is not None and method == "INVITE" and 200 <= status < 300:
            session._retransmit_2xx(response, self.server_tx.source)
        return response


class IncomingCall:
    """
    A new INVITE (outside any dialog) for the application: answer it with
    L{provisional}, L{accept} or L{reject}.

    @ivar request: the INVITE.
    @ivar offer: its SDP offer, or None (then L{accept} must carry an offer).
    @ivar state: a L{CallState}.
    @ivar session: the L{Session}, once a dialog-creating response was sent.
    @ivar handler: the L{ISessionHandler} the application chose.
    """

    def __init__(self, ua: UserAgent, server_tx: ServerTransactionLike) -> None:
        self.ua = ua
        self.server_tx = server_tx
        self.request = server_tx.request
        self.offer = _sdp_of(self.request)
        self.local_tag = new_tag()
        self.state = CallState.PROCEEDING
        self.session: Session | None = None
        self.handler: ISessionHandler = SessionHandlerBase()

    def __repr__(self) -> str:
        return f"<IncomingCall {self.state.value} call_id={self.request.call_id!r}>"

    @property
    def is_pending(self) -> bool:
        """Whether the INVITE still waits for a final response."""
        return self.state is CallState.PROCEEDING

    def _ensure_session(self, state: DialogState) -> Session:
        if self.session is None:
            dialog = Dialog.from_uas(
                self.request, self.local_tag, self.ua.contact_for(self.request), state
            )
            source = self.server_tx.source
            if self.ua.pin_flows and isinstance(source, Source):
                # Our requests in this dialog go back the INVITE's way (docs/security.md).
                dialog.flow = source_flow(source, dialog.remote_target)
            if self.offer is not None:
                dialog.offer_answer.offer(Party.REMOTE, OfferCarrier.INVITE, self.offer)
            self.session = Session(self.ua, dialog, self.handler, self.request)
            self.session._invite_in = self.request
            self.ua._add_session(self.session)
        return self.session

    def _check_pending(self) -> None:
        if not self.is_pending:
            raise ValueError(f"the INVITE was already answered ({self.state.value})")

    def provisional(
        self,
        status: int = 180,
        reason: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Response:
        """
        Send a 1xx.  Above 100 it carries our tag and creates an early
        dialog (RFC 3261 §12.1.1).  A body is early media, not an answer
        (unreliable provisionals carry no offer/answer here).
        """
        self._check_pending()
        if not 100 <= status <= 199:
            raise ValueError(f"{status} is not provisional")
        dialog_creating = status > 100
        if dialog_creating:
            self._ensure_session(DialogState.EARLY)
        response = self.ua._build_response(
            self.request,
            status,
            reason,
            to_tag=self.local_tag if dialog_creating else None,
            contact=dialog_creating,
            record_route=dialog_creating,
            body=body,
            content_type=content_type,
            headers=headers,
        )
        self.server_tx.respond(response)
        return response

    def accept(
        self,
        body: bytes = b"",
        content_type: str | None = SDP_CONTENT_TYPE,
        headers: Iterable[tuple[str, str]] = (),
        status: int = 200,
    ) -> Session:
        """
        Answer with a 2xx (RFC 3261 §13.3.1.4): the answer to the INVITE's
        offer, or our offer if it had none.  The 2xx is retransmitted until
        the ACK comes; L{ISessionHandler.session_confirmed} then fires.

        @return: the confirmed L{Session}.
        @raise ValueError: without the SDP offer/answer requires.
        """
        self._check_pending()
        if not 200 <= status <= 299:
            raise ValueError(f"{status} is not a success status")
        sdp = body if body and is_sdp(content_type, body) else None
        if sdp is None:
            raise ValueError("a 2xx to an INVITE must carry an answer or an offer")
        session = self._ensure_session(DialogState.CONFIRMED)
        session.dialog.state = DialogState.CONFIRMED
        oa = session.dialog.offer_answer
        if self.offer is not None:
            oa.answer(Party.LOCAL, sdp)
        else:
            oa.offer(Party.LOCAL, OfferCarrier.RESPONSE_2XX, sdp)
        response = self.ua._build_response(
            self.request,
            status,
            None,
            to_tag=self.local_tag,
            contact=True,
            record_route=True,
            body=body,
            content_type=content_type,
            headers=headers,
        )
        self.state = CallState.ANSWERED
        session._invite_in = None
        self.ua._incoming.pop(self.server_tx, None)
        self.server_tx.respond(response)
        session._retransmit_2xx(response, self.server_tx.source)
        return session

    def reject(
        self,
        status: int = 486,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Response:
        """Answer with a 300-699 (RFC 3261 §13.3.1.3); any early dialog ends."""
        self._check_pending()
        if not 300 <= status <= 699:
            raise ValueError(f"{status} is not a failure status")
        self.state = CallState.CANCELLED if status == 487 else CallState.FAILED
        return self._finish_failed(status, reason, headers)

    def _finish_failed(
        self, status: int, reason: str | None, headers: Iterable[tuple[str, str]]
    ) -> Response:
        response = self.ua._build_response(
            self.request, status, reason, to_tag=self.local_tag, headers=headers
        )
        self.ua._incoming.pop(self.server_tx, None)
        if self.session is not None:
            self.session._invite_in = None
            self.session.dialog.terminate()
            self.ua._forget_session(self.session)
        self.server_tx.respond(response)
        return response

    def _cancelled(self) -> None:
        """§9.2: CANCEL matched the INVITE: answer it 487 and tell the app."""
        if not self.is_pending:
            return
        self.state = CallState.CANCELLED
        self._finish_failed(487, None, ())
        self.ua._notify(self.handler.call_cancelled, self)


# ---------------------------------------------------------------------------
# UAC: outgoing calls


class OutgoingCall:
    """
    An INVITE we sent to create a session (RFC 3261 §13.2).  Events go to
    ``handler``: L{ISessionHandler.call_provisional} for each 1xx (with the
    early L{Session} when the 1xx had a To tag), L{ISessionHandler.call_answered}
    for the first 2xx, L{ISessionHandler.call_failed} for a final failure
    (a CANCEL that made it end reports 487).

    @ivar request: the INVITE.
    @ivar state: a L{CallState}.
    @ivar session: the answered L{Session}, once a 2xx came.
    """

    # A leg keeps its OutgoingCall for the whole call: no per-instance dict.
    __slots__ = (
        "ua", "_request", "_invite", "call_id", "destination", "flow", "handler", "state",
        "session", "offer", "_transaction", "_early", "_forks", "_provisional_seen",
        "_cancel_requested", "_cancel_sent", "_finished", "_timer",
    )

    def __init__(
        self,
        ua: UserAgent,
        request: Request,
        destination: Destination,
        handler: ISessionHandler,
        flow: Destination | None = None,
    ) -> None:
        self.ua = ua
        #: The next hop of every request in this call's dialogs (None: §12.2.1.1's).
        self.flow = flow
        #: The INVITE; once answered, only as the bytes sent (see L{request}).
        self._request: Request | None = request
        self._invite: bytes = b""
        self.call_id = request.call_id
        self.destination = destination
        self.handler = handler
        self.state = CallState.CALLING
        self.session: Session | None = None
        self.offer = _sdp_of(request)
        self._transaction: ClientTransactionLike | None = None
        self._early: dict[str | None, Session] = {}
        self._forks: dict[str | None, Session] = {}
        self._provisional_seen = False
        self._cancel_requested = False
        self._cancel_sent = False
        self._finished = False
        self._timer: IDelayedCall | Lingering | None = None

    def __repr__(self) -> str:
        return f"<OutgoingCall {self.state.value} call_id={self.call_id!r}>"

    @property
    def request(self) -> Request:
        """
        The INVITE.  Once answered the call keeps it only as the bytes sent, for the
        64*T1 it still collects 2xx from other forks (§13.2.2.4): at a call rate R the
        parsed messages would make R*32 s of INVITEs stay in memory.  It is parsed again
        in the rare event a fork answers too (the same INVITE, a new object each time).
        """
        request = self._request
        if request is not None:
            return request
        parsed = parse_message(self._invite)
        assert isinstance(parsed, Request)
        return parsed

    def _start(self) -> None:
        self._transaction = self.ua.transactions.send_request(
            self.request, self.destination, self._response
        )

    def cancel(self) -> bool:
        """
        Cancel the call (RFC 3261 §9.1).  The CANCEL goes out once a
        provisional response has arrived (at once if one has).  A 2xx that
        crosses it is ACKed and BYEd; the handler gets
        L{ISessionHandler.call_failed} with a 487 either way.

        @return: False if the call was already answered or over.
        """
        if self.state not in (CallState.CALLING, CallState.PROCEEDING) or self._cancel_requested:
            return False
        self._cancel_requested = True
        if self._provisional_seen:
            self._send_cancel()
        return True

    def _send_cancel(self) -> None:
        if self._cancel_sent or self._transaction is None:
            return
        self._cancel_sent = True
        cancel = self._transaction.cancel_request()
        self.ua.transactions.send_request(cancel, self._transaction.destination, _ignore)
        # §9.1: without a final response 64*T1 after the CANCEL, consider
        # the INVITE cancelled.
        self._set_timer(self.ua.timers.timeout, self._cancel_timeout)

    def _cancel_timeout(self) -> None:
        self._timer = None
        if self.state in (CallState.CALLING, CallState.PROCEEDING):
            # §9.1: destroy the INVITE client transaction (one in "proceeding"
            # has no timer of its own).
            if self._transaction is not None:
                self._transaction.terminate()
            self._failed(make_response(self.request, 487))

    def _set_timer(self, delay: float, fired: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = self.ua.clock.callLater(delay, fired)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- responses -----------------------------------------------------------

    def _response(self, response: Response) -> None:
        try:
            status = response.status
            if status < 200:
                self._provisional(response)
            elif status < 300:
                self._success(response)
            else:
                self._failure(response)
        except (HeaderParseError, DialogError) as e:
            log.warn(
                "unusable response {status} to INVITE: {error}",
                status=response.status,
                error=str(e),
                call_id=self.call_id,
            )

    def _provisional(self, response: Response) -> None:
        if self.state not in (CallState.CALLING, CallState.PROCEEDING):
            return
        self.state = CallState.PROCEEDING
        self._provisional_seen = True
        session = None
        if response.status > 100 and response.to.tag is not None:
            session = self._early.get(response.to.tag)
            if session is None:
                session = self._new_session(response)
                self._early[response.to.tag] = session
            else:
                session.dialog._refresh_target(response)
        if self._cancel_requested:
            self._send_cancel()
            return
        self.ua._notify(self.handler.call_provisional, self, response, session)

    def _new_session(self, response: Response) -> Session:
        dialog = Dialog.from_uac(self.request, response, self.ua.contact_for(self.request))
        # Early dialogs and other forks' 2xx too: their ACK and BYE go the INVITE's way.
        dialog.flow = self.flow
        if self.offer is not None:
            dialog.offer_answer.offer(Party.LOCAL, OfferCarrier.INVITE, self.offer)
        session = Session(self.ua, dialog, self.handler, self.request)
        session._invite_out = self.request
        self.ua._add_session(session)
        return session

    def _known_2xx_session(self, tag: str | None) -> Session | None:
        """The session a 2xx with To tag ``tag`` was already handled for."""
        if self.session is not None and self.session.dialog.remote_tag == tag:
            return self.session
        return self._forks.get(tag)

    def _success(self, response: Response) -> None:
        tag = response.to.tag
        known = self._known_2xx_session(tag)
        if known is not None:
            # A 2xx retransmission: the same ACK again (§13.2.2.4).
            self.ua._resend_ack(known, response.cseq.seq)
            return
        early = self._early.pop(tag, None)
        if early is None or early.is_terminated:
            session = self._new_session(response)
        else:
            session = early
            session.dialog.confirm(response)
        session._invite_out = None
        crossed_cancel = self._cancel_requested and self.state in (
            CallState.CALLING,
            CallState.PROCEEDING,
        )
        if (
            self.session is not None
            or crossed_cancel
            or self.state in (CallState.FAILED, CallState.CANCELLED)
            or (early is not None and early.is_terminated)
        ):
            # Another fork answered first, the call already failed, our
            # CANCEL crossed this 2xx, or the application BYEd this early
            # dialog: ACK it, then BYE (§13.2.2.4, §15), without events.
            self._forks[tag] = session
            session._reported = True
            self.ua._send_ack(session, self.request, session.dialog.create_ack(self.request))
            session._end("cancelled" if crossed_cancel else "fork", send_bye=True)
            if self.state in (CallState.CALLING, CallState.PROCEEDING):
                # The INVITE is over (a 2xx is final) without a session the
                # application wants: report it as terminated by us.
                self.state = CallState.CANCELLED
                self._finish()
                self.ua._notify(self.handler.call_failed, self, make_response(self.request, 487))
            return
        self.session = session
        self.state = CallState.ANSWERED
        invite = self.request
        session._accept_2xx(invite, response, self.offer)
        self._invite = invite.serialize()
        self._request = None
        # §13.2.2.4: keep collecting (ACKing, BYEing) 2xx from other forks
        # for 64*T1.
        self._cancel_timer()
        self._timer = self.ua._linger(self._finish)
        self.ua._notify(self.handler.call_answered, self, session, response)

    def _failure(self, response: Response) -> None:
        if self.state not in (CallState.CALLING, CallState.PROCEEDING):
            return
        self._failed(response)

    def _failed(self, response: Response) -> None:
        self.state = CallState.CANCELLED if self._cancel_requested else CallState.FAILED
        self._finish()
        self.ua._notify(self.handler.call_failed, self, response)

    def _finish(self) -> None:
        """The INVITE is over: early dialogs that never got a 2xx end too (§13.2.2.4)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for session in self._early.values():
            session._invite_out = None
            session.dialog.terminate()
            self.ua._forget_session(session)
        self._early.clear()
        if not self._finished:
            self._finished = True
            self.ua._outgoing.discard(self)


def _ignore(response: Response) -> None:
    """Response callback for requests whose answer changes nothing (CANCEL)."""


# ---------------------------------------------------------------------------
# Default handlers


@implementer(ISessionHandler)
class SessionHandlerBase:
    """
    An L{ISessionHandler} that ignores events and answers in-dialog
    requests conservatively: INFO 200, OPTIONS 200, an UPDATE or re-INVITE
    without offer with the last local SDP, offers 488, others 501.
    Subclass it and override what you need.
    """

    # Subclasses may have __slots__ of their own (one handler per call leg).
    __slots__ = ()

    def call_provisional(
        self, call: OutgoingCall, response: Response, session: Session | None
    ) -> None:
        """A 1xx arrived."""

    def call_answered(self, call: OutgoingCall, session: Session, response: Response) -> None:
        """The first 2xx arrived."""

    def call_failed(self, call: OutgoingCall, response: Response) -> None:
        """The INVITE failed."""

    def call_cancelled(self, call: IncomingCall) -> None:
        """The caller cancelled."""

    def session_confirmed(self, session: Session, ack: Request) -> None:
        """The ACK for our 2xx arrived."""

    def request_received(self, session: Session, request: IncomingRequest) -> None:
        """Answer an in-dialog request."""
        method = request.method
        if method in ("INFO", "OPTIONS"):
            request.respond(200)
        elif method in ("INVITE", "UPDATE"):
            if request.offer is not None:
                request.respond(488)
            elif method == "UPDATE":
                request.respond(200)
            else:
                local = session.dialog.offer_answer.local_sdp
                if local is None:
                    request.respond(488)
                else:
                    request.respond(200, body=local, content_type=SDP_CONTENT_TYPE)
        else:
            request.respond(501)

    def session_terminated(self, session: Session, reason: str) -> None:
        """The session ended."""


def default_precheck(request: Request) -> Response | None:
    """
    The RFC 3261 §8.2.1-§8.2.3 checks of L{clicktodial.sip.precheck.uas_precheck}
    for the methods this core handles: 501, 416, 420, 415 or None.
    """
    return uas_precheck(request, ALLOWED_METHODS, SUPPORTED_OPTIONS, ACCEPTED_TYPES)


# ---------------------------------------------------------------------------
# The core


@implementer(ITransactionUser)
class UserAgent:
    """
    The user-agent core: L{ITransactionUser} of a transaction layer.

    Build the layer with the core as its user, or build the core first and
    L{attach} the layer::

        ua = UserAgent(clock, handler, contact=URI("sip", None, "127.0.0.1", 5060))
        ua.attach(TransactionLayer(clock, transport, ua, timers))

    @ivar clock: the injected clock.
    @ivar handler: the L{IIncomingCallHandler} for new INVITEs and
        out-of-dialog requests.
    @ivar contact: the Contact URI we put in dialog-creating messages, or
        None to build one from the transport's local address.
    @ivar timers: T1/T2/T4 (2xx retransmission, 491 retry, fork window);
        the layer's when not given.
    @ivar rng: the random source for the §14.1 retry delay.
    @ivar precheck: the RFC 3261 §8.2.1-§8.2.3 checks run on each new
        request (L{default_precheck} unless given; None for none): returns
        the rejection to send, or None to go on.
    @ivar pin_flows: whether every dialog is pinned to the flow that set it
        up (docs/security.md, "What a phone can steer: nothing"): the
        requests and ACKs of a dialog we INVITEd go where the INVITE went (or
        to the C{flow} given to L{invite}), those of a dialog a peer INVITEd
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
        self._transactions = transactions
        self._sessions: dict[DialogID, Session] = {}
        self._contacts: dict[tuple[str, str, int], URI] = {}
        self._outgoing: set[OutgoingCall] = set()
        self._incoming: dict[ServerTransactionLike, IncomingCall] = {}
        # §8.2.2.2: (From tag, Call-ID, CSeq, method) of requests without To
        # tag -> (branch, expiry timer).
        #: §8.2.2.2 merged requests: the top Via branch of each new request, by
        #: (From tag, Call-ID, CSeq number, method), for 64*T1.
        self._recent: dict[tuple[str | None, str, int, str], str | None] = {}
        #: The 64*T1 windows (merged requests, other forks' 2xx) on one reactor timer,
        #: and the 64*T1+T4 an ACK is kept for copies of its 2xx on another: by delay.
        self._lingering: dict[float, LingerQueue] = {}

    # -- wiring --------------------------------------------------------------

    def attach(self, transactions: TransactionLayerLike) -> None:
        """Send through ``transactions`` (the layer whose user we are)."""
        self._transactions = transactions

    @property
    def transactions(self) -> TransactionLayerLike:
        """The transaction layer (L{attach} it first)."""
        if self._transactions is None:
            raise RuntimeError("UserAgent.attach() the transaction layer first")
        return self._transactions

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
        return list(self._sessions.values())

    @property
    def active_count(self) -> int:
        """Sessions, calls in progress and merge-detection entries held: 0 when idle."""
        return len(self._sessions) + len(self._outgoing) + len(self._incoming) + len(self._recent)

    def find_session(self, dialog_id: DialogID) -> Session | None:
        """The session with this dialog ID, if alive."""
        return self._sessions.get(dialog_id)

    def _add_session(self, session: Session) -> None:
        self._sessions[session.id] = session

    def _forget_session(self, session: Session) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]

    def _notify(self, callback: Callable[..., None], *args: object) -> None:
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
        """A fresh Call-ID for a dialog of ours (L{invite} takes one, so that a caller can
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
    ) -> OutgoingCall:
        """
        Start a call: send an INVITE (RFC 3261 §13.2.1) to ``request_uri``
        (through the pre-loaded ``route``, e.g. an outbound proxy), with an
        SDP offer in ``body`` or none (the 2xx then brings the offer and the
        application answers with L{Session.ack}).

        @param destination: where to send it; by default from the first
            route or the Request-URI (host, port, transport parameter).
        @param flow: where every request of the dialogs this INVITE creates
            goes (early, confirmed and other forks' alike: ACK, BYE,
            re-INVITE...), whatever the answers' Contact and Record-Route
            say; by default the INVITE's destination when the core pins flows
            (L{pin_flows}), else the §12.2.1.1 next hop.
        @return: the L{OutgoingCall}; its events go to ``handler``.
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
        call = OutgoingCall(self, request, destination, handler, flow)
        self._outgoing.add(call)
        log.info("INVITE {uri}", uri=str(request_uri), call_id=call_id)
        call._start()
        return call

    def _send_in_dialog(
        self, session: Session, request: Request, on_response: ResponseCallback
    ) -> None:
        self.transactions.send_request(request, session.dialog.destination(), on_response)

    def _send_ack(self, session: Session, invite: Request, ack: Request) -> None:
        """Send the ACK for a 2xx (RFC 3261 §13.2.2.4: by the core, not a transaction)."""
        seq = invite.cseq.seq
        # An older ACK is not kept (a held call keeps one per leg): the UAS got it before
        # it could answer this INVITE (it refuses a re-INVITE that comes before the
        # previous ACK with 500, §14.2), so it sends no more copies.
        latest = seq >= session._acked
        self.transactions.send_ack(ack, session.dialog.destination())
        if latest:
            # As sent: with the Via (and branch) the transaction layer gave it.
            session._acked, session._ack = seq, ack.serialize()
            # The UAS retransmits its 2xx for 64*T1 at most (§13.3.1.4); a copy may
            # then still be in the network for T4: after that the ACK answers nothing
            # more, and a held call need not keep it.
            timers = self.timers
            self._linger(partial(self._forget_ack, session, seq), timers.timeout + timers.t4)

    def _forget_ack(self, session: Session, seq: int) -> None:
        if session._acked == seq:
            session._ack = None

    def _resend_ack(self, session: Session, seq: int) -> None:
        data = session._ack
        if data is None or seq != session._acked:
            return
        try:
            ack = parse_message(data)
        except MessageParseError as e:  # our own bytes: not expected
            log.warn("cannot re-send an ACK: {error}", error=str(e))
            return
        if isinstance(ack, Request):
            # The same ACK, Via branch included (§13.2.2.4).
            self.transactions.send_ack(ack, session.dialog.destination())

    def send_response_direct(self, response: Response, source: object) -> None:
        """Re-send a 2xx outside its transaction (RFC 3261 §13.3.1.4)."""
        self.transactions.transmit_response(response, source)

    # -- UAS: building responses --------------------------------------------

    def _build_response(
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
        server_tx.respond(self._build_response(request, status, reason, to_tag=new_tag()))

    def _reply(
        self, server_tx: ServerTransactionLike, status: int, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        request = server_tx.request
        # Responses to requests outside a dialog need a To tag (§8.2.6.2).
        to_tag = None if request.to.tag is not None else new_tag()
        server_tx.respond(
            self._build_response(request, status, None, to_tag=to_tag, headers=headers)
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
            self._notify(self.handler.request_received, incoming)

    def _merged(self, request: Request) -> bool:
        key = (request.from_.tag, request.call_id, request.cseq.seq, request.method)
        branch = request.top_via.branch
        if key in self._recent:
            return self._recent[key] != branch
        # Remember it as long as its server transaction can live (64*T1).
        self._recent[key] = branch
        self._linger(partial(self._recent.pop, key, None))
        return False

    def _linger(self, fired: Callable[[], object], delay: float | None = None) -> Lingering:
        """Call C{fired} after C{delay}, 64*T1 by default (see C{_lingering})."""
        if delay is None:
            delay = self.timers.timeout
        queue = self._lingering.get(delay)
        if queue is None:
            queue = self._lingering[delay] = LingerQueue(self.clock, delay)
        return queue.call_later(fired)

    def _new_call(self, server_tx: ServerTransactionLike) -> None:
        call = IncomingCall(self, server_tx)
        self._incoming[server_tx] = call
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
            if session._invite_out is not None:
                # §14.2: our own re-INVITE is in progress: glare.
                self._reply(server_tx, 491)
                return
            if session._invite_in is not None:
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
            session._invite_in = request
            session._reinvite_in = incoming
        self._notify(session.handler.request_received, session, incoming)

    def _remote_bye(self, session: Session) -> None:
        """§15.1.2: BYE received: end the session (487 to a pending INVITE)."""
        for call in list(self._incoming.values()):
            if call.session is session and call.is_pending:
                call.state = CallState.CANCELLED
                call._finish_failed(487, None, ())
        session._end("remote-bye", send_bye=False)

    def cancel_received(self, server_tx: ServerTransactionLike) -> None:
        """A CANCEL matched an INVITE server transaction (ITransactionUser, §9.2)."""
        call = self._incoming.get(server_tx)
        if call is not None:
            call._cancelled()
            return
        # A re-INVITE can be cancelled too (§9.2): reject it with 487 (its
        # offer is withdrawn; the application's later answer is refused).
        for session in self._sessions.values():
            pending = session._reinvite_in
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
            retransmitter = session._retransmitter
            if retransmitter is None or retransmitter.cseq != request.cseq.seq:
                return  # a retransmitted ACK, or one for an old 2xx
            retransmitter.stop()
            session._retransmitter = None
            oa = session.dialog.offer_answer
            if oa.expects_answer_from(Party.REMOTE):
                answer = _sdp_of(request)
                if answer is not None:
                    oa.answer(Party.REMOTE, answer)
                else:
                    log.warn("ACK lacks the answer to our offer", call_id=request.call_id)
                    oa.withdraw()
            if session._bye_when_acked:
                session._send_bye()
                return
            self._notify(session.handler.session_confirmed, session, request)
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
                self._resend_ack(session, response.cseq.seq)
            else:
                log.info("stray 2xx for no dialog dropped", call_id=response.call_id)
        except HeaderParseError as e:
            log.warn("bad stray response: {error}", error=str(e))
