"""
The non-INVITE server transaction: RFC 3261 §17.2.2 with RFC 4320 §4.1 (a
transaction-stateful element never sends 408 to a non-INVITE request, never a
provisional other than 100, and no 100 over an unreliable transport before
the client's Timer E has reached T2).

Transition table (input -> action, next state)::

    trying      request again   absorb (nothing to resend)  -> trying
    trying      TU 1xx          send (RFC 4320 permitting)  -> proceeding
    trying      TU 200-699      send; Timer J               -> completed
    trying      TU 408          send nothing; Timer J       -> completed
    proceeding  request again   re-send last provisional    -> proceeding
    proceeding  TU 1xx          send                        -> proceeding
    proceeding  TU 200-699      send; Timer J               -> completed
    proceeding  TU 408          send nothing; Timer J       -> completed
    proceeding  transport error tell TU                     -> terminated
    completed   request again   re-send final (if any)      -> completed
    completed   TU any          refuse                      -> completed
    completed   transport error tell TU                     -> terminated
    completed   Timer J                                     -> terminated

Timer J is 64*T1 on unreliable transports and zero on reliable ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clicktodial.sip.message import Request, Response
from clicktodial.sip.transactions.base import State, log
from clicktodial.sip.transactions.server import ServerTransaction

__all__ = ["NonInviteServerTransaction"]

TRYING = State.TRYING
PROCEEDING = State.PROCEEDING
COMPLETED = State.COMPLETED
TERMINATED = State.TERMINATED

REQUEST = "request again"
PROVISIONAL = "TU 1xx"
FINAL = "TU 200-699"


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.2 non-INVITE server transaction (with RFC 4320)."""

    __slots__ = ("_started_at",)

    _started_at: float

    INPUTS = (REQUEST, PROVISIONAL, FINAL)

    def start(self) -> None:
        self.state = TRYING
        self._started_at = self._host.clock.seconds()

    def respond(self, response: Response) -> None:
        kind = PROVISIONAL if response.status < 200 else FINAL
        self._TABLE[(self.state, kind)](self, response)

    def receive_retransmission(self, request: Request) -> None:
        self._TABLE[(self.state, REQUEST)](self, request)

    # -- actions --------------------------------------------------------------

    def _provisional(self, response: Response) -> None:
        if response.status != 100:
            # RFC 4320 §4.1: no provisional other than 100 to non-INVITE.
            self._refuse(response)
            return
        if not self.reliable:
            timers = self._host.timers
            # RFC 4320 §4.1: Timer E reaches T2 after T1+2T1+4T1... < T2.
            ramp, interval = 0.0, timers.t1
            while interval < timers.t2:
                ramp += interval
                interval *= 2
            if self._host.clock.seconds() - self._started_at < ramp:
                return
        self.state = PROCEEDING
        self._send(response)

    def _final(self, response: Response) -> None:
        self._enter(COMPLETED)
        if response.status == 408:
            # RFC 4320 §4.1: never send 408 to a non-INVITE request: the
            # client's Timer F says it locally. Stay to absorb retransmissions.
            self._forget_last()
            log.debug(
                "dropping 408 for {method} (RFC 4320)",
                method=self.request.method,
                call_id=self.request.headers.get("Call-ID"),
            )
        elif not self._send(response):
            return
        if self.reliable:
            self._terminate()  # Timer J is zero for reliable transports
        else:
            # §17.2.2: keep answering retransmissions for 64*T1 (with the last response
            # alone: the request is not needed for that).
            self._request = None  # let go of it (see Transaction)
            self._start_timeout(self._host.timers.timeout, NonInviteServerTransaction._timer_j)

    def _resend(self, request: Request) -> None:
        self._resend_last()

    def _absorb(self, request: Request) -> None:
        pass

    def _refuse_response(self, response: Response) -> None:
        self._refuse(response)

    def _timer_j(self) -> None:
        self._timeout = None
        self._terminate()

    _TABLE: dict[tuple[State, str], Callable[[NonInviteServerTransaction, Any], None]] = {
        (TRYING, REQUEST): _absorb,
        (TRYING, PROVISIONAL): _provisional,
        (TRYING, FINAL): _final,
        (PROCEEDING, REQUEST): _resend,
        (PROCEEDING, PROVISIONAL): _provisional,
        (PROCEEDING, FINAL): _final,
        (COMPLETED, REQUEST): _resend,
        (COMPLETED, PROVISIONAL): _refuse_response,
        (COMPLETED, FINAL): _refuse_response,
        (TERMINATED, REQUEST): _absorb,
        (TERMINATED, PROVISIONAL): _refuse_response,
        (TERMINATED, FINAL): _refuse_response,
    }
