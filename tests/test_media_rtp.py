"""RTP sender: headers, pacing on the injected clock, cadence, destinations, teardown."""

import random

import numpy as np
import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock

from clicktodial.media.codecs import Codec, decode
from clicktodial.media.rtp import (
    MAX_BURST,
    Packetizer,
    PortRangeExhausted,
    RtpHeader,
    RtpPortAllocator,
    RtpSender,
    RtpStream,
    parse_packet,
)
from clicktodial.media.tones import BUSY, RINGBACK, PacketLoop, silence, tone
from clicktodial.testing.transport import FakeDatagramPort, FakeReactor

PHONE = ("127.0.0.1", 30000)


def start_sender(
    clock: Clock, source: PacketLoop, *, seed: int = 1
) -> tuple[RtpSender, FakeDatagramPort]:
    sender = RtpSender(clock, source, PHONE, rng=random.Random(seed))
    port = FakeDatagramPort(sender, "127.0.0.1", 20000)
    # Step the clock 1 ms off the packet times, so that float rounding in the sums of
    # 20 ms steps cannot put a step just before a packet's time.
    clock.advance(0.001)
    return sender, port


def step(clock: Clock, seconds: float) -> None:
    """Advance in 20 ms steps, as a punctual reactor would."""
    clock.pump([0.02] * round(seconds / 0.02))


def headers(written: list[tuple[bytes, tuple[str, int]]]) -> list[RtpHeader]:
    return [parse_packet(data)[0] for data, _ in written]


def test_header_fields_follow_rfc3550() -> None:
    """Version 2, no padding/extension/CSRC, the codec's payload type, one SSRC, 160 bytes."""
    clock = Clock()
    sender, port = start_sender(clock, tone(RINGBACK["us"], Codec.PCMA, "rb"))
    step(clock, 1)
    written = port.take()
    parsed = [parse_packet(data) for data, _ in written]
    assert {h.version for h, _ in parsed} == {2}
    assert {(h.padding, h.extension, h.csrc_count) for h, _ in parsed} == {(False, False, 0)}
    assert {h.payload_type for h, _ in parsed} == {8}
    assert {h.ssrc for h, _ in parsed} == {sender.packetizer.ssrc}
    assert {len(payload) for _, payload in parsed} == {160}
    assert {len(data) for data, _ in written} == {172}


def test_timestamps_and_sequence_numbers_advance_per_packet() -> None:
    """Each packet: sequence + 1 and timestamp + 160, from random starting values."""
    clock = Clock()
    _, port = start_sender(clock, silence(Codec.PCMU))
    step(clock, 2)
    hs = headers(port.take())
    for before, after in zip(hs, hs[1:], strict=False):
        assert after.sequence == (before.sequence + 1) % 65536
        assert after.timestamp == (before.timestamp + 160) % 2**32


def test_starting_values_are_random_per_stream() -> None:
    """Two streams draw different SSRCs, sequence numbers and timestamps (RFC 3550 §5.1)."""
    a, b = Packetizer(0), Packetizer(0)
    assert (a.ssrc, a.sequence, a.timestamp) != (b.ssrc, b.sequence, b.timestamp)


def test_sequence_and_timestamp_wrap() -> None:
    """The sequence number wraps at 2**16 and the timestamp at 2**32."""
    p = Packetizer(0, random.Random(0))
    p.sequence, p.timestamp = 65535, 2**32 - 80
    first = parse_packet(p.packet(b"\xff" * 160))[0]
    second = parse_packet(p.packet(b"\xff" * 160))[0]
    assert (first.sequence, second.sequence) == (65535, 0)
    assert (first.timestamp, second.timestamp) == (2**32 - 80, 80)


def test_marker_on_first_packet_and_on_a_new_source_only() -> None:
    """The marker bit starts a talkspurt: the first packet, and the first after set_source."""
    clock = Clock()
    sender, port = start_sender(clock, tone(RINGBACK["us"], Codec.PCMU, "rb"))
    step(clock, 1)
    sender.set_source(tone(BUSY["us"], Codec.PCMU, "busy"))
    step(clock, 1)
    markers = [h.marker for h in headers(port.take())]
    assert markers[0] is True
    assert markers.count(True) == 2
    assert markers[51] is True  # packet 0 at t=0, 50 more in the first second


