"""
Every way a click-to-dial call can go, with two (or three) fake phones on an
in-memory network and a fake clock: each test ends by checking that nothing
of the call is left (sessions, transactions, timers, record writes).
"""

from __future__ import annotations

from typing import Any

import pytest

from clicktodial.calls.values import CallInfo
from clicktodial.netaddr import NetworkSet
from clicktodial.sip.message import Request
from clicktodial.sip.sdp import SDP_CONTENT_TYPE, SessionDescription
from clicktodial.store.values import UserChanges
from clicktodial.testing.callfakes import DOMAIN, CallWorld, Phone
from clicktodial.testing.uafakes import Answer, sdp

POLICIES = ["flow4", "flow1"]


def state(world: CallWorld, call_id: str) -> str | None:
    info = world.controller.get_call(call_id)
    return info.state if info is not None else None


def world_with_phones(
    policy: str = "flow4",
    caller: Answer | None = None,
    callee: Answer | None = None,
    **settings: Any,
) -> tuple[CallWorld, Phone, Phone]:
    world = CallWorld(policy=policy, **settings)
    alice = world.phone(
        "alice",
        "127.0.0.2",
        answer=caller or Answer(delay=1, sdp=sdp("alice")),
        display_name="Alice Liddell",
    )
    bob = world.phone(
        "bob",
        "127.0.0.3",
        answer=callee or Answer(delay=2, sdp=sdp("bob")),
        display_name="Bob Dylan",
    )
    return world, alice, bob


def connected(policy: str = "flow4", **settings: Any) -> tuple[CallWorld, Phone, Phone, str]:
    world, alice, bob = world_with_phones(policy, **settings)
    info = world.place("alice", "bob")
    world.run(5)
    assert state(world, info.call_id) == "connected"
    return world, alice, bob, info.call_id


@pytest.mark.parametrize("policy", POLICIES)
def test_connected_call_relays_each_phones_description_to_the_other(policy: str) -> None:
    world, alice, bob, call_id = connected(policy)
    a_session, b_session = alice.sessions[0], bob.sessions[0]
    a_sees = SessionDescription.parse(a_session.dialog.offer_answer.remote_sdp or b"")
    b_sees = SessionDescription.parse(b_session.dialog.offer_answer.remote_sdp or b"")
    # Media flows directly: each phone's remote description names the other's media.
    assert [line for line in a_sees.lines if line[0] != "o"] == [
        line for line in SessionDescription.parse(sdp("bob")).lines if line[0] != "o"
    ]
    assert [line for line in b_sees.lines if line[0] != "o"] == [
        line for line in SessionDescription.parse(sdp("alice")).lines if line[0] != "o"
    ]
    assert world.states(call_id) == ["calling-caller", "calling-callee", "connected"]
    a_session.bye()
    world.run(2)
    assert bob.sessions == []
    record = world.record(call_id)
    assert (record.end_reason, record.who_hung_up, record.state) == (
        "caller-hangup",
        "caller",
        "ended",
    )
    assert record.caller_answered_at is not None and record.callee_answered_at is not None
    assert world.states(call_id)[-1] == "ended"
    world.assert_quiescent()


def test_flow4_acks_the_caller_at_once_with_a_held_answer_then_reinvites_it() -> None:
    world, alice, bob, call_id = connected("flow4")
    first_ack = world.sent("ACK", to="127.0.0.2")[0].message
    held = SessionDescription.parse(first_ack.body)
    assert held.connection is not None and held.connection.address == "0.0.0.0"
    assert ("a", "inactive") in held.lines
    # The callee was INVITEd without SDP; the caller re-INVITEd with its offer,
    # under the origin the caller saw in the held answer, version bumped (RFC 3264 §8).
    assert world.sent("INVITE", to="127.0.0.3")[0].message.body == b""
    reinvite = world.sent("INVITE", to="127.0.0.2")[1].message
    origin = SessionDescription.parse(reinvite.body).origin
    assert (origin.session_id, origin.session_version) == (
        held.origin.session_id,
        held.origin.session_version + 1,
    )
    world.controller.hang_up(call_id, "bob")
    world.assert_quiescent()


