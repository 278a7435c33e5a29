"""
Timer tools shared by the SIP stack and the calls: many timers of one length on one
reactor timer (:class:`LingerQueue`).

Users: the transaction layer (the 64*T1 timers D, H, J, L, M of lingering
transactions, docs/transactions.md), the UA core (its 32 s windows for other forks'
2xx and merged requests, docs/dialogs.md), the calls (the maximum duration of a
connected call, docs/calls.md) and the call tracer (the linger after a call).  Time is
the injected ``IReactorTime``'s.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["LingerQueue", "Lingering"]

log = Logger(namespace="clicktodial.timers")

_T = TypeVar("_T")

#: The owner of a timer that calls its function without arguments.
_NO_OWNER: Any = object()


class Lingering:
    """
    One timer in a :class:`LingerQueue`: what ``callLater`` would return, less what a lone
    ``DelayedCall`` carries (its own dict, arguments, heap slot).  A timer started with
    :meth:`LingerQueue.call_later_on` keeps its owner and a plain function (one of the
    owner's class): no bound method object is made per timer (64 bytes each, and a call
    set-up starts several).
    """

    __slots__ = ("deadline", "fired", "owner", "queue")

    def __init__(
        self,
        queue: LingerQueue,
        deadline: float,
        fired: Callable[..., object],
        owner: object = _NO_OWNER,
    ) -> None:
        self.queue = queue
        self.deadline = deadline
        self.fired: Callable[..., object] | None = fired
        self.owner = owner

    def active(self) -> bool:
        """Whether the timer has neither fired nor been cancelled."""
        return self.fired is not None

    def cancel(self) -> None:
        """Stop the timer (it has not fired)."""
        if self.fired is not None:
            self.fired = None
            self.owner = _NO_OWNER
            self.queue._cancelled()


class LingerQueue:
    """
    Many timers of one length on one reactor timer.  They all have the same length, so
    they expire in the order they start: a FIFO whose head is the next to fire.  At a
    call rate R, R*32 s of finished transactions wait out Timer M, J or L at once (and
    every held call waits out its maximum duration); a ``DelayedCall`` each would cost
    about half a kilobyte apiece.
    """

    __slots__ = ("clock", "delay", "_entries", "_live", "_dead", "_call")

    def __init__(self, clock: IReactorTime, delay: float) -> None:
        self.clock = clock
        self.delay = delay
        self._entries: deque[Lingering] = deque()
        self._live = 0
        #: Cancelled entries still in the deque: dropped in one pass once they
        #: outnumber the live ones (a long delay would otherwise keep them long).
        self._dead = 0
        self._call: IDelayedCall | None = None

    def __len__(self) -> int:
        return self._live

    def call_later(self, fired: Callable[[], object]) -> Lingering:
        """Call ``fired`` after ``delay`` seconds, unless the returned timer is cancelled."""
        return self._start(Lingering(self, self.clock.seconds() + self.delay, fired))

    def call_later_on(self, owner: _T, fired: Callable[[_T], object]) -> Lingering:
        """
        Call ``fired(owner)`` after ``delay`` seconds, unless the returned timer is
        cancelled: ``fired`` is a function of ``owner``'s class (``Class._timer_m``), so
        the timer keeps no bound method (see :class:`Lingering`).
        """
        return self._start(Lingering(self, self.clock.seconds() + self.delay, fired, owner))

    def _start(self, entry: Lingering) -> Lingering:
        self._entries.append(entry)
        self._live += 1
        if self._call is None:
            self._call = self.clock.callLater(self.delay, self._fire)
        return entry

    def _cancelled(self) -> None:
        self._live -= 1
        self._dead += 1
        if self._live == 0:
            # Nothing left to wait for: leave nothing on the reactor.
            self._entries.clear()
            self._dead = 0
            if self._call is not None and self._call.active():
                self._call.cancel()
            self._call = None
        elif self._dead > 64 and self._dead > self._live:
            self._entries = deque(e for e in self._entries if e.fired is not None)
            self._dead = 0

    def _fire(self) -> None:
        self._call = None
        now = self.clock.seconds()
        # self._entries each time: a callback may cancel others and compact it.
        while self._entries and (
            self._entries[0].fired is None or self._entries[0].deadline <= now
        ):
            entry = self._entries.popleft()
            fired = entry.fired
            if fired is None:
                self._dead -= 1
                continue
            owner = entry.owner
            entry.fired = None
            entry.owner = _NO_OWNER
            self._live -= 1
            try:
                if owner is _NO_OWNER:
                    fired()
                else:
                    fired(owner)
            except Exception:
                log.failure("timer of a LingerQueue failed")
        if self._entries and self._call is None:
            delay = max(0.0, self._entries[0].deadline - now)
            self._call = self.clock.callLater(delay, self._fire)
