"""
:class:`clicktodial.timers.LingerQueue`: many same-length timers on one reactor timer, each
firing its own delay after it started, on a fake clock stepped in small steps.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher

from clicktodial.timers import Lingering, LingerQueue


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
