"""
The caller hears our ringback while the callee rings (RFC 3725 Flow IV with
[calls] ringback on), then a busy or failure tone if the call fails; every
stream stops and releases its port when its part of the call is over.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from clicktodial.calls.controller import build_ringback
from clicktodial.config import parse_config
from clicktodial.media.codecs import Codec, decode
from clicktodial.media.ringback import RingbackPlayer
from clicktodial.media.rtp import RtpPortAllocator, parse_packet
from clicktodial.sip.message import Request
from clicktodial.sip.sdp import SessionDescription
from clicktodial.testing.callfakes import CallWorld
from clicktodial.testing.sipfakes import run_for
from clicktodial.testing.transport import FakeReactor, LogCapture
from clicktodial.testing.uafakes import Answer, sdp

CALLER_MEDIA = ("127.0.0.2", 40000)  # where alice's phone (CallWorld.phone) asks for audio


def world_with_ringback(
    policy: str = "flow4", failure_tone_seconds: float = 3.0
) -> tuple[CallWorld, RingbackPlayer, FakeReactor]:
    world = CallWorld(policy=policy)
    udp = FakeReactor()
    player = RingbackPlayer(
        world.clock,
        RtpPortAllocator(udp, "127.0.0.1", 20000, 20099),
        ringback="us",
        tones="us",
        failure_tone_seconds=failure_tone_seconds,
        rng=random.Random(3),
    )
    world.controller.media = player
    return world, player, udp


def run(world: CallWorld, seconds: float) -> None:
    """Advance in 10 ms steps: the sender sees a punctual clock (no catch-up skips)."""
    run_for(world.clock, seconds, 0.01)


def rtp(udp: FakeReactor) -> list[tuple[bytes, tuple[str, int]]]:
    return [w for port in udp.udp_ports for w in port.take()]


def tone_energy(packets: list[tuple[bytes, tuple[str, int]]], hz: int, width: int = 3) -> float:
    """The share of the first second's power within ``width`` Hz of ``hz``."""
    samples = np.array(
        [s for data, _ in packets for s in decode(Codec.PCMU, parse_packet(data)[1])], float
    )
    power = np.abs(np.fft.rfft(samples[:8000] * np.hanning(len(samples[:8000])), n=8000)) ** 2
    return float(power[hz - width : hz + width + 1].sum() / power.sum())


def test_caller_hears_ringback_until_the_callee_answers() -> None:
    """
    The caller's ACK carries our sendrecv answer on our port; US ringback flows to the
    caller's SDP address while the callee rings, stops when the callee answers, and the
    call connects as usual with nothing left over.
    """
    world, player, udp = world_with_ringback()
    world.phone("alice", "127.0.0.2")
    world.phone("bob", "127.0.0.3", answer=Answer(delay=4, sdp=sdp("bob")))
    info = world.place("alice", "bob")
    run(world, 1)
    ack = [w for w in world.sent("ACK", to="127.0.0.2")][0]
    assert isinstance(ack.message, Request)
    answer = SessionDescription.parse(ack.message.body)
    ((media, _),) = answer.media
    assert media.port == 20000 and media.formats == ("0",)
    assert ("a", "sendrecv") in answer.lines
    run(world, 2)
    ringing = rtp(udp)
    assert {to for _, to in ringing} == {CALLER_MEDIA}
    assert len(ringing) >= 100
    assert tone_energy(ringing, 440) + tone_energy(ringing, 480) > 0.99
    run(world, 3)
    assert world.controller.get_call(info.call_id).state == "connected"  # type: ignore[union-attr]
    assert player.streams == 0 and player.allocator.in_use == frozenset()
    rtp(udp)
    run(world, 2)
    assert rtp(udp) == []
    reinvite = [w for w in world.sent("INVITE", to="127.0.0.2")][-1]
    assert isinstance(reinvite.message, Request)
    # Same origin as our answer (RFC 3264 §8), version bumped: the callee's media now.
    assert (
        SessionDescription.parse(reinvite.message.body).origin.session_id
        == answer.origin.session_id
    )
    world.controller.hang_up(info.call_id, "alice")
    world.assert_quiescent()


