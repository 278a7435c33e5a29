"""
Calls through a media relay ([media] relay, IMediaRelay) with a fake relay:
each phone is sent the relay's description instead of the other phone's, in
Flow I and Flow IV and on re-INVITEs; offers, answers and the delete go to
the relay in order; every way a call ends deletes its session; a failing
relay fails the call (media-relay-failed) or is bypassed (on_failure =
unrelayed); auto relays only calls with a phone behind NAT.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer
from zope.interface.verify import verifyObject

from clicktodial.calls.relay import CallRelay, RelayBridge, RelaySettings, needs_relay, sdp_address
from clicktodial.interfaces import IBridge, IMediaRelay
from clicktodial.media.rtpengine import RelayError, RelayTimeout
from clicktodial.sip.sdp import SDP_CONTENT_TYPE
from clicktodial.testing.callfakes import CallWorld, Phone
from clicktodial.testing.uafakes import Answer, sdp

POLICIES = ["flow4", "flow1"]
RELAY_HOST = "203.0.113.50"


@implementer(IMediaRelay)
class FakeRelay:
    """Rewrites every description to name RELAY_HOST and a port per command."""

    name = "fake"

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []
        #: Commands to fail: {"offer": error}; commands to hold: names in ``hold``.
        self.failing: dict[str, Exception] = {}
        self.hold: set[str] = set()
        self.held: list[tuple[Deferred[bytes], bytes]] = []

    def _reply(self, command: str, sdp_in: bytes) -> Deferred[bytes]:
        if command in self.failing:
            return fail(self.failing[command])
        port = 30000 + 2 * len(self.commands)
        out = sdp("relay", host=RELAY_HOST, port=port)
        if command in self.hold:
            d: Deferred[bytes] = Deferred()
            self.held.append((d, out))
            return d
        return succeed(out)

    def offer(self, call_id: str, from_tag: str, sdp: bytes, source: str | None) -> Deferred[bytes]:
        self.commands.append(("offer", call_id, from_tag, sdp_address(sdp), source))
        return self._reply("offer", sdp)

    def answer(
        self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, source: str | None
    ) -> Deferred[bytes]:
        self.commands.append(("answer", call_id, from_tag, to_tag, sdp_address(sdp), source))
        return self._reply("answer", sdp)

    def delete(self, call_id: str) -> Deferred[None]:
        self.commands.append(("delete", call_id))
        return succeed(None)

    def query(self, call_id: str) -> Deferred[Mapping[str, object]]:
        return succeed({})

    def stats(self) -> Mapping[str, float]:
        return {}

    def names(self) -> list[str]:
        return [c[0] for c in self.commands]


def relayed_world(
    policy: str = "flow4",
    *,
    auto: bool = False,
    on_failure: str = "fail",
    alice_host: str = "192.168.1.10",
    bob_host: str = "192.168.1.20",
    **settings: Any,
) -> tuple[CallWorld, Phone, Phone, FakeRelay]:
    world = CallWorld(policy=policy, **settings)
    relay = FakeRelay()
    world.controller.relay = RelaySettings(relay, auto=auto, on_failure=on_failure)
    alice = world.phone(
        "alice", "127.0.0.2", answer=Answer(delay=1, sdp=sdp("alice", host=alice_host, port=4000))
    )
    bob = world.phone(
        "bob", "127.0.0.3", answer=Answer(delay=2, sdp=sdp("bob", host=bob_host, port=5000))
    )
    return world, alice, bob, relay


def remote_address(phone: Phone) -> str | None:
    return sdp_address(phone.sessions[0].dialog.offer_answer.remote_sdp)


def place(world: CallWorld, seconds: float = 5) -> str:
    info = world.place("alice", "bob")
    world.run(seconds)
    return info.call_id


def test_fake_relay_provides_the_interface() -> None:
    assert verifyObject(IMediaRelay, FakeRelay())


def test_the_relay_bridge_provides_ibridge() -> None:
    call: Any = type("StandInCall", (), {"caller_offer": b""})()
    relay = CallRelay(FakeRelay(), "c", auto=False, on_failure="fail")
    assert verifyObject(IBridge, RelayBridge(call, relay))


def test_flow4_offers_the_callees_offer_and_answers_the_callers_answer_through_the_relay() -> None:
    world, alice, bob, relay = relayed_world("flow4")
    call_id = place(world)
    info = world.controller.get_call(call_id)
    assert info is not None and info.state == "connected" and info.media_relay == "relayed"
    # Flow IV: the callee's offer (its 2xx) to the caller, the caller's answer to the callee;
    # the held answer of our own never goes through the relay.
    assert relay.commands == [
        ("offer", call_id, "callee", "192.168.1.20", "127.0.0.3"),
        # alice's answer to the re-INVITE (the fake phone answers from 127.0.0.1)
        ("answer", call_id, "callee", "caller", "127.0.0.1", "127.0.0.2"),
    ]
    assert remote_address(alice) == RELAY_HOST and remote_address(bob) == RELAY_HOST
    alice.sessions[0].bye()
    world.run(2)
    assert relay.commands[-1] == ("delete", call_id)
    assert world.record(call_id).end_reason == "caller-hangup"
    world.assert_quiescent()


def test_flow1_offers_the_callers_offer_and_answers_the_callees_answer_through_the_relay() -> None:
    world, alice, bob, relay = relayed_world("flow1")
    call_id = place(world)
    assert relay.commands == [
        ("offer", call_id, "caller", "192.168.1.10", "127.0.0.2"),
        ("answer", call_id, "caller", "callee", "192.168.1.20", "127.0.0.3"),
    ]
    assert sdp_address(world.sent("INVITE", to="127.0.0.3")[0].message.body) == RELAY_HOST
    assert sdp_address(world.sent("ACK", to="127.0.0.2")[0].message.body) == RELAY_HOST
    assert world.controller.get_call(call_id).state == "connected"  # type: ignore[union-attr]
    world.controller.hang_up(call_id, "bob")
    world.run(1)
    assert relay.names() == ["offer", "answer", "delete"]
    world.assert_quiescent()


@pytest.mark.parametrize("policy", POLICIES)
def test_hold_and_resume_reinvites_go_through_the_relay(policy: str) -> None:
    world, alice, bob, relay = relayed_world(policy)
    call_id = place(world)
    before = len(relay.commands)
    responses: list[int] = []
    hold = sdp("alice", 7, host="192.168.1.10", port=4000).replace(
        b"m=audio", b"a=sendonly\r\nm=audio"
    )
    alice.sessions[0].reinvite(
        hold, SDP_CONTENT_TYPE, on_response=lambda r: responses.append(r.status)
    )
    world.run(2)
    assert responses[-1] == 200
    assert relay.commands[before:] == [
        ("offer", call_id, "caller", "192.168.1.10", "127.0.0.2"),
        ("answer", call_id, "caller", "callee", "127.0.0.1", "127.0.0.3"),
    ]
    bob_invites = world.sent("INVITE", to="127.0.0.3")
    assert sdp_address(bob_invites[-1].message.body) == RELAY_HOST
    assert remote_address(alice) == RELAY_HOST
    bob.sessions[0].reinvite(
        sdp("bob", 9, host="192.168.1.20", port=5000),
        SDP_CONTENT_TYPE,
        on_response=lambda r: responses.append(r.status),
    )
    world.run(2)
    assert responses[-1] == 200
    assert relay.commands[-2][:3] == ("offer", call_id, "callee")
    assert relay.commands[-1][:4] == ("answer", call_id, "callee", "caller")
    world.controller.hang_up(call_id, "alice")
    world.run(1)
    assert relay.names()[-1] == "delete"
    world.assert_quiescent()


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("command", ["offer", "answer"])
def test_a_failing_relay_fails_the_call_with_media_relay_failed(policy: str, command: str) -> None:
    world, alice, bob, relay = relayed_world(policy)
    relay.failing[command] = RelayTimeout(command, "no answer")
    call_id = place(world)
    record = world.record(call_id)
    assert (record.state, record.end_reason, record.who_hung_up) == (
        "failed",
        "media-relay-failed",
        "system",
    )
    assert alice.sessions == [] and bob.sessions == []
    # Whatever rtpengine may hold of the call is deleted.
    assert relay.names()[-1] == "delete"
    world.assert_quiescent()


@pytest.mark.parametrize("policy", POLICIES)
def test_on_failure_unrelayed_connects_the_phones_directly(policy: str) -> None:
    world, alice, bob, relay = relayed_world(policy, on_failure="unrelayed")
    relay.failing["offer"] = RelayError("offer", "Ran out of ports")
    call_id = place(world)
    info = world.controller.get_call(call_id)
    assert info is not None and info.state == "connected" and info.media_relay == "unrelayed"
    # each phone has the other's own description (fake phones answer re-INVITEs from 127.0.0.1)
    assert remote_address(alice) == "192.168.1.20"
    assert remote_address(bob) in ("192.168.1.10", "127.0.0.1")
    world.controller.hang_up(call_id, "alice")
    world.run(1)
    assert relay.names() == ["offer"]  # no answer, no delete: nothing was relayed
    world.assert_quiescent()


def test_on_failure_unrelayed_does_not_save_a_call_whose_answer_fails() -> None:
    """The callee was already given the relay's address: going on unrelayed would be silence."""
    world, alice, bob, relay = relayed_world("flow4", on_failure="unrelayed")
    relay.failing["answer"] = RelayError("answer", "Unknown call-id")
    call_id = place(world)
    assert world.record(call_id).end_reason == "media-relay-failed"
    world.assert_quiescent()