def test_flow1_sends_the_callers_offer_to_the_callee_and_its_answer_in_the_callers_ack() -> None:
    world, alice, bob, call_id = connected("flow1")
    callee_invite = world.sent("INVITE", to="127.0.0.3")[0].message
    assert callee_invite.body == sdp("alice")
    assert world.sent("ACK", to="127.0.0.2")[0].message.body == sdp("bob")
    assert len(world.sent("INVITE", to="127.0.0.2")) == 1  # no re-INVITE
    bob.sessions[0].bye()
    world.run(2)
    record = world.record(call_id)
    assert (record.end_reason, record.who_hung_up) == ("callee-hangup", "callee")
    world.assert_quiescent()


def test_each_phone_is_shown_the_other_party_with_display_name() -> None:
    world, alice, bob, call_id = connected()
    to_alice = world.sent("INVITE", to="127.0.0.2")[0].message
    to_bob = world.sent("INVITE", to="127.0.0.3")[0].message
    assert isinstance(to_alice, Request) and isinstance(to_bob, Request)
    assert to_alice.from_.display_name == "Bob Dylan"
    assert str(to_alice.from_.uri) == f"sip:bob@{DOMAIN}"
    assert str(to_alice.to.uri) == f"sip:alice@{DOMAIN}"
    assert to_bob.from_.display_name == "Alice Liddell"
    assert str(to_bob.from_.uri) == f"sip:alice@{DOMAIN}"
    assert str(to_alice.uri) == "sip:alice@127.0.0.2:5060"
    world.controller.hang_up(call_id, "alice")
    world.assert_quiescent()


def test_caller_not_answering_within_ring_timeout_gets_cancel() -> None:
    world, alice, bob = world_with_phones(caller=Answer(sdp=None), ring_timeout=10.0)
    info = world.place("alice", "bob")
    world.run(9.9)
    assert world.sent("CANCEL") == []
    world.run(1)
    assert len(world.sent("CANCEL", to="127.0.0.2")) == 1
    assert world.sent("INVITE", to="127.0.0.3") == []
    record = world.record(info.call_id)
    assert (record.end_reason, record.state, record.who_hung_up) == (
        "caller-no-answer",
        "failed",
        "system",
    )
    world.assert_quiescent()


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (486, "caller-busy"),
        (603, "caller-rejected"),
        (404, "caller-rejected"),
    ],
)
def test_caller_rejecting_fails_the_call_with_that_status(status: int, reason: str) -> None:
    world, alice, bob = world_with_phones(caller=Answer(reject=status, delay=1))
    info = world.place("alice", "bob")
    world.run(3)
    record = world.record(info.call_id)
    assert (record.end_reason, record.sip_status, record.state) == (reason, status, "failed")
    assert world.sent("INVITE", to="127.0.0.3") == []
    assert world.states(info.call_id) == ["calling-caller", "failed"]
    world.assert_quiescent()


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (486, "callee-busy"),
        (603, "callee-rejected"),
        (480, "callee-no-answer"),
    ],
)
def test_callee_failing_gives_the_caller_bye_with_reason(
    policy: str, status: int, reason: str
) -> None:
    world, alice, bob = world_with_phones(policy, callee=Answer(reject=status, delay=1))
    info = world.place("alice", "bob")
    world.run(4)
    byes = world.sent("BYE", to="127.0.0.2")
    assert len(byes) == 1
    reason_value = byes[0].message.headers.get("Reason") or ""
    assert reason_value.startswith(f"SIP ;cause={status} ;")
    record = world.record(info.call_id)
    assert (record.end_reason, record.sip_status, record.state) == (reason, status, "failed")
    world.assert_quiescent()


def test_callee_not_answering_gets_cancel_and_caller_bye_with_reason_408() -> None:
    world, alice, bob = world_with_phones(callee=Answer(sdp=None), callee_ring_timeout=20.0)
    info = world.place("alice", "bob")
    world.run(21.5)
    assert len(world.sent("CANCEL", to="127.0.0.3")) == 1
    bye = world.sent("BYE", to="127.0.0.2")[0].message
    assert "cause=408" in (bye.headers.get("Reason") or "")
    assert world.record(info.call_id).end_reason == "callee-no-answer"
    world.assert_quiescent()


def test_unreachable_callee_ends_the_call_with_bye_to_the_caller() -> None:
    world, alice, bob = world_with_phones()
    world.blackholed.add(("127.0.0.3", 5060))
    info = world.place("alice", "bob")
    world.run(40)
    record = world.record(info.call_id)
    assert (record.end_reason, record.sip_status) == ("callee-unreachable", 408)
    bye = world.sent("BYE", to="127.0.0.2")[0].message
    assert "cause=408" in (bye.headers.get("Reason") or "")
    world.blackholed.clear()
    world.assert_quiescent()


