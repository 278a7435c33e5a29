"""What a held call keeps in memory (docs/calls.md, "Benchmark": memory per held call)."""

from __future__ import annotations

import sys

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
    leg = session.handler
    for obj in (
        session,
        session.dialog,
        session.dialog.offer_answer,
        leg,
        leg.call,
    ):
        assert not hasattr(obj, "__dict__"), type(obj).__name__
    assert isinstance(leg, Leg) and isinstance(leg.call, Call)
    assert isinstance(session, Session) and isinstance(session.dialog, Dialog)
    world.controller.hang_up(leg.call.call_id)
    world.assert_quiescent()


def test_a_held_calls_dialogs_keep_their_parties_as_shared_text_and_share_our_contact() -> None:
    """A dialog keeps From/To as header text without the tag, one string for every call
    of the same party, and the tags apart (parsed again on demand, the same value); the
    two dialogs of a call share one Contact URI object for our address."""
    world = held_call("flow4")
    first, second = (session.dialog for session in world.daemon.ua.sessions)
    for dialog in (first, second):
        assert isinstance(dialog._local_party, str) and isinstance(dialog._remote_party, str)
        assert dialog.local_party.tag == dialog.local_tag
        assert dialog.remote_party.tag == dialog.remote_tag
        assert str(dialog.local_party) == f"{dialog._local_party};tag={dialog.local_tag}"
        assert str(dialog.remote_party) == f"{dialog._remote_party};tag={dialog.remote_tag}"
        assert dialog._local_party is sys.intern(dialog._local_party)
        assert dialog.local_uri.user in ("alice", "bob")
    assert first.local_contact is second.local_contact
    call_id = world.controller.active_calls()[0].call_id
    world.controller.hang_up(call_id)
    world.assert_quiescent()


def test_the_calls_of_the_same_phones_share_their_parties_targets_and_flows() -> None:
    """Per-user constant values are kept once: two held calls between the same phones
    have the same party text, remote target URI and flow objects in their dialogs."""
    world = held_call("flow4")
    world.place("alice", "bob")
    world.run(world.timers.timeout + 8)
    by_user: dict[str, list[Dialog]] = {}
    for session in world.daemon.ua.sessions:
        by_user.setdefault(session.dialog.remote_uri.user or "", []).append(session.dialog)
    assert sorted(by_user) == ["alice", "bob"]
    for one, two in by_user.values():
        assert one.call_id != two.call_id
        assert one._local_party is two._local_party
        assert one._remote_party is two._remote_party
        assert one.remote_target is two.remote_target
        assert one.flow is not None and one.flow is two.flow
        assert one.destination() == two.destination()
    for info in world.controller.active_calls():
        world.controller.hang_up(info.call_id)
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


def test_a_held_call_keeps_its_sdp_once_and_shares_its_empty_values() -> None:
    """A leg keeps the last description it was sent as the very bytes object its
    session's offer/answer state holds (the o= and m= lines parsed again on demand, the
    same values), and where its phone signals from as text, not the binding's target;
    empty per-call values (route set, failures, relayed re-INVITEs, URI parameters and
    headers) are shared objects; transport names and URI schemes are interned."""
    from clicktodial.sip import uri
    from clicktodial.sip.sdp import Media, Origin, SessionDescription, sent_media, sent_origin

    world = held_call("flow4")
    call = world.daemon.ua.sessions[0].handler.call  # type: ignore[attr-defined]
    assert isinstance(call, Call)
    for leg, host in ((call.caller, "127.0.0.2"), (call.callee, "127.0.0.3")):
        assert leg.session is not None
        sent = leg.sent
        assert sent is not None and sent is leg.session.dialog.offer_answer.local_sdp
        origin = sent_origin(sent)
        assert isinstance(origin, Origin)
        assert origin == SessionDescription.parse(sent).origin
        assert [m.media for m in sent_media(sent)] == ["audio"]
        assert isinstance(sent_media(sent)[0], Media)
        assert leg.source == host and leg.source is sys.intern(host)
        assert leg.failures == () and type(leg.failures) is tuple
        dialog = leg.session.dialog
        assert dialog.route_set == () and type(dialog.route_set) is tuple
        assert dialog.remote_target._params is uri._NO_PARAMS
        assert dialog.remote_target._headers == () and not dialog.remote_target._headers
        assert dialog.remote_target._scheme is sys.intern("sip")
        assert dialog.destination().transport is sys.intern("UDP")
    assert call._relayed == () and type(call._relayed) is tuple
    world.controller.hang_up(call.call_id)
    world.assert_quiescent()


def _held_bytes(world: CallWorld) -> dict[int, object]:
    """The objects the daemon's controller, UA core and transaction layer reach (not the
    phones, the network, the store or the world's records), by id."""
    import gc
    import types

    stop = {id(world), id(world.net), id(world.clock), id(world.wire), id(world.events)}
    stop |= {id(world.store), id(world.directory)}
    for phone in world.phones:
        stop |= {id(phone), id(phone.transport), id(phone.app), id(phone.ua), id(phone.layer)}
    seen: dict[int, object] = {}
    todo: list[object] = [world.controller, world.daemon.ua, world.daemon.layer]
    while todo:
        obj = todo.pop()
        key = id(obj)
        if key in seen or key in stop:
            continue
        if isinstance(obj, (type, types.ModuleType)):
            continue
        seen[key] = obj
        if isinstance(obj, types.FunctionType):
            # A closure made per call counts (with its cells), not the module it is from.
            todo.append(obj.__closure__)
            continue
        todo.extend(gc.get_referents(obj))
    return seen


def test_a_held_call_keeps_at_most_2_3_kb_of_objects() -> None:
    """The objects a held call adds to what the daemon reaches (``sys.getsizeof``, after
    its set-up's transactions and 64*T1 windows are over; closures counted) stay under
    2.3 KB a call (4.8 KB before the parties, targets, flows and SDP were kept once and
    the empty values shared; 2.86 KB before the shared route, CallShared, the sessions
    filed by Call-ID, the leg's own SDP slot and the dialog as its own offer/answer
    state; 2.19 KB after, with Python 3.11; docs/calls.md, memory per held call)."""
    calls = 50
    world = CallWorld(policy="flow4", max_calls_per_user=0)
    world.phone("alice", "127.0.0.2", answer=Answer(delay=1, sdp=sdp("alice")))
    world.phone("bob", "127.0.0.3", answer=Answer(delay=1, sdp=sdp("bob")))
    for _ in range(10):  # warm-up: caches, interned values, tables grown
        world.place("alice", "bob")
        world.run(0.1)
    world.run(world.timers.timeout + 8)
    before = _held_bytes(world)
    for _ in range(calls):
        world.place("alice", "bob")
        world.run(0.1)
    world.run(world.timers.timeout + 8)
    assert len(world.controller.active_calls()) == calls + 10
    added = [obj for key, obj in _held_bytes(world).items() if key not in before]
    per_call = sum(sys.getsizeof(obj) for obj in added) / calls
    assert per_call <= 2300, per_call
    for info in world.controller.active_calls():
        world.controller.hang_up(info.call_id)
    world.assert_quiescent()
