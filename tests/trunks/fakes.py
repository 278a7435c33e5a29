"""Fakes for the trunk tests: a DNS resolver answering from a table."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.names import dns, error

Answer = tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]


def a(name: str, address: str, ttl: int = 300) -> tuple[str, str, dns.RRHeader]:
    return ("A", name, dns.RRHeader(name, dns.A, ttl=ttl, payload=dns.Record_A(address)))


def aaaa(name: str, address: str, ttl: int = 300) -> tuple[str, str, dns.RRHeader]:
    return ("AAAA", name, dns.RRHeader(name, dns.AAAA, ttl=ttl, payload=dns.Record_AAAA(address)))


def srv(
    name: str, priority: int, weight: int, port: int, target: str, ttl: int = 300
) -> tuple[str, str, dns.RRHeader]:
    return (
        "SRV",
        name,
        dns.RRHeader(
            name, dns.SRV, ttl=ttl, payload=dns.Record_SRV(priority, weight, port, target)
        ),
    )


def naptr(
    name: str,
    order: int,
    preference: int,
    service: str,
    replacement: str,
    flags: str = "s",
    ttl: int = 300,
) -> tuple[str, str, dns.RRHeader]:
    return (
        "NAPTR",
        name,
        dns.RRHeader(
            name,
            dns.NAPTR,
            ttl=ttl,
            payload=dns.Record_NAPTR(
                order, preference, flags.encode(), service.encode(), b"", replacement
            ),
        ),
    )


class FakeResolver:
    """
    Answers lookups from ``records`` (``(kind, name, RRHeader)``); a name with no record of
    the kind asked is NXDOMAIN. ``hold`` makes every answer wait until ``release()``.
    ``asked`` lists the queries, ``(kind, name)``.
    """

    def __init__(self, *records: tuple[str, str, dns.RRHeader], hold: bool = False) -> None:
        self.records = list(records)
        self.asked: list[tuple[str, str]] = []
        self.hold = hold
        self.held: list[tuple[Deferred[Answer], Answer | None]] = []
        self.broken = False

    def _lookup(self, kind: str, name: str) -> Deferred[Answer]:
        self.asked.append((kind, name))
        answers = [rr for k, n, rr in self.records if k == kind and n == name]
        result: Answer | None = (answers, [], []) if answers else None
        if self.hold:
            d: Deferred[Answer] = Deferred()
            self.held.append((d, result))
            return d
        if self.broken:
            return fail(error.DNSServerError("SERVFAIL"))
        if result is None:
            return fail(error.DNSNameError(name))
        return succeed(result)

    def release(self) -> None:
        held, self.held = self.held, []
        for d, result in held:
            if result is None:
                d.errback(error.DNSNameError("nx"))
            else:
                d.callback(result)

    def lookupNamingAuthorityPointer(self, name: str, timeout: Any = None) -> Deferred[Answer]:
        return self._lookup("NAPTR", name)

    def lookupService(self, name: str, timeout: Any = None) -> Deferred[Answer]:
        return self._lookup("SRV", name)

    def lookupAddress(self, name: str, timeout: Any = None) -> Deferred[Answer]:
        return self._lookup("A", name)

    def lookupIPV6Address(self, name: str, timeout: Any = None) -> Deferred[Answer]:
        return self._lookup("AAAA", name)
