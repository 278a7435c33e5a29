"""
What a phone can steer: nothing (docs/security.md).  A phone answering the daemon's INVITE
with a Contact or Record-Route naming another host (here a trap, 127.0.0.9:5099) gets the
requests of its dialog -- ACK, re-INVITE, BYE -- at the address it registered from (or at
the trusted proxy its binding came through), with the Request-URI and Route RFC 3261 §12.2
builds from what it said; nothing reaches the trap.  Also for another fork's late 2xx and
for a 3xx, whose Contact is never followed.  Both call flows, on the fake network.
"""

from __future__ import annotations

import pytest

from clicktodial.netaddr import NetworkSet
from clicktodial.sip.message import Request
from clicktodial.sip.uri import URI
from clicktodial.testing.callfakes import CallWorld, Phone, answer_reinvites
from clicktodial.testing.uafakes import Answer, sdp

POLICIES = ["flow4", "flow1"]
TRAP = "127.0.0.9"
TRAP_CONTACT = URI("sip", "x", TRAP, 5099, {"transport": "tcp"})
TRAP_ROUTE = ("Record-Route", f"<sip:{TRAP}:5099;lr;transport=tcp>")
ATTACKS = {
    "contact": (TRAP_CONTACT, ()),
    "record-route": (None, (TRAP_ROUTE,)),
    "both": (TRAP_CONTACT, (TRAP_ROUTE,)),
}


def steering_phone(
    world: CallWorld, user: str, host: str, attack: str, delay: float, create_user: bool = True
) -> Phone:
    """A phone registered from ``host`` whose 180 and 2xx carry the ``attack``."""
    contact, headers = ATTACKS[attack]
    phone = world.phone(
        user,
        host,
        answer=Answer(delay=delay, sdp=sdp(user), headers=headers),
        create_user=create_user,
    )
    if contact is not None:
        phone.ua.contact = contact
    return phone


def methods_to(world: CallWorld, host: str) -> set[str]:
    """The methods of the requests the daemon sent to ``host``."""
    return {wire.method or "" for wire in world.sent(to=host) if wire.method}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("who", ["caller", "callee"])
def test_a_phones_contact_and_record_route_never_steer_its_dialogs_requests(
    policy: str, attack: str, who: str
) -> None:
    world = CallWorld(policy=policy)
    if who == "caller":
        steering_phone(world, "alice", "127.0.0.2", attack, delay=1)
        world.phone("bob", "127.0.0.3", answer=Answer(delay=2, sdp=sdp("bob")))
        steered = "127.0.0.2"
    else:
        world.phone("alice", "127.0.0.2", answer=Answer(delay=1, sdp=sdp("alice")))
        steering_phone(world, "bob", "127.0.0.3", attack, delay=2)
        steered = "127.0.0.3"
    info = world.place("alice", "bob")
    world.run(5)
    assert world.controller.get_call(info.call_id).state == "connected"  # type: ignore[union-attr]
    world.controller.hang_up(info.call_id)
    world.run(2)
    assert world.sent(to=TRAP) == []
    assert {"INVITE", "ACK", "BYE"} <= methods_to(world, steered)
    bye = world.sent("BYE", to=steered)[0].message
    assert isinstance(bye, Request)
    contact, headers = ATTACKS[attack]
    # The phone still gets the request RFC 3261 §12.2.1.1 builds from what it said.
    if contact is not None:
        assert bye.uri == contact
    if headers:
        assert bye.headers.get("Route") == TRAP_ROUTE[1]
    assert world.record(info.call_id).end_reason == "cancelled"
    world.assert_quiescent()


