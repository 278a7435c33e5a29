"""
Tests for :obj:`clicktodial.trunks.resolver`: RFC 3263 §4 with a fake DNS resolver (no real
DNS anywhere), the TTL cache and RFC 2782 SRV ordering.
"""

from __future__ import annotations

import random

import pytest
from twisted.internet.task import Clock
from twisted.names import dns

from clicktodial.sip.address import Destination
from clicktodial.sip.uri import parse_uri
from clicktodial.trunks.resolver import ProxyResolver, ResolutionFailed, order_srv

from .fakes import FakeResolver, a, aaaa, naptr, srv


def resolve(resolver: ProxyResolver, uri: str) -> list[Destination]:
    d = resolver.resolve(parse_uri(uri))
    result: list[object] = []
    d.addBoth(result.append)
    assert result, "the resolution did not finish"
    value = result[0]
    if isinstance(value, BaseException) or hasattr(value, "raiseException"):
        value.raiseException()  # type: ignore[union-attr]
    assert isinstance(value, list)
    return value


def make(
    *records: object,
    transports: tuple[str, ...] = ("UDP", "TCP", "TLS"),
    clock: Clock | None = None,
) -> tuple[ProxyResolver, FakeResolver]:
    fake = FakeResolver(*records)  # type: ignore[arg-type]
    return (ProxyResolver(clock or Clock(), fake, transports, random.Random(1)), fake)


def test_ip_address_needs_no_dns() -> None:
    """§4.1/§4.2: an IP address is used as is, on the URI's or the default port."""
    resolver, fake = make()
    assert resolve(resolver, "sip:192.0.2.1") == [Destination("UDP", "192.0.2.1", 5060)]
    assert resolve(resolver, "sip:[2001:db8::1]:5070;transport=tcp") == [
        Destination("TCP", "2001:db8::1", 5070)
    ]
    assert resolve(resolver, "sips:192.0.2.1") == [Destination("TLS", "192.0.2.1", 5061)]
    assert fake.asked == []


def test_port_given_means_no_srv() -> None:
    """§4.2: a name with a port: A/AAAA only, never NAPTR or SRV."""
    resolver, fake = make(
        a("p.example", "192.0.2.1"),
        aaaa("p.example", "2001:db8::1"),
        srv("_sip._udp.p.example", 1, 1, 5999, "other.example"),
    )
    assert resolve(resolver, "sip:p.example:5080") == [
        Destination("UDP", "192.0.2.1", 5080),
        Destination("UDP", "2001:db8::1", 5080),
    ]
    assert {kind for kind, _ in fake.asked} == {"A", "AAAA"}


def test_naptr_then_srv_in_order() -> None:
    """§4.1: NAPTR by order and preference, then each one's SRV records, priority first."""
    resolver, fake = make(
        naptr("p.example", 20, 10, "SIP+D2U", "_sip._udp.p.example"),
        naptr("p.example", 10, 10, "SIP+D2T", "_sip._tcp.p.example"),
        naptr("p.example", 10, 5, "SIP+D2X", "_sip._x.p.example"),  # unknown service
        srv("_sip._tcp.p.example", 2, 0, 5060, "b.p.example"),
        srv("_sip._tcp.p.example", 1, 0, 5061, "a.p.example"),
        srv("_sip._udp.p.example", 1, 0, 5062, "a.p.example"),
        a("a.p.example", "192.0.2.1"),
        a("b.p.example", "192.0.2.2"),
    )
    assert resolve(resolver, "sip:p.example") == [
        Destination("TCP", "192.0.2.1", 5061),
        Destination("TCP", "192.0.2.2", 5060),
        Destination("UDP", "192.0.2.1", 5062),
    ]
    assert ("SRV", "_sip._x.p.example") not in fake.asked


def test_naptr_of_transports_we_do_not_run_skipped() -> None:
    """Only NAPTR services whose transport the daemon runs are followed."""
    resolver, _ = make(
        naptr("p.example", 10, 10, "SIPS+D2T", "_sips._tcp.p.example"),
        naptr("p.example", 20, 10, "SIP+D2U", "_sip._udp.p.example"),
        srv("_sips._tcp.p.example", 1, 0, 5061, "a.p.example"),
        srv("_sip._udp.p.example", 1, 0, 5060, "a.p.example"),
        a("a.p.example", "192.0.2.1"),
        transports=("UDP",),
    )
    assert resolve(resolver, "sip:p.example") == [Destination("UDP", "192.0.2.1", 5060)]


def test_no_naptr_srv_per_transport() -> None:
    """§4.1: without NAPTR, the SRV records of each transport we run, in our order."""
    resolver, fake = make(
        srv("_sip._tcp.p.example", 1, 0, 5060, "a.p.example"),
        a("a.p.example", "192.0.2.1"),
        transports=("UDP", "TCP"),
    )
    assert resolve(resolver, "sip:p.example") == [Destination("TCP", "192.0.2.1", 5060)]
    assert ("SRV", "_sip._udp.p.example") in fake.asked


