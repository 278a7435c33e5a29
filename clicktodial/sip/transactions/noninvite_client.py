"""
The non-INVITE client transaction: RFC 3261 §17.1.2, with RFC 4320 (Timer F
is a local 408: a non-INVITE server never sends one).

Transition table (input -> action, next state)::

    trying      1xx             pass up                     -> proceeding
    trying      200-699         pass up; Timer K            -> completed
    trying      Timer E         retransmit; E=min(2E, T2)   -> trying
    trying      Timer F         local 408 up                -> terminated
    trying      transport error local 503 up                -> terminated
    proceeding  1xx             pass up                     -> proceeding
    proceeding  200-699         pass up; Timer K            -> completed
    proceeding  Timer E         retransmit; E=T2            -> proceeding
    proceeding  Timer F         local 408 up                -> terminated
    proceeding  transport error local 503 up                -> terminated
    completed   any response    absorb                      -> completed
    completed   Timer K                                     -> terminated

Timer K is T4 on unreliable transports and zero on reliable ones (so
``completed`` is left at once); timer E runs only on unreliable transports.
"""

from __future__ import annotations

from collections.abc import Callable

from clicktodial.sip.message import Response
from clicktodial.sip.transactions.base import State
from clicktodial.sip.transactions.client import ClientTransaction

__all__ = ["NonInviteClientTransaction"]

TRYING = State.TRYING
PROCEEDING = State.PROCEEDING
COMPLETED = State.COMPLETED
TERMINATED = State.TERMINATED

PROVISIONAL = "1xx"
FINAL = "200-699"
TIMER_E = "Timer E"
TIMER_F = "Timer F"
TIMER_K = "Timer K"
TRANSPORT_ERROR = "transport error"


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.2 non-INVITE client transaction."""

    __slots__ = ()

    INPUTS = (PROVISIONAL, FINAL, TIMER_E, TIMER_F, TIMER_K, TRANSPORT_ERROR)

    def start(self) -> None:
        timers = self._host.timers
        self.state = TRYING
        if not self.reliable:
            self._start_retransmit(timers.t1, NonInviteClientTransaction._timer_e)
        # Timer F guards both "trying" and "proceeding"; it lives in the
        # timeout slot and survives the trying -> proceeding step.
        self._start_timeout(timers.timeout, NonInviteClientTransaction._timer_f)
        if not self._transmit():
            self._cancel_timers()
            self._start_timeout(0, NonInviteClientTransaction._transport_error)

    def receive_response(self, response: Response) -> None:
        kind = PROVISIONAL if response.status < 200 else FINAL
        self._TABLE[(self.state, kind)](self, response)

    def transport_failed(self) -> None:
        if self.state in (TRYING, PROCEEDING):
            self._transport_error()

    # -- actions --------------------------------------------------------------

    def _provisional(self, response: Response) -> None:
        # §17.1.2.2: timers E and F keep running in "proceeding".
        self.state = PROCEEDING
        self._deliver(response)

    def _final(self, response: Response) -> None:
        self._enter(COMPLETED)
        self._request = None  # let go (see Transaction): Timer K only absorbs copies
        if self.reliable:
            self._terminate()  # Timer K is zero for reliable transports
        else:
            # §17.1.2.2: absorb response retransmissions for T4.
            self._start_timeout(self._host.timers.t4, NonInviteClientTransaction._timer_k)
        self._deliver(response)

    def _absorb(self, response: Response) -> None:
        pass

    def _absorb_again(self, response: Response) -> None:
        # §17.1.2.2: "completed" absorbs retransmitted responses for T4.
        self._host.counts.responses_received += 1

    def _timer_e(self) -> None:
        self._retransmit = None
        t2 = self._host.timers.t2
        if self.state is PROCEEDING:
            interval = t2
        else:
            interval = min(self._interval * 2, t2)
        self._start_retransmit(interval, NonInviteClientTransaction._timer_e)
        self._host.counts.requests_sent += 1
        if not self._transmit():
            self._transport_error()

    def _timer_f(self) -> None:
        self._timeout = None
        # RFC 4320 §4.1 / RFC 3261 §17.1.2.2: Timer F is a local 408.
        self._terminate()
        self._deliver(self._local_response(408))

    def _timer_k(self) -> None:
        self._timeout = None
        self._terminate()

    def _transport_error(self) -> None:
        previous = self.state
        self._terminate()
        if previous in (TRYING, PROCEEDING):
            self._deliver(self._local_response(503))

    _TABLE: dict[tuple[State, str], Callable[[NonInviteClientTransaction, Response], None]] = {
        (TRYING, PROVISIONAL): _provisional,
        (TRYING, FINAL): _final,
        (PROCEEDING, PROVISIONAL): _provisional,
        (PROCEEDING, FINAL): _final,
        (COMPLETED, PROVISIONAL): _absorb_again,
        (COMPLETED, FINAL): _absorb_again,
        (TERMINATED, PROVISIONAL): _absorb,
        (TERMINATED, FINAL): _absorb,
    }