@pytest.mark.parametrize("policy", POLICIES)
def test_hanging_up_while_the_relay_thinks_deletes_the_session(policy: str) -> None:
    world, alice, bob, relay = relayed_world(policy)
    relay.hold.add("offer")
    info = world.place("alice", "bob")
    world.run(5)
    assert len(relay.held) == 1
    world.controller.hang_up(info.call_id, "alice")
    world.run(1)
    d, out = relay.held.pop()
    d.callback(out)  # the late reply changes nothing
    world.run(1)
    assert relay.names() == ["offer", "delete"]
    assert world.record(info.call_id).state in ("failed", "ended")
    world.assert_quiescent()


def test_the_steps_of_the_flow_wait_for_the_relay_in_order() -> None:
    """Flow I: the caller's ACK (with the relay's answer) goes before the call is connected."""
    world, alice, bob, relay = relayed_world("flow1")
    relay.hold.add("answer")
    info = world.place("alice", "bob")
    world.run(5)
    assert world.controller.get_call(info.call_id).state != "connected"  # type: ignore[union-attr]
    assert world.sent("ACK", to="127.0.0.2") == []
    d, out = relay.held.pop()
    d.callback(out)
    world.run(1)
    assert sdp_address(world.sent("ACK", to="127.0.0.2")[0].message.body) == RELAY_HOST
    assert world.controller.get_call(info.call_id).state == "connected"  # type: ignore[union-attr]
    world.controller.hang_up(info.call_id, None)
    world.assert_quiescent()


