"""
Per-source caps on open connections (clicktodial.connlimit), alone and as the daemon wires
them: [sip] max_connections_per_source, [web] max_connections_per_client.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.test.requesthelper import DummyRequest

from clicktodial.config import parse_config
from clicktodial.connlimit import LOG_INTERVAL, ConnectionLimit, ConnectionLimitingFactory
from clicktodial.metrics import MetricsResource
from clicktodial.netaddr import NetworkSet
from clicktodial.service import build_service
from clicktodial.testing.transport import FakeReactor, LogCapture


def _refusal_logs(log: LogCapture) -> list[dict[str, Any]]:
    return [e for e in log.events if e.get("log_namespace") == "clicktodial.connlimit"]


def _connect(factory: Any, host: str, port: int) -> tuple[Any, StringTransport] | None:
    kind = IPv6Address if ":" in host else IPv4Address
    peer = kind("TCP", host, port)
    protocol = factory.buildProtocol(peer)
    if protocol is None:
        return None
    transport = StringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    return protocol, transport


def test_a_source_is_capped_and_its_refusals_logged_once_a_minute() -> None:
    clock = Clock()
    limit = ConnectionLimit(clock, "web", 2)
    log = LogCapture()
    with log:
        assert limit.admit("192.0.2.1") and limit.admit("192.0.2.1")
        assert not any(limit.admit("192.0.2.1") for _ in range(1000))
        clock.advance(LOG_INTERVAL - 1)
        assert not limit.admit("192.0.2.1")
        clock.advance(1)
        assert not limit.admit("192.0.2.1")
        assert limit.admit("192.0.2.2")
    assert limit.refused == 1002
    assert [(e["listener"], e["peer"], e["count"]) for e in _refusal_logs(log)] == [
        ("web", "192.0.2.1", 2),
        ("web", "192.0.2.1", 2),
    ]
    limit.release("192.0.2.1")
    assert limit.admit("192.0.2.1")


def test_zero_means_no_limit_and_exempt_addresses_are_never_counted() -> None:
    unlimited = ConnectionLimit(Clock(), "sip-tcp", 0)
    assert all(unlimited.admit("192.0.2.1") for _ in range(10_000))
    limit = ConnectionLimit(Clock(), "sip-tcp", 1, NetworkSet.parse("192.0.2.0/24"))
    assert all(limit.admit("192.0.2.7") for _ in range(1000))
    assert limit.open == {} and limit.refused == 0


def test_the_factory_counts_per_address_ipv4_mapped_as_ipv4_and_frees_on_close() -> None:
    limit = ConnectionLimit(Clock(), "sip-tcp", 2)
    factory = limit.wrap(Factory.forProtocol(Protocol))
    assert isinstance(factory, ConnectionLimitingFactory)
    first = _connect(factory, "192.0.2.1", 1)
    assert first is not None
    assert _connect(factory, "::ffff:192.0.2.1", 2) is not None
    assert _connect(factory, "192.0.2.1", 3) is None
    assert _connect(factory, "2001:db8::1", 4) is not None
    assert limit.open == {"192.0.2.1": 2, "2001:db8::1": 1}
    first[0].connectionLost(None)
    assert limit.open == {"192.0.2.1": 1, "2001:db8::1": 1}
    assert factory.buildProtocol(UNIXAddress("/run/x.sock")) is not None  # not counted


def test_a_connection_the_wrapped_factory_refuses_is_not_counted() -> None:
    class Refusing(Factory):
        def buildProtocol(self, addr: object) -> None:
            return None

    limit = ConnectionLimit(Clock(), "sip-tcp", 1)
    factory = limit.wrap(Refusing())
    assert _connect(factory, "192.0.2.1", 1) is None
    assert limit.open == {} and limit.refused == 0


CONFIG = (
    "[sip]\ndomain = 127.0.0.1\ntransports = udp, tcp\nmax_connections_per_source = 3\n"
    "[registrar]\ntrusted_proxies = 127.0.0.9\n"
    "[web]\nlisten = tcp:8181:interface=127.0.0.1\nmax_connections_per_client = 4\n"
    "trusted_proxies = 127.0.0.8\n"
    "[store]\nbackend = memory\n"
)


def test_the_daemon_caps_sip_tcp_and_web_per_source_exempts_proxies_and_counts_refusals() -> None:
    reactor = FakeReactor()
    root = build_service(parse_config(CONFIG, "x.ini"), reactor)
    root.startService()
    web = next(f for port, f, _, _ in reactor.tcpServers if port == 8181)
    sip = next(f for port, f, _, _ in reactor.tcpServers if port == 5060)
    held_web = [_connect(web, "127.0.0.2", 1000 + i) for i in range(6)]
    held_sip = [_connect(sip, "127.0.0.2", 2000 + i) for i in range(5)]
    assert [c is not None for c in held_web] == [True] * 4 + [False] * 2
    assert [c is not None for c in held_sip] == [True] * 3 + [False] * 2
    assert all(_connect(web, "127.0.0.8", 3000 + i) for i in range(10))
    assert all(_connect(sip, "127.0.0.9", 4000 + i) for i in range(10))
    assert _connect(web, "127.0.0.3", 1) is not None
    assert _connect(sip, "127.0.0.3", 1) is not None
    assert root.operations is not None
    request = DummyRequest([b"metrics"])
    body = MetricsResource(root.operations.metrics.registry).render(request).decode()
    assert 'clicktodial_connections_refused_total{listener="web"} 2.0' in body
    assert 'clicktodial_connections_refused_total{listener="sip-tcp"} 2.0' in body
    assert 'clicktodial_connections_refused_total{listener="sip-tls"} 0.0' in body
    root.stopService()
