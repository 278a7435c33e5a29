"""
What the two server transactions (RFC 3261 §17.2) share: where responses go,
the last response (re-sent to retransmitted requests), and how a failure
(Timer H, transport error) reaches the transaction user.
"""

from __future__ import annotations

from collections.abc import Callable

from clicktodial.sip.message import Request, Response
from clicktodial.sip.transactions.base import State, Transaction, TransactionHost, log

__all__ = ["FailureCallback", "ServerTransaction"]

#: Called with a short reason (``"timer H"``, ``"transport error"``) when a
#: server transaction ends without its response having been delivered.
FailureCallback = Callable[["ServerTransaction", str], None]


class ServerTransaction(Transaction):
    """
    A server transaction for ``request``.  The transaction user answers it with
    :func:`respond`; retransmitted requests never reach the user again.

    :ivar source: where the request came from, handed back to
        ``ISIPTransport.send_response`` with every response.
    :ivar last_response: the response most recently sent, if any.
    :ivar on_failure: optional; called when the transaction fails (Timer H:
        no ACK for a 300-699; transport error while sending a response).
    """

    __slots__ = ("source", "last_response", "on_failure")

    source: object
    last_response: Response | None
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
        self.last_response = None
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
        """Send ``response``; on a transport error, fail the transaction."""
        self.last_response = response
        if self._host.transmit_response(response, self.source):
            return True
        self._fail("transport error")
        return False

    def _resend_last(self) -> None:
        if self.last_response is not None:
            self._host.counts.responses_sent += 1
            self._send(self.last_response)

    def _call_id(self) -> str | None:
        """The Call-ID, for logs: from the request, or the last response once it is let go."""
        message = self._request or self.last_response
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
