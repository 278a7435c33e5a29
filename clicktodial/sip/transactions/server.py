"""
What the two server transactions (RFC 3261 §17.2) share: where responses go,
the last response (re-sent to retransmitted requests, kept as the octets sent),
and how a failure (Timer H, transport error) reaches the transaction user.
"""

from __future__ import annotations

from collections.abc import Callable

from clicktodial.sip.message import Request, Response
from clicktodial.sip.transactions.base import (
    State,
    Transaction,
    TransactionHost,
    log,
    parsed_again,
)

__all__ = ["FailureCallback", "ServerTransaction"]

#: Called with a short reason (``"timer H"``, ``"transport error"``) when a
#: server transaction ends without its response having been delivered.
FailureCallback = Callable[["ServerTransaction", str], None]


class ServerTransaction(Transaction):
    """
    A server transaction for ``request``.  The transaction user answers it with
    :func:`respond`; retransmitted requests never reach the user again.

    The last response sent is kept as the octets the transport wrote (``bytes``, which
    the garbage collector does not track), not as the parsed message: a transaction
    lingering in ``completed`` only re-sends those octets to a retransmitted request, and
    at 3,000 REGISTERs/s Timer J keeps ~100,000 transactions; their responses, each with
    its header lists and parsed From, To, Via, CSeq, were most of what the collector
    scanned.  A retransmission (rare) parses the octets again and sends that message:
    the same octets, to the same place (the Via and ``source``).

    :ivar source: where the request came from, handed back to
        ``ISIPTransport.send_response`` with every response.
    :ivar last_status: the status of the response most recently sent; 0 before the
        first (and after a 408 to a non-INVITE, which is never sent, RFC 4320).
    :ivar on_failure: optional; called when the transaction fails (Timer H:
        no ACK for a 300-699; transport error while sending a response).
    """

    __slots__ = ("source", "last_status", "_last_sent", "on_failure")

    source: object
    last_status: int
    _last_sent: bytes | None
    on_failure: FailureCallback | None

    def __init__(
        self,
        host: TransactionHost,
        request: Request,
        source: object,
        branch: str,
        reliable: bool,
        key: tuple[object, ...],
        state: State,
    ) -> None:
        super().__init__(host, request, branch, reliable, key, state)
        self.source = source
        self.last_status = 0
        self._last_sent = None
        self.on_failure = None

    def start(self) -> None:
        """Start the machine's timers (the request was just received)."""
        raise NotImplementedError

    def respond(self, response: Response) -> None:
        """
        Send ``response`` (built from ``self.request``, e.g. with
        ``make_response``) through the machine.  Responses the machine cannot
        send in its current state are logged and dropped.
        """
        raise NotImplementedError

    def receive_retransmission(self, request: Request) -> None:
        """The request was received again (§17.2.3 matched it here)."""
        raise NotImplementedError

    # -- helpers --------------------------------------------------------------

    def _send(self, response: Response) -> bool:
        """
        Send ``response`` and keep it as the octets sent (see the class); on a transport
        error, fail the transaction.
        """
        self.last_status = response.status
        sent = self._host.transmit_response(response, self.source)
        # As the transport wrote it: serialize() gives back the octets it remembers.
        self._last_sent = response.serialize()
        if sent:
            return True
        self._fail("transport error")
        return False

    def _forget_last(self) -> None:
        """Nothing is to be re-sent (a 408 to a non-INVITE, RFC 4320 §4.1)."""
        self.last_status = 0
        self._last_sent = None

    def _resend_last(self) -> None:
        data = self._last_sent
        if data is None:
            return
        response = parsed_again(data)
        if isinstance(response, Response):
            self._host.counts.responses_sent += 1
            self._send(response)

    def _call_id(self) -> str | None:
        """The Call-ID, for logs: from the request, or the last response once it is let go."""
        request = self._request
        if request is not None:
            return request.headers.get("Call-ID")
        data = self._last_sent
        message = None if data is None else parsed_again(data)  # (a rare failure's log)
        return None if message is None else message.headers.get("Call-ID")

    def _fail(self, reason: str) -> None:
        """§17.2.4 / §17.2.1 Timer H: terminate and tell the TU."""
        self._terminate()
        log.info(
            "{method} server transaction failed: {reason}",
            method=self.method,
            reason=reason,
            call_id=self._call_id(),
        )
        if self.on_failure is not None:
            try:
                self.on_failure(self, reason)
            except Exception:
                log.failure("on_failure callback raised")

    def _refuse(self, response: Response) -> None:
        log.warn(
            "{method} server transaction in state {state} cannot send {status}: dropped",
            method=self.method,
            state=self.state.value,
            status=response.status,
            call_id=self._call_id(),
        )