def test_caller_without_binding_fails_at_once() -> None:
    world = CallWorld()
    world.user("alice")
    world.phone("bob", "127.0.0.3")
    info = world.place("alice", "bob")
    assert info.state == "failed"
    assert world.record(info.call_id).end_reason == "caller-unreachable"
    world.assert_quiescent()


def test_callee_without_binding_fails_before_ringing_the_caller() -> None:
    world = CallWorld()
    world.phone("alice", "127.0.0.2")
    world.user("bob")
    info = world.place("alice", "bob")
    assert info.state == "failed"
    assert world.sent("INVITE") == []
    assert world.record(info.call_id).end_reason == "callee-unreachable"
    world.assert_quiescent()


@pytest.mark.parametrize("policy", POLICIES)
def test_caller_hanging_up_while_callee_rings_cancels_the_callee(policy: str) -> None:
    world, alice, bob = world_with_phones(policy, callee=Answer(sdp=None))
    info = world.place("alice", "bob")
    world.run(3)
    if policy == "flow1":
        # Flow I: the caller's 2xx is not ACKed yet; the caller's phone gives up.
        world.run(40)
    else:
        alice.sessions[0].bye()
        world.run(1)
    assert len(world.sent("CANCEL", to="127.0.0.3")) == 1
    record = world.record(info.call_id)
    assert record.state == "failed"
    world.assert_quiescent()


@pytest.mark.parametrize("stage", [0.5, 2.0, 5.0])
def test_web_hang_up_at_any_stage_leaves_nothing(stage: float) -> None:
    world, alice, bob = world_with_phones()
    info = world.place("alice", "bob")
    world.run(stage)
    assert world.controller.hang_up(info.call_id, "alice")
    assert not world.controller.hang_up(info.call_id, "alice")
    world.run(2)
    assert alice.sessions == [] and bob.sessions == []
    record = world.record(info.call_id)
    expected = "caller-hangup" if stage == 5.0 else "cancelled"
    assert (record.end_reason, record.who_hung_up) == (expected, "caller")
    world.assert_quiescent()


def test_a_200_crossing_the_cancel_is_acked_and_byed() -> None:
    world, alice, bob = world_with_phones(caller=Answer(delay=1.0, sdp=sdp("alice")))
    world.net.delay = (0.2, 0.2)
    info = world.place("alice", "bob")
    world.run(1.25)  # 180 in, 200 sent at 1.2 s, still on the wire
    world.controller.hang_up(info.call_id)
    world.run(3)
    assert len(world.sent("CANCEL", to="127.0.0.2")) == 1
    assert world.sent("ACK", to="127.0.0.2") and world.sent("BYE", to="127.0.0.2")
    assert alice.sessions == []
    world.assert_quiescent()


def test_several_contacts_ring_in_parallel_first_answer_wins_others_cancelled() -> None:
    world, alice, bob = world_with_phones(caller=Answer(delay=1, sdp=sdp("alice")))
    desk = world.phone("alice", "127.0.0.4", answer=Answer(sdp=None), create_user=False)
    info = world.place("alice", "bob")
    world.run(6)
    assert len(world.sent("INVITE", to="127.0.0.4")) == 1
    assert len(world.sent("CANCEL", to="127.0.0.4")) == 1
    assert state(world, info.call_id) == "connected"
    assert desk.sessions == []
    world.controller.hang_up(info.call_id)
    world.assert_quiescent()


def test_a_second_contact_answering_too_is_acked_and_byed() -> None:
    world, alice, bob = world_with_phones(caller=Answer(delay=1, sdp=sdp("alice")))
    desk = world.phone(
        "alice", "127.0.0.4", answer=Answer(delay=1, sdp=sdp("desk")), create_user=False
    )
    info = world.place("alice", "bob")
    world.run(6)
    assert state(world, info.call_id) == "connected"
    assert len([p for p in (alice, desk) if p.sessions]) == 1
    world.controller.hang_up(info.call_id)
    world.assert_quiescent()