def test_set_source_in_another_codec_is_refused() -> None:
    """The codec is fixed by the SDP answer: a source in the other one is a ValueError."""
    sender, _ = start_sender(Clock(), silence(Codec.PCMU))
    with pytest.raises(ValueError, match="PCMA, not PCMU"):
        sender.set_source(silence(Codec.PCMA))


def test_fifty_packets_a_second() -> None:
    """A punctual clock gives one packet every 20 ms: 1 + 50 × seconds."""
    clock = Clock()
    _, port = start_sender(clock, silence(Codec.PCMU))
    assert len(port.take()) == 1  # the first at once
    for _ in range(10):
        step(clock, 1)
        assert len(port.take()) == 50


def test_late_reactor_catches_up_in_bounded_bursts() -> None:
    """
    Late by up to MAX_BURST periods: every missed packet is sent at once. Later: only the
    newest MAX_BURST are; the skipped ones still advance the timestamp, not the sequence.
    """
    clock = Clock()
    sender, port = start_sender(clock, silence(Codec.PCMU))
    step(clock, 0.2)
    port.take()
    clock.advance(0.06)  # three periods at once
    burst = headers(port.take())
    assert len(burst) == 3
    clock.advance(1.0)  # fifty periods at once
    late = headers(port.take())
    assert len(late) == MAX_BURST
    assert late[0].sequence == (burst[-1].sequence + 1) % 65536
    assert late[0].timestamp == (burst[-1].timestamp + 160 * (50 - MAX_BURST + 1)) % 2**32
    assert sender.skipped == 50 - MAX_BURST
    step(clock, 1)
    assert len(port.take()) == 50  # back on schedule


def test_pacing_is_by_absolute_time() -> None:
    """Jittery 15-45 ms steps do not make the stream drift: 3,001 packets in 60 s, none skipped."""
    clock = Clock()
    sender, port = start_sender(clock, silence(Codec.PCMU))
    rng = random.Random(7)
    elapsed = 0.0
    while elapsed + 0.045 < 60.0:
        delta = rng.uniform(0.015, 0.045)
        clock.advance(delta)
        elapsed += delta
    clock.advance(60.0 - elapsed)
    assert len(port.take()) == 3001
    assert sender.skipped == 0


def test_sends_only_to_the_sdp_destination() -> None:
    """Every packet goes to the SDP address and port; received packets change nothing."""
    clock = Clock()
    sender, port = start_sender(clock, silence(Codec.PCMU))
    step(clock, 0.5)
    port.receive(b"\x80\x00" + b"\x00" * 170, "127.0.0.9", 40000)
    port.receive(b"garbage", "127.0.0.1", 30002)
    step(clock, 0.5)
    assert {addr for _, addr in port.take()} == {PHONE}
    assert sender.dropped == 2


def test_rtp_from_the_signalling_source_moves_the_stream_there_and_nothing_else_does() -> None:
    """Symmetric RTP for a caller behind NAT, guarded: only the latch host's RTP counts."""
    clock = Clock()
    sender = RtpSender(clock, silence(Codec.PCMU), PHONE, latch_host="198.51.100.7")
    port = FakeDatagramPort(sender, "127.0.0.1", 30000)
    step(clock, 0.1)
    rtp_packet = b"\x80\x00" + b"\x00" * 170
    port.receive(rtp_packet, "127.0.0.9", 40000)  # a stranger: ignored
    port.receive(b"garbage", "198.51.100.7", 1024)  # not RTP: ignored
    step(clock, 0.1)
    assert {addr for _, addr in port.take()} == {PHONE}
    port.receive(rtp_packet, "198.51.100.7", 61234)  # the phone, through its NAT
    step(clock, 0.1)
    assert {addr for _, addr in port.take()} == {("198.51.100.7", 61234)}
    assert sender.dropped == 3
    sender.stop()


