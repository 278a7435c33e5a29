"""Call-control policies: chosen by name, who may call whom, call limits."""

from __future__ import annotations

import pytest
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from clicktodial.calls.controller import CallController
from clicktodial.calls.events import CallInfo
from clicktodial.calls.policy import (
    BUILTIN_POLICIES,
    CallRefused,
    CallRequest,
    UnknownPolicy,
    available_policies,
    create_policy,
    load_policy,
)
from clicktodial.config import CallsConfig, parse_config
from clicktodial.interfaces import ICallController, ICallPolicy, ICallPolicyFactory, IMediaFlow
from clicktodial.store.errors import StoreUnavailable
from clicktodial.store.values import User
from clicktodial.testing.callfakes import CallWorld, HeldCallRecords
from clicktodial.testing.fakes import success_result_of
from clicktodial.testing.uafakes import Answer


def request(
    caller_calls: int = 0, callee_calls: int = 0, total: int = 0, admin: bool = False
) -> CallRequest:
    return CallRequest(
        User("alice", is_admin=admin), User("bob"), caller_calls, callee_calls, total
    )


@pytest.mark.parametrize("name", sorted(BUILTIN_POLICIES))
def test_builtin_policies_provide_their_interfaces(name: str) -> None:
    factory = load_policy(name)
    verifyObject(ICallPolicyFactory, factory)
    policy = factory.create(CallsConfig(), {})
    verifyObject(ICallPolicy, policy)
    verifyObject(IMediaFlow, policy.flow)
    assert policy.flow.name == name


def test_flow4_is_the_default_policy() -> None:
    config = parse_config("[sip]\ndomain = example.test\n", "x.ini")
    assert config.calls.policy == "flow4"
    assert create_policy(config.calls).flow.name == "flow4"


def test_unknown_policy_name_lists_the_available_ones() -> None:
    with pytest.raises(UnknownPolicy) as info:
        load_policy("flow9")
    assert "flow1" in str(info.value) and "flow4" in str(info.value)
    assert set(available_policies()) >= {"flow1", "flow4"}


@pytest.mark.parametrize(
    ("settings", "req", "reason"),
    [
        ({"who_may_call": "nobody"}, request(), "forbidden"),
        ({"who_may_call": "admins"}, request(), "forbidden"),
        ({"max_calls_per_user": 2}, request(caller_calls=2), "caller-limit"),
        ({"max_calls_per_user": 2}, request(callee_calls=2), "callee-limit"),
        ({"max_calls_total": 10}, request(total=10), "total-limit"),
    ],
)
def test_policy_refuses_what_the_settings_forbid(
    settings: dict[str, object], req: CallRequest, reason: str
) -> None:
    policy = create_policy(CallsConfig(**settings))  # type: ignore[arg-type]
    with pytest.raises(CallRefused) as info:
        policy.authorize(req)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("settings", "req"),
    [
        ({"who_may_call": "admins"}, request(admin=True)),
        ({"max_calls_per_user": 0}, request(caller_calls=100)),
        ({"max_calls_per_user": 2}, request(caller_calls=1, callee_calls=1, total=5)),
    ],
)
def test_policy_allows_what_the_settings_allow(
    settings: dict[str, object], req: CallRequest
) -> None:
    create_policy(CallsConfig(**settings)).authorize(req)  # type: ignore[arg-type]


def test_a_user_cannot_call_themselves() -> None:
    with pytest.raises(CallRefused) as info:
        create_policy(CallsConfig()).authorize(CallRequest(User("a"), User("a"), 0, 0, 0))
    assert info.value.reason == "same-user"


def test_controller_provides_its_interface() -> None:
    world = CallWorld()
    assert isinstance(world.controller, CallController)
    verifyObject(ICallController, world.controller)


def test_unknown_or_disabled_users_are_refused() -> None:
    world = CallWorld()
    world.phone("alice", "127.0.0.2")
    assert world.refusal("alice", "nobody").reason == "unknown-user"
    world.user("carol")
    from clicktodial.store.values import UserChanges

    world.store.update_user("carol", UserChanges(disabled=True))
    assert world.refusal("carol", "alice").reason == "disabled-user"


def test_calls_in_progress_count_against_the_per_user_limit() -> None:
    world = CallWorld(max_calls_per_user=1)
    world.phone("alice", "127.0.0.2", answer=Answer(sdp=None))
    world.phone("bob", "127.0.0.3")
    world.phone("carol", "127.0.0.4")
    info = world.place("alice", "bob")
    assert world.refusal("carol", "alice").reason == "callee-limit"
    world.controller.hang_up(info.call_id)
    world.run(1)
    world.place("carol", "alice")
    world.controller.hang_up_all()
    world.assert_quiescent()


def test_a_call_counts_against_the_limits_while_its_record_is_written() -> None:
    """A call being recorded holds its place under the limits; a record that fails gives
    the place back (and fails the call), one that is written starts the call."""
    world = CallWorld(max_calls_per_user=1)
    world.phone("alice", "127.0.0.2", answer=Answer(sdp=None))
    world.phone("bob", "127.0.0.3")
    world.phone("carol", "127.0.0.4")
    records = HeldCallRecords()
    world.controller.records = records  # type: ignore[assignment]
    placed: list[object] = []
    world.controller.place_call("alice", "bob").addBoth(placed.append)
    assert not placed and len(records.pending) == 1
    assert world.refusal("carol", "alice").reason == "callee-limit"
    records.pending[0].errback(StoreUnavailable("database unavailable"))
    assert isinstance(placed[0], Failure) and placed[0].check(StoreUnavailable)
    assert world.controller.active_calls() == []
    world.controller.place_call("carol", "alice").addBoth(placed.append)
    assert len(placed) == 1 and len(records.pending) == 2
    assert world.refusal("bob", "alice").reason == "callee-limit"
    records.pending[1].callback(success_result_of(world.store.create_call("carol", "alice", 0.0)))
    info = placed[1]
    assert isinstance(info, CallInfo) and info.state == "calling-caller"
    assert [call.call_id for call in world.controller.active_calls()] == [info.call_id]
    assert world.refusal("bob", "alice").reason == "callee-limit"
    world.controller.hang_up_all()
    world.run(1)
    world.controller.records = world.store
    world.place("bob", "alice")
    world.controller.hang_up_all()
    world.assert_quiescent()
