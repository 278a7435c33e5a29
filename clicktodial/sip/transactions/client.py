"""
What the two client transactions (RFC 3261 §17.1) share: the destination, the
callback that receives responses, local 408/503 responses, and building the
CANCEL (§9.1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from clicktodial.sip.message import Request, Response, make_response
from clicktodial.sip.transactions.base import State, Transaction, TransactionHost, log

if TYPE_CHECKING:
    from clicktodial.sip.address import Destination

__all__ = ["ClientTransaction", "ResponseCallback"]

#: What the transaction user passes to ``send_request``: it receives every
#: response the transaction lets through, and the local 408/503.
ResponseCallback = Callable[[Response], None]


class ClientTransaction(Transaction):
    """
    A client transaction: sends ``request`` to ``destination`` and passes the
    responses it lets through to ``on_response``.

    Subclasses implement the INVITE (§17.1.1) and non-INVITE (§17.1.2) machines.
    """

    __slots__ = ("destination", "on_response")

    destination: Destination
    on_response: ResponseCallback

    def __init__(
        self,
        host: TransactionHost,
        request: Request,
        destination: Destination,
        on_response: ResponseCallback,
        branch: str,
        reliable: bool,
        key: tuple[object, ...],
        state: State,
    ) -> None:
        super().__init__(host, request, branch, reliable, key, state)
        self.destination = destination
        self.on_response = on_response

    def start(self) -> None:
        """Send the request for the first time and start the state's timers."""
        raise NotImplementedError

    def receive_response(self, response: Response) -> None:
        """A response matching this transaction (§17.1.3) arrived."""
        raise NotImplementedError

    def transport_failed(self) -> None:
        """
        The transport reported, after sending, that the request never left
        (RFC 3261 §17.1.4: a transport error): in a state still waiting for
        a response, the machine's "transport error" transition runs.
        """
        raise NotImplementedError

    def terminate(self) -> None:
        """
        Destroy the transaction now, silently: RFC 3261 §9.1, "If no final
        response has been received after 64*T1 seconds [after the CANCEL],
        the client should ... destroy the client transaction handling the
        original request."  An INVITE transaction in ``proceeding`` has no
        timer of its own, so only its user can end it this way.  Nothing is
        passed to ``on_response``; later responses are stray.
        """
        self._terminate()

    def cancel_request(self) -> Request:
        """
        Build the CANCEL for this request (RFC 3261 §9.1): same Request-URI,
        Call-ID, To, From, CSeq number and top Via (so the same branch), the
        same Route set, method CANCEL.  The caller decides when to send it
        (only after a provisional response, §9.1) through
        ``TransactionLayer.send_request``, which keeps the Via it carries.
        """
        original = self.request
        headers: list[tuple[str, str]] = [("Via", original.headers.get_all("Via")[0])]
        for route in original.headers.get_all("Route"):
            headers.append(("Route", route))
        headers.append(("Max-Forwards", "70"))
        headers.append(("From", _required(original, "From")))
        headers.append(("To", _required(original, "To")))
        headers.append(("Call-ID", original.call_id))
        headers.append(("CSeq", f"{original.cseq.seq} CANCEL"))
        return Request("CANCEL", original.uri, headers)

    # -- helpers for the machines --------------------------------------------

    def _transmit(self) -> bool:
        request = self._request
        assert request is not None  # sent only before the final response, kept till then
        return self._host.transmit_request(request, self.destination)

    def _deliver(self, response: Response) -> None:
        """Pass ``response`` to the transaction user; its bugs stay its own."""
        try:
            self.on_response(response)
        except Exception:
            log.failure(
                "transaction user failed handling {status} for {method}",
                status=response.status,
                method=self.method,
                call_id=response.headers.get("Call-ID"),
            )

    def _local_response(self, status: int) -> Response:
        """A response the transaction makes up: 408 (timer B/F), 503 (transport)."""
        return make_response(self.request, status)


def _required(request: Request, name: str) -> str:
    value = request.headers.get(name)
    if value is None:
        raise ValueError(f"request has no {name} header field")
    return value
