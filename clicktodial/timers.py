"""
Timer tools shared by the SIP stack and the calls: many timers of one length in one FIFO
(:class:`LingerQueue`), and timers of a few lengths, one queue per length, all on one
reactor timer (:class:`TimerQueues`).

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

#: ``_Alarm._due`` with no reactor timer set: any deadline is earlier.
_NEVER = float("inf")
#: ``_Alarm._due`` while the alarm fires: no deadline is earlier (the end of the pass
#: sets the reactor timer for whatever then waits).
_FIRING = float("-inf")

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
            # The counts, here: a cancel is one Python call (most retransmission and
            # guard timers are cancelled).
            queue = self.queue
            queue._live -= 1
            alarm = queue._alarm
            alarm._live -= 1
            if alarm._live == 0:
                alarm._idle()
            elif queue._live == 0:
                # Nothing of this length waits: drop its cancelled entries at once.
                queue._entries.clear()
                queue._dead = 0
            else:
                queue._dead += 1
                if queue._dead > 64 and queue._dead > queue._live:
                    queue._tidy()


class _Alarm:
    """
    The one reactor timer of the queues that share it: set for the earliest deadline
    among their timers, moved only when a timer starts with an earlier one (a queue's
    timers all have its length, so only a queue that had none, or a shorter queue, can
    bring one), and cancelled once no timer of any of them waits: an idle daemon (or a
    test's clock) is left with no reactor timer.  A reactor timer set for a timer
    cancelled since fires for nothing and is set again for the earliest left: cheaper
    than moving it at every cancel, and it leaves no cancelled ``DelayedCall`` behind on
    the reactor's heap (one that stays there until its time makes every push and pop
    of that heap dearer).
    """

    __slots__ = ("clock", "_queues", "_live", "_call", "_due")

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._queues: list[LingerQueue] = []
        #: Timers waiting in all the queues (not cancelled, not fired).
        self._live = 0
        self._call: IDelayedCall | None = None
        #: The deadline the reactor timer is set for (:data:`_NEVER` without one,
        #: :data:`_FIRING` while it fires): it fires every timer due by then, whatever
        #: rounding ``seconds() + (due - seconds())`` made.
        self._due = _NEVER

    def _arm(self, deadline: float, delay: float) -> None:
        """Set the reactor timer for ``deadline``, ``delay`` seconds from now."""
        self._due = deadline
        call = self._call
        if call is None:
            self._call = self.clock.callLater(delay, self._fire)
        else:
            call.reset(delay)

    def _idle(self) -> None:
        """No timer waits any more: forget the cancelled ones, leave nothing on the reactor."""
        for queue in self._queues:
            queue._entries.clear()
            queue._dead = 0
        call = self._call
        if call is not None:
            self._call = None
            self._due = _NEVER
            call.cancel()

    def _fire(self) -> None:
        self._call = None
        now = max(self.clock.seconds(), self._due)
        self._due = _FIRING
        queues = self._queues
        earliest = _NEVER
        try:
            while True:
                # The earliest head of all queues (cancelled heads dropped on the way);
                # each queue's entries read again every time: a callback may cancel
                # timers, compact or clear a queue, or start timers (due now, even).
                first: LingerQueue | None = None
                earliest = _NEVER
                for queue in queues:
                    entries = queue._entries
                    while entries:
                        head = entries[0]
                        if head.fired is not None:
                            if head.deadline < earliest:
                                earliest = head.deadline
                                first = queue
                            break
                        entries.popleft()
                        queue._dead -= 1
                if first is None or earliest > now:
                    break
                entry = first._entries.popleft()
                fired = entry.fired
                owner = entry.owner
                entry.fired = None
                entry.owner = _NO_OWNER
                first._live -= 1
                self._live -= 1
                try:
                    if owner is _NO_OWNER:
                        fired()  # type: ignore[misc]
                    else:
                        fired(owner)  # type: ignore[misc]
                except Exception:
                    log.failure("timer of a LingerQueue failed")
        finally:
            self._due = _NEVER
        if earliest != _NEVER:
            # (_arm, written out: once a wake-up; no reactor timer is set while firing.)
            self._due = earliest
            clock = self.clock
            self._call = clock.callLater(max(0.0, earliest - clock.seconds()), self._fire)


class LingerQueue:
    """
    Many timers of one length.  They all have the same length, so they expire in the
    order they start: a FIFO whose head is the next to fire.  At a call rate R, R*32 s of
    finished transactions wait out Timer M, J or L at once (and every held call waits out
    its maximum duration); a ``DelayedCall`` each would cost about half a kilobyte
    apiece, and a push onto the reactor's heap (a Python ``__lt__`` per comparison).
    A queue made alone has its own reactor timer; those of a :class:`TimerQueues` share
    one.

    Each timer fires when the clock reaches its own deadline (start + ``delay``), in
    deadline order (start order within a queue); timers started by a callback while the
    queues fire count from that moment and never hold back those already waiting.  A
    clock that jumps forward fires every timer it passed, in order, in one pass.  A clock
    set back delays the timers already waiting (as it does a ``DelayedCall``), and those
    started after wait behind them.
    """

    __slots__ = ("clock", "delay", "_entries", "_live", "_dead", "_alarm")

    def __init__(self, clock: IReactorTime, delay: float, _alarm: _Alarm | None = None) -> None:
        self.clock = clock
        self.delay = delay
        self._entries: deque[Lingering] = deque()
        self._live = 0
        #: Cancelled entries still in the deque: dropped in one pass once they
        #: outnumber the live ones (a long delay would otherwise keep them long).
        self._dead = 0
        if _alarm is None:
            _alarm = _Alarm(clock)
        self._alarm = _alarm
        _alarm._queues.append(self)

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
        alarm = self._alarm
        alarm._live += 1
        if deadline < alarm._due:
            # The earliest timer of all the alarm's queues (never while they fire: the
            # end of that pass sets the alarm).
            alarm._arm(deadline, self.delay)
        return entry

    def _tidy(self) -> None:
        """Drop the cancelled entries (they outnumber the live ones)."""
        self._entries = deque(e for e in self._entries if e.fired is not None)
        self._dead = 0


class _ByLength(dict[float, LingerQueue]):
    """:attr:`TimerQueues.by_length`: a queue made on first use of its length."""

    __slots__ = ("_clock", "_alarm")

    def __init__(self, clock: IReactorTime, alarm: _Alarm) -> None:
        super().__init__()
        self._clock = clock
        self._alarm = alarm

    def __missing__(self, delay: float) -> LingerQueue:
        queue = self[delay] = LingerQueue(self._clock, delay, self._alarm)
        return queue


class TimerQueues:
    """
    Timers of a few fixed lengths, one :class:`LingerQueue` per length, all on one
    reactor timer (set for the earliest deadline among them): what a transaction layer
    and its UA core start.  RFC 3261 §17 timers all have lengths known in advance: 64*T1
    (B, F, H, J, L, M), T4 (I, K), Timer D, and the retransmission intervals T1, 2*T1,
    ... up to T2 (E, G) or without cap (A).  Each interval of a doubling timer is a timer
    of that interval's length, so it too fires exactly on time.  :meth:`sibling` gives
    another set of queues on the same reactor timer (timers of the same length that are
    mostly cancelled and mostly fired kept apart, so the cancelled do not wait behind the
    live ones).

    :ivar by_length: the queue of each length, made on first use
        (``queues.by_length[delay].call_later_on(owner, fired)``: a timer started with
        no Python call but the queue's).
    """

    __slots__ = ("clock", "by_length", "_alarm")

    def __init__(self, clock: IReactorTime, _alarm: _Alarm | None = None) -> None:
        self.clock = clock
        self._alarm = _Alarm(clock) if _alarm is None else _alarm
        self.by_length = _ByLength(clock, self._alarm)

    def __len__(self) -> int:
        """How many timers wait, all lengths together."""
        return sum(len(queue) for queue in self.by_length.values())

    def sibling(self) -> TimerQueues:
        """Another set of queues (by length) on this set's reactor timer."""
        return TimerQueues(self.clock, self._alarm)

    def queue(self, delay: float) -> LingerQueue:
        """The queue of ``delay``-second timers (made on first use)."""
        return self.by_length[delay]

    def call_later_on(self, delay: float, owner: _T, fired: Callable[[_T], object]) -> Lingering:
        """
        Call ``fired(owner)`` after ``delay`` seconds unless the returned timer is
        cancelled (:meth:`LingerQueue.call_later_on`).
        """
        return self.by_length[delay].call_later_on(owner, fired)
