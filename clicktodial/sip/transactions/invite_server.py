"""
The INVITE server transaction: RFC 3261 §17.2.1 as amended by RFC 6026 (a 2xx
moves it to ``accepted`` under Timer L; the TU retransmits the 2xx and
receives the ACKs).

Transition table (input -> action, next state).  "TU" inputs are responses
passed to :meth:`InviteServerTransaction.respond`; "refuse" logs and drops them::

    proceeding  INVITE again    re-send last provisional    -> proceeding
    proceeding  ACK             discard (no final yet)      -> proceeding
    proceeding  Timer 100       send 100 Trying (TU slow)   -> proceeding
    proceeding  TU 1xx          send                        -> proceeding
    proceeding  TU 2xx          send; Timer L               -> accepted
    proceeding  TU 300-699      send; Timers G, H           -> completed
    proceeding  transport error tell TU                     -> terminated
    completed   INVITE again    re-send final               -> completed
    completed   ACK             absorb; Timer I             -> confirmed
    completed   TU any          refuse                      -> completed
    completed   Timer G         re-send final; G=min(2G,T2) -> completed
    completed   Timer H         tell TU (no ACK)            -> terminated
    completed   transport error tell TU                     -> terminated
    confirmed   INVITE, ACK     absorb                      -> confirmed
    confirmed   TU any          refuse                      -> confirmed
    confirmed   Timer I                                     -> terminated
    accepted    INVITE again    absorb (RFC 6026 §7.1)      -> accepted
    accepted    ACK             pass to TU                  -> accepted
    accepted    TU 2xx          send (TU retransmission)    -> accepted
    accepted    TU 1xx, 3xx-6xx refuse                      -> accepted
    accepted    transport error tell TU                     -> terminated
    accepted    Timer L                                     -> terminated

Timer G runs only on unreliable transports; Timer I is T4 there, zero on
reliable ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clicktodial.sip.message import Request, Response, make_response
from clicktodial.sip.transactions.base import State
from clicktodial.sip.transactions.server import ServerTransaction

__all__ = ["InviteServerTransaction", "TRYING_DELAY"]

PROCEEDING = State.PROCEEDING
COMPLETED = State.COMPLETED
CONFIRMED = State.CONFIRMED
ACCEPTED = State.ACCEPTED
TERMINATED = State.TERMINATED

REQUEST = "INVITE again"
ACK = "ACK"
PROVISIONAL = "TU 1xx"
SUCCESS = "TU 2xx"
FAILURE = "TU 300-699"

#: §17.2.1: send 100 Trying unless the TU answers within 200 ms.
TRYING_DELAY = 0.2


class InviteServerTransaction(ServerTransaction):
    """
    RFC 3261 §17.2.1 / RFC 6026 §8.5-8.7 INVITE server transaction.

    :ivar last_to_tag: the To tag of the response most recently sent (the layer matches
        an RFC 2543 ACK by it, and gives it to the 200 for a CANCEL, §9.2), kept as a
        plain value: the response itself is kept as octets (see ``ServerTransaction``).
    """

    __slots__ = ("last_to_tag",)

    last_to_tag: str | None

    INPUTS = (REQUEST, ACK, PROVISIONAL, SUCCESS, FAILURE)

    def start(self) -> None:
        self.last_to_tag = None
        self.state = PROCEEDING
        # The 100 Trying timer lives in the timeout slot: "proceeding" has
        # no other timer, and every TU response cancels it.
        self._start_timeout(TRYING_DELAY, InviteServerTransaction._timer_trying)

    def respond(self, response: Response) -> None:
        status = response.status
        kind = PROVISIONAL if status < 200 else SUCCESS if status < 300 else FAILURE
        self._TABLE[(self.state, kind)](self, response)

    def receive_retransmission(self, request: Request) -> None:
        self._TABLE[(self.state, REQUEST)](self, request)

    def receive_ack(self, ack: Request) -> bool:
        """
        An ACK matched this transaction.  Returns ``True`` when the transaction
        absorbed it (ACK for a 300-699), ``False`` when it belongs to the TU
        (ACK for a 2xx, RFC 6026 ``accepted``).
        """
        if self.state is ACCEPTED:
            return False
        self._TABLE[(self.state, ACK)](self, ack)
        return True

    # -- actions --------------------------------------------------------------

    def _send(self, response: Response) -> bool:
        self.last_to_tag = response.to.tag
        return super()._send(response)

    def _provisional(self, response: Response) -> None:
        self._cancel_timers()
        self._send(response)

    def _success(self, response: Response) -> None:
        self._enter(ACCEPTED)
        if self._send(response):
            # RFC 6026 §8.7: Timer L keeps the transaction to absorb INVITE
            # retransmissions and route the ACKs to the TU.
            self._start_timeout(self._host.timers.timeout, InviteServerTransaction._timer_l)

    def _failure(self, response: Response) -> None:
        self._enter(COMPLETED)
        if not self._send(response):
            return
        timers = self._host.timers
        if not self.reliable:
            self._start_retransmit(timers.t1, InviteServerTransaction._timer_g)
        self._start_timeout(timers.timeout, InviteServerTransaction._timer_h)

    def _retransmit_2xx(self, response: Response) -> None:
        # RFC 6026 §8.7: 2xx retransmissions from the TU go to the transport.
        self._host.counts.responses_sent += 1
        self._send(response)

    def _resend(self, request: Request) -> None:
        # §17.2.1: a retransmitted INVITE gets the most recent response.
        self._resend_last()

    def _absorb(self, message: Request | Response) -> None:
        pass

    def _absorb_ack(self, ack: Request) -> None:
        # §17.2.1: "confirmed" is there to absorb ACK retransmissions.
        self._host.counts.requests_received += 1

    def _confirm(self, ack: Request) -> None:
        self._enter(CONFIRMED)
        if self.reliable:
            self._terminate()  # Timer I is zero for reliable transports
        else:
            # §17.2.1: absorb ACK retransmissions for T4.  Nothing is sent from here on:
            # let go of the request and of the response's octets (see Transaction); the
            # layer still reads the plain last_status and last_to_tag.
            self._request = None
            self._last_sent = None
            self._start_timeout(self._host.timers.t4, InviteServerTransaction._timer_i)

    def _refuse_response(self, response: Response) -> None:
        self._refuse(response)

    def _timer_trying(self) -> None:
        self._timeout = None
        if self.state is PROCEEDING and self.last_status == 0:
            self._send(make_response(self.request, 100))

    def _timer_g(self) -> None:
        self._retransmit = None
        self._start_retransmit(
            min(self._interval * 2, self._host.timers.t2), InviteServerTransaction._timer_g
        )
        self._resend_last()

    def _timer_h(self) -> None:
        self._timeout = None
        # §17.2.1: no ACK within 64*T1; RFC 3261 calls it a transaction failure.
        self._fail("timer H")

    def _timer_i(self) -> None:
        self._timeout = None
        self._terminate()

    def _timer_l(self) -> None:
        self._timeout = None
        self._terminate()

    _TABLE: dict[tuple[State, str], Callable[[InviteServerTransaction, Any], None]] = {
        (PROCEEDING, REQUEST): _resend,
        (PROCEEDING, ACK): _absorb,
        (PROCEEDING, PROVISIONAL): _provisional,
        (PROCEEDING, SUCCESS): _success,
        (PROCEEDING, FAILURE): _failure,
        (COMPLETED, REQUEST): _resend,
        (COMPLETED, ACK): _confirm,
        (COMPLETED, PROVISIONAL): _refuse_response,
        (COMPLETED, SUCCESS): _refuse_response,
        (COMPLETED, FAILURE): _refuse_response,
        (CONFIRMED, REQUEST): _absorb,
        (CONFIRMED, ACK): _absorb_ack,
        (CONFIRMED, PROVISIONAL): _refuse_response,
        (CONFIRMED, SUCCESS): _refuse_response,
        (CONFIRMED, FAILURE): _refuse_response,
        (ACCEPTED, REQUEST): _absorb,
        (ACCEPTED, ACK): _absorb,  # receive_ack() hands these to the TU first
        (ACCEPTED, PROVISIONAL): _refuse_response,
        (ACCEPTED, SUCCESS): _retransmit_2xx,
        (ACCEPTED, FAILURE): _refuse_response,
        (TERMINATED, REQUEST): _absorb,
        (TERMINATED, ACK): _absorb,
        (TERMINATED, PROVISIONAL): _refuse_response,
        (TERMINATED, SUCCESS): _refuse_response,
        (TERMINATED, FAILURE): _refuse_response,
    }
