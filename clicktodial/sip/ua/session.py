"""
Sessions (RFC 3261 §12-§15): one dialog created by an INVITE, as the
application drives it, with the UAS's 2xx retransmission (§13.3.1.4), the
UAC's ACK of each 2xx (§13.2.2.4) and re-INVITEs with their glare retry
(§14).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from clicktodial.sip.dialog import Dialog, DialogError, DialogID, DialogState
from clicktodial.sip.interfaces import IClientCredentials, ISessionHandler
from clicktodial.sip.message import Request, Response
from clicktodial.sip.parser import MessageParseError, parse_message
from clicktodial.sip.sdp import SDP_CONTENT_TYPE, OfferAnswerError, OfferCarrier, Party, is_sdp
from clicktodial.sip.transactions import Timers
from clicktodial.sip.ua.auth import CHALLENGES, DigestAnswerer, authorized_copy
from clicktodial.sip.ua.shared import RequestPending, ResponseCallback, UACore, sdp_of
from clicktodial.timers import Lingering, TimerQueues

if TYPE_CHECKING:
    from clicktodial.sip.ua.uas import IncomingRequest

__all__ = ["Session"]

log = Logger(namespace="clicktodial.sip.ua")


#: The empty ``Session._unacked`` every session shares (never written to: a session
#: that must keep a 2xx makes its own dict).
_NONE_UNACKED: dict[int, tuple[Request, Response]] = {}


class _TwoXXRetransmitter:
    """
    RFC 3261 §13.3.1.4: the UAS core re-sends its 2xx to an INVITE at T1,
    doubling up to T2, until the ACK arrives; after 64*T1 without ACK it
    gives up (``give_up``) and the session is ended.  Both timers are entries of the
    transaction layer's guard queues (one reactor timer for all), calling functions of
    this class.
    """

    __slots__ = (
        "cseq",
        "_queues",
        "_t2",
        "_resend",
        "_give_up",
        "_interval",
        "_retransmit",
        "_deadline",
    )

    def __init__(
        self,
        queues: TimerQueues,
        timers: Timers,
        cseq: int,
        resend: Callable[[], None],
        give_up: Callable[[], None],
    ) -> None:
        self.cseq = cseq
        self._queues = queues
        self._t2 = timers.t2
        self._resend = resend
        self._give_up = give_up
        self._interval = timers.t1
        self._retransmit: Lingering | None = queues.call_later_on(
            timers.t1, self, _TwoXXRetransmitter._fire
        )
        self._deadline: Lingering | None = queues.call_later_on(
            timers.timeout, self, _TwoXXRetransmitter._timeout
        )

    def _fire(self) -> None:
        self._interval = min(self._interval * 2, self._t2)
        self._retransmit = self._queues.call_later_on(
            self._interval, self, _TwoXXRetransmitter._fire
        )
        self._resend()

    def _timeout(self) -> None:
        self._deadline = None
        self.stop()
        self._give_up()

    def stop(self) -> None:
        """Stop retransmitting (ACK arrived, or the session ended)."""
        # Lingering.cancel() does nothing to a timer that fired.
        if self._retransmit is not None:
            self._retransmit.cancel()
        if self._deadline is not None:
            self._deadline.cancel()
        self._retransmit = self._deadline = None


class _ReinviteOut:
    """
    What a re-INVITE of ours waits with for its responses.  Once a final response is
    handled it keeps the CSeq number only: the client transaction lingers 64*T1 in
    ``accepted`` to pass up copies of the 2xx, which need just their ACK again, and at a
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
        #: The session whose ``_reinvite_copy`` / ``_reinvite_response`` the responses go
        #: to (one reference, where two bound methods cost 128 bytes for the 64*T1).
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

    def resent(self, request: Request) -> None:
        """The re-INVITE went again with credentials (§22.2) as ``request``."""
        pending = self.pending
        if pending is not None:
            self.seq = request.cseq.seq
            self.pending = (request, *pending[1:])

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