def test_transport_param_srv_of_that_transport() -> None:
    """§4.2: ;transport= names the SRV service; no NAPTR query."""
    resolver, fake = make(
        srv("_sip._tcp.p.example", 1, 0, 5070, "a.p.example"),
        srv("_sip._udp.p.example", 1, 0, 5060, "a.p.example"),
        a("a.p.example", "192.0.2.1"),
    )
    assert resolve(resolver, "sip:p.example;transport=tcp") == [
        Destination("TCP", "192.0.2.1", 5070)
    ]
    assert "NAPTR" not in {kind for kind, _ in fake.asked}


def test_no_srv_falls_back_to_address_records() -> None:
    """§4.2: no SRV: A/AAAA, UDP (TLS for sips:) on the default port."""
    resolver, _ = make(a("p.example", "192.0.2.1"))
    assert resolve(resolver, "sip:p.example") == [Destination("UDP", "192.0.2.1", 5060)]
    assert resolve(resolver, "sips:p.example") == [Destination("TLS", "192.0.2.1", 5061)]


def test_srv_dot_target_means_not_offered() -> None:
    """RFC 2782: a target of "." means the service is not offered."""
    resolver, _ = make(
        srv("_sip._udp.p.example", 1, 0, 5060, ""), a("p.example", "192.0.2.9"), transports=("UDP",)
    )
    assert resolve(resolver, "sip:p.example") == [Destination("UDP", "192.0.2.9", 5060)]


def test_unknown_name_fails_clearly_and_is_remembered() -> None:
    """No record at all: ResolutionFailed naming the host; not asked again for 30 s."""
    clock = Clock()
    resolver, fake = make(clock=clock)
    with pytest.raises(ResolutionFailed, match="nowhere.example"):
        resolve(resolver, "sip:nowhere.example")
    asked = len(fake.asked)
    with pytest.raises(ResolutionFailed):
        resolve(resolver, "sip:nowhere.example")
    assert len(fake.asked) == asked
    clock.advance(31)
    with pytest.raises(ResolutionFailed):
        resolve(resolver, "sip:nowhere.example")
    assert len(fake.asked) > asked


def test_server_failure_is_a_resolution_failure() -> None:
    """A DNS server error fails the resolution (no exception escapes otherwise)."""
    resolver, fake = make()
    fake.broken = True
    with pytest.raises(ResolutionFailed, match="DNS failure"):
        resolve(resolver, "sip:p.example:5060")


def test_cached_until_smallest_ttl() -> None:
    """Answers are reused until the smallest TTL among them ends."""
    clock = Clock()
    resolver, fake = make(
        srv("_sip._udp.p.example", 1, 0, 5060, "a.p.example", ttl=60),
        a("a.p.example", "192.0.2.1", ttl=20),
        transports=("UDP",),
        clock=clock,
    )
    resolve(resolver, "sip:p.example")
    asked = len(fake.asked)
    clock.advance(19)
    resolve(resolver, "sip:p.example")
    assert len(fake.asked) == asked
    clock.advance(2)
    resolve(resolver, "sip:p.example")
    assert len(fake.asked) == 2 * asked


def test_asynchronous_and_one_query_for_concurrent_callers() -> None:
    """resolve() returns at once; callers arriving meanwhile share one resolution."""
    fake = FakeResolver(a("p.example", "192.0.2.1"), hold=True)
    resolver = ProxyResolver(Clock(), fake, ("UDP",))
    first, second = (resolver.resolve(parse_uri("sip:p.example:5060")) for _ in range(2))
    results: list[object] = []
    first.addCallback(results.append)
    second.addCallback(results.append)
    assert results == []
    while fake.held:
        fake.release()
    assert results == [[Destination("UDP", "192.0.2.1", 5060)]] * 2
    assert fake.asked == [("A", "p.example"), ("AAAA", "p.example")]
    assert resolver.cached(parse_uri("sip:p.example:5060")) == (
        Destination("UDP", "192.0.2.1", 5060),
    )


def test_order_srv_priority_then_weight() -> None:
    """RFC 2782: lower priority first; within one, heavier records first more often."""
    records = [
        dns.Record_SRV(2, 0, 1, "c"),
        dns.Record_SRV(1, 90, 2, "a"),
        dns.Record_SRV(1, 10, 3, "b"),
    ]
    firsts: dict[str, int] = {}
    rng = random.Random(7)
    for _ in range(1000):
        ordered = order_srv(records, rng)
        assert str(ordered[-1].target) == "c"
        firsts[str(ordered[0].target)] = firsts.get(str(ordered[0].target), 0) + 1
    assert firsts["a"] > 800 and firsts["b"] > 50
