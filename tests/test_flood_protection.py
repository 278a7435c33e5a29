"""
The per-source rate limit at the transport's edge (issue 13, item 5): every datagram counts
before parsing, garbage included; a banned source is dropped before any parsing, and by the
kernel filter of the UDP socket; other sources keep being served. IPv6 counts per /64.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from clicktodial.admission import SourceRateLimiter, source_key
from clicktodial.config import HostPort, SipConfig, parse_config
from clicktodial.netaddr import NetworkSet
from clicktodial.sip import banfilter
from clicktodial.sip.interfaces import IMessageHandler, ISourceLimit
from clicktodial.sip.message import Request, Response
from clicktodial.sip.transport import SIPTransportLayer, _KernelBanFilter
from clicktodial.testing.transport import (
    FakeReactor,
    LogCapture,
    accept_tcp,
    no_failures_logged,
)

GARBAGE = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 not SIP at all"


def options(port: int = 5070, host: str = "10.0.0.1") -> bytes:
    return (
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-{port}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.test>;tag=a1\r\n"
        "To: <sip:127.0.0.1>\r\n"
        f"Call-ID: c{port}@test\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@implementer(IMessageHandler)
class Recorder:
    def __init__(self) -> None:
        self.requests: list[Request] = []

    def request_received(self, request: Request, source: object) -> None:
        self.requests.append(request)

    def response_received(self, response: Response, source: object) -> None:
        raise AssertionError("no response expected")


class Edge:
    """A started transport with a rate limit of ``max_requests`` a 2 s window."""

    def __init__(self, max_requests: int = 3, **kwargs: object) -> None:
        self.reactor = FakeReactor()
        self.limit = SourceRateLimiter(self.reactor, 2.0, max_requests, 60.0, **kwargs)  # type: ignore[arg-type]
        self.handler = Recorder()
        config = SipConfig(
            domain="example.test",
            listen=HostPort("127.0.0.1", 5060),
            transports=("udp", "tcp"),
            t1=0.5,
            t2=4.0,
            t4=5.0,
            user_agent="test",
        )
        self.layer = SIPTransportLayer(self.reactor, config, self.handler, source_limit=self.limit)
        self.layer.startService()
        self.udp = self.reactor.udp_ports[0]


@pytest.fixture
def log() -> Iterator[LogCapture]:
    yield from no_failures_logged()


# -- the limiter ------------------------------------------------------------------------------


def test_the_limiter_provides_the_interface() -> None:
    assert verifyObject(ISourceLimit, SourceRateLimiter(Clock(), 2.0, 10, 60.0))


def test_ipv6_sources_are_counted_per_64_and_ipv4_mapped_as_ipv4() -> None:
    assert (
        source_key("2001:db8:1:2::1")
        == source_key("[2001:db8:1:2:ffff::9]")
        == ("2001:db8:1:2::/64")
    )
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("2001:db8:1:2::1", 128) == "2001:db8:1:2::1"
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_key("192.0.2.7") == "192.0.2.7"


def test_a_flood_from_rotating_addresses_of_one_ipv6_64_is_one_source() -> None:
    clock = Clock()
    limiter = SourceRateLimiter(clock, 2.0, 10, 60.0)
    allowed = [limiter.allow(f"2001:db8::{n:x}") for n in range(1, 30)]
    assert allowed == [True] * 10 + [False] * 19
    assert limiter.allow("2001:db8:0:1::1"), "the next /64 is another source"
    assert limiter.banned() == {"2001:db8::/64": 60.0}
    assert limiter.dropped == 19


def test_exempt_networks_and_trusted_proxies_are_never_limited() -> None:
    limits = parse_config(
        "[sip]\ndomain = 127.0.0.1\n[limits]\nrate_max_requests = 1\nrate_exempt = 10.1.0.0/16\n",
        "x.ini",
    ).limits
    limiter = SourceRateLimiter.from_config(Clock(), limits, NetworkSet.parse("192.0.2.9"))
    assert all(limiter.allow("10.1.2.3") for _ in range(50))
    assert all(limiter.allow("192.0.2.9") for _ in range(50))
    assert limiter.allow("10.2.0.1") and not limiter.allow("10.2.0.1")


def test_a_ban_is_announced_once_and_ends() -> None:
    clock = Clock()
    limiter = SourceRateLimiter(clock, 2.0, 2, 60.0)
    bans: list[dict[str, float]] = []
    limiter.on_ban(lambda: bans.append(limiter.banned()))
    for _ in range(10):
        limiter.allow("10.0.0.1")
    assert bans == [{"10.0.0.1": 60.0}]
    clock.advance(60.0)
    assert limiter.banned() == {}
    assert limiter.allow("10.0.0.1")


def test_a_reload_with_no_limit_lifts_the_bans() -> None:
    limiter = SourceRateLimiter(Clock(), 2.0, 1, 60.0)
    limiter.allow("10.0.0.1")
    assert not limiter.allow("10.0.0.1")
    limiter.configure(2.0, 0, 60.0, ())
    assert limiter.allow("10.0.0.1") and limiter.banned() == {}


# -- the transport: counted before parsing ----------------------------------------------------


def test_garbage_datagrams_count_and_get_their_source_banned(log: LogCapture) -> None:
    """Unparseable datagrams count: past the limit the source's next OPTIONS is dropped."""
    edge = Edge(max_requests=3)
    for _ in range(4):
        edge.udp.receive(GARBAGE, "10.0.0.1")
    assert edge.limit.banned() == {"10.0.0.1": 60.0}
    edge.udp.receive(options(), "10.0.0.1")
    edge.udp.receive(options(host="10.0.0.2"), "10.0.0.2")
    assert [r.headers.get("Via") for r in edge.handler.requests] == [
        "SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bK-5070"
    ]