class _ForgetAck:
    """
    :meth:`Session.forget_ack` for one CSeq, as a lingering timer calls it (``fire``, with
    this as the timer's owner): 56 bytes where a ``partial`` of a bound method takes ~250
    (its own empty keyword dict, argument tuple and method object), for every ACK of the
    64*T1 + T4 after it is sent.
    """

    __slots__ = ("session", "seq")

    def __init__(self, session: Session, seq: int) -> None:
        self.session = session
        self.seq = seq

    def fire(self) -> None:
        self.session.forget_ack(self.seq)


class Session:
    """
    One dialog created by an INVITE, as the application drives it: send
    requests inside it, re-INVITE, ACK a 2xx that carried an offer, BYE.

    :ivar ua: the :class:`UserAgent`.
    :ivar dialog: the :class:`Dialog` (state, ID, route set, offer/answer).
    :ivar handler: the :class:`ISessionHandler` receiving this session's events.
    """

    __slots__ = (
        "ua",
        "dialog",
        "handler",
        "credentials",
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
        self,
        ua: UACore,
        dialog: Dialog,
        handler: ISessionHandler,
        credentials: IClientCredentials | None = None,
    ) -> None:
        self.ua = ua
        self.dialog = dialog
        self.handler = handler
        #: What answers a 401/407 to a request we send in the dialog (§22.2).
        self.credentials = credentials
        #: UAC: the highest INVITE CSeq number ACKed (a 2xx for it or below is a copy)
        #: and its ACK as sent, re-sent for each copy of that 2xx. Only the latest ACK is
        #: kept, as bytes (a few hundred, where the message's objects take kilobytes):
        #: parsed again in the rare event of a copy.
        self._acked = 0
        self._ack: bytes | None = None
        #: UAC: the 2xx (per CSeq) the application still has to ACK (it
        #: carried an offer: the ACK carries the answer).
        #: The shared :data:`_NONE_UNACKED` while there is none (most of a call).
        self._unacked: dict[int, tuple[Request, Response]] = _NONE_UNACKED
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

        :return: the request sent.
        :raises OfferAnswerError: an UPDATE offer while one is outstanding.
        :raises ValueError: for INVITE, ACK, CANCEL, BYE (use their methods).
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

        self._send(request, responded)
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
        application answers with :func:`ack`).

        On 491 the re-INVITE is retried after the randomized delay of §14.1
        (``retry_on_491``), else the 491 goes to ``on_response``.  Other
        final responses go to ``on_response``; a 2xx without an offer is
        ACKed here.

        :return: the re-INVITE sent.
        :raises RequestPending: another INVITE of this dialog is in progress.
        :raises OfferAnswerError: an offer is outstanding.
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
            self,
            request,
            offer,
            on_response,
            retry_on_491,
            (body, content_type, headers),
        )

        def resent(again: Request) -> None:
            self._invite_out = again
            waiting.resent(again)

        self._send(request, waiting.responded, resent)
        return request

    def _reinvite_copy(self, seq: int) -> None:
        """Another 2xx to our re-INVITE ``seq`` after its first final response."""
        if seq <= self._acked or seq in self._unacked:
            self.resend_ack(seq)

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
                self.resend_ack(seq)
                return
            if self._invite_out is request:
                self._invite_out = None
            if self.is_terminated:
                # Ended meanwhile: ACK, then the BYE already went out.
                self.send_ack(request, self.dialog.create_ack(request))
                return
            self.dialog.receive_response("INVITE", response)
            self.accept_2xx(request, response, offer)
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

    def accept_2xx(self, invite: Request, response: Response, offer: bytes | None) -> None:
        """A first 2xx to an INVITE of ours in this dialog: offer/answer, ACK."""
        oa = self.dialog.offer_answer
        sdp = sdp_of(response)
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
            if self._unacked is _NONE_UNACKED:
                self._unacked = {}
            self._unacked[seq] = (invite, response)
            return
        self.send_ack(invite, self.dialog.create_ack(invite))

    def ack(self, body: bytes = b"", content_type: str | None = None) -> None:
        """
        ACK a 2xx that carried an offer, with the answer in ``body`` (RFC
        3261 §13.2.1).  Later copies of that 2xx get the same ACK.

        :raises ValueError: no 2xx is waiting for an ACK from the application.
        """
        if not self._unacked:
            raise ValueError("no 2xx is waiting to be ACKed")
        seq = min(self._unacked)
        invite, _ = self._unacked.pop(seq)
        if not self._unacked:
            # Even an empty dict of its own is 64 bytes for the whole call (one emptied
            # by pop keeps its table: 224 bytes).
            self._unacked = _NONE_UNACKED
        oa = self.dialog.offer_answer
        answer = body if is_sdp(content_type or SDP_CONTENT_TYPE, body) else None
        if oa.expects_answer_from(Party.LOCAL):
            if answer is not None:
                oa.answer(Party.LOCAL, answer)
            else:
                oa.withdraw()
        self.send_ack(invite, self.dialog.create_ack(invite, body, content_type))
        if self._bye_when_acked:
            self._send_bye()

    def bye(self, headers: Iterable[tuple[str, str]] = ()) -> None:
        """
        End the session (RFC 3261 §15.1.1).  The session is terminated at
        once; as UAS, the BYE waits for the ACK of our 2xx (or for its
        timeout), as §15 requires.  Does nothing on a terminated session.

        :raises DialogError: as UAS on an early dialog (reject the call instead).
        """
        if self.is_terminated:
            return
        if not self.dialog.is_uac and self.dialog.state is DialogState.EARLY:
            # §15: the callee must not BYE an early dialog.
            raise DialogError("the callee ends an early dialog by rejecting the INVITE")
        self._extra_bye_headers = tuple(headers)
        self._end("local-bye", send_bye=True)

    def retransmit_2xx(self, response: Response, source: object) -> None:
        """UAS: start retransmitting ``response`` until its ACK (§13.3.1.4)."""
        if self._retransmitter is not None:
            # A new INVITE came, so the peer had our previous 2xx: its ACK
            # was lost or is late; stop waiting for it.
            self._retransmitter.stop()
        ua = self.ua
        self._retransmitter = _TwoXXRetransmitter(
            ua.transactions.guard_timers,
            ua.timers,
            response.cseq.seq,
            partial(ua.send_response_direct, response, source),
            self._no_ack,
        )

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
        sdp = sdp_of(response)
        if 200 <= response.status < 300 and sdp is not None:
            oa.answer(Party.REMOTE, sdp)
        else:
            oa.withdraw()

    # -- sending -------------------------------------------------------------

    def _send(
        self,
        request: Request,
        on_response: ResponseCallback,
        resent: Callable[[Request], None] | None = None,
    ) -> None:
        """
        Send ``request`` in the dialog.  With :func:`credentials`, a 401/407 is answered
        (§22.2): the request goes again with the next CSeq and the credentials
        (``resent`` is told), and only the last answer reaches ``on_response``.
        """
        destination = self.dialog.destination()
        transactions = self.ua.transactions
        credentials = self.credentials
        if credentials is None:
            transactions.send_request(request, destination, on_response)
            return
        challenges = DigestAnswerer(credentials)
        current = request

        def responded(response: Response) -> None:
            nonlocal current
            if response.status in CHALLENGES and challenges.answerable(response):
                header = challenges.answer(current, response)
                current = authorized_copy(current, self.dialog.next_local_seq(), header)
                log.info(
                    "{method} challenged {status}: sending it again with credentials",
                    method=current.method,
                    status=response.status,
                    call_id=self.dialog.call_id,
                )
                if resent is not None:
                    resent(current)
                transactions.send_request(current, self.dialog.destination(), responded)
                return
            on_response(response)

        transactions.send_request(request, destination, responded)

    def send_ack(self, invite: Request, ack: Request) -> None:
        """Send the ACK for a 2xx (RFC 3261 §13.2.2.4: by the core, not a transaction)."""
        seq = invite.cseq.seq
        # An older ACK is not kept (a held call keeps one per leg): the UAS got it before
        # it could answer this INVITE (it refuses a re-INVITE that comes before the
        # previous ACK with 500, §14.2), so it sends no more copies.
        latest = seq >= self._acked
        ua = self.ua
        ua.transactions.send_ack(ack, self.dialog.destination())
        if latest:
            # As sent: with the Via (and branch) the transaction layer gave it.
            self._acked, self._ack = seq, ack.serialize()
            # The UAS retransmits its 2xx for 64*T1 at most (§13.3.1.4); a copy may
            # then still be in the network for T4: after that the ACK answers nothing
            # more, and a held call need not keep it.
            ua.keep_ack_on(_ForgetAck(self, seq), _ForgetAck.fire)

    def forget_ack(self, seq: int) -> None:
        """No copy of the 2xx to INVITE ``seq`` can come any more: drop its ACK."""
        if self._acked == seq:
            self._ack = None

    def resend_ack(self, seq: int) -> None:
        """A copy of the 2xx to our INVITE ``seq``: the same ACK again (§13.2.2.4)."""
        data = self._ack
        if data is None or seq != self._acked:
            return
        try:
            ack = parse_message(data)
        except MessageParseError as e:  # our own bytes: not expected
            log.warn("cannot re-send an ACK: {error}", error=str(e))
            return
        if isinstance(ack, Request):
            # The same ACK, Via branch included (§13.2.2.4).
            self.ua.transactions.send_ack(ack, self.dialog.destination())

    # -- INVITE transactions of the dialog, for the core ---------------------

    @property
    def invite_out_pending(self) -> bool:
        """Whether an INVITE we sent in this dialog has no final response yet."""
        return self._invite_out is not None

    @property
    def invite_in_pending(self) -> bool:
        """Whether an INVITE we received in this dialog has no final response yet."""
        return self._invite_in is not None

    @property
    def pending_reinvite(self) -> IncomingRequest | None:
        """The re-INVITE received and not yet answered, if any."""
        return self._reinvite_in

    def invite_sent(self, invite: Request | None) -> None:
        """The dialog-creating ``invite`` waits for its final response (None: it has it)."""
        self._invite_out = invite

    def invite_received(self, invite: Request, reinvite: IncomingRequest | None = None) -> None:
        """``invite`` (a re-INVITE: ``reinvite``, the application's handle) waits for an answer."""
        self._invite_in = invite
        self._reinvite_in = reinvite

    def invite_answered(self, reinvite: IncomingRequest | None = None) -> None:
        """
        The INVITE received got its final response (``reinvite``: only if that is the
        pending re-INVITE).
        """
        if reinvite is None or self._reinvite_in is reinvite:
            self._invite_in = None
            self._reinvite_in = None

    def ack_received(self, ack: Request) -> None:
        """The ACK for a 2xx of ours arrived (§13.3.1.4)."""
        retransmitter = self._retransmitter
        if retransmitter is None or retransmitter.cseq != ack.cseq.seq:
            return  # a retransmitted ACK, or one for an old 2xx
        retransmitter.stop()
        self._retransmitter = None
        oa = self.dialog.offer_answer
        if oa.expects_answer_from(Party.REMOTE):
            answer = sdp_of(ack)
            if answer is not None:
                oa.answer(Party.REMOTE, answer)
            else:
                log.warn("ACK lacks the answer to our offer", call_id=ack.call_id)
                oa.withdraw()
        if self._bye_when_acked:
            self._send_bye()
            return
        self.ua.notify(self.handler.session_confirmed, self, ack)

    def bye_received(self) -> None:
        """§15.1.2: the peer's BYE (already answered 200) ends the session."""
        self._end("remote-bye", send_bye=False)

    def refuse_2xx(self, invite: Request, reason: str) -> None:
        """
        A 2xx created this dialog but the application does not want it (another
        fork answered first, the call failed or was cancelled): ACK it, then BYE
        (§13.2.2.4, §15), without events.
        """
        self._reported = True
        self.send_ack(invite, self.dialog.create_ack(invite))
        self._end(reason, send_bye=True)

    def abandon_early(self) -> None:
        """The INVITE ended without a 2xx for this early dialog: it ends too (§13.2.2.4)."""
        self._invite_out = None
        self._invite_in = None
        self.dialog.terminate()
        self.ua.forget_session(self)

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
            self.ua.forget_session(self)
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
        self.ua.forget_session(self)
        bye = self.dialog.create_request("BYE", headers=self._extra_bye_headers)

        def responded(response: Response) -> None:
            if response.status >= 300:
                log.info(
                    "BYE answered {status}", status=response.status, call_id=self.dialog.call_id
                )

        self._send(bye, responded)

    def _report_terminated(self, reason: str) -> None:
        if self._reported:
            return
        self._reported = True
        self.ua.notify(self.handler.session_terminated, self, reason)
