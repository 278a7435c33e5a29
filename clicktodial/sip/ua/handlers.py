"""The default :class:`ISessionHandler` of the user-agent core."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import implementer

from clicktodial.sip.interfaces import ISessionHandler
from clicktodial.sip.message import Request, Response
from clicktodial.sip.sdp import SDP_CONTENT_TYPE

if TYPE_CHECKING:
    from clicktodial.sip.ua.session import Session
    from clicktodial.sip.ua.uac import OutgoingCall
    from clicktodial.sip.ua.uas import IncomingCall, IncomingRequest

__all__ = ["SessionHandlerBase"]


@implementer(ISessionHandler)
class SessionHandlerBase:
    """
    An :class:`ISessionHandler` that ignores events and answers in-dialog
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
