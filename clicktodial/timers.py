"""
Timer tools shared by the SIP stack and the calls: many timers of one length on one
reactor timer (:class:`LingerQueue`), and timers of a few lengths on one queue per length
(:class:`TimerQueues`).

Users: the transaction layer (every RFC 3261 §17 timer: A, B, D, E, F, G, H, I, J, K,
L, M and the 100 Trying delay, each length on its own queue, docs/transactions.md), the
UA core (its 32 s windows for other forks' 2xx and merged requests, docs/dialogs.md),
the calls (the maximum duration of a connected call, docs/calls.md) and the call tracer
(the linger after a call).  Time is
the injected ``IReactorTime``'s.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["LingerQueue", "Lingering", "TimerQueues"]

log = Logger(namespace="clicktodial.timers")

_T = TypeVar("_T")

#: The owner of a timer that calls its function without arguments.
_NO_OWNER: Any = object()

#: The deadline of every cancelled timer (one float for all).
_CANCELLED = 0.0

_new_entry = object.__new__


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
            # It may wait in the queue a while: keep no float of its own meanwhile.
            self.deadline = _CANCELLED
            # The queue's counts, here: a cancel is one Python call (most retransmission
            # and guard timers are cancelled).
            queue = self.queue
            queue._live -= 1
            queue._dead += 1
            if queue._live == 0 or (queue._dead > 64 and queue._dead > queue._live):
                queue._tidy()


class LingerQueue:
    """
    Many timers of one length on one reactor timer.  They all have the same length, so
    they expire in the order they start: a FIFO whose head is the next to fire.  At a
    call rate R, R*32 s of finished transactions wait out Timer M, J or L at once (and
    every held call waits out its maximum duration); a ``DelayedCall`` each would cost
    about half a kilobyte apiece, and a push onto the reactor's heap (a Python
    ``__lt__`` per comparison).

    Each timer fires when the clock reaches its own deadline (start + ``delay``), in
    start order; timers started by a callback while the queue fires count from that
    moment and never hold back those already waiting.  A clock that jumps forward fires
    every timer it passed, in order, in one pass.  A clock set back delays the timers
    already waiting (as it does a ``DelayedCall``), and those started after wait behind
    them.
    """

    __slots__ = ("clock", "delay", "_entries", "_live", "_dead", "_call", "_due", "_firing")

    def __init__(self, clock: IReactorTime, delay: float) -> None:
        self.clock = clock
        self.delay = delay
        self._entries: deque[Lingering] = deque()
        self._live = 0
        #: Cancelled entries still in the deque: dropped in one pass once they
        #: outnumber the live ones (a long delay would otherwise keep them long).
        self._dead = 0
        self._call: IDelayedCall | None = None
        #: The deadline the reactor timer was set for: it fires every entry due by then,
        #: whatever rounding ``seconds() + (due - seconds())`` made.
        self._due = 0.0
        #: Whether :meth:`_fire` runs: it sets the reactor timer for the head once done.
        self._firing = False

    def __len__(self) -> int:
        return self._live

    def call_later(self, fired: Callable[[], object]) -> Lingering:
        """Call ``fired`` after ``delay`` seconds, unless the returned timer is cancelled."""
        # Without an owner, _fire calls ``fired()`` with no argument.
        return self.call_later_on(_NO_OWNER, fired)  # type: ignore[arg-type]

    def call_later_on(self, owner: _T, fired: Callable[[_T], object]) -> Lingering:
        """
        Call ``fired(owner)`` after ``delay`` seconds, unless the returned timer is
        cancelled: ``fired`` is a function of ``owner``'s class (``Class._timer_m``), so
        the timer keeps no bound method (see :class:`Lingering`).
        """
        # Lingering's slots filled here, without an __init__ call: every SIP
        # transaction starts two or three timers.
        entry = _new_entry(Lingering)
        entry.queue = self
        entry.deadline = deadline = self.clock.seconds() + self.delay
        entry.fired = fired
        entry.owner = owner
        self._entries.append(entry)
        self._live += 1
        if self._call is None and not self._firing:
            self._due = deadline
            self._call = self.clock.callLater(self.delay, self._fire)
        return entry

    def _tidy(self) -> None:
        """After a cancel: leave nothing on the reactor, or drop the cancelled entries."""
        if self._live == 0:
            # Nothing left to wait for: leave nothing on the reactor.
            self._entries.clear()
            self._dead = 0
            if self._call is not None and self._call.active():
                self._call.cancel()
            self._call = None
        else:
            self._entries = deque(e for e in self._entries if e.fired is not None)
            self._dead = 0

    def _fire(self) -> None:
        self._call = None
        self._firing = True
        now = max(self.clock.seconds(), self._due)
        try:
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
        finally:
            self._firing = False
        if self._entries and self._call is None:
            head = self._entries[0].deadline
            self._due = head
            self._call = self.clock.callLater(max(0.0, head - self.clock.seconds()), self._fire)


class TimerQueues:
    """
    Timers of a few fixed lengths, one :class:`LingerQueue` (one reactor timer) per
    length: what a transaction layer starts.  RFC 3261 §17 timers all have lengths known
    in advance: 64*T1 (B, F, H, J, L, M), T4 (I, K), Timer D, and the retransmission
    intervals T1, 2*T1, ... up to T2 (E, G) or without cap (A).  Each interval of a
    doubling timer is a timer of that interval's length, so it too fires exactly on time.
    """

    __slots__ = ("clock", "_queues")

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._queues: dict[float, LingerQueue] = {}

    def __len__(self) -> int:
        """How many timers wait, all lengths together."""
        return sum(len(queue) for queue in self._queues.values())

    def queue(self, delay: float) -> LingerQueue:
        """The queue of ``delay``-second timers (made on first use)."""
        queue = self._queues.get(delay)
        if queue is None:
            queue = self._queues[delay] = LingerQueue(self.clock, delay)
        return queue

    def call_later_on(self, delay: float, owner: _T, fired: Callable[[_T], object]) -> Lingering:
        """
        Call ``fired(owner)`` after ``delay`` seconds unless the returned timer is
        cancelled (:meth:`LingerQueue.call_later_on`).
        """
        queue = self._queues.get(delay)
        if queue is None:
            queue = self._queues[delay] = LingerQueue(self.clock, delay)
        return queue.call_later_on(owner, fired)
