"""
The INVITE client transaction: RFC 3261 §17.1.1 as amended by RFC 6026
(a 2xx moves it to ``accepted`` under Timer M instead of terminating it).

Transition table (input -> action, next state); inputs not listed for a
state cannot occur there (their timers were cancelled on leaving it)::

    calling     1xx             pass up; stop A, B          -> proceeding
    calling     2xx             pass up; Timer M            -> accepted
    calling     300-699         ACK, pass up; Timer D       -> completed
    calling     Timer A         retransmit; A doubles       -> calling
    calling     Timer B         local 408 up                -> terminated
    calling     transport error local 503 up                -> terminated
    proceeding  1xx             pass up                     -> proceeding
    proceeding  2xx             pass up; Timer M            -> accepted
    proceeding  300-699         ACK, pass up; Timer D       -> completed
    proceeding  transport error local 503 up                -> terminated
    completed   1xx             discard                     -> completed
    completed   2xx             pass up (another fork)      -> completed
    completed   300-699         re-send the ACK             -> completed
    completed   transport error                             -> terminated
    completed   Timer D                                     -> terminated
    accepted    1xx, 300-699    discard                     -> accepted
    accepted    2xx             pass up (TU ACKs it)        -> accepted
    accepted    Timer M                                     -> terminated
"""

from __future__ import annotations

from collections.abc import Callable

from clicktodial.sip.message import Request, Response
from clicktodial.sip.transactions.base import State, parsed_again
from clicktodial.sip.transactions.client import ClientTransaction

__all__ = ["InviteClientTransaction"]

CALLING = State.CALLING
PROCEEDING = State.PROCEEDING
COMPLETED = State.COMPLETED
ACCEPTED = State.ACCEPTED
TERMINATED = State.TERMINATED

# Inputs of this machine.
PROVISIONAL = "1xx"
SUCCESS = "2xx"
FAILURE = "300-699"
TIMER_A = "Timer A"
TIMER_B = "Timer B"
TIMER_D = "Timer D"
TIMER_M = "Timer M"
TRANSPORT_ERROR = "transport error"

_CLASS = {1: PROVISIONAL, 2: SUCCESS}