@pytest.mark.parametrize("policy", POLICIES)
def test_reinvite_from_either_phone_is_relayed_to_the_other(policy: str) -> None:
    world, alice, bob, call_id = connected(policy)
    hold = sdp("alice", 7).replace(b"m=audio", b"a=sendonly\r\nm=audio")
    answers: list[int] = []
    alice.sessions[0].reinvite(
        hold, SDP_CONTENT_TYPE, on_response=lambda r: answers.append(r.status)
    )
    world.run(2)
    assert answers == [200]
    relayed = [w.message for w in world.sent("INVITE", to="127.0.0.3")][-1]
    assert b"a=sendonly" in relayed.body
    answers.clear()
    bob.sessions[0].reinvite(
        sdp("bob", 9), SDP_CONTENT_TYPE, on_response=lambda r: answers.append(r.status)
    )
    world.run(2)
    assert answers == [200]
    world.controller.hang_up(call_id)
    world.assert_quiescent()


def test_reinvite_glare_gets_491() -> None:
    world, alice, bob, call_id = connected()
    statuses: list[int] = []
    alice.sessions[0].reinvite(
        sdp("alice", 5),
        SDP_CONTENT_TYPE,
        on_response=lambda r: statuses.append(r.status),
        retry_on_491=False,
    )
    bob.sessions[0].reinvite(
        sdp("bob", 5),
        SDP_CONTENT_TYPE,
        on_response=lambda r: statuses.append(r.status),
        retry_on_491=False,
    )
    world.run(3)
    assert 491 in statuses
    assert state(world, call_id) == "connected"
    world.controller.hang_up(call_id)
    world.assert_quiescent()


def test_maximum_call_duration_ends_the_call() -> None:
    world, alice, bob, call_id = connected(max_duration=60.0)
    world.run(61)
    assert alice.sessions == [] and bob.sessions == []
    record = world.record(call_id)
    assert (record.end_reason, record.who_hung_up, record.state) == (
        "max-duration",
        "system",
        "ended",
    )
    world.assert_quiescent()


def test_maximum_duration_timers_of_connected_calls_share_one_queue() -> None:
    """Each connected call's maximum duration waits in the controller's queue (one reactor
    timer for all, not a DelayedCall each); a call hung up earlier leaves it."""
    world, alice, bob, first = connected(max_duration=60.0, max_calls_per_user=0)
    second = world.place("alice", "bob").call_id
    world.run(5)
    assert state(world, second) == "connected"
    queue = world.controller._timer_queues[60.0]
    assert len(queue) == 2
    world.controller.hang_up(first)
    world.run(1)
    assert len(queue) == 1
    world.run(60)  # the second call connected a few seconds after it was placed
    assert (world.record(second).end_reason, len(queue)) == ("max-duration", 0)
    world.assert_quiescent()


def test_phone_that_stops_answering_in_dialog_requests_gets_the_call_torn_down() -> None:
    world, alice, bob, call_id = connected()
    world.blackholed.add(("127.0.0.3", 5060))
    statuses: list[int] = []
    alice.sessions[0].reinvite(
        sdp("alice", 5), SDP_CONTENT_TYPE, on_response=lambda r: statuses.append(r.status)
    )
    world.run(40)
    assert statuses[-1] == 408
    assert alice.sessions == []
    record = world.record(call_id)
    assert (record.end_reason, record.sip_status) == ("timeout", 408)
    world.blackholed.clear()
    world.assert_quiescent()


def test_flow4_survives_a_callee_answering_after_40_seconds() -> None:
    world, alice, bob = world_with_phones("flow4", callee=Answer(delay=40, sdp=sdp("bob")))
    info = world.place("alice", "bob")
    world.run(45)
    assert state(world, info.call_id) == "connected"
    world.controller.hang_up(info.call_id)
    world.assert_quiescent()


def test_flow1_loses_the_caller_when_the_callee_answers_after_40_seconds() -> None:
    world, alice, bob = world_with_phones("flow1", callee=Answer(delay=40, sdp=sdp("bob")))
    info = world.place("alice", "bob")
    world.run(45)
    assert world.controller.get_call(info.call_id) is None
    assert world.record(info.call_id).state == "failed"
    world.assert_quiescent()


