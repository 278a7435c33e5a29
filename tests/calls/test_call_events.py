"""Call state publication: every listener, and outcome listeners (final states only)."""

from __future__ import annotations

from zope.interface import implementer
from zope.interface.verify import verifyObject

from clicktodial.calls.events import CallEvents, CallInfo
from clicktodial.interfaces import ICallEventListener, ICallOutcomeListener
from clicktodial.testing.callfakes import CallWorld
from clicktodial.testing.uafakes import Answer, sdp


@implementer(ICallEventListener)
class _Every:
    def __init__(self) -> None:
        self.states: list[str] = []

    def call_state_changed(self, info: CallInfo) -> None:
        self.states.append(info.state)


@implementer(ICallOutcomeListener)
class _Outcomes(_Every):
    pass


def test_an_outcome_listener_is_told_of_final_states_only() -> None:
    """An ICallOutcomeListener hears ``ended``/``failed``; every other listener every state."""
    events = CallEvents()
    every, outcomes = _Every(), _Outcomes()
    verifyObject(ICallOutcomeListener, outcomes)
    events.subscribe(every)
    unsubscribe = events.subscribe(outcomes)
    for state in ("calling-caller", "calling-callee", "connected", "ended"):
        events.publish(CallInfo(call_id="c", caller="a", callee="b", state=state, created_at=1))
    assert every.states == ["calling-caller", "calling-callee", "connected", "ended"]
    assert outcomes.states == ["ended"]
    unsubscribe()
    events.publish(CallInfo(call_id="d", caller="a", callee="b", state="failed", created_at=1))
    assert outcomes.states == ["ended"]


def test_wants_says_whether_a_state_has_listeners() -> None:
    """With outcome listeners only, the states before the end need no CallInfo at all."""
    events = CallEvents()
    assert not events.wants("ended")
    events.subscribe(_Outcomes())
    assert [events.wants(s) for s in ("calling-caller", "connected", "ended", "failed")] == [
        False,
        False,
        True,
        True,
    ]
    unsubscribe = events.subscribe(_Every())
    assert events.wants("calling-caller")
    unsubscribe()
    assert not events.wants("calling-caller") and events.wants("ended")


def test_a_call_with_only_outcome_listeners_publishes_its_end_only() -> None:
    """The controller builds a call's CallInfo for a listener only when one wants the state."""
    world = CallWorld()
    outcomes = _Outcomes()
    world.controller.subscribe(outcomes)
    world.phone("alice", "127.0.0.2", answer=Answer(delay=1, sdp=sdp("alice")))
    world.phone("bob", "127.0.0.3", answer=Answer(delay=1, sdp=sdp("bob")))
    call_id = world.place("alice", "bob").call_id
    world.run(5)
    world.controller.hang_up(call_id)
    world.run(world.timers.timeout + 10)
    assert outcomes.states == ["ended"]
    assert world.states(call_id)[-1] == "ended"
    world.assert_quiescent()
