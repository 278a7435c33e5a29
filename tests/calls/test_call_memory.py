"""What a held call keeps in memory (docs/calls.md, "Benchmark": memory per held call)."""

from __future__ import annotations

import pytest

from clicktodial.calls.call import Call, Leg
from clicktodial.sip.dialog import Dialog
from clicktodial.sip.message import Request
from clicktodial.sip.parser import parse_message
from clicktodial.sip.ua import Session
from clicktodial.testing.callfakes import CallWorld
from clicktodial.testing.uafakes import Answer, sdp


def held_call(policy: str, seconds: float | None = None) -> CallWorld:
    world = CallWorld(policy=policy)
    world.phone("alice", "127.0.0.2", answer=Answer(delay=1, sdp=sdp("alice")))
    world.phone("bob", "127.0.0.3", answer=Answer(delay=1, sdp=sdp("bob")))
    world.place("alice", "bob")
    # By default until every transaction of the set-up is over.
    world.run(world.timers.timeout + 8 if seconds is None else seconds)
    assert [c.state for c in world.controller.active_calls()] == ["connected"]
    return world


@pytest.mark.parametrize("policy", ["flow4", "flow1"])
def test_a_held_call_keeps_one_ack_per_leg_and_no_transaction(policy: str) -> None:
    """Flow IV ACKs the caller twice (held answer, then the re-INVITE's 2xx): only the
    latest ACK is kept (as bytes) to answer copies of its 2xx, for 64*T1 + T4 (then no
    copy can come); no INVITE and no transaction stays."""
    world = held_call(policy, seconds=5)
    sessions = world.daemon.ua.sessions
    assert len(sessions) == 2
    for session in sessions:
        assert isinstance(session._ack, bytes)  # as sent, parsed again for a 2xx copy
        ack = parse_message(session._ack)
        assert isinstance(ack, Request) and ack.method == "ACK"
        assert ack.cseq.seq == session._acked
    world.run(world.timers.timeout + world.timers.t4)
    assert [session._ack for session in sessions] == [None, None]
    assert world.daemon.layer.active_count == 0
    world.controller.hang_up(world.controller.active_calls()[0].call_id)
    world.assert_quiescent()


def test_per_call_objects_have_no_instance_dict() -> None:
    """The objects a held call keeps use __slots__ (no per-instance __dict__)."""
    world = held_call("flow4")
    session = world.daemon.ua.sessions[0]
    leg = session.handler.leg  # type: ignore[attr-defined]
    for obj in (
        session,
        session.dialog,
        session.dialog.offer_answer,
        leg,
        leg.handler,
        leg.origin,
        leg.call,
    ):
        assert not hasattr(obj, "__dict__"), type(obj).__name__
    assert isinstance(leg, Leg) and isinstance(leg.call, Call)
    assert isinstance(session, Session) and isinstance(session.dialog, Dialog)
    world.controller.hang_up(leg.call.call_id)
    world.assert_quiescent()


def test_a_held_calls_dialogs_keep_their_parties_as_text_and_share_our_contact() -> None:
    """A dialog keeps From/To as header text (parsed again on demand, the same value) and
    the two dialogs of a call share one Contact URI object for our address."""
    world = held_call("flow4")
    first, second = (session.dialog for session in world.daemon.ua.sessions)
    for dialog in (first, second):
        assert isinstance(dialog._local_party, str) and isinstance(dialog._remote_party, str)
        assert dialog.local_party.tag == dialog.local_tag
        assert dialog.remote_party.tag == dialog.remote_tag
        assert str(dialog.local_party) == dialog._local_party
        assert dialog.local_uri.user in ("alice", "bob")
    assert first.local_contact is second.local_contact
    call_id = world.controller.active_calls()[0].call_id
    world.controller.hang_up(call_id)
    world.assert_quiescent()


def test_a_held_call_keeps_no_message_in_the_tracer() -> None:
    """With call traces on, once the set-up is written (after max_age) and no transaction of
    it can resend (64*T1; checked every 64*T1), a held call's tracer state is its counts and
    its Call-IDs: no message, no retransmission key, no per-instance __dict__."""
    from clicktodial.store.traces import TraceLimits
    from clicktodial.testing.fakes import success_result_of

    world = CallWorld(policy="flow4", trace=TraceLimits())
    tracer = world.tracer
    assert tracer is not None
    tracer.start()
    world.phone("alice", "127.0.0.2", answer=Answer(delay=1, sdp=sdp("alice")))
    world.phone("bob", "127.0.0.3", answer=Answer(delay=1, sdp=sdp("bob")))
    call_id = world.place("alice", "bob").call_id
    world.run(world.timers.timeout * 2 + 8)
    [buffer] = tracer._by_call.values()
    assert (buffer.pending, buffer.seen, buffer.dropped) == ([], None, 0)
    assert not hasattr(buffer, "__dict__")
    assert len(success_result_of(world.store.get_trace(call_id)).messages) == buffer.count > 10
    world.controller.hang_up(call_id)
    success_result_of(tracer.stop())
    world.assert_quiescent()


def test_a_held_call_keeps_sdp_as_text_and_shares_its_empty_values() -> None:
    """A leg keeps the o= and m= lines it last sent as text (parsed again on demand, the
    same values); empty per-call values (route set, failures, relayed re-INVITEs, URI
    parameters and headers) are shared objects; transport names and URI schemes are
    interned."""
    import sys

    from clicktodial.sip import uri
    from clicktodial.sip.sdp import Media, Origin

    world = held_call("flow4")
    call = world.daemon.ua.sessions[0].handler.leg.call  # type: ignore[attr-defined]
    assert isinstance(call, Call)
    for leg in (call.caller, call.callee):
        assert isinstance(leg.origin._origin, str)
        assert all(isinstance(value, str) for value in leg.origin._media)
        origin = leg.origin.origin
        assert isinstance(origin, Origin) and str(origin) == leg.origin._origin
        assert [m.media for m in leg.origin.media] == ["audio"]
        assert isinstance(leg.origin.media[0], Media)
        assert leg.failures == () and type(leg.failures) is tuple
        assert leg.session is not None
        dialog = leg.session.dialog
        assert dialog.route_set == () and type(dialog.route_set) is tuple
        assert dialog.remote_target._params is uri._NO_PARAMS
        assert dialog.remote_target._headers == () and not dialog.remote_target._headers
        assert dialog.remote_target._scheme is sys.intern("sip")
        assert dialog.destination().transport is sys.intern("UDP")
    assert call._relayed == () and type(call._relayed) is tuple
    world.controller.hang_up(call.call_id)
    world.assert_quiescent()
