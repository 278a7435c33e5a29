"""
The UAC side of the user-agent core (RFC 3261 §13.2, §9.1, §22.2): an
INVITE we sent to create a session, as one transition table.

States: the INVITE client transaction's names where the call follows it
(``calling``, ``proceeding``, RFC 6026 ``accepted``, ``terminated``), §9.1's
CANCEL for the two in between, and the two ways a call that never got a
session ends (``failed``, ``cancelled``)::

    calling         1xx             early dialog; report               -> proceeding
    calling         2xx             confirm; ACK; report; fork window  -> accepted
    calling         300-699         end early dialogs; report          -> failed
    calling         401/407 + creds re-INVITE with credentials         -> calling
    calling         cancel          (§9.1: wait for a 1xx)             -> cancel pending
    cancel pending  1xx             early dialog; send CANCEL; Timer   -> cancelling
    cancel pending  2xx             ACK, BYE; report 487               -> cancelled
    cancel pending  300-699, 401/407  report                           -> cancelled
    proceeding      1xx             early dialog; report               -> proceeding
    proceeding      2xx             confirm; ACK; report; fork window  -> accepted
    proceeding      2xx, ended      (the app BYEd that early dialog)
                                    ACK, BYE; report 487               -> cancelled
    proceeding      300-699         end early dialogs; report          -> failed
    proceeding      401/407 + creds re-INVITE with credentials         -> calling
    proceeding      cancel          send CANCEL; Timer (64*T1)         -> cancelling
    cancelling      1xx             early dialog                       -> cancelling
    cancelling      2xx             ACK, BYE; report 487               -> cancelled
    cancelling      300-699, 401/407  report                           -> cancelled
    cancelling      CANCEL timeout  end the transaction; report 487    -> cancelled
    accepted        2xx (a fork)    ACK, BYE                           -> accepted
    accepted        fork window     end early dialogs                  -> terminated
    any             2xx again       the same ACK again (§13.2.2.4)     -> same
    failed, cancelled, terminated: a 2xx is ACKed and BYEd; the rest is discarded.

Every (state, response input) has a row (see :data:`OutgoingCall.MESSAGE_INPUTS`);
an input without a row (a timer or a call of the application that cannot
happen there) is logged once and counted (``clicktodial_sip_unexpected_inputs``).
The one pending timer (the CANCEL's 64*T1, or the fork window) is a slot
that leaving its state cancels.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from twisted.logger import Logger

from clicktodial.sip.address import Destination
from clicktodial.sip.dialog import Dialog, DialogError
from clicktodial.sip.headers import HeaderParseError
from clicktodial.sip.interfaces import IClientCredentials, ISessionHandler
from clicktodial.sip.message import Request, Response, make_response
from clicktodial.sip.parser import parse_message
from clicktodial.sip.sdp import OfferCarrier, Party
from clicktodial.sip.ua.auth import CHALLENGES, DigestAnswerer, authorized_copy
from clicktodial.sip.ua.session import Session
from clicktodial.sip.ua.shared import CallState, ClientTransactionLike, UACore, sdp_of
from clicktodial.timers import Lingering

__all__ = ["OutgoingCall", "UACState"]

log = Logger(namespace="clicktodial.sip.ua")


class UACState(enum.StrEnum):
    """Where an INVITE of ours is (see the module's table)."""

    CALLING = "calling"
    CANCEL_PENDING = "cancel pending"
    PROCEEDING = "proceeding"
    CANCELLING = "cancelling"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"
    FAILED = "failed"
    CANCELLED = "cancelled"


CALLING = UACState.CALLING
CANCEL_PENDING = UACState.CANCEL_PENDING
PROCEEDING = UACState.PROCEEDING
CANCELLING = UACState.CANCELLING
ACCEPTED = UACState.ACCEPTED
TERMINATED = UACState.TERMINATED
FAILED = UACState.FAILED
CANCELLED = UACState.CANCELLED

#: The public :class:`CallState` of each machine state.
_CALL_STATE = {
    CALLING: CallState.CALLING,
    CANCEL_PENDING: CallState.CALLING,
    PROCEEDING: CallState.PROCEEDING,
    CANCELLING: CallState.PROCEEDING,
    ACCEPTED: CallState.ANSWERED,
    TERMINATED: CallState.ANSWERED,
    FAILED: CallState.FAILED,
    CANCELLED: CallState.CANCELLED,
}

# Inputs: responses to the INVITE, as classified by OutgoingCall._response ...
PROVISIONAL = "1xx"
SUCCESS = "2xx"
SUCCESS_AGAIN = "2xx again"
SUCCESS_ENDED = "2xx, early dialog ended"
FAILURE = "300-699"
CHALLENGE = "401/407 with credentials"
# ... the application's, and the timers'.
CANCEL = "cancel"
CANCEL_TIMEOUT = "CANCEL timeout"
FORK_WINDOW = "fork window end"

Action = Callable[["OutgoingCall", Response | None], None]


#: The empty ``OutgoingCall._early`` / ``_forks`` every INVITE shares (never written to).
_NO_SESSIONS: dict[str | None, Session] = {}


class OutgoingCall:
    """
    An INVITE we sent to create a session (RFC 3261 §13.2).  Events go to
    ``handler``: :meth:`ISessionHandler.call_provisional` for each 1xx (with the
    early :class:`Session` when the 1xx had a To tag), :meth:`ISessionHandler.call_answered`
    for the first 2xx, :meth:`ISessionHandler.call_failed` for a final failure
    (a CANCEL that made it end reports 487).

    :ivar request: the INVITE (the latest, once re-sent with credentials).
    :ivar state: a :class:`CallState`; :func:`machine_state` is the table's state.
    :ivar session: the answered :class:`Session`, once a 2xx came.
    :ivar credentials: what answers a 401/407 (§22.2), or None.
    """

    #: The response inputs: every state has a row for each.
    MESSAGE_INPUTS = (PROVISIONAL, SUCCESS, SUCCESS_AGAIN, SUCCESS_ENDED, FAILURE, CHALLENGE)
    #: Every input of the machine.
    INPUTS = (*MESSAGE_INPUTS, CANCEL, CANCEL_TIMEOUT, FORK_WINDOW)

    # A leg keeps its OutgoingCall for the whole call: no per-instance dict.
    __slots__ = (
        "ua",
        "_request",
        "_invite",
        "call_id",
        "destination",
        "flow",
        "handler",
        "_state",
        "session",
        "offer",
        "credentials",
        "_challenges",
        "_transaction",
        "_early",
        "_forks",
        "_timer",
    )

    def __init__(
        self,
        ua: UACore,
        request: Request,
        destination: Destination,
        handler: ISessionHandler,
        flow: Destination | None = None,
        credentials: IClientCredentials | None = None,
    ) -> None:
        self.ua = ua
        #: The next hop of every request in this call's dialogs (None: §12.2.1.1's).
        self.flow = flow
        #: The INVITE; once answered, only as the bytes sent (see :func:`request`).
        self._request: Request | None = request
        self._invite: bytes = b""
        self.call_id = request.call_id
        self.destination = destination
        self.handler = handler
        self._state = CALLING
        self.session: Session | None = None
        self.offer = sdp_of(request)
        self.credentials = credentials
        self._challenges: DigestAnswerer | None = None
        self._transaction: ClientTransactionLike | None = None
        # The shared _NO_SESSIONS while empty: an OutgoingCall lives 64*T1 after its 2xx
        # (R*32 s of them at a call rate R), an emptied dict of its own keeps its table.
        self._early: dict[str | None, Session] = _NO_SESSIONS
        self._forks: dict[str | None, Session] = _NO_SESSIONS
        #: The one pending timer: the CANCEL's 64*T1, or the fork window.
        self._timer: Lingering | None = None

    def __repr__(self) -> str:
        return f"<OutgoingCall {self._state.value} call_id={self.call_id!r}>"

    @property
    def state(self) -> CallState:
        """Where the call is, in the terms the application uses."""
        return _CALL_STATE[self._state]

    @property
    def machine_state(self) -> UACState:
        """The transition table's state."""
        return self._state

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

    def start(self) -> None:
        """Send the INVITE (the core calls this once)."""
        self._transaction = self.ua.transactions.send_request(
            self.request, self.destination, self._response
        )

    def cancel(self) -> bool:
        """
        Cancel the call (RFC 3261 §9.1).  The CANCEL goes out once a
        provisional response has arrived (at once if one has).  A 2xx that
        crosses it is ACKed and BYEd; the handler gets
        :meth:`ISessionHandler.call_failed` with a 487 either way.

        :return: False if the call was already answered, over, or cancelled.
        """
        before = self._state
        self._handle(CANCEL, None)
        return self._state is not before

    # -- the machine -----------------------------------------------------------

    def _handle(self, event: str, response: Response | None) -> None:
        row = self._TABLE.get((self._state, event))
        if row is None:
            self.ua.count_unexpected("OutgoingCall", self._state.value, event)
            return
        next_state, actions = row
        self._enter(next_state)
        for action in actions:
            action(self, response)

    def _enter(self, state: UACState) -> None:
        if state is self._state:
            return
        self._state = state
        timer = self._timer
        if timer is not None:
            self._timer = None
            if timer.active():
                timer.cancel()

    def _response(self, response: Response) -> None:
        try:
            self._handle(self._classify(response), response)
        except (HeaderParseError, DialogError) as e:
            log.warn(
                "unusable response {status} to INVITE: {error}",
                status=response.status,
                error=str(e),
                call_id=self.call_id,
            )

    def _classify(self, response: Response) -> str:
        status = response.status
        if status < 200:
            return PROVISIONAL
        if status < 300:
            tag = response.to.tag
            if self._known_2xx_session(tag) is not None:
                return SUCCESS_AGAIN
            early = self._early.get(tag)
            if early is not None and early.is_terminated:
                return SUCCESS_ENDED
            return SUCCESS
        if status in CHALLENGES and self.credentials is not None:
            if self._challenges is None:
                self._challenges = DigestAnswerer(self.credentials)
            if self._challenges.answerable(response):
                return CHALLENGE
        return FAILURE

    def _known_2xx_session(self, tag: str | None) -> Session | None:
        """The session a 2xx with To tag ``tag`` was already handled for."""
        if self.session is not None and self.session.dialog.remote_tag == tag:
            return self.session
        return self._forks.get(tag)

    # -- actions ---------------------------------------------------------------

    def _early_dialog(self, response: Response | None) -> None:
        assert response is not None
        tag = response.to.tag
        if response.status > 100 and tag is not None:
            session = self._early.get(tag)
            if session is None:
                if self._early is _NO_SESSIONS:
                    self._early = {}
                self._early[tag] = self._new_session(response)
            else:
                session.dialog.refresh_target(response)

    def _report_provisional(self, response: Response | None) -> None:
        assert response is not None
        tag = response.to.tag
        session = self._early.get(tag) if response.status > 100 and tag is not None else None
        self.ua.notify(self.handler.call_provisional, self, response, session)

    def _new_session(self, response: Response) -> Session:
        request = self.request
        dialog = Dialog.from_uac(request, response, self.ua.contact_for(request))
        # Early dialogs and other forks' 2xx too: their ACK and BYE go the INVITE's way.
        dialog.flow = self.flow
        if self.offer is not None:
            dialog.offer_answer.offer(Party.LOCAL, OfferCarrier.INVITE, self.offer)
        session = Session(self.ua, dialog, self.handler, self.credentials)
        session.invite_sent(request)
        self.ua.add_session(session)
        return session

    def _answer(self, response: Response | None) -> None:
        """The first 2xx: its dialog is the call's session (§13.2.2.4)."""
        assert response is not None
        early = self._early.pop(response.to.tag, None)
        if not self._early:
            self._early = _NO_SESSIONS
        if early is None:
            session = self._new_session(response)
        else:
            session = early
            session.dialog.confirm(response)
        session.invite_sent(None)
        self.session = session
        invite = self.request
        session.accept_2xx(invite, response, self.offer)
        self._invite = invite.serialize()
        self._request = None
        # §13.2.2.4: keep collecting (ACKing, BYEing) 2xx from other forks for 64*T1.
        self._timer = self.ua.linger_on(self, OutgoingCall._fork_window_end)
        self.ua.notify(self.handler.call_answered, self, session, response)

    def _refuse(self, response: Response, reason: str) -> None:
        tag = response.to.tag
        early = self._early.pop(tag, None)
        if early is None or early.is_terminated:
            session = self._new_session(response)
        else:
            session = early
            session.dialog.confirm(response)
        session.invite_sent(None)
        if self._forks is _NO_SESSIONS:
            self._forks = {}
        self._forks[tag] = session
        session.refuse_2xx(self.request, reason)

    def _refuse_fork(self, response: Response | None) -> None:
        """A 2xx nobody wants (another fork answered, the call is over): ACK, BYE."""
        assert response is not None
        self._refuse(response, "fork")

    def _refuse_cancelled(self, response: Response | None) -> None:
        """A 2xx that crossed our CANCEL: ACK, BYE (§9.1, §15)."""
        assert response is not None
        self._refuse(response, "cancelled")

    def _ack_again(self, response: Response | None) -> None:
        assert response is not None
        known = self._known_2xx_session(response.to.tag)
        if known is not None:
            known.resend_ack(response.cseq.seq)

    def _send_cancel(self, response: Response | None) -> None:
        transaction = self._transaction
        if transaction is None:  # pragma: no cover - start() sets it before any input
            return
        cancel = transaction.cancel_request()
        transactions = self.ua.transactions
        transactions.send_request(cancel, transaction.destination, _ignore)
        # §9.1: without a final response 64*T1 after the CANCEL, consider the INVITE
        # cancelled (an entry of the layer's queues: no reactor timer of its own).
        self._timer = transactions.guard_timers.call_later_on(
            self.ua.timers.timeout, self, OutgoingCall._cancel_timeout
        )

    def _cancel_timeout(self) -> None:
        self._timer = None
        self._handle(CANCEL_TIMEOUT, None)

    def _fork_window_end(self) -> None:
        self._timer = None
        self._handle(FORK_WINDOW, None)

    def _end_transaction(self, response: Response | None) -> None:
        # §9.1: destroy the INVITE client transaction (one in "proceeding" has no timer
        # of its own).
        if self._transaction is not None:
            self._transaction.terminate()

    def _retry_with_credentials(self, response: Response | None) -> None:
        """§22.2: the same INVITE again, CSeq+1, with the answer to the challenge."""
        assert response is not None and self._challenges is not None
        request = self.request
        header = self._challenges.answer(request, response)  # _classify made sure it can
        # The early dialogs of the challenged INVITE end with it (§13.2.2.4).
        self._end_early()
        retry = authorized_copy(request, request.cseq.seq + 1, header)
        self._request = retry
        log.info(
            "INVITE challenged {status}: sending it again with credentials",
            status=response.status,
            call_id=self.call_id,
        )
        self.start()

    def _report_failure(self, response: Response | None) -> None:
        assert response is not None
        self.ua.notify(self.handler.call_failed, self, response)

    def _report_487(self, response: Response | None) -> None:
        # The INVITE is over without a session the application wants: report it as
        # terminated by us.
        self.ua.notify(self.handler.call_failed, self, make_response(self.request, 487))

    def _end_early(self) -> None:
        for session in list(self._early.values()):
            session.abandon_early()
        self._early = _NO_SESSIONS

    def _finish(self, response: Response | None) -> None:
        """The INVITE is over: early dialogs that never got a 2xx end too (§13.2.2.4)."""
        self._end_early()
        self.ua.outgoing_finished(self)

    # Every response input has a row in every state; CANCEL_TIMEOUT and FORK_WINDOW only
    # where their timer runs (leaving the state cancels it).
    _TABLE: dict[tuple[UACState, str], tuple[UACState, tuple[Action, ...]]] = {
        (CALLING, PROVISIONAL): (PROCEEDING, (_early_dialog, _report_provisional)),
        (CALLING, SUCCESS): (ACCEPTED, (_answer,)),
        (CALLING, SUCCESS_AGAIN): (CALLING, (_ack_again,)),
        (CALLING, SUCCESS_ENDED): (CANCELLED, (_refuse_fork, _finish, _report_487)),
        (CALLING, FAILURE): (FAILED, (_finish, _report_failure)),
        (CALLING, CHALLENGE): (CALLING, (_retry_with_credentials,)),
        (CALLING, CANCEL): (CANCEL_PENDING, ()),
        (CANCEL_PENDING, PROVISIONAL): (CANCELLING, (_early_dialog, _send_cancel)),
        (CANCEL_PENDING, SUCCESS): (CANCELLED, (_refuse_cancelled, _finish, _report_487)),
        (CANCEL_PENDING, SUCCESS_AGAIN): (CANCEL_PENDING, (_ack_again,)),
        (CANCEL_PENDING, SUCCESS_ENDED): (CANCELLED, (_refuse_cancelled, _finish, _report_487)),
        (CANCEL_PENDING, FAILURE): (CANCELLED, (_finish, _report_failure)),
        (CANCEL_PENDING, CHALLENGE): (CANCELLED, (_finish, _report_failure)),
        (CANCEL_PENDING, CANCEL): (CANCEL_PENDING, ()),
        (PROCEEDING, PROVISIONAL): (PROCEEDING, (_early_dialog, _report_provisional)),
        (PROCEEDING, SUCCESS): (ACCEPTED, (_answer,)),
        (PROCEEDING, SUCCESS_AGAIN): (PROCEEDING, (_ack_again,)),
        (PROCEEDING, SUCCESS_ENDED): (CANCELLED, (_refuse_fork, _finish, _report_487)),
        (PROCEEDING, FAILURE): (FAILED, (_finish, _report_failure)),
        (PROCEEDING, CHALLENGE): (CALLING, (_retry_with_credentials,)),
        (PROCEEDING, CANCEL): (CANCELLING, (_send_cancel,)),
        (CANCELLING, PROVISIONAL): (CANCELLING, (_early_dialog,)),
        (CANCELLING, SUCCESS): (CANCELLED, (_refuse_cancelled, _finish, _report_487)),
        (CANCELLING, SUCCESS_AGAIN): (CANCELLING, (_ack_again,)),
        (CANCELLING, SUCCESS_ENDED): (CANCELLED, (_refuse_cancelled, _finish, _report_487)),
        (CANCELLING, FAILURE): (CANCELLED, (_finish, _report_failure)),
        (CANCELLING, CHALLENGE): (CANCELLED, (_finish, _report_failure)),
        (CANCELLING, CANCEL): (CANCELLING, ()),
        (CANCELLING, CANCEL_TIMEOUT): (CANCELLED, (_end_transaction, _finish, _report_487)),
        (ACCEPTED, PROVISIONAL): (ACCEPTED, ()),
        (ACCEPTED, SUCCESS): (ACCEPTED, (_refuse_fork,)),
        (ACCEPTED, SUCCESS_AGAIN): (ACCEPTED, (_ack_again,)),
        (ACCEPTED, SUCCESS_ENDED): (ACCEPTED, (_refuse_fork,)),
        (ACCEPTED, FAILURE): (ACCEPTED, ()),
        (ACCEPTED, CHALLENGE): (ACCEPTED, ()),
        (ACCEPTED, CANCEL): (ACCEPTED, ()),
        (ACCEPTED, FORK_WINDOW): (TERMINATED, (_finish,)),
        (TERMINATED, PROVISIONAL): (TERMINATED, ()),
        (TERMINATED, SUCCESS): (TERMINATED, (_refuse_fork,)),
        (TERMINATED, SUCCESS_AGAIN): (TERMINATED, (_ack_again,)),
        (TERMINATED, SUCCESS_ENDED): (TERMINATED, (_refuse_fork,)),
        (TERMINATED, FAILURE): (TERMINATED, ()),
        (TERMINATED, CHALLENGE): (TERMINATED, ()),
        (TERMINATED, CANCEL): (TERMINATED, ()),
        (FAILED, PROVISIONAL): (FAILED, ()),
        (FAILED, SUCCESS): (FAILED, (_refuse_fork,)),
        (FAILED, SUCCESS_AGAIN): (FAILED, (_ack_again,)),
        (FAILED, SUCCESS_ENDED): (FAILED, (_refuse_fork,)),
        (FAILED, FAILURE): (FAILED, ()),
        (FAILED, CHALLENGE): (FAILED, ()),
        (FAILED, CANCEL): (FAILED, ()),
        (CANCELLED, PROVISIONAL): (CANCELLED, ()),
        (CANCELLED, SUCCESS): (CANCELLED, (_refuse_fork,)),
        (CANCELLED, SUCCESS_AGAIN): (CANCELLED, (_ack_again,)),
        (CANCELLED, SUCCESS_ENDED): (CANCELLED, (_refuse_fork,)),
        (CANCELLED, FAILURE): (CANCELLED, ()),
        (CANCELLED, CHALLENGE): (CANCELLED, ()),
        (CANCELLED, CANCEL): (CANCELLED, ()),
    }


def _ignore(response: Response) -> None:
    """Response callback for requests whose answer changes nothing (CANCEL)."""
