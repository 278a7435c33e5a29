"""
The call path asks the daemon's :data:`~clicktodial.log.LOG_LEVELS` before building an info
or debug event (``if LOG_LEVELS.info: log.info(...)``): at ``[log] level = warn`` a call
costs no event the observer would drop.  Each test starts with the gate open (the autouse
fixture in tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from twisted.logger import LogEvent, LogLevel, globalLogPublisher

from clicktodial.log import LOG_LEVELS
from clicktodial.testing.callfakes import CallWorld
from clicktodial.testing.uafakes import Answer, sdp


@pytest.fixture
def events() -> Iterator[list[LogEvent]]:
    seen: list[LogEvent] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def two_phones() -> CallWorld:
    world = CallWorld(policy="flow4")
    world.phone("alice", "127.0.0.2", answer=Answer(delay=1, sdp=sdp("alice")))
    world.phone("bob", "127.0.0.3", answer=Answer(delay=1, sdp=sdp("bob")))
    return world


def complete_call(world: CallWorld) -> None:
    world.place("alice", "bob")
    world.run(5)
    world.controller.hang_up(world.controller.active_calls()[0].call_id)
    world.assert_quiescent()


def _below_warn(events: list[LogEvent]) -> list[str]:
    return [
        f"{e.get('log_namespace')}: {e.get('log_format')}"
        for e in events
        if e["log_level"] in (LogLevel.debug, LogLevel.info)
    ]


def test_at_level_warn_a_complete_call_builds_no_info_or_debug_event(
    events: list[LogEvent],
) -> None:
    world = two_phones()  # (the store's start-up events are not the call's)
    events.clear()
    LOG_LEVELS.follow(LogLevel.warn)
    complete_call(world)
    assert _below_warn(events) == []


def test_at_level_info_a_complete_call_logs_its_steps_and_no_debug_event(
    events: list[LogEvent],
) -> None:
    """The same call with the gate at ``info``: the call's placing, transitions and end,
    and the INVITEs, are there; debug events are not built."""
    world = two_phones()
    events.clear()
    LOG_LEVELS.follow(LogLevel.info)
    complete_call(world)
    logged = _below_warn(events)
    assert any("{caller} calls {callee}" in line for line in logged)
    assert any("--{event}-->" in line for line in logged)
    assert any(line == "clicktodial.sip.ua: INVITE {uri}" for line in logged)
    assert [e for e in events if e["log_level"] is LogLevel.debug] == []


def test_a_test_may_close_the_daemons_gate(events: list[LogEvent]) -> None:
    """(With the next test:) a test that closes the global gate, as the daemon's observer
    does at ``[log] level = warn`` (tap and worker tests start it) ..."""
    LOG_LEVELS.follow(LogLevel.error)
    assert (LOG_LEVELS.debug, LOG_LEVELS.info) == (False, False)


def test_the_next_test_finds_the_daemons_gate_open_again() -> None:
    """... leaves it open for the next test (tests/conftest.py resets it): tests that
    assert info or debug events must not depend on which tests ran before them."""
    assert (LOG_LEVELS.debug, LOG_LEVELS.info) == (True, True)
