"""
Tests for L{clicktodial.throttle}: delays, refusals, forgetting and bounds.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from clicktodial.throttle import AuthThrottle, ThrottleSettings

SETTINGS = ThrottleSettings(free_failures=2, base_delay=0.5, max_delay=4.0,
                            refuse_after=8, refuse_seconds=60.0,
                            forget_after=300.0, max_entries=100)


def test_delay_grows_after_free_failures_and_is_capped() -> None:
    """0 for the free failures, then doubling from base_delay up to the cap."""
    throttle = AuthThrottle(Clock(), SETTINGS)
    delays = [throttle.failure("192.0.2.1", None) for _ in range(7)]
    assert delays == [0.0, 0.0, 0.5, 1.0, 2.0, 4.0, 4.0]


def test_refused_after_threshold_until_it_ends() -> None:
    """refuse_after failures refuse the source for refuse_seconds."""
    clock = Clock()
    throttle = AuthThrottle(clock, SETTINGS)
    for _ in range(7):
        throttle.failure("192.0.2.1", None)
    assert throttle.refused("192.0.2.1") == 0.0
    throttle.failure("192.0.2.1", None)
    assert throttle.refused("192.0.2.1") == 60.0
    assert throttle.refused("192.0.2.2") == 0.0
    clock.pump([1.0] * 30)
    assert throttle.refused("192.0.2.1") == 30.0
    clock.pump([1.0] * 30)
    assert throttle.refused("192.0.2.1") == 0.0


def test_username_refused_for_every_source() -> None:
    """Failures for one username from many sources refuse that username."""
    throttle = AuthThrottle(Clock(), SETTINGS)
    for i in range(8):
        throttle.failure(f"198.51.100.{i}", "alice")
    assert throttle.refused("203.0.113.1", "alice") == 60.0
    assert throttle.refused("203.0.113.1", "bob") == 0.0
    assert throttle.refused("203.0.113.1") == 0.0


def test_trusted_source_exempt_from_username_refusal() -> None:
    """A source that authenticated as a user is not refused for that
    user's failures elsewhere (no lock-out of a working phone)."""
    throttle = AuthThrottle(Clock(), SETTINGS)
    throttle.success("192.0.2.10", "alice")
    for i in range(8):
        throttle.failure(f"198.51.100.{i}", "alice")
    assert throttle.refused("192.0.2.10", "alice") == 0.0
    assert throttle.refused("192.0.2.11", "alice") == 60.0


def test_trust_expires() -> None:
    """The exemption lasts forget_after seconds."""
    clock = Clock()
    throttle = AuthThrottle(clock, SETTINGS)
    throttle.success("192.0.2.10", "alice")
    clock.pump([10.0] * 30)
    for i in range(8):
        throttle.failure(f"198.51.100.{i}", "alice")
    assert throttle.refused("192.0.2.10", "alice") == 60.0


def test_success_clears_source_failures() -> None:
    """Authenticating clears the source's own failure count."""
    throttle = AuthThrottle(Clock(), SETTINGS)
    for _ in range(5):
        throttle.failure("192.0.2.1", None)
    throttle.success("192.0.2.1", "alice")
    assert throttle.failure("192.0.2.1", None) == 0.0


def test_failures_forgotten_after_quiet_period() -> None:
    """After forget_after seconds without failure the count restarts."""
    clock = Clock()
    throttle = AuthThrottle(clock, SETTINGS)
    for _ in range(5):
        throttle.failure("192.0.2.1", None)
    clock.pump([10.0] * 30)
    assert throttle.failure("192.0.2.1", None) == 0.0


def test_memory_bounded() -> None:
    """No more than max_entries sources and usernames are tracked."""
    throttle = AuthThrottle(Clock(), SETTINGS)
    for i in range(1000):
        throttle.failure(f"10.0.{i // 256}.{i % 256}", f"user{i}")
    assert throttle.tracked <= 2 * SETTINGS.max_entries


def test_expired_entries_dropped() -> None:
    """Quiet entries leave memory when new failures come."""
    clock = Clock()
    throttle = AuthThrottle(clock, SETTINGS)
    for i in range(50):
        throttle.failure(f"192.0.2.{i}", None)
    clock.pump([10.0] * 31)
    throttle.failure("203.0.113.1", None)
    assert throttle.tracked == 1


def test_never_refuses_when_disabled() -> None:
    """refuse_after = 0 only delays."""
    throttle = AuthThrottle(Clock(), ThrottleSettings(refuse_after=0))
    for _ in range(1000):
        throttle.failure("192.0.2.1", "alice")
    assert throttle.refused("192.0.2.1", "alice") == 0.0


def test_huge_counts_do_not_overflow() -> None:
    """The doubling is capped before it can overflow."""
    throttle = AuthThrottle(Clock(), ThrottleSettings(
        free_failures=0, refuse_after=0, max_delay=1e308))
    for _ in range(2000):
        delay = throttle.failure("192.0.2.1", None)
    assert delay > 0


def test_settings_validated() -> None:
    """Negative numbers are refused."""
    with pytest.raises(ValueError):
        ThrottleSettings(base_delay=-1)
    with pytest.raises(ValueError):
        ThrottleSettings(max_entries=0)
