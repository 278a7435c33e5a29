"""
RTP (RFC 3550) for the media engine: packetisation and a paced sender.

* :class:`RtpHeader` / :func:`parse_packet`: the fixed 12-byte header
  (RFC 3550 §5.1), used by the sender and by tests and tools that read a stream.
* :class:`Packetizer`: one stream's SSRC, sequence numbers and timestamps:
  random starting values (§5.1), sequence numbers wrap at 2**16, timestamps
  advance by the samples of each packet (160 for 20 ms of G.711) and go on
  advancing across packets that are not sent, so the receiver sees a gap
  in time, not a jump.  The marker bit is set on the first packet of a
  talkspurt (RFC 3551 §4.1): the first packet of the stream and the first
  after a change of source.
* :class:`RtpSender`: a :class:`~twisted.internet.protocol.DatagramProtocol`
  that sends a :class:`~clicktodial.media.tones.PacketLoop` every 20 ms on
  the injected clock to one destination, and drops whatever it receives.
* :class:`RtpPortAllocator` / :class:`RtpStream`: bind the sender to an even
  port of the configured range (RFC 3550 §11: RTP on even ports), skipping
  busy ones; closing a stream stops its timer and releases its port.

Symmetric RTP (sending to where the phone's packets come from, RFC 4961) is
not done: the sender sends only to the address and port the phone's SDP
named, so a forged packet cannot point our stream anywhere else.
"""

from __future__ import annotations

import random
import secrets
import struct
from collections.abc import Callable

import attrs
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from clicktodial.media.codecs import Codec
from clicktodial.media.tones import FRAME_SAMPLES, SAMPLE_RATE, PacketLoop
from clicktodial.sip.sdp import check_destination

__all__ = [
    "FRAME_INTERVAL",
    "MAX_BURST",
    "Packetizer",
    "PortRangeExhausted",
    "RtpHeader",
    "RtpPortAllocator",
    "RtpSender",
    "RtpStream",
    "parse_packet",
]

RTP_VERSION = 2
_HEADER = struct.Struct("!BBHII")
#: Seconds between packets: 20 ms.
FRAME_INTERVAL = FRAME_SAMPLES / SAMPLE_RATE
#: Most packets sent at once to catch up after the reactor was late; older ones are skipped.
MAX_BURST = 3