def test_stored_contact_uri_headers_never_become_header_fields_and_received_is_honoured() -> None:
    world = CallWorld()
    world.user("alice")
    endpoint = world.net.endpoint("127.0.0.9", 5099)
    from clicktodial.testing.callfakes import Phone, answer_reinvites

    phone = Phone(
        world.clock,
        endpoint,
        "127.0.0.9",
        5099,
        "alice",
        world.timers,
        Answer(delay=1, sdp=sdp("alice")),
        seed=0,
    )
    endpoint.attach(phone.layer)
    phone.app.on_request = answer_reinvites("alice")
    world.phones.append(phone)
    world.bind(
        "alice",
        "sip:alice@10.1.2.3:5060?Route=%3Csip:evil.example%3E",
        received="sip:127.0.0.9:5099;transport=udp",
    )
    world.phone("bob", "127.0.0.3")
    info = world.place("alice", "bob")
    world.run(6)
    invite = world.sent("INVITE", to="127.0.0.9")[0].message
    assert isinstance(invite, Request)
    assert "Route" not in invite.headers
    assert str(invite.uri) == "sip:alice@10.1.2.3:5060"
    assert state(world, info.call_id) == "connected"
    # In-dialog requests (the re-INVITE, the BYE) go to the NAT address too.
    world.controller.hang_up(info.call_id)
    world.run(1)
    assert world.sent("BYE", to="127.0.0.9")
    world.assert_quiescent()


def test_stored_path_is_the_preloaded_route() -> None:
    world = CallWorld(trusted_paths=NetworkSet.parse("127.0.0.6"))
    world.user("alice")
    world.bind(
        "alice",
        "sip:alice@127.0.0.2:5060",
        path=("<sip:127.0.0.7:5070;lr>",),
        received="sip:127.0.0.6:5060;transport=udp",
    )
    world.phone("bob", "127.0.0.3")
    world.place("alice", "bob")
    world.run(1)
    invite = world.sent("INVITE")[0]
    assert invite.to == ("127.0.0.7", 5070)
    assert invite.message.headers.get("Route") == "<sip:127.0.0.7:5070;lr>"
    world.run(40)
    world.assert_quiescent()


def refuse_reinvite_offers(session: Any, request: Any) -> None:
    """A phone that shares no codec with the other: every re-INVITE offer gets 488."""
    if request.method == "INVITE":
        request.respond(488)
    else:
        request.respond(200)


def test_a_call_whose_phones_share_no_codec_failed_and_was_never_answered() -> None:
    """
    Both phones answer, then the caller refuses the callee's offer (488): the call failed
    (it never was connected) everywhere: live state, record, the view built from it.
    """
    world, alice, bob = world_with_phones("flow4")
    alice.app.on_request = refuse_reinvite_offers
    info = world.place("alice", "bob")
    world.run(5)
    assert world.states(info.call_id)[-1] == "failed"
    record = world.record(info.call_id)
    assert record.callee_answered_at is not None  # bob did answer
    assert record.connected_at is None
    assert record.public_state == "failed"
    view = CallInfo.from_record(record)
    assert (view.state, view.connected_at, view.duration) == ("failed", None, None)
    assert record.sip_status == 488
    world.assert_quiescent()


def test_answered_is_the_connect_time_while_connected_and_after_the_end() -> None:
    """The API's ``answered`` does not move when a connected call ends."""
    from clicktodial.web.app import call_json

    world, alice, bob, call_id = connected("flow4")
    live = world.controller.get_call(call_id)
    assert live is not None and live.connected_at is not None
    while_connected = call_json(live)["answered"]
    world.run(7)
    alice.sessions[0].bye()
    world.run(2)
    record = world.record(call_id)
    assert record.public_state == "ended"
    assert call_json(CallInfo.from_record(record))["answered"] == while_connected
    assert live.connected_at == record.connected_at
    world.assert_quiescent()


def reject_reinvite_streams(session: Any, request: Any) -> None:
    """A phone answering a re-INVITE offer with every stream rejected (port 0), as baresip."""
    if request.method == "INVITE":
        request.respond(200, body=sdp("alice", 2, port=0), content_type=SDP_CONTENT_TYPE)
    else:
        request.respond(200)


