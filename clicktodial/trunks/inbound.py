"""
The trust boundary of a trunk (docs/security.md, "SIP trunks"): requests arriving from a
provider's addresses are never routed anywhere.

A :class:`TrunkInboundGuard` sits between the SIP transport and the transaction layer (an
:class:`~clicktodial.sip.interfaces.IMessageHandler` wrapping another). A request from a
trunk's address that would start something new (outside a dialog: no To tag) gets a 403,
sent statelessly (RFC 3261 §8.2.7: nothing to remember; a retransmission gets the same
answer) before any transaction, registrar, UA core or call controller sees it. So an
INVITE from the provider can never become a call to a phone or back out through a trunk
(no open relay), and a REGISTER from it never becomes a binding.

What passes: responses (to our REGISTER, OPTIONS and calls), ACK and CANCEL (they only
match transactions we already have), and requests inside a dialog (To tag: BYE and
re-INVITE of calls we placed through the trunk), which the UA core matches to its dialogs
or answers 481.
"""

from __future__ import annotations

from twisted.logger import Logger
from zope.interface import implementer

from clicktodial.interfaces import ITrunkRegistry
from clicktodial.sip.address import Destination, Source
from clicktodial.sip.headers import HeaderParseError
from clicktodial.sip.interfaces import IMessageHandler, ISendFailureHandler
from clicktodial.sip.message import Request, Response, make_response, new_tag
from clicktodial.sip.ua import TransactionLayerLike

__all__ = ["TrunkInboundGuard"]

log = Logger(namespace="clicktodial.trunks.inbound")


@implementer(IMessageHandler, ISendFailureHandler)
class TrunkInboundGuard:
    """
    :param inner: the handler requests go to when they pass (the transaction layer).
    :param transactions: sends the stateless 403 (``transmit_response``).
    :param server: the ``Server`` header of the 403.
    """

    def __init__(
        self,
        inner: IMessageHandler,
        trunks: ITrunkRegistry,
        transactions: TransactionLayerLike,
        server: str | None = None,
    ) -> None:
        self.inner = inner
        self._send_failures = ISendFailureHandler(inner, None)
        self.trunks = trunks
        self.transactions = transactions
        self.server = server

    def request_received(self, request: Request, source: object) -> None:
        if (
            isinstance(source, Source)
            and request.method not in ("ACK", "CANCEL")
            and not self._in_dialog(request)
        ):
            trunk = self.trunks.screen_inbound(source.remote_host)
            if trunk is not None:
                self._refuse(request, source, trunk)
                return
        self.inner.request_received(request, source)

    def response_received(self, response: Response, source: object) -> None:
        self.inner.response_received(response, source)

    def request_failed(self, request: Request, destination: Destination, reason: str) -> None:
        # Requests that never left are the inner handler's (the transaction layer's) news.
        if self._send_failures is not None:
            self._send_failures.request_failed(request, destination, reason)

    @staticmethod
    def _in_dialog(request: Request) -> bool:
        try:
            return request.to.tag is not None
        except (HeaderParseError, ValueError):
            return False

    def _refuse(self, request: Request, source: Source, trunk: str) -> None:
        log.info(
            "refused {method} from trunk {trunk} ({peer}): inbound = refuse",
            method=request.method,
            trunk=trunk,
            peer=source.peer,
            call_id=request.headers.get("Call-ID"),
        )
        try:
            response = make_response(
                request, 403, "Forbidden (Not Accepted From This Trunk)", to_tag=new_tag()
            )
        except (HeaderParseError, ValueError):
            return  # not even a response can be built: dropped
        if self.server:
            response.headers.add("Server", self.server)
        self.transactions.transmit_response(response, source)