def test_a_caller_offering_another_address_gets_ringback_at_its_own_address_only() -> None:
    """A phone does not choose where the daemon's RTP goes: an offer whose address is not
    the one the phone signals from (here 127.0.0.9; a private address behind NAT, or a
    third party) gets its ringback sent to the phone's own address (127.0.0.2) at the
    offer's port, never to 127.0.0.9; the call still connects."""
    world, player, udp = world_with_ringback()
    world.phone("alice", "127.0.0.2", answer=Answer(sdp=sdp("alice", host="127.0.0.9")))
    world.phone("bob", "127.0.0.3", answer=Answer(delay=2, sdp=sdp("bob")))
    info = world.place("alice", "bob")
    run(world, 1.5)
    assert {to for _, to in rtp(udp)} == {("127.0.0.2", 40000)}
    run(world, 3)
    assert world.controller.get_call(info.call_id).state == "connected"  # type: ignore[union-attr]
    world.controller.hang_up(info.call_id, "alice")
    world.assert_quiescent()


def test_busy_callee_gives_the_caller_busy_tone_then_bye() -> None:
    """486 from the callee: busy tone (480+620 Hz) for failure_tone_seconds, then BYE."""
    world, player, udp = world_with_ringback()
    world.phone("alice", "127.0.0.2")
    world.phone("bob", "127.0.0.3", answer=Answer(delay=2, reject=486))
    info = world.place("alice", "bob")
    run(world, 2.5)
    rtp(udp)
    assert world.record(info.call_id).state == "failed"
    assert world.sent("BYE", to="127.0.0.2") == []
    run(world, 2)
    busy = rtp(udp)
    # Switched on and off twice a second: sidebands every 1 Hz around each tone.
    assert tone_energy(busy, 480, 25) + tone_energy(busy, 620, 25) > 0.95
    with LogCapture() as log:
        run(world, 1.5)
    (bye,) = world.sent("BYE", to="127.0.0.2")
    assert isinstance(bye.message, Request)
    assert "cause=486" in (bye.message.headers.get("Reason") or "")
    assert player.streams == 0 and player.allocator.in_use == frozenset()
    # The stream's summary: 2 s of ringback and 3 s of busy tone, on time.
    (stopped,) = [e for e in log.events if "tone stream stopped" in e.get("log_format", "")]
    assert (stopped["record"], stopped["skipped"]) == (info.call_id, 0)
    assert 245 <= stopped["sent"] <= 255
    world.assert_quiescent()


def test_caller_hanging_up_during_the_failure_tone_stops_it() -> None:
    """A BYE from the caller during the failure tone stops the stream; no BYE of ours."""
    world, player, udp = world_with_ringback(failure_tone_seconds=10)
    alice = world.phone("alice", "127.0.0.2")
    world.phone("bob", "127.0.0.3", answer=Answer(delay=1, reject=503))
    world.place("alice", "bob")
    run(world, 2)
    assert player.streams == 1
    (session,) = alice.sessions
    session.bye()
    run(world, 1)
    assert player.streams == 0 and player.allocator.in_use == frozenset()
    assert world.sent("BYE", to="127.0.0.2") == []
    world.assert_quiescent()


def test_shutdown_during_the_failure_tone_sends_the_bye_at_once() -> None:
    """hang_up_all (daemon stop) ends failure tones and sends their BYEs at once."""
    world, player, _ = world_with_ringback(failure_tone_seconds=10)
    world.phone("alice", "127.0.0.2")
    world.phone("bob", "127.0.0.3", answer=Answer(delay=1, reject=480))
    world.place("alice", "bob")
    run(world, 2)
    world.controller.hang_up_all()
    run(world, 0.5)
    assert len(world.sent("BYE", to="127.0.0.2")) == 1
    assert player.streams == 0
    world.assert_quiescent()