def test_flow4_answer_rejecting_every_stream_fails_the_call_after_acking_it() -> None:
    """The caller's answer keeps no stream: the callee gets its ACK, then both a BYE."""
    world, alice, bob = world_with_phones("flow4")
    alice.app.on_request = reject_reinvite_streams
    info = world.place("alice", "bob")
    world.run(5)
    assert world.states(info.call_id)[-1] == "failed"
    assert world.sent("ACK", to="127.0.0.3")[-1].message.body == sdp("alice", 2, port=0)
    record = world.record(info.call_id)
    assert (record.connected_at, record.sip_status, record.public_state) == (None, 488, "failed")
    assert alice.sessions == [] and bob.sessions == []
    world.assert_quiescent()


def test_flow1_callee_answer_rejecting_every_stream_fails_the_call() -> None:
    world, alice, bob = world_with_phones("flow1", callee=Answer(delay=2, sdp=sdp("bob", port=0)))
    info = world.place("alice", "bob")
    world.run(5)
    assert world.states(info.call_id)[-1] == "failed"
    assert world.record(info.call_id).public_state == "failed"
    assert alice.sessions == [] and bob.sessions == []


def test_a_path_not_registered_through_a_trusted_proxy_steers_nothing() -> None:
    """The INVITE goes to the address the REGISTER came from, not to the Path nor to the
    Contact's host or maddr (a Path stored before the registrar checked its source)."""
    world = CallWorld(trusted_paths=NetworkSet.parse("127.0.0.6"))
    world.user("alice")
    world.bind(
        "alice",
        "sip:+19005550123@premium.itsp.test;maddr=127.0.0.8",
        path=("<sip:127.0.0.5:5099;lr>",),
        received="sip:127.0.0.9:5062;transport=udp",
    )
    world.phone("bob", "127.0.0.3")
    world.place("alice", "bob")
    world.run(1)
    invite = world.sent("INVITE")[0]
    assert {wire.to for wire in world.sent("INVITE")} == {("127.0.0.9", 5062)}
    assert "Route" not in invite.message.headers
    assert str(invite.message.uri) == "sip:+19005550123@premium.itsp.test;maddr=127.0.0.8"
    world.run(40)
    world.assert_quiescent()


def test_one_call_rings_at_most_max_forks_of_a_users_phones() -> None:
    """[calls] max_forks: a user with many bindings gets that many INVITEs, the highest q
    first, then the most recently registered."""
    world = CallWorld(max_forks=3)
    world.user("alice")
    for n in range(10, 20):
        world.bind(
            "alice",
            f"sip:alice@127.0.0.{n}",
            q=None if n == 10 else 0.8,
            received=f"sip:127.0.0.{n}:5060;transport=udp",
        )
        world.run(1)  # later bindings expire later
    world.phone("bob", "127.0.0.3")
    info = world.place("alice", "bob")
    world.run(1)
    assert sorted({wire.to[0] for wire in world.sent("INVITE")}) == [
        "127.0.0.10",
        "127.0.0.18",
        "127.0.0.19",
    ]
    world.controller.hang_up(info.call_id)
    world.run(40)
    world.assert_quiescent()


def test_a_users_from_and_to_are_made_once_and_never_changed_by_their_calls() -> None:
    """The controller keeps one From/To per user (name, display name, domain) for all their
    calls; the UA core tags a copy, so the shared one keeps no tag; a new display name gives
    a new one."""
    world = CallWorld()
    world.phone("alice", "127.0.0.2", answer=Answer(delay=1, sdp=sdp("alice")))
    world.phone("bob", "127.0.0.3", answer=Answer(delay=1, sdp=sdp("bob")))
    first = world.place("alice", "bob").call_id
    world.run(5)
    second = world.place("alice", "bob").call_id
    world.run(5)
    parties = world.controller._parties.entries
    assert sorted(key[0] for key in parties) == ["alice", "bob"]
    for party in parties.values():
        assert party.params == {}
        assert str(party).endswith(f"<sip:{party.uri.user}@{DOMAIN}>")
    invites = [w.message for w in world.sent("INVITE", to="127.0.0.2")]
    tags = {invite.from_.tag for invite in invites if isinstance(invite, Request)}
    assert len(tags) == 2 and None not in tags
    for call_id in (first, second):
        world.controller.hang_up(call_id)
    world.run(5)
    world.store.update_user("alice", UserChanges(display_name="Alice A"))
    world.directory.user_changed("alice")
    world.place("alice", "bob")
    world.run(5)
    assert ("alice", "Alice A", DOMAIN) in parties
    world.controller.hang_up_all()
    world.run(world.timers.timeout + 10)
    world.assert_quiescent()
