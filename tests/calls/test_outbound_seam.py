"""
The controller's IOutboundCalls seam (docs/dialplan.md): when none of the routed trunks
exists, a call to a number is recorded with its number and class and fails as no-trunk, no
SIP sent (calls through trunks: test_outbound_trunks.py).
"""

from __future__ import annotations

from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from clicktodial.calls.values import CallInfo, CallRefused
from clicktodial.dialplan.numbers import E164
from clicktodial.dialplan.plan import DialDecision
from clicktodial.interfaces import IOutboundCalls
from clicktodial.testing.callfakes import CallWorld

DECISION = DialDecision(E164("442079460958"), "national", ("uk_main", "uk_backup"))


def outcome(world: CallWorld, caller: str) -> object:
    results: list[object] = []
    IOutboundCalls(world.controller).place_outbound(caller, DECISION).addBoth(results.append)
    assert results, "place_outbound did not fire"
    return results[0]


def test_the_controller_provides_the_outbound_seam() -> None:
    assert verifyObject(IOutboundCalls, CallWorld().controller)


def test_without_trunks_a_number_fails_as_no_trunk_recorded_and_no_sip_leaves() -> None:
    world = CallWorld()
    world.phone("alice", "127.0.0.2")
    before = len(world.wire)
    info = outcome(world, "alice")
    assert isinstance(info, CallInfo)
    assert (info.state, info.callee, info.end_reason, info.who_hung_up) == (
        "failed", "+442079460958", "no-trunk", "system")
    record = world.record(info.call_id)
    assert (record.number, record.destination_class, record.trunk, record.end_reason,
            record.public_state) == ("+442079460958", "national", None, "no-trunk", "failed")
    assert len(world.wire) == before
    assert world.controller.active_calls() == []


def test_an_unknown_caller_is_refused() -> None:
    failure = outcome(CallWorld(), "nobody")
    assert isinstance(failure, Failure) and isinstance(failure.value, CallRefused)
    assert failure.value.reason == "unknown-user"
