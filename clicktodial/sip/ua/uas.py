"""
The UAS side of the user-agent core (RFC 3261 §8.2, §13.3): requests and
INVITEs we receive, for the application to answer.
"""

from __future__ import annotations

from collections.abc import Iterable

from clicktodial.sip.address import Source
from clicktodial.sip.dialog import Dialog, DialogState, source_flow
from clicktodial.sip.interfaces import ISessionHandler
from clicktodial.sip.message import Response, new_tag
from clicktodial.sip.sdp import SDP_CONTENT_TYPE, OfferCarrier, Party, is_sdp
from clicktodial.sip.ua.handlers import SessionHandlerBase
from clicktodial.sip.ua.session import Session
from clicktodial.sip.ua.shared import CallState, ServerTransactionLike, UACore, sdp_of

__all__ = ["IncomingCall", "IncomingRequest"]


class IncomingRequest:
    """
    A request received inside a session (re-INVITE, UPDATE, INFO, ...) or
    outside any dialog (OPTIONS, MESSAGE...), for the application to answer
    with :func:`respond`.

    :ivar request: the request.
    :ivar session: its :class:`Session`, or None outside a dialog.
    :ivar responded: whether a final response was sent.
    """

    def __init__(
        self, ua: UACore, server_tx: ServerTransactionLike, session: Session | None
    ) -> None:
        self.ua = ua
        self.server_tx = server_tx
        self.request = server_tx.request
        self.session = session
        self.responded = False
        self.offer = sdp_of(self.request)

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

        :raises ValueError: after a final response, or when the 2xx lacks
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
        response = self.ua.build_response(
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
            if session is not None:
                session.invite_answered(self)
        self.server_tx.respond(response)
        if session is not None and method == "INVITE" and 200 <= status < 300:
            session.retransmit_2xx(response, self.server_tx.source)
        return response


class IncomingCall:
    """
    A new INVITE (outside any dialog) for the application: answer it with
    :func:`provisional`, :func:`accept` or :func:`reject`.

    :ivar request: the INVITE.
    :ivar offer: its SDP offer, or None (then :func:`accept` must carry an offer).
    :ivar state: a :class:`CallState`.
    :ivar session: the :class:`Session`, once a dialog-creating response was sent.
    :ivar handler: the :class:`ISessionHandler` the application chose.
    """

    def __init__(self, ua: UACore, server_tx: ServerTransactionLike) -> None:
        self.ua = ua
        self.server_tx = server_tx
        self.request = server_tx.request
        self.offer = sdp_of(self.request)
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
            self.session = Session(self.ua, dialog, self.handler)
            self.session.invite_received(self.request)
            self.ua.add_session(self.session)
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
        response = self.ua.build_response(
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
        the ACK comes; :meth:`ISessionHandler.session_confirmed` then fires.

        :return: the confirmed :class:`Session`.
        :raises ValueError: without the SDP offer/answer requires.
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
        response = self.ua.build_response(
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
        session.invite_answered()
        self.ua.incoming_finished(self.server_tx)
        self.server_tx.respond(response)
        session.retransmit_2xx(response, self.server_tx.source)
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
        response = self.ua.build_response(
            self.request, status, reason, to_tag=self.local_tag, headers=headers
        )
        self.ua.incoming_finished(self.server_tx)
        if self.session is not None:
            self.session.abandon_early()
        self.server_tx.respond(response)
        return response

    def cancel_received(self) -> None:
        """§9.2: CANCEL matched the INVITE: answer it 487 and tell the app."""
        if not self.is_pending:
            return
        self.state = CallState.CANCELLED
        self._finish_failed(487, None, ())
        self.ua.notify(self.handler.call_cancelled, self)

    def bye_received(self) -> None:
        """§15.1.2: a BYE in the early dialog: the INVITE still pending gets 487."""
        if self.is_pending:
            self.state = CallState.CANCELLED
            self._finish_failed(487, None, ())