def test_daemon_stop_deletes_relay_sessions() -> None:
    world, alice, bob, relay = relayed_world("flow4")
    call_id = place(world)
    assert world.controller.hang_up_all() == 1
    world.run(2)
    assert relay.commands[-1] == ("delete", call_id)
    world.assert_quiescent()


@pytest.mark.parametrize("policy", POLICIES)
def test_auto_does_not_relay_phones_whose_sdp_names_their_signalling_address(policy: str) -> None:
    world, alice, bob, relay = relayed_world(
        policy, auto=True, alice_host="127.0.0.2", bob_host="127.0.0.3"
    )
    call_id = place(world)
    info = world.controller.get_call(call_id)
    assert info is not None and info.state == "connected" and info.media_relay == "off"
    assert relay.commands == []
    assert remote_address(alice) == "127.0.0.3"
    world.controller.hang_up(call_id, "alice")
    world.run(1)
    assert relay.commands == []
    world.assert_quiescent()


@pytest.mark.parametrize("policy", POLICIES)
def test_auto_relays_a_call_with_a_phone_behind_nat(policy: str) -> None:
    world, alice, bob, relay = relayed_world(
        policy, auto=True, alice_host="192.168.1.10", bob_host="127.0.0.3"
    )
    call_id = place(world)
    info = world.controller.get_call(call_id)
    assert info is not None and info.state == "connected" and info.media_relay == "relayed"
    assert remote_address(bob) == RELAY_HOST
    world.controller.hang_up(call_id, "alice")
    world.assert_quiescent()


def test_needs_relay_rules() -> None:
    def s(host: str) -> bytes:
        return sdp("x", host=host)

    assert not needs_relay([(s("198.51.100.1"), "198.51.100.1"), (s("203.0.113.9"), None)])
    assert needs_relay([(s("192.168.1.10"), "198.51.100.1"), (None, None)])
    # private while the other is not (sources unknown: a trusted proxy in front)
    assert needs_relay([(s("10.0.0.5"), None), (s("9.9.9.9"), None)])
    # both on one LAN
    assert not needs_relay([(s("10.0.0.5"), None), (s("10.0.0.6"), None)])
    # a held description (0.0.0.0) or garbage is no reason
    assert not needs_relay([(s("0.0.0.0"), "198.51.100.1"), (b"garbage", "198.51.100.1")])