@attrs.frozen
class RtpHeader:
    """The fixed RTP header (RFC 3550 §5.1); CSRCs and extensions are not used by us."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool = False
    version: int = RTP_VERSION
    padding: bool = False
    extension: bool = False
    csrc_count: int = 0

    def pack(self) -> bytes:
        """The 12 header bytes."""
        first = (self.version << 6) | (self.padding << 5) | (self.extension << 4) | self.csrc_count
        return _HEADER.pack(
            first, (self.marker << 7) | self.payload_type, self.sequence, self.timestamp, self.ssrc
        )


def parse_packet(data: bytes) -> tuple[RtpHeader, bytes]:
    """
    An RTP packet's header and payload (after any CSRCs, extension and padding).

    :raises ValueError: not an RTP version 2 packet.
    """
    if len(data) < _HEADER.size:
        raise ValueError(f"{len(data)} bytes is too short for RTP")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    header = RtpHeader(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        marker=bool(second & 0x80),
        version=first >> 6,
        padding=bool(first & 0x20),
        extension=bool(first & 0x10),
        csrc_count=first & 0x0F,
    )
    if header.version != RTP_VERSION:
        raise ValueError(f"RTP version {header.version}, expected 2")
    start = _HEADER.size + 4 * header.csrc_count
    if header.extension:
        if len(data) < start + 4:
            raise ValueError("truncated RTP header extension")
        (words,) = struct.unpack_from("!H", data, start + 2)
        start += 4 + 4 * words
    end = len(data)
    if header.padding and end > start:
        end -= data[-1]
    if end < start:
        raise ValueError("truncated RTP packet")
    return header, data[start:end]


class Packetizer:
    """
    The header fields of one RTP stream (RFC 3550 §5.1).

    :param payload_type: 0 (PCMU) or 8 (PCMA), or any 0-127.
    :param rng: draws the SSRC and the starting sequence number and timestamp
        (random, §5.1 and §8); tests pass a seeded :class:`random.Random`.
    """

    def __init__(self, payload_type: int, rng: random.Random | None = None) -> None:
        if not 0 <= payload_type <= 127:
            raise ValueError(f"invalid RTP payload type {payload_type}")
        draw = rng if rng is not None else secrets.SystemRandom()
        self.payload_type = payload_type
        self.ssrc = draw.getrandbits(32)
        self.sequence = draw.getrandbits(16)
        self.timestamp = draw.getrandbits(32)
        self._talkspurt = True

    def start_talkspurt(self) -> None:
        """Set the marker bit on the next packet (RFC 3551 §4.1)."""
        self._talkspurt = True

    def packet(self, payload: bytes, samples: int = FRAME_SAMPLES) -> bytes:
        """The next packet carrying ``payload`` of ``samples`` samples."""
        header = _HEADER.pack(
            0x80,
            (0x80 if self._talkspurt else 0) | self.payload_type,
            self.sequence,
            self.timestamp,
            self.ssrc,
        )
        self._talkspurt = False
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        return header + payload

    def skip(self, samples: int = FRAME_SAMPLES) -> None:
        """``samples`` of time pass without a packet: the timestamp advances, the sequence not."""
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF


class RtpSender(DatagramProtocol):
    """
    Sends a looped source to one destination every 20 ms; drops what it receives.

    Pacing is by absolute time on ``clock``: packet n is due at start + n × 20 ms
    and each timer is set for the next packet's due time, so lateness does not
    add up.  When the timer fires late, every packet that has come due is sent,
    at most :data:`MAX_BURST` at once; older ones are skipped (their timestamps
    and audio are passed over, so the stream stays in time).

    Sending starts when the protocol is started on a port and stops at
    :meth:`stop` or when the port stops listening.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        source: PacketLoop,
        destination: tuple[str, int],
        *,
        rng: random.Random | None = None,
        max_burst: int = MAX_BURST,
        call_id: str | None = None,
        latch_host: str | None = None,
    ) -> None:
        self.clock = clock
        self.destination = check_destination(*destination)
        #: Symmetric RTP (RFC 4961) guarded: RTP from this host (the phone's signalling
        #: source, its NAT) moves the destination to where it came from; from anywhere
        #: else it never does.
        self.latch_host = latch_host
        self.source = source
        self.codec: Codec = source.codec
        self.packetizer = Packetizer(source.codec.payload_type, rng)
        self.max_burst = max_burst
        self.call_id = call_id
        self.position = 0
        #: Packets sent, packets skipped to catch up, datagrams received and dropped,
        #: packets the socket refused.
        self.sent = 0
        self.skipped = 0
        self.dropped = 0
        self.send_errors = 0
        self._call: IDelayedCall | None = None
        self._start = 0.0
        self._next_index = 0

    @property
    def running(self) -> bool:
        """Whether packets are being sent."""
        return self._call is not None

    def startProtocol(self) -> None:
        """Start sending at once, then every 20 ms."""
        if self._call is not None:
            return
        self._start = self.clock.seconds()
        self._next_index = 0
        self._tick()

    def stopProtocol(self) -> None:
        """The port stopped listening: stop sending."""
        self.stop()

    def stop(self) -> None:
        """Stop sending (idempotent); the port is the caller's to close."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def set_source(self, source: PacketLoop) -> None:
        """
        Play ``source`` from its start; its first packet carries the marker bit.

        :raises ValueError: ``source`` is in another codec than the one negotiated.
        """
        if source.codec is not self.codec:
            raise ValueError(
                f"source {source.name!r} is {source.codec.name}, not {self.codec.name}"
            )
        self.source = source
        self.position = 0
        self.packetizer.start_talkspurt()

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """
        Incoming media is not played: drop it.  An RTP packet from ``latch_host``
        (and only from there) moves our destination to its source address and port:
        a phone behind NAT gets our stream through the mapping its own RTP opened.
        """
        self.dropped += 1
        source = (addr[0], addr[1])
        if (
            self.latch_host is not None
            and addr[0] == self.latch_host
            and source != self.destination
            and len(datagram) >= 12
            and datagram[0] >> 6 == RTP_VERSION
        ):
            self.log.info(
                "RTP latched from {old} to {peer} (the phone's signalling source)",
                old=self.destination, peer=source, call_id=self.call_id,
            )
            self.destination = source

    def _tick(self) -> None:
        # Packet n is due at start + n × 20 ms.  The small tolerance keeps a timer that fires
        # exactly on time from being floored to the previous period by float rounding (which
        # LoopingCall.withCount is prone to with a 0.02 s interval).
        due = int((self.clock.seconds() - self._start) / FRAME_INTERVAL + 1e-6) + 1
        count = max(due - self._next_index, 1)
        self._next_index += count
        self._send(count)
        self._call = self.clock.callLater(
            max(self._start + self._next_index * FRAME_INTERVAL - self.clock.seconds(), 0.0),
            self._tick,
        )

    def _send(self, count: int) -> None:
        packets = self.source.packets
        late = count - self.max_burst
        if late > 0:
            # Too far behind: skip the oldest periods rather than burst them.
            for _ in range(late):
                self.packetizer.skip()
            self.position = (self.position + late) % len(packets)
            self.skipped += late
            count = self.max_burst
        transport = self.transport
        for _ in range(count):
            payload = packets[self.position]
            self.position = (self.position + 1) % len(packets)
            data = self.packetizer.packet(payload)
            if transport is None:
                continue
            try:
                transport.write(data, self.destination)
            except OSError as e:
                self.send_errors += 1
                if self.send_errors == 1:
                    self.log.warn(
                        "RTP to {peer} failed: {error}",
                        peer=self.destination,
                        error=str(e),
                        call_id=self.call_id,
                    )
                continue
            self.sent += 1


class PortRangeExhausted(Exception):
    """No even UDP port of the configured RTP range could be bound."""


def _port_number(port: IListeningPort) -> int:
    number: int = getattr(port.getHost(), "port")  # noqa: B009 (IAddress does not declare it)
    return number


class RtpPortAllocator:
    """
    Binds datagram protocols to even ports of ``[low, high]`` on ``address``.

    The search starts after the last port handed out (so a port just released is
    not reused at once, which would confuse a phone still sending to it) and
    skips ports in use by us or by anyone else.
    """

    def __init__(self, reactor: IReactorUDP, address: str, low: int, high: int) -> None:
        if not (0 < low <= high <= 65535):
            raise ValueError(f"invalid RTP port range {low}-{high}")
        first = low + (low % 2)
        if first > high:
            raise ValueError(f"RTP port range {low}-{high} has no even port")
        self.reactor = reactor
        self.address = address
        self.low = low
        self.high = high
        self._ports = list(range(first, high + 1, 2))
        self._next = 0
        self._in_use: set[int] = set()

    @property
    def in_use(self) -> frozenset[int]:
        """The ports bound through this allocator and not yet released."""
        return frozenset(self._in_use)

    def listen(self, protocol: DatagramProtocol) -> IListeningPort:
        """
        Bind ``protocol`` to a free even port.

        :raises PortRangeExhausted: every even port of the range is busy.
        """
        for _ in range(len(self._ports)):
            number = self._ports[self._next]
            self._next = (self._next + 1) % len(self._ports)
            if number in self._in_use:
                continue
            try:
                port = self.reactor.listenUDP(number, protocol, self.address, 8192)
            except CannotListenError:
                continue  # busy: someone else has it
            self._in_use.add(number)
            return port
        raise PortRangeExhausted(
            f"no free even UDP port in the RTP range {self.low}-{self.high} on {self.address}"
            f" ({len(self._in_use)} in use by calls)"
        )

    def release(self, port: IListeningPort) -> None:
        """Stop listening on ``port`` and make its number available again."""
        number = _port_number(port)
        self._in_use.discard(number)
        port.stopListening()


class RtpStream:
    """
    One outgoing RTP stream of a call: a sender bound to a port of the range.

    Build it with :meth:`open`; :attr:`local_port` goes into our SDP;
    :meth:`close` stops the timer and releases the port (idempotent).
    """

    def __init__(
        self, allocator: RtpPortAllocator, sender: RtpSender, port: IListeningPort
    ) -> None:
        self.allocator = allocator
        self.sender = sender
        self._port: IListeningPort | None = port
        self.local_port: int = _port_number(port)
        self.on_close: Callable[[RtpStream], None] | None = None

    @classmethod
    def open(
        cls,
        allocator: RtpPortAllocator,
        clock: IReactorTime,
        source: PacketLoop,
        destination: tuple[str, int],
        *,
        call_id: str | None = None,
        rng: random.Random | None = None,
        latch_host: str | None = None,
    ) -> RtpStream:
        """
        Bind a sender of ``source`` to ``destination`` and start it (latching to
        RTP from ``latch_host``, see :class:`RtpSender`).

        :raises ValueError: ``destination`` is not a unicast address and port.
        :raises PortRangeExhausted: no port is free.
        """
        sender = RtpSender(
            clock, source, destination, rng=rng, call_id=call_id, latch_host=latch_host
        )
        return cls(allocator, sender, allocator.listen(sender))

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._port is None

    def close(self) -> None:
        """Stop sending and release the port."""
        port, self._port = self._port, None
        if port is None:
            return
        self.sender.stop()
        self.allocator.release(port)
        if self.on_close is not None:
            self.on_close(self)