@pytest.mark.parametrize("policy", POLICIES)
def test_a_late_forks_2xx_is_acked_and_byed_at_its_phones_address(policy: str) -> None:
    """Two of alice's phones answer at once, both with a Contact and Record-Route naming the
    trap: the 2xx that comes second (it crossed our CANCEL) is ACKed and BYEd at once, at
    the address that phone registered from; the other's dialog too, at the hang-up."""
    world = CallWorld(policy=policy)
    steering_phone(world, "alice", "127.0.0.2", "both", delay=1)
    steering_phone(world, "alice", "127.0.0.4", "both", delay=1, create_user=False)
    world.phone("bob", "127.0.0.3", answer=Answer(delay=2, sdp=sdp("bob")))
    info = world.place("alice", "bob")
    world.run(5)
    assert world.controller.get_call(info.call_id).state == "connected"  # type: ignore[union-attr]
    answered = {
        wire.sender[0]
        for wire in world.sent(status=200)
        if wire.to[0] == "127.0.0.1" and wire.message.cseq.method == "INVITE"
    }
    assert {"127.0.0.2", "127.0.0.4"} <= answered
    # One of them was the late fork: ACKed and BYEd already.
    assert len([w for w in world.sent("BYE") if w.to[0] in ("127.0.0.2", "127.0.0.4")]) == 1
    world.controller.hang_up(info.call_id)
    world.run(2)
    for host in ("127.0.0.2", "127.0.0.4"):
        assert world.sent("ACK", to=host) and world.sent("BYE", to=host)
    assert world.sent(to=TRAP) == []
    world.assert_quiescent()


def test_a_redirect_is_a_failure_its_contact_is_never_called() -> None:
    """A 302 ends that fork (the B2BUA does not recurse, RFC 3261 §8.1.3.4 leaves it to the
    UAC): its Contact gets no INVITE."""
    world = CallWorld()
    world.phone("alice", "127.0.0.2", answer=Answer(delay=1, sdp=sdp("alice")))
    world.phone(
        "bob",
        "127.0.0.3",
        answer=Answer(delay=1, reject=302, headers=(("Contact", f"<{TRAP_CONTACT}>"),)),
    )
    info = world.place("alice", "bob")
    world.run(5)
    record = world.record(info.call_id)
    assert (record.state, record.sip_status) == ("failed", 302)
    assert world.sent(to=TRAP) == []
    invites = world.sent("INVITE", to="127.0.0.3")
    assert len({wire.message.headers.get("Call-ID") for wire in invites}) == 1
    world.assert_quiescent()


@pytest.mark.parametrize("policy", POLICIES)
def test_through_a_trusted_proxy_every_request_goes_to_its_first_hop(policy: str) -> None:
    """A binding registered through a trusted proxy (Path): the dialog's ACK, re-INVITE and
    BYE go to the Path's first hop, which routes them, whatever the 2xx's Contact and
    Record-Route say."""
    world = CallWorld(policy=policy, trusted_paths=NetworkSet.parse("127.0.0.6"))
    world.user("alice")
    endpoint = world.net.endpoint("127.0.0.7", 5070)
    phone = Phone(
        world.clock,
        endpoint,
        "127.0.0.7",
        5070,
        "alice",
        world.timers,
        Answer(delay=1, sdp=sdp("alice"), headers=(TRAP_ROUTE,)),
        seed=0,
    )
    endpoint.attach(phone.layer)
    phone.app.on_request = answer_reinvites("alice")
    phone.ua.contact = TRAP_CONTACT
    world.phones.append(phone)
    world.bind(
        "alice",
        "sip:alice@10.1.2.3:5060",
        path=("<sip:127.0.0.7:5070;lr>",),
        received="sip:127.0.0.6:5060;transport=udp",
    )
    world.phone("bob", "127.0.0.3", answer=Answer(delay=2, sdp=sdp("bob")))
    info = world.place("alice", "bob")
    world.run(5)
    world.controller.hang_up(info.call_id)
    world.run(2)
    assert {"INVITE", "ACK", "BYE"} <= {w.method for w in world.sent(to="127.0.0.7")}
    assert world.sent(to=TRAP) == []
    assert world.record(info.call_id).end_reason == "cancelled"
    world.assert_quiescent()