def test_caller_hanging_up_while_ringing_back_releases_the_port() -> None:
    """The caller's BYE during ringback stops it; the callee is cancelled as before."""
    world, player, udp = world_with_ringback()
    alice = world.phone("alice", "127.0.0.2")
    world.phone("bob", "127.0.0.3", answer=Answer(delay=30))
    info = world.place("alice", "bob")
    run(world, 2)
    (session,) = alice.sessions
    session.bye()
    run(world, 1)
    assert world.record(info.call_id).state == "failed"
    assert player.streams == 0 and player.allocator.in_use == frozenset()
    assert not any(p.listening for p in udp.udp_ports)
    world.assert_quiescent()


def test_offer_without_g711_gets_the_held_answer() -> None:
    """An offer we cannot send to (no PCMU/PCMA) gets Flow IV's held answer, no stream."""
    world, player, udp = world_with_ringback()
    g729 = sdp("alice").replace(b"RTP/AVP 0", b"RTP/AVP 18")
    world.phone("alice", "127.0.0.2", answer=Answer(sdp=g729))
    world.phone("bob", "127.0.0.3", answer=Answer(delay=2))
    info = world.place("alice", "bob")
    run(world, 1)
    ack = world.sent("ACK", to="127.0.0.2")[0]
    assert isinstance(ack.message, Request)
    assert b"a=inactive" in ack.message.body
    assert udp.udp_ports == [] and player.streams == 0
    run(world, 3)
    assert world.controller.get_call(info.call_id).state == "connected"  # type: ignore[union-attr]
    world.controller.hang_up(info.call_id, None)
    world.assert_quiescent()


def test_flow_i_plays_no_ringback() -> None:
    """Flow I relays the caller's offer to the callee: there is no answer of ours to give."""
    world, player, udp = world_with_ringback(policy="flow1")
    world.phone("alice", "127.0.0.2")
    world.phone("bob", "127.0.0.3", answer=Answer(delay=2))
    info = world.place("alice", "bob")
    run(world, 4)
    assert world.controller.get_call(info.call_id).state == "connected"  # type: ignore[union-attr]
    assert udp.udp_ports == []
    world.controller.hang_up(info.call_id, None)
    world.assert_quiescent()


@pytest.mark.parametrize(
    ("media", "direction"),
    [("", "sendrecv"), ("[media]\ndirection = sendonly\n", "sendonly")],
)
def test_our_answer_has_the_configured_direction_sendrecv_by_default(
    media: str, direction: str
) -> None:
    """
    ``[media] direction`` is the direction of our answer, ``sendrecv`` unless configured:
    phones treat a ``sendonly`` peer as one that put them on hold (docs/media.md).
    """
    config = parse_config("[sip]\ndomain = example.com\n[calls]\nringback = us\n" + media, "t")
    reactor = FakeReactor()
    player = build_ringback(config, reactor)
    assert player is not None
    started = player.answer(sdp("alice"), "call-1")
    assert started is not None
    body, stream = started
    answer = SessionDescription.parse(body)
    assert [v for k, v in answer.lines if k == "a"][-1] == direction
    player.stop(stream)
    assert player.streams == 0 and reactor.getDelayedCalls() == []


def test_ringback_follows_rtp_from_the_callers_signalling_address_only() -> None:
    """
    A caller behind NAT: its SDP names a private address, but its RTP reaches us from its
    NAT, the address its signalling comes from (the binding's source, 127.0.0.2 here). The
    ringback moves there; RTP from any other address moves nothing.
    """
    world, player, udp = world_with_ringback()
    world.phone("alice", "127.0.0.2")
    world.phone("bob", "127.0.0.3", answer=Answer(delay=4, sdp=sdp("bob")))
    info = world.place("alice", "bob")
    run(world, 1)
    (port,) = udp.udp_ports
    rtp_packet = b"\x80\x00" + b"\x00" * 170
    port.receive(rtp_packet, "127.0.0.66", 7000)
    run(world, 0.5)
    assert {to for _, to in rtp(udp)} == {CALLER_MEDIA}
    port.receive(rtp_packet, "127.0.0.2", 61000)
    run(world, 0.5)
    assert {to for _, to in rtp(udp)} == {("127.0.0.2", 61000)}
    world.controller.hang_up(info.call_id, "alice")
    world.assert_quiescent()
