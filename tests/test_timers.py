"""
:class:`clicktodial.timers.LingerQueue`: many same-length timers on one reactor timer, each
firing its own delay after it started, on a fake clock stepped in small steps.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher

from clicktodial.timers import Lingering, LingerQueue, TimerQueues


def test_timers_fire_in_start_order_each_after_its_own_delay() -> None:
    clock = Clock()
    queue = LingerQueue(clock, 32.0)
    fired: list[tuple[str, float]] = []
    for name in "abc":
        queue.call_later(lambda name=name: fired.append((name, clock.seconds())))
        clock.pump([0.5] * 10)  # 5 s apart
    assert len(queue) == 3
    assert len(clock.getDelayedCalls()) == 1  # one reactor timer for all three
    clock.pump([0.5] * 100)
    assert fired == [("a", 32.0), ("b", 37.0), ("c", 42.0)]
    assert len(queue) == 0
    assert clock.getDelayedCalls() == []


def test_a_cancelled_timer_never_fires_and_is_inactive() -> None:
    clock = Clock()
    queue = LingerQueue(clock, 10.0)
    fired: list[str] = []
    first = queue.call_later(lambda: fired.append("first"))
    second = queue.call_later(lambda: fired.append("second"))
    assert isinstance(first, Lingering) and first.active()
    first.cancel()
    first.cancel()  # twice is harmless
    assert not first.active()
    assert len(queue) == 1
    clock.pump([1.0] * 11)
    assert fired == ["second"]
    assert not second.active()


def test_cancelling_the_last_live_timer_leaves_nothing_on_the_reactor() -> None:
    clock = Clock()
    queue = LingerQueue(clock, 10.0)
    timers = [queue.call_later(lambda: None) for _ in range(3)]
    for timer in timers:
        timer.cancel()
    assert clock.getDelayedCalls() == []
    assert len(queue) == 0
    # The queue works again afterwards.
    fired: list[float] = []
    queue.call_later(lambda: fired.append(clock.seconds()))
    clock.pump([1.0] * 11)
    assert fired == [10.0]


def test_many_cancelled_entries_are_dropped_while_live_ones_still_fire() -> None:
    """Cancelled entries outnumbering the live ones are compacted away, not kept for the
    whole delay; the live ones keep their deadlines."""
    clock = Clock()
    queue = LingerQueue(clock, 100.0)
    fired: list[int] = []
    keep = queue.call_later(lambda: fired.append(0))
    doomed = [queue.call_later(lambda: fired.append(-1)) for _ in range(200)]
    for timer in doomed:
        timer.cancel()
    assert len(queue) == 1
    assert keep.active()
    clock.pump([1.0] * 101)
    assert fired == [0]
    assert clock.getDelayedCalls() == []


def test_a_failing_timer_is_logged_and_the_next_still_fires() -> None:
    clock = Clock()
    queue = LingerQueue(clock, 5.0)
    fired: list[str] = []
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        queue.call_later(lambda: 1 / 0)
        queue.call_later(lambda: fired.append("next"))
        clock.pump([1.0] * 6)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert fired == ["next"]
    assert any(
        e.get("log_namespace") == "clicktodial.timers" and "log_failure" in e for e in events
    )


def test_a_timer_on_an_owner_calls_its_function_with_the_owner_and_then_lets_it_go() -> None:
    """``call_later_on(owner, Class.method)`` keeps the owner and the plain function (no
    bound method per timer), calls ``method(owner)`` once, and drops the owner once fired
    or cancelled."""

    class Owner:
        def __init__(self) -> None:
            self.fired_at: list[float] = []

        def expired(self) -> None:
            self.fired_at.append(clock.seconds())

    clock = Clock()
    queue = LingerQueue(clock, 32.0)
    owner, other = Owner(), Owner()
    timer = queue.call_later_on(owner, Owner.expired)
    cancelled = queue.call_later_on(other, Owner.expired)
    assert timer.fired is Owner.expired and timer.owner is owner
    cancelled.cancel()
    assert cancelled.owner is not other
    clock.pump([0.5] * 70)
    assert owner.fired_at == [32.0] and other.fired_at == []
    assert not timer.active() and timer.owner is not owner
    assert clock.getDelayedCalls() == []


def test_a_timer_started_again_after_cancel_fires_once_from_its_new_start() -> None:
    """Re-arming is cancel + start: the cancelled start never fires, the new one fires
    its delay after it began."""
    clock = Clock()
    queue = LingerQueue(clock, 4.0)
    fired: list[float] = []
    timer = queue.call_later(lambda: fired.append(clock.seconds()))
    clock.pump([0.5] * 3)
    timer.cancel()
    timer = queue.call_later(lambda: fired.append(clock.seconds()))
    clock.pump([0.5] * 20)
    assert fired == [5.5]
    assert not timer.active()
    assert clock.getDelayedCalls() == []


def test_a_callback_that_starts_a_timer_on_its_queue_holds_back_none_already_waiting() -> None:
    """A timer started while the queue fires (a retransmission timer starting its next
    interval) counts from then, and the timers already waiting still fire on their own
    deadlines, before it."""

    class Periodic:
        def __init__(self, name: str) -> None:
            self.name = name

        def expired(self) -> None:
            fired.append((self.name, clock.seconds()))
            if clock.seconds() < 8:
                queue.call_later_on(self, Periodic.expired)

    clock = Clock()
    queue = LingerQueue(clock, 2.0)
    fired: list[tuple[str, float]] = []
    queue.call_later_on(Periodic("a"), Periodic.expired)
    clock.pump([0.5])
    queue.call_later_on(Periodic("b"), Periodic.expired)
    clock.pump([0.5] * 30)
    assert fired == [
        ("a", 2.0),
        ("b", 2.5),
        ("a", 4.0),
        ("b", 4.5),
        ("a", 6.0),
        ("b", 6.5),
        ("a", 8.0),
        ("b", 8.5),
    ]
    assert clock.getDelayedCalls() == []


def test_timers_started_together_fire_in_start_order() -> None:
    clock = Clock()
    queue = LingerQueue(clock, 1.0)
    fired: list[int] = []
    for i in range(5):
        queue.call_later(lambda i=i: fired.append(i))
    clock.pump([0.25] * 4)
    assert fired == [0, 1, 2, 3, 4]


def test_a_clock_jump_fires_every_timer_passed_in_order_and_later_ones_count_from_it() -> None:
    """One big step of the clock (a suspended host, a busy reactor) fires every timer
    whose deadline it passed, in deadline order, in one pass; a timer started by one of
    them counts from the clock after the jump; timers not yet due keep waiting."""

    class Owner:
        def __init__(self, name: str, again: bool = False) -> None:
            self.name, self.again = name, again

        def expired(self) -> None:
            fired.append((self.name, clock.seconds()))
            if self.again:
                self.again = False
                queue.call_later_on(self, Owner.expired)

    clock = Clock()
    queue = LingerQueue(clock, 10.0)
    fired: list[tuple[str, float]] = []
    queue.call_later_on(Owner("a", again=True), Owner.expired)  # due at 10
    clock.advance(3)
    queue.call_later_on(Owner("b"), Owner.expired)  # due at 13
    clock.advance(4)
    queue.call_later_on(Owner("c"), Owner.expired)  # due at 17
    clock.advance(8)  # to 15
    assert fired == [("a", 15.0), ("b", 15.0)]
    assert len(queue) == 2  # c, and a again (due at 25)
    clock.pump([0.5] * 20)
    assert fired[2:] == [("c", 17.0), ("a", 25.0)]
    assert clock.getDelayedCalls() == []


def test_queued_timers_fire_on_the_same_clock_step_as_reactor_timers() -> None:
    """Whatever the start times and lengths (fractions included, where
    ``now + (deadline - now)`` rounds), each queued timer fires on the very clock step
    a ``callLater`` of the same length started at the same moment fires on."""
    clock = Clock()
    queues = TimerQueues(clock)
    queued: dict[int, float] = {}
    reactor: dict[int, float] = {}

    class Owner:
        def __init__(self, i: int) -> None:
            self.i = i

        def expired(self) -> None:
            queued[self.i] = clock.seconds()

    lengths = [0.1, 0.5, 1.0, 2.0, 4.0, 5.0, 32.0, 0.3]
    for i in range(200):
        delay = lengths[i % len(lengths)]
        queues.call_later_on(delay, Owner(i), Owner.expired)
        clock.callLater(delay, reactor.__setitem__, i, None)
        clock.advance(0.1 * (i % 7) + 0.01 * (i % 3))
        for key in [k for k, v in reactor.items() if v is None]:
            reactor[key] = clock.seconds()
    for _ in range(400):
        clock.advance(0.1)
        for key in [k for k, v in reactor.items() if v is None]:
            reactor[key] = clock.seconds()
    assert len(queued) == len(reactor) == 200
    assert queued == reactor
    assert len(queues) == 0
    assert clock.getDelayedCalls() == []


def test_timer_queues_keep_one_reactor_timer_for_all_lengths() -> None:
    """Many timers of a few lengths: one reactor timer for all of them, set for the
    earliest deadline, each timer firing its own length after it started."""

    class Owner:
        def __init__(self) -> None:
            self.fired_at: float | None = None

        def expired(self) -> None:
            self.fired_at = clock.seconds()

    clock = Clock()
    queues = TimerQueues(clock)
    started = [(delay, Owner(), clock.seconds()) for delay in (0.5, 1.0, 32.0) for _ in range(10)]
    for delay, owner, _ in started:
        queues.call_later_on(delay, owner, Owner.expired)
    assert len(queues) == 30
    [call] = clock.getDelayedCalls()
    assert call.getTime() == 0.5
    assert queues.queue(1.0) is queues.queue(1.0)
    clock.pump([0.25] * 140)
    assert [owner.fired_at for _, owner, _ in started] == [
        start + delay for delay, _, start in started
    ]
    assert len(queues) == 0
    assert clock.getDelayedCalls() == []


def test_the_reactor_timer_moves_only_for_an_earlier_deadline() -> None:
    """A timer due after the one the reactor timer is set for leaves it as it is; one due
    before moves the same reactor timer earlier (no second timer on the reactor)."""
    clock = Clock()
    queues = TimerQueues(clock)
    fired: list[tuple[str, float]] = []
    queues.queue(32.0).call_later(lambda: fired.append(("long", clock.seconds())))
    [call] = clock.getDelayedCalls()
    clock.advance(1)
    queues.queue(32.0).call_later(lambda: fired.append(("later", clock.seconds())))
    assert clock.getDelayedCalls() == [call] and call.getTime() == 32.0
    queues.queue(0.5).call_later(lambda: fired.append(("short", clock.seconds())))
    assert clock.getDelayedCalls() == [call] and call.getTime() == 1.5
    clock.pump([0.25] * 140)
    assert fired == [("short", 1.5), ("long", 32.0), ("later", 33.0)]
    assert clock.getDelayedCalls() == []


def test_timers_of_several_lengths_passed_by_a_clock_jump_fire_in_deadline_order() -> None:
    clock = Clock()
    queues = TimerQueues(clock)
    fired: list[str] = []
    queues.queue(10.0).call_later(lambda: fired.append("10 s, due at 10"))
    clock.advance(2)
    queues.queue(5.0).call_later(lambda: fired.append("5 s, due at 7"))
    queues.queue(1.0).call_later(lambda: fired.append("1 s, due at 3"))
    queues.queue(9.0).call_later(lambda: fired.append("9 s, due at 11"))
    clock.advance(20)
    assert fired == ["1 s, due at 3", "5 s, due at 7", "10 s, due at 10", "9 s, due at 11"]
    assert clock.getDelayedCalls() == []


def test_a_cancelled_earliest_timer_wakes_the_queues_once_for_the_next() -> None:
    """Cancelling the timer the reactor timer is set for leaves the reactor timer (it
    fires for nothing, then is set for the earliest timer left); cancelling the last
    timer of all removes it."""
    clock = Clock()
    queues = TimerQueues(clock)
    fired: list[float] = []
    short = queues.queue(0.5).call_later(lambda: fired.append(clock.seconds()))
    long = queues.queue(32.0).call_later(lambda: fired.append(clock.seconds()))
    short.cancel()
    assert [c.getTime() for c in clock.getDelayedCalls()] == [0.5]
    clock.pump([0.25] * 4)
    assert fired == [] and [c.getTime() for c in clock.getDelayedCalls()] == [32.0]
    long.cancel()
    assert clock.getDelayedCalls() == [] and len(queues) == 0


def test_sibling_queues_share_the_reactor_timer_and_leave_it_only_when_all_are_idle() -> None:
    """Two sets of queues made with ``sibling()`` (a transaction layer's guard and linger
    timers) wait on one reactor timer; it goes once neither has a timer left."""
    clock = Clock()
    linger = TimerQueues(clock)
    guard = linger.sibling()
    fired: list[tuple[str, float]] = []
    m = linger.queue(32.0).call_later(lambda: fired.append(("M", clock.seconds())))
    b = guard.queue(32.0).call_later(lambda: fired.append(("B", clock.seconds())))
    a = guard.queue(0.5).call_later(lambda: fired.append(("A", clock.seconds())))
    assert len(clock.getDelayedCalls()) == 1
    assert (len(linger), len(guard)) == (1, 2)
    a.cancel()
    b.cancel()
    assert len(clock.getDelayedCalls()) == 1  # M still waits
    m.cancel()
    assert clock.getDelayedCalls() == []
    guard.queue(0.5).call_later(lambda: fired.append(("A", clock.seconds())))
    linger.queue(5.0).call_later(lambda: fired.append(("K", clock.seconds())))
    clock.pump([0.5] * 12)
    assert fired == [("A", 0.5), ("K", 5.0)]
    assert clock.getDelayedCalls() == []


def test_a_timer_due_at_once_started_while_the_queues_fire_fires_in_the_same_pass() -> None:
    """A callback that starts a zero-length timer (a transport error reported later)
    sees it fire on the same clock step, after the callback returned."""
    clock = Clock()
    queues = TimerQueues(clock)
    fired: list[tuple[str, float]] = []

    def first() -> None:
        fired.append(("first", clock.seconds()))
        queues.queue(0.0).call_later(lambda: fired.append(("now", clock.seconds())))
        fired.append(("first returned", clock.seconds()))

    queues.queue(1.0).call_later(first)
    clock.advance(1)
    assert fired == [("first", 1.0), ("first returned", 1.0), ("now", 1.0)]
    assert clock.getDelayedCalls() == []
