"""
Tests for :obj:`clicktodial.throttle`: reservations, delays, refusals, known
sources, forgetting and bounds.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from clicktodial.throttle import (
    AuthAttempt,
    AuthThrottle,
    ThrottleRefused,
    ThrottleSettings,
)

SETTINGS = ThrottleSettings(
    free_failures=2,
    base_delay=0.5,
    max_delay=4.0,
    refuse_after=8,
    refuse_seconds=60.0,
    forget_after=300.0,
    max_entries=100,
    trust_seconds=3600.0,
)


def fail(throttle: AuthThrottle, peer: str, user: str | None = None) -> float:
    """One failed attempt; its delay."""
    return throttle.begin(peer, user).failed()


def succeed(throttle: AuthThrottle, peer: str, user: str) -> None:
    throttle.begin(peer, user).succeeded()


def admitted(throttle: AuthThrottle, peer: str, user: str | None, n: int) -> list[AuthAttempt]:
    """Begin ``n`` attempts at once (none settled): those admitted."""
    attempts = []
    for _ in range(n):
        try:
            attempts.append(throttle.begin(peer, user))
        except ThrottleRefused:
            pass
    return attempts


def test_delay_grows_after_free_failures_and_is_capped() -> None:
    """0 for the free failures, then doubling from base_delay up to the cap."""
    throttle = AuthThrottle(Clock(), SETTINGS)
    delays = [fail(throttle, "192.0.2.1") for _ in range(7)]
    assert delays == [0.0, 0.0, 0.5, 1.0, 2.0, 4.0, 4.0]


def test_refused_after_threshold_until_it_ends() -> None:
    """refuse_after failures refuse the source for refuse_seconds."""
    clock = Clock()
    throttle = AuthThrottle(clock, SETTINGS)
    for _ in range(7):
        fail(throttle, "192.0.2.1")
    assert throttle.refused("192.0.2.1") == 0.0
    fail(throttle, "192.0.2.1")
    assert throttle.refused("192.0.2.1") == 60.0
    with pytest.raises(ThrottleRefused) as refused:
        throttle.begin("192.0.2.1", "alice")
    assert refused.value.retry_after == 60.0
    assert throttle.refused("192.0.2.2") == 0.0
    clock.pump([1.0] * 30)
    assert throttle.refused("192.0.2.1") == 30.0
    clock.pump([1.0] * 30)
    assert throttle.refused("192.0.2.1") == 0.0


def test_after_a_refusal_one_attempt_per_refusal() -> None:
    """When a refusal ends with the count still full, one attempt is
    admitted; it starts the next refusal at once (the others are refused),
    and a failure keeps it."""
    clock = Clock()
    throttle = AuthThrottle(clock, SETTINGS)
    for _ in range(8):
        fail(throttle, "192.0.2.1")
    clock.advance(60)
    probe = throttle.begin("192.0.2.1", None)
    with pytest.raises(ThrottleRefused) as refused:
        throttle.begin("192.0.2.1", None)
    assert not refused.value.busy and refused.value.retry_after == 60.0
    probe.failed()
    assert throttle.refused("192.0.2.1") == 60.0


def test_concurrent_attempts_take_slots_before_checking() -> None:
    """However many attempts begin at once, at most refuse_after are
    admitted (each slot is a failure in flight), per source, per user."""
    throttle = AuthThrottle(Clock(), SETTINGS)
    assert len(admitted(throttle, "192.0.2.1", "alice", 150)) == 8
    # Per user, from many sources at once.
    throttle = AuthThrottle(Clock(), SETTINGS)
    attempts = [a for i in range(150) for a in admitted(throttle, f"198.51.100.{i}", "bob", 1)]
    assert len(attempts) == 8


def test_released_attempts_give_their_slot_back() -> None:
    """An attempt that tested no password (released) counts nothing: while
    the count is full of attempts in flight others are refused as busy (a
    short Retry-After, no refusal started), then admitted again."""
    throttle = AuthThrottle(Clock(), SETTINGS)
    attempts = admitted(throttle, "192.0.2.1", "alice", 8)
    with pytest.raises(ThrottleRefused) as busy:
        throttle.begin("192.0.2.1", "bob")
    assert busy.value.busy and busy.value.retry_after == 1.0
    assert throttle.refused("192.0.2.1") == 0.0
    for attempt in attempts:
        attempt.released()
    assert throttle.tracked == 0
    assert len(admitted(throttle, "192.0.2.1", "alice", 20)) == 8


def test_settling_twice_counts_once() -> None:
    throttle = AuthThrottle(Clock(), SETTINGS)
    attempt = throttle.begin("192.0.2.1", "alice")
    attempt.failed()
    attempt.released()
    attempt.failed()
    assert len(admitted(throttle, "192.0.2.1", None, 20)) == 7


def test_username_refused_for_every_source() -> None:
    """Failures for one username from many sources refuse that username."""
    throttle = AuthThrottle(Clock(), SETTINGS)
    for i in range(8):
        fail(throttle, f"198.51.100.{i}", "alice")
    assert throttle.refused("203.0.113.1", "alice") == 60.0
    assert throttle.refused("203.0.113.1", "bob") == 0.0
    assert throttle.refused("203.0.113.1") == 0.0


def test_success_as_another_user_does_not_clear_the_source() -> None:
    """A source that authenticates as carol keeps its failures for bob
    (issue 13 item 3b: a success cleared the source's whole count)."""
    throttle = AuthThrottle(Clock(), SETTINGS)
    guesses = 0
    for _ in range(10):
        for _ in range(5):
            try:
                throttle.begin("192.0.2.1", "bob").failed()
                guesses += 1
            except ThrottleRefused:
                pass
        succeed(throttle, "192.0.2.1", "carol")
    assert guesses == 8
    # carol, known at that address, still gets in.
    throttle.begin("192.0.2.1", "carol").succeeded()


def test_known_source_is_limited_by_its_own_count() -> None:
    """A source that authenticated as bob gets refuse_after guesses for bob
    per window, not more (issue 13 item 3b: it was exempt and guessed
    freely), at once or one by one."""
    throttle = AuthThrottle(Clock(), SETTINGS)
    succeed(throttle, "192.0.2.10", "bob")
    assert len(admitted(throttle, "192.0.2.10", "bob", 90)) == 8
    throttle = AuthThrottle(Clock(), SETTINGS)
    succeed(throttle, "192.0.2.10", "bob")
    checked = 0
    for _ in range(90):
        try:
            throttle.begin("192.0.2.10", "bob").failed()
            checked += 1
        except ThrottleRefused:
            pass
    assert checked == 8
    assert throttle.refused("192.0.2.10", "bob") == 60.0


def test_known_source_not_locked_out_by_others() -> None:
    """Guessing alice's password from many addresses refuses alice's name to
    new sources, but not to an address she authenticated from; and failures
    of others behind her address do not refuse her there either."""
    throttle = AuthThrottle(Clock(), SETTINGS)
    succeed(throttle, "192.0.2.10", "alice")
    for i in range(8):
        fail(throttle, f"198.51.100.{i}", "alice")
    for _ in range(8):
        fail(throttle, "192.0.2.10", "mallory")
    assert throttle.refused("192.0.2.11", "alice") == 60.0
    assert throttle.refused("192.0.2.10", "mallory") == 60.0
    assert throttle.refused("192.0.2.10") == 60.0
    assert throttle.refused("192.0.2.10", "alice") == 0.0
    assert throttle.is_known("192.0.2.10", "alice")
    attempt = throttle.begin("192.0.2.10", "alice")
    assert attempt.known
    attempt.succeeded()


def test_success_clears_no_count() -> None:
    """A success gives its slot back and clears nothing, not even its own
    pair's count: an attacker sharing a known address gets no new guesses
    from the user's successes there."""
    throttle = AuthThrottle(Clock(), SETTINGS)
    succeed(throttle, "192.0.2.10", "bob")
    checked = 0
    for _ in range(10):
        for _ in range(3):
            try:
                throttle.begin("192.0.2.10", "bob").failed()
                checked += 1
            except ThrottleRefused:
                pass
        try:
            succeed(throttle, "192.0.2.10", "bob")
        except ThrottleRefused:
            pass
    assert checked == 8


def test_success_that_started_a_refusal_lifts_it_below_the_limit() -> None:
    """The slot that filled the count started the refusal; if it succeeds and
    the count without it is under the limit, the refusal goes."""
    throttle = AuthThrottle(Clock(), SETTINGS)
    succeed(throttle, "192.0.2.10", "bob")
    for _ in range(7):
        fail(throttle, "192.0.2.10", "bob")
    phone = throttle.begin("192.0.2.10", "bob")
    with pytest.raises(ThrottleRefused):
        throttle.begin("192.0.2.10", "bob")
    phone.succeeded()
    throttle.begin("192.0.2.10", "bob").succeeded()


def test_trust_expires() -> None:
    """A source stays known for trust_seconds after its last success."""
    clock = Clock()
    throttle = AuthThrottle(clock, SETTINGS)
    succeed(throttle, "192.0.2.10", "alice")
    clock.advance(3599)
    assert throttle.is_known("192.0.2.10", "alice")
    succeed(throttle, "192.0.2.10", "alice")
    clock.advance(3599)
    assert throttle.is_known("192.0.2.10", "alice")
    clock.advance(1)
    assert not throttle.is_known("192.0.2.10", "alice")
    for i in range(8):
        fail(throttle, f"198.51.100.{i}", "alice")
    assert throttle.refused("192.0.2.10", "alice") == 60.0


def test_successes_leave_no_counts_behind() -> None:
    """Successful attempts from unknown sources leave no source or user
    counts (bounded memory is spent on failures); only the known pair."""
    throttle = AuthThrottle(Clock(), SETTINGS)
    for i in range(50):
        succeed(throttle, f"192.0.2.{i}", f"user{i}")
    assert throttle.tracked == 50


def test_failures_forgotten_after_quiet_period() -> None:
    """After forget_after seconds without failure the count restarts."""
    clock = Clock()
    throttle = AuthThrottle(clock, SETTINGS)
    for _ in range(5):
        fail(throttle, "192.0.2.1")
    clock.pump([10.0] * 30)
    assert fail(throttle, "192.0.2.1") == 0.0


def test_memory_bounded() -> None:
    """No more than max_entries sources, usernames and known pairs."""
    throttle = AuthThrottle(Clock(), SETTINGS)
    for i in range(1000):
        fail(throttle, f"10.0.{i // 256}.{i % 256}", f"user{i}")
        succeed(throttle, f"10.1.{i // 256}.{i % 256}", f"user{i}")
    assert throttle.tracked <= 3 * SETTINGS.max_entries


def test_expired_entries_dropped() -> None:
    """Quiet entries leave memory when new failures come."""
    clock = Clock()
    throttle = AuthThrottle(clock, SETTINGS)
    for i in range(50):
        fail(throttle, f"192.0.2.{i}")
    clock.pump([10.0] * 31)
    fail(throttle, "203.0.113.1")
    assert throttle.tracked == 1


def test_never_refuses_when_disabled() -> None:
    """refuse_after = 0 only delays."""
    throttle = AuthThrottle(Clock(), ThrottleSettings(refuse_after=0))
    for _ in range(1000):
        fail(throttle, "192.0.2.1", "alice")
    assert throttle.refused("192.0.2.1", "alice") == 0.0


def test_huge_counts_do_not_overflow() -> None:
    """The doubling is capped before it can overflow."""
    throttle = AuthThrottle(
        Clock(), ThrottleSettings(free_failures=0, refuse_after=0, max_delay=1e308)
    )
    for _ in range(2000):
        delay = fail(throttle, "192.0.2.1")
    assert delay > 0


def test_settings_validated() -> None:
    """Negative numbers are refused."""
    with pytest.raises(ValueError):
        ThrottleSettings(base_delay=-1)
    with pytest.raises(ValueError):
        ThrottleSettings(max_entries=0)
    with pytest.raises(ValueError):
        ThrottleSettings(trust_seconds=0)
