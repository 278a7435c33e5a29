"""CallController.reload: SIGHUP applies a new [calls] policy to new calls only."""

from __future__ import annotations

import attrs
import pytest

from clicktodial.calls import controller as controller_module
from clicktodial.calls.policy import FlowI, FlowIV
from clicktodial.config import CallsConfig, Config, parse_config
from clicktodial.testing.callfakes import CallWorld


def config_with(**calls: object) -> Config:
    base = parse_config("[sip]\ndomain = 127.0.0.1\n", "x.ini")
    return attrs.evolve(base, calls=CallsConfig(**calls))  # type: ignore[arg-type]


def connected_world() -> tuple[CallWorld, str]:
    world = CallWorld()
    for name, host in (("alice", "127.0.0.2"), ("bob", "127.0.0.3"), ("carol", "127.0.0.4"),
                       ("dave", "127.0.0.5")):  # fmt: skip
        world.phone(name, host)
    info = world.place("alice", "bob")
    world.run(5)
    call = world.controller.get_call(info.call_id)
    assert call is not None and call.state == "connected"
    return world, info.call_id


def test_reload_applies_new_limits_to_new_calls_and_leaves_the_call_in_progress_alone() -> None:
    world, call_id = connected_world()
    world.controller.reload(config_with(max_calls_total=1, max_duration=10))
    # The call in progress counts towards the new limit...
    assert world.refusal("carol", "dave").reason == "total-limit"
    # ...but keeps its own timers: the new max_duration (10 s) does not end it.
    world.run(30)
    call = world.controller.get_call(call_id)
    assert call is not None and call.state == "connected"
    world.controller.hang_up(call_id)
    world.run(2)
    second = world.place("carol", "dave")
    world.run(5)
    assert world.controller.get_call(second.call_id).state == "connected"  # type: ignore[union-attr]
    # The new call follows the new max_duration.
    world.run(10)
    assert world.controller.get_call(second.call_id) is None
    world.assert_quiescent()


def test_reload_swaps_the_policy_for_new_calls() -> None:
    world, call_id = connected_world()
    assert isinstance(world.controller.policy.flow, FlowIV)
    world.controller.reload(config_with(policy="flow1", who_may_call="admins"))
    assert isinstance(world.controller.policy.flow, FlowI)
    assert world.refusal("carol", "dave").reason == "forbidden"
    call = world.controller.get_call(call_id)
    assert call is not None and call.state == "connected"
    world.controller.hang_up_all()
    world.assert_quiescent()


def test_a_policy_that_cannot_be_built_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    world = CallWorld(max_calls_per_user=3)
    policy, settings = world.controller.policy, world.controller.settings

    def broken(config: CallsConfig, options: object = None) -> object:
        raise ValueError("the plugin is broken")

    monkeypatch.setattr(controller_module, "create_policy", broken)
    with pytest.raises(ValueError, match="broken"):
        world.controller.reload(config_with(max_calls_per_user=1, ring_timeout=5))
    assert world.controller.policy is policy and world.controller.settings is settings