def test_a_banned_source_is_dropped_before_parsing(log: LogCapture) -> None:
    """Nothing of a banned source is parsed, answered or logged: parse errors stay put."""
    edge = Edge(max_requests=3)
    for _ in range(4):
        edge.udp.receive(GARBAGE, "10.0.0.1")
    errors, events = edge.layer.parse_errors, len(log.events)
    for _ in range(100):
        edge.udp.receive(GARBAGE, "10.0.0.1")
        edge.udp.receive(options(), "10.0.0.1")
    assert edge.layer.parse_errors == errors
    assert len(log.events) == events
    assert edge.udp.take() == [] and edge.handler.requests == []
    assert edge.limit.dropped == 201


def test_a_banned_source_cannot_open_tcp_connections_and_its_messages_close_them(
    log: LogCapture,
) -> None:
    edge = Edge(max_requests=3)
    protocol, transport = accept_tcp(edge.reactor, "10.0.0.1")
    for n in range(4):
        protocol.dataReceived(options(port=6000 + n))
    assert len(edge.handler.requests) == 2  # the connection counted once, then 2 messages
    assert transport.disconnecting
    _, factory, _, _ = edge.reactor.tcpServers[0]
    assert factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 40002)) is None
    assert factory.buildProtocol(IPv4Address("TCP", "10.0.0.2", 40002)) is not None


# -- the kernel filter ----------------------------------------------------------------------------


def run(program: list[banfilter.Instruction], header: bytes) -> int:
    """A classic BPF interpreter for what banfilter emits; ``header`` is the IP header."""
    pc, a = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == 0x06:
            return k
        if code in (0x20, 0x30):  # ld word / byte, absolute, from SKF_NET_OFF
            offset = k - (banfilter._NET & 0xFFFFFFFF)
            size = 4 if code == 0x20 else 1
            a = int.from_bytes(header[offset : offset + size], "big")
        elif code == 0x54:
            a &= k
        elif code == 0x15:
            pc += jt if a == k else jf
        elif code == 0x05:
            pc += k
        else:  # pragma: no cover
            raise AssertionError(f"unexpected opcode {code:#x}")


def ip_header(source: str) -> bytes:
    address = ipaddress.ip_address(source)
    if address.version == 4:
        return b"\x45" + bytes(11) + address.packed + bytes(4)
    return b"\x60" + bytes(7) + address.packed + bytes(16)


@pytest.mark.parametrize(
    ("source", "dropped"),
    [
        ("192.0.2.7", True),
        ("192.0.2.8", False),
        ("10.9.8.7", True),
        ("10.9.9.1", False),
        ("2001:db8:1:2::1", True),
        ("2001:db8:1:2:abcd::9", True),
        ("2001:db8:1:3::1", False),
        ("::1", True),
        ("::2", False),
    ],
)
def test_the_kernel_filter_drops_exactly_the_banned_sources(source: str, dropped: bool) -> None:
    program = banfilter.program(
        ["192.0.2.7", "2001:db8:1:2::/64", "10.9.8.0/24", "::1", "not-an-address"]
    )
    assert run(program, ip_header(source)) == (0 if dropped else 0xFFFFFFFF)


def test_the_kernel_filter_accepts_everything_with_nobody_banned() -> None:
    program = banfilter.program([])
    assert run(program, ip_header("192.0.2.7")) == run(program, ip_header("::1")) == 0xFFFFFFFF


def test_the_kernel_filter_fits_the_kernel_limit() -> None:
    many = [f"2001:db8:{n:x}::/64" for n in range(2000)] + ["192.0.2.1"]
    program = banfilter.program(many)
    assert len(program) <= 4096
    assert run(program, ip_header("2001:db8:0::5")) == 0


class RecordingSocket:
    def __init__(self) -> None:
        self.options: list[tuple[int, int, object]] = []

    def setsockopt(self, level: int, name: int, value: object) -> None:
        self.options.append((level, name, value))


def test_the_kernel_filter_follows_the_bans_and_goes_when_they_end() -> None:
    clock = Clock()
    limiter = SourceRateLimiter(clock, 2.0, 1, 60.0)
    sock = RecordingSocket()
    kernel = _KernelBanFilter(clock, limiter, sock)  # type: ignore[arg-type]
    limiter.on_ban(kernel.refresh)
    kernel.refresh()
    assert sock.options == [], "no filter while nobody is banned"
    limiter.allow("10.0.0.1")
    limiter.allow("10.0.0.1")
    [(_, name, fprog)] = sock.options
    assert name == banfilter._SO_ATTACH_FILTER
    assert struct.unpack("HL", fprog)[0] == len(banfilter.program(["10.0.0.1"]))  # type: ignore[arg-type]
    clock.advance(59.0)
    assert len(sock.options) == 1
    clock.advance(1.0)
    assert sock.options[-1][1] == banfilter._SO_DETACH_FILTER
    assert not clock.getDelayedCalls()