def test_stop_leaves_no_timer() -> None:
    """stop() ends sending and leaves nothing scheduled on the clock."""
    clock = Clock()
    sender, port = start_sender(clock, silence(Codec.PCMU))
    step(clock, 0.1)
    sender.stop()
    assert clock.getDelayedCalls() == []
    port.take()
    step(clock, 1)
    assert port.take() == []


def test_port_stopping_stops_the_sender() -> None:
    """When its port stops listening the sender stops and cancels its timer."""
    clock = Clock()
    sender, port = start_sender(clock, silence(Codec.PCMU))
    port.stopListening()
    assert not sender.running
    assert clock.getDelayedCalls() == []


def test_socket_errors_are_counted_not_raised() -> None:
    """An OSError from the socket does not escape the timer: it is counted, sending goes on."""
    clock = Clock()
    sender, port = start_sender(clock, silence(Codec.PCMU))

    def refuse(datagram: bytes, addr: tuple[str, int]) -> None:
        raise OSError("network unreachable")

    port.write = refuse  # type: ignore[method-assign]
    step(clock, 0.2)
    assert sender.send_errors == 10 and sender.sent == 1
    assert sender.running


# --- cadence: decode what was sent and look at it --------------------------------------------


def sent_audio(written: list[tuple[bytes, tuple[str, int]]], codec: Codec) -> np.ndarray:
    return np.array(
        [s for data, _ in written for s in decode(codec, parse_packet(data)[1])], dtype=float
    )


