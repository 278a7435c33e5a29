"""
The call's state machine is one complete table (like the transactions',
tests/sip/test_transaction_table.py): every input has a row in every phase, the
terminal phases absorb everything, every action exists; an input with no transition
is logged once per call and counted, never dropped silently.
"""

from __future__ import annotations

import inspect
from typing import Any

from twisted.logger import LogEvent, globalLogPublisher
from zope.interface import implementer

from clicktodial.calls.call import PHASE_TIMERS, Call, CallSettings, Input, Phase, _Ends
from clicktodial.calls.events import PUBLIC_STATES
from clicktodial.calls.policy import FlowIV, LimitsPolicy
from clicktodial.interfaces import IBridge, IMediaFlow
from clicktodial.testing.callfakes import CallWorld
from clicktodial.testing.uafakes import Answer, sdp

TERMINAL = {Phase.ENDED, Phase.FAILED}
#: The actions that say why a call ended (one of them comes first in a row that ends it).
RECORDS = {"_record_end", "_record_cancel", "_record_hang_up", "_refuse_answer_without_offer"}


def test_every_input_in_every_phase_has_a_row() -> None:
    assert set(Call._TABLE) == {(phase, event) for phase in Phase for event in Input}


def test_terminal_phases_absorb_every_input() -> None:
    for (phase, event), (target, _) in Call._TABLE.items():
        if phase in TERMINAL:
            assert target is phase, (phase, event)


def test_every_action_exists_and_takes_the_payload() -> None:
    for key, (_, actions) in Call._TABLE.items():
        for action in actions:
            if isinstance(action, _Ends):
                continue
            name = getattr(action, "__name__", "")
            assert inspect.getattr_static(Call, name) is action, (key, action)
            inspect.signature(action).bind(object(), None)  # (call, payload)


def test_rows_that_end_a_call_record_why_hang_up_both_legs_and_report() -> None:
    for (phase, event), (target, actions) in Call._TABLE.items():
        if phase in TERMINAL or target not in TERMINAL:
            continue
        names = [getattr(a, "__name__", type(a).__name__) for a in actions]
        recorded = [n for n in names if n in RECORDS or n == "_Ends"]
        assert len(recorded) == 1, (phase, event, names)
        assert "_hang_up_callee" in names and names[-1] == "_report_end", (phase, event)
        assert any(n.startswith(("_hang_up_caller", "_tone_then")) for n in names)


def test_every_running_phase_has_a_timer_and_it_ends_the_call() -> None:
    settings = CallSettings(max_duration=3600.0)
    for phase in set(Phase) - TERMINAL:
        assert PHASE_TIMERS[phase](settings) > 0, phase
        assert Call._TABLE[phase, Input.TIMER][0] in TERMINAL
    assert not TERMINAL & set(PHASE_TIMERS)


def test_phases_are_shown_as_the_public_states() -> None:
    assert {p.value for p in Phase} - {"bridging"} <= set(PUBLIC_STATES)


@implementer(IMediaFlow)
class EagerFlow:
    """A (third-party) media flow calling bridged() before the callee even rings."""

    name = "eager"

    def __init__(self) -> None:
        self.inner = FlowIV()

    def caller_answered(self, bridge: IBridge, offer: bytes) -> None:
        bridge.bridged()
        bridge.bridged()
        self.inner.caller_answered(bridge, offer)

    def callee_answered(self, bridge: IBridge, sdp: bytes | None) -> None:
        self.inner.callee_answered(bridge, sdp)


def test_an_input_without_transition_is_logged_once_per_call_and_counted() -> None:
    """bridged() while the callee rings has no transition: the call goes on, one warning
    names the call, phase and input, and every such input is counted for /metrics."""
    world = CallWorld()
    world.phone("alice", "127.0.0.2", answer=Answer(delay=1, sdp=sdp("alice")))
    world.phone("bob", "127.0.0.3", answer=Answer(delay=2, sdp=sdp("bob")))
    controller = world.controller
    controller.policy = LimitsPolicy("eager", EagerFlow(), world.config)
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        info = world.place("alice", "bob")
        world.run(5)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert controller.unexpected_inputs == {"calling-callee/bridged": 2}
    warnings: list[dict[str, Any]] = [
        e
        for e in events
        if e.get("log_namespace") == "clicktodial.calls.call"
        and e["log_level"].name == "warn"
        and "has no transition" in e["log_format"]
    ]
    assert [(w["record"], w["phase"], w["event"]) for w in warnings] == [
        (info.call_id, "calling-callee", "bridged")
    ]
    # Nothing was dropped on the floor: the call connected as Flow IV does.
    assert world.states(info.call_id) == ["calling-caller", "calling-callee", "connected"]
    controller.hang_up(info.call_id)
    world.assert_quiescent()
