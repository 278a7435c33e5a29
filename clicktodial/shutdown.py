"""
Graceful stop: what the daemon does between SIGTERM and the reactor stopping.

1. New requests outside a dialog get 503 with ``Retry-After``
   (:meth:`clicktodial.admission.AdmissionControl.start_draining`); requests inside the
   dialogs of calls in progress (BYE, ACK, re-INVITE) still go through.
2. Calls in progress may go on to their natural end for ``[daemon] shutdown_grace`` seconds.
3. The calls still up then are ended (BYE to every party, by the call controller when one
   is plugged in, else by the UA core's sessions), and the BYEs get a moment to be answered.
4. Only then does the reactor stop, the listeners close and the store shuts down.

Registrations live in the store, so they survive; a restarted daemon serves them at once.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from clicktodial.admission import AdmissionControl
from clicktodial.sip.dialog import DialogError
from clicktodial.sip.ua import UserAgent

__all__ = ["CallsInProgress", "GracefulStop", "ua_calls"]

log = Logger(namespace="clicktodial.shutdown")

#: Seconds between two looks at the number of calls in progress while draining.
POLL_INTERVAL = 0.25
#: Seconds the BYEs sent at the end of the grace period get to be answered.
BYE_WAIT = 2.0


class CallsInProgress:
    """
    How the graceful stop sees calls: ``count()`` calls in progress, ``end_all()`` ends them.
    """

    def __init__(self, count: Callable[[], int], end_all: Callable[[], object]) -> None:
        self.count = count
        self.end_all = end_all


def ua_calls(user_agent: UserAgent) -> CallsInProgress:
    """
    Calls as the UA core sees them (until a call controller is plugged in): its sessions,
    each ended with BYE. A session the callee side cannot BYE (an early dialog we are the
    UAS of) ends with its INVITE transaction.
    """

    def end_all() -> None:
        for session in user_agent.sessions:
            try:
                session.bye()
            except DialogError:
                pass

    return CallsInProgress(lambda: len(user_agent.sessions), end_all)


class GracefulStop:
    """
    Runs the stop sequence of the module once (:meth:`run`).

    :param admission: starts refusing new requests.
    :param calls: the calls to wait for and end.
    :param grace: seconds calls may go on (``[daemon] shutdown_grace``).
    """

    def __init__(
        self,
        clock: IReactorTime,
        admission: AdmissionControl | None,
        calls: CallsInProgress,
        grace: float,
    ) -> None:
        self.clock = clock
        self.admission = admission
        self.calls = calls
        self.grace = grace
        self._waiters: list[Deferred[None]] = []
        self._started = False
        self._finished = False

    def run(self) -> Deferred[None]:
        """Start (or join) the stop sequence: fires when the daemon may stop."""
        waiter: Deferred[None] = Deferred()
        if self._finished:
            waiter.callback(None)
            return waiter
        self._waiters.append(waiter)
        if self._started:
            return waiter
        self._started = True
        if self.admission is not None:
            self.admission.start_draining()
        count = self.calls.count()
        log.info(
            "stopping: refusing new calls and registrations; {count} call(s) in progress"
            " may go on for {grace} s",
            count=count,
            grace=self.grace,
        )
        self._wait(self.clock.seconds() + self.grace, self._grace_over)
        return waiter

    def _wait(self, deadline: float, then: Callable[[], None]) -> None:
        if self.calls.count() == 0 or self.clock.seconds() >= deadline:
            then()
            return
        delay = min(POLL_INTERVAL, max(deadline - self.clock.seconds(), 0.0))
        self.clock.callLater(delay, self._wait, deadline, then)

    def _grace_over(self) -> None:
        left = self.calls.count()
        if left == 0:
            log.info("stopping: no call in progress")
            self._finish()
            return
        log.info("stopping: ending {count} call(s) still in progress", count=left)
        try:
            self.calls.end_all()
        except Exception:
            log.failure("stopping: cannot end the calls in progress")
        self._wait(self.clock.seconds() + BYE_WAIT, self._finish)

    def _finish(self) -> None:
        self._finished = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)