def on_off(samples: np.ndarray) -> list[tuple[bool, float]]:
    """Runs of tone/silence as (on, seconds), from the energy of each 5 ms frame."""
    frames = samples[: len(samples) // 40 * 40].reshape(-1, 40)
    on = np.sqrt((frames**2).mean(axis=1)) > 500
    runs: list[tuple[bool, int]] = []
    for value in on:
        if runs and runs[-1][0] == value:
            runs[-1] = (bool(value), runs[-1][1] + 1)
        else:
            runs.append((bool(value), 1))
    return [(v, n * 0.005) for v, n in runs]


def peaks(samples: np.ndarray, count: int) -> list[float]:
    """The ``count`` strongest frequencies (Hz, 1 Hz resolution over a 1 s window)."""
    window = samples[:8000] * np.hanning(min(8000, len(samples)))
    spectrum = np.abs(np.fft.rfft(window, n=8000))
    found: list[float] = []
    for index in np.argsort(spectrum)[::-1]:
        if all(abs(index - f) > 5 for f in found):
            found.append(float(index))
        if len(found) == count:
            break
    return sorted(found)


@pytest.mark.parametrize(
    ("region", "frequencies", "cadence"),
    [
        ("us", [440, 480], [(True, 2.0), (False, 4.0)]),
        ("uk", [400, 450], [(True, 0.4), (False, 0.2), (True, 0.4), (False, 2.0)]),
        ("eu", [425], [(True, 1.0), (False, 4.0)]),
    ],
)
@pytest.mark.parametrize("codec", list(Codec))
def test_ringback_sent_has_the_region_frequencies_and_cadence(
    region: str, frequencies: list[int], cadence: list[tuple[bool, float]], codec: Codec
) -> None:
    """Decoded from the wire: the ringback's tones (±2 Hz) and on/off timing (±5 ms)."""
    clock = Clock()
    _, port = start_sender(clock, tone(RINGBACK[region], codec, region))
    step(clock, 12.02)
    samples = sent_audio(port.take(), codec)
    assert peaks(samples, len(frequencies)) == pytest.approx(frequencies, abs=2)
    runs = on_off(samples)
    expected = cadence * (len(runs) // len(cadence) + 1)
    assert [on for on, _ in runs] == [on for on, _ in expected[: len(runs)]]
    for (_, got), (_, want) in zip(runs[:-1], expected, strict=False):
        assert got == pytest.approx(want, abs=0.006)


@pytest.mark.parametrize(
    ("region", "frequencies", "half"),
    [("us", [480, 620], 0.5), ("uk", [400], 0.375), ("eu", [425], 0.5)],
)
def test_busy_tone_cadence(region: str, frequencies: list[int], half: float) -> None:
    """Busy tones: the region's frequencies, on and off for equal times."""
    clock = Clock()
    _, port = start_sender(clock, tone(BUSY[region], Codec.PCMU, "busy"))
    step(clock, 6.0)
    samples = sent_audio(port.take(), Codec.PCMU)
    assert peaks(samples, len(frequencies)) == pytest.approx(frequencies, abs=2)
    runs = on_off(samples)
    assert len(runs) >= 2 * 6 / (2 * half) - 1
    for _, seconds in runs[:-1]:
        assert seconds == pytest.approx(half, abs=0.006)


# --- ports ------------------------------------------------------------------------------------


class BusyReactor(FakeReactor):
    """A fake reactor on which some UDP ports are taken by another program."""

    def __init__(self, busy: set[int]) -> None:
        super().__init__()
        self.busy = busy

    def listenUDP(  # type: ignore[override]
        self, port: int, protocol: RtpSender, interface: str = "", maxPacketSize: int = 8192
    ) -> FakeDatagramPort:
        if port in self.busy:
            raise CannotListenError(interface, port, OSError("address in use"))
        return super().listenUDP(port, protocol, interface, maxPacketSize)


def open_stream(allocator: RtpPortAllocator, clock: Clock) -> RtpStream:
    return RtpStream.open(allocator, clock, silence(Codec.PCMU), PHONE)


def test_ports_are_even_skip_busy_and_run_out_clearly() -> None:
    """Even ports only, busy ones skipped; a full range raises PortRangeExhausted."""
    reactor = BusyReactor(busy={20002})
    allocator = RtpPortAllocator(reactor, "127.0.0.1", 20000, 20007)
    streams = [open_stream(allocator, reactor) for _ in range(3)]
    assert [s.local_port for s in streams] == [20000, 20004, 20006]
    with pytest.raises(PortRangeExhausted, match="20000-20007 on 127.0.0.1"):
        open_stream(allocator, reactor)
    streams[1].close()
    assert open_stream(allocator, reactor).local_port == 20004


def test_close_releases_port_and_timer() -> None:
    """Closing a stream stops its port, frees its number and leaves no delayed call."""
    reactor = FakeReactor()
    allocator = RtpPortAllocator(reactor, "127.0.0.1", 20001, 20010)
    streams = [open_stream(allocator, reactor) for _ in range(5)]
    assert allocator.in_use == {20002, 20004, 20006, 20008, 20010}
    reactor.pump([0.02] * 10)
    for stream in streams:
        stream.close()
        stream.close()  # idempotent
    assert allocator.in_use == frozenset()
    assert not any(p.listening for p in reactor.udp_ports)
    assert reactor.getDelayedCalls() == []


def test_bad_destination_binds_no_port() -> None:
    """A stream to a hold address fails before any port is taken."""
    reactor = FakeReactor()
    allocator = RtpPortAllocator(reactor, "127.0.0.1", 20000, 20010)
    with pytest.raises(ValueError, match="not a unicast"):
        RtpStream.open(allocator, reactor, silence(Codec.PCMU), ("0.0.0.0", 4000))
    assert reactor.udp_ports == [] and allocator.in_use == frozenset()


@pytest.mark.parametrize(("low", "high"), [(0, 10), (20001, 20001), (30000, 20000), (1, 70000)])
def test_invalid_port_range(low: int, high: int) -> None:
    """A range without an even port, or outside 1-65535, is refused."""
    with pytest.raises(ValueError):
        RtpPortAllocator(FakeReactor(), "127.0.0.1", low, high)


def test_parse_packet_rejects_non_rtp() -> None:
    """parse_packet refuses short packets and other RTP versions."""
    with pytest.raises(ValueError, match="too short"):
        parse_packet(b"\x80\x00")
    with pytest.raises(ValueError, match="version 1"):
        parse_packet(b"\x40" + b"\x00" * 11)