class InviteClientTransaction(ClientTransaction):
    """
    RFC 3261 §17.1.1 / RFC 6026 §8.4 INVITE client transaction.

    In ``completed`` (Timer D: 32 s over UDP) all it still does is send its ACK again for
    a retransmitted 300-699, so it keeps that ACK as the octets sent (``bytes``: the
    garbage collector does not track them), not as a parsed message; a retransmission
    (rare) parses them again and sends the same octets.
    """

    __slots__ = ("_ack",)

    _ack: bytes | None

    #: Inputs this machine knows, for the completeness test and the docs.
    INPUTS = (PROVISIONAL, SUCCESS, FAILURE, TIMER_A, TIMER_B, TIMER_D, TIMER_M, TRANSPORT_ERROR)

    def start(self) -> None:
        self._ack = None
        timers = self._host.timers
        self.state = CALLING
        if not self.reliable:
            # §17.1.1.2: Timer A starts at T1 and doubles with no cap.
            self._start_retransmit(timers.t1, InviteClientTransaction._timer_a)
        self._start_timeout(timers.timeout, InviteClientTransaction._timer_b)
        if not self._transmit():
            # Report the failure after send_request() returned, so the TU
            # holds the transaction when its callback runs.
            self._cancel_timers()
            self._start_timeout(0, InviteClientTransaction._transport_error)

    def receive_response(self, response: Response) -> None:
        kind = _CLASS.get(response.status // 100, FAILURE)
        self._TABLE[(self.state, kind)](self, response)

    def transport_failed(self) -> None:
        if self.state in (CALLING, PROCEEDING):
            self._transport_error()

    # -- actions --------------------------------------------------------------

    def _provisional(self, response: Response) -> None:
        if self.state is CALLING:
            # §17.1.1.2: stop retransmitting; Timer B only guards "calling".
            self._enter(PROCEEDING)
        self._deliver(response)

    def _success(self, response: Response) -> None:
        # RFC 6026 §8.4: stay in "accepted" for 64*T1 so that 2xx
        # retransmissions reach the TU (which ACKs each) instead of being stray.
        self._enter(ACCEPTED)
        self._request = None  # let go (see Transaction): Timer M passes 2xx copies up
        self._start_timeout(self._host.timers.timeout, InviteClientTransaction._timer_m)
        self._deliver(response)

    def _failure(self, response: Response) -> None:
        # §17.1.1.3: the transaction ACKs 300-699 itself.
        ack = self._build_ack(response)
        self._enter(COMPLETED)
        self._request = None  # let go (see Transaction): Timer D re-sends the ACK
        if self.reliable:
            self._send_ack(ack)
            self._deliver(response)
            self._terminate()  # Timer D is zero for reliable transports
            return
        self._start_timeout(self._host.timers.timer_d, InviteClientTransaction._timer_d)
        if self._send_ack(ack):
            # As the transport wrote it (its Via stamped): serialize() remembers the octets.
            self._ack = ack.serialize()
        self._deliver(response)

    def _resend_ack(self, response: Response) -> None:
        # §17.1.1.2: a retransmitted final response gets the ACK again.
        counts = self._host.counts
        counts.responses_received += 1
        data = self._ack
        ack = None if data is None else parsed_again(data)
        if isinstance(ack, Request):
            counts.requests_sent += 1
            self._send_ack(ack)

    def _pass_up(self, response: Response) -> None:
        self._deliver(response)

    def _pass_up_again(self, response: Response) -> None:
        # RFC 6026 §8.4: "accepted" passes 2xx retransmissions (or other forks' 2xx) up.
        self._host.counts.responses_received += 1
        self._deliver(response)

    def _discard(self, response: Response) -> None:
        pass

    def _timer_a(self) -> None:
        self._retransmit = None
        if self.state is not CALLING:  # pragma: no cover - cancelled on leaving
            return
        interval = self._interval * 2
        self._start_retransmit(interval, InviteClientTransaction._timer_a)
        self._host.counts.requests_sent += 1
        if not self._transmit():
            self._transport_error()

    def _timer_b(self) -> None:
        self._timeout = None
        # §17.1.1.2: Timer B in "calling" reports a timeout (408) to the TU.
        self._terminate()
        self._deliver(self._local_response(408))

    def _timer_d(self) -> None:
        self._timeout = None
        self._terminate()

    def _timer_m(self) -> None:
        self._timeout = None
        self._terminate()

    def _transport_error(self) -> None:
        # §17.1.4: a transport failure is a 503 to the TU.
        previous = self.state
        self._terminate()
        if previous in (CALLING, PROCEEDING):
            self._deliver(self._local_response(503))

    # -- helpers --------------------------------------------------------------

    def _send_ack(self, ack: Request) -> bool:
        """Send ``ack``; on a transport error, terminate (``False``)."""
        if self._host.transmit_request(ack, self.destination):
            return True
        self._transport_error()
        return False

    def _build_ack(self, response: Response) -> Request:
        """§17.1.1.3: the ACK for a 300-699 response to this INVITE."""
        original = self.request
        headers: list[tuple[str, str]] = [("Via", original.headers.get_all("Via")[0])]
        for route in original.headers.get_all("Route"):
            headers.append(("Route", route))
        headers.append(("Max-Forwards", "70"))
        headers.append(("From", original.headers.get("From") or ""))
        headers.append(("To", response.headers.get("To") or ""))
        headers.append(("Call-ID", original.call_id))
        headers.append(("CSeq", f"{original.cseq.seq} ACK"))
        return Request("ACK", original.uri, headers)

    _TABLE: dict[tuple[State, str], Callable[[InviteClientTransaction, Response], None]] = {
        (CALLING, PROVISIONAL): _provisional,
        (CALLING, SUCCESS): _success,
        (CALLING, FAILURE): _failure,
        (PROCEEDING, PROVISIONAL): _provisional,
        (PROCEEDING, SUCCESS): _success,
        (PROCEEDING, FAILURE): _failure,
        (COMPLETED, PROVISIONAL): _discard,
        (COMPLETED, SUCCESS): _pass_up,
        (COMPLETED, FAILURE): _resend_ack,
        (ACCEPTED, PROVISIONAL): _discard,
        (ACCEPTED, SUCCESS): _pass_up_again,
        (ACCEPTED, FAILURE): _discard,
        (TERMINATED, PROVISIONAL): _discard,
        (TERMINATED, SUCCESS): _discard,
        (TERMINATED, FAILURE): _discard,
    }
