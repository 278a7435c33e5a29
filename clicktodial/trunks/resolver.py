"""
RFC 3263 §4: where to send requests for a trunk's proxy URI, as an ordered list of
:class:`~clicktodial.sip.address.Destination` (transport, IP address, port).

- an IP address: that address; the URI's transport (default UDP, TLS for ``sips:``), the
  URI's port (default 5060, 5061 for TLS) (§4.1, §4.2);
- a name with a port: no SRV; A/AAAA of the name (§4.2);
- a name with ``;transport=``: the SRV records of that transport, else A/AAAA;
- a name alone: NAPTR (``SIP+D2U``, ``SIP+D2T``, ``SIPS+D2T`` of the transports we run, by
  order and preference), then their SRV; without NAPTR, SRV of each transport we run;
  without SRV, A/AAAA with UDP (TLS for ``sips:``).

SRV targets are ordered by priority, and by weight at random within one priority
(RFC 2782); the caller tries them in order and moves to the next on a failure (§4.3).

Lookups go through a :class:`twisted.names` ``IResolver`` (asynchronous: the reactor never
waits on DNS); answers are cached until their smallest TTL ends, on the injected clock.
Tests pass a fake resolver: nothing here needs real DNS.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.logger import Logger
from twisted.names import dns, error
from twisted.python.failure import Failure

from clicktodial.netaddr import ip_of
from clicktodial.sip.address import Destination
from clicktodial.sip.uri import URI

__all__ = ["ProxyResolver", "ResolutionFailed", "order_srv", "system_resolver"]

log = Logger(namespace="clicktodial.trunks.resolver")

#: NAPTR services (RFC 3263 §4.1) and SRV prefixes (§4.2), by our transport name.
_NAPTR_SERVICES = {"SIP+D2U": "UDP", "SIP+D2T": "TCP", "SIPS+D2T": "TLS"}
_SRV_PREFIX = {"UDP": "_sip._udp.", "TCP": "_sip._tcp.", "TLS": "_sips._tcp."}
_DEFAULT_PORT = {"UDP": 5060, "TCP": 5060, "TLS": 5061}
#: How long a failed resolution is remembered (seconds): no DNS storm on a dead name.
NEGATIVE_TTL = 30.0
#: A floor on cached TTLs, so a 0-TTL answer does not mean a query per request.
MIN_TTL = 1.0


class ResolutionFailed(Exception):
    """The proxy's name resolves to no address (the message says why)."""


@attrs.frozen
class _Resolved:
    destinations: tuple[Destination, ...]
    expires_at: float
    error: str | None = None


def order_srv(records: Iterable[dns.Record_SRV], rng: random.Random) -> list[dns.Record_SRV]:
    """RFC 2782: by priority; within one priority, by weight at random (a weight 0 last)."""
    by_priority: dict[int, list[dns.Record_SRV]] = {}
    for record in records:
        by_priority.setdefault(record.priority, []).append(record)
    ordered: list[dns.Record_SRV] = []
    for priority in sorted(by_priority):
        pool = sorted(by_priority[priority], key=lambda r: r.weight)  # weight 0 first
        while pool:
            total = sum(r.weight for r in pool)
            pick = rng.uniform(0, total) if total else 0
            running, chosen = 0, len(pool) - 1
            for index, record in enumerate(pool):
                running += record.weight
                if running >= pick:
                    chosen = index
                    break
            ordered.append(pool.pop(chosen))
    return ordered


def _name(value: Any) -> str:
    return str(value).rstrip(".")


class ProxyResolver:
    """
    Resolves proxy URIs (RFC 3263), with a cache per URI until the smallest TTL met.

    :param transports: the transports the daemon runs (``UDP``, ``TCP``, ``TLS``), in our
        order of preference when there is no NAPTR.
    """

    def __init__(
        self,
        clock: IReactorTime,
        resolver: IResolver,
        transports: Sequence[str] = ("UDP", "TCP"),
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        self.resolver = resolver
        self.transports = tuple(t.upper() for t in transports)
        self.rng = rng if rng is not None else random.Random()
        self._cache: dict[str, _Resolved] = {}
        self._pending: dict[str, list[Deferred[list[Destination]]]] = {}
        #: DNS queries sent (a test checks the cache with it)
        self.queries = 0

    def cached(self, uri: URI) -> tuple[Destination, ...]:
        """The last resolution of ``uri``, even expired (the inbound guard's addresses)."""
        entry = self._cache.get(str(uri))
        return entry.destinations if entry is not None else ()

    def resolve(self, uri: URI) -> Deferred[list[Destination]]:
        """
        The destinations for ``uri``, in the order to try them.

        :return: fires with a non-empty list, or fails with :class:`ResolutionFailed`.
        """
        key = str(uri)
        now = self.clock.seconds()
        entry = self._cache.get(key)
        if entry is not None and entry.expires_at > now:
            if entry.error is not None:
                return _failed(entry.error)
            return succeed(list(entry.destinations))
        waiting: Deferred[list[Destination]] = Deferred()
        if key in self._pending:  # one resolution at a time per URI
            self._pending[key].append(waiting)
            return waiting
        self._pending[key] = [waiting]
        done = Deferred.fromCoroutine(self._resolve(uri))
        done.addBoth(self._finish, key)
        return waiting

    def _finish(self, result: tuple[list[Destination], float] | Failure, key: str) -> None:
        now = self.clock.seconds()
        waiting = self._pending.pop(key, [])
        if isinstance(result, Failure):
            reason = (
                result.getErrorMessage()
                if result.check(ResolutionFailed)
                else f"DNS failure: {result.getErrorMessage()}"
            )
            if not result.check(ResolutionFailed):
                log.failure("resolving {uri} failed", result, uri=key)
            self._cache[key] = _Resolved((), now + NEGATIVE_TTL, reason)
            for d in waiting:
                d.errback(ResolutionFailed(reason))
            return
        destinations, ttl = result
        self._cache[key] = _Resolved(tuple(destinations), now + max(ttl, MIN_TTL))
        for d in waiting:
            d.callback(list(destinations))

    async def _resolve(self, uri: URI) -> tuple[list[Destination], float]:
        host = uri.host
        param = uri.param("transport")
        secure = uri.scheme == "sips"
        transport = param.upper() if param else None
        if secure:
            transport = "TLS"
        address = ip_of(host)
        if address is not None:
            chosen = transport or "UDP"
            return [
                Destination(chosen, address.compressed, uri.port or _DEFAULT_PORT[chosen])
            ], float("inf")
        ttl = float("inf")
        if uri.port is not None:
            chosen = transport or "UDP"
            addresses, ttl = await self._addresses(host)
            return self._at(chosen, addresses, uri.port, host), ttl
        # (transport, SRV name) to try, in order
        services: list[tuple[str, str]] = []
        if transport is not None:
            services = [(transport, _SRV_PREFIX[transport] + host)]
        else:
            naptr, ttl = await self._naptr(host, secure)
            services = naptr or [
                (t, _SRV_PREFIX[t] + host) for t in self.transports if not secure or t == "TLS"
            ]
        destinations: list[Destination] = []
        for chosen, name in services:
            if chosen not in self.transports:
                continue
            records, srv_ttl = await self._srv(name)
            ttl = min(ttl, srv_ttl)
            for record in order_srv(records, self.rng):
                target = _name(record.target)
                if target == "":  # RFC 2782: "." means "not offered here"
                    continue
                addresses, a_ttl = await self._addresses(target, required=False)
                ttl = min(ttl, a_ttl)
                destinations += [Destination(chosen, a, record.port) for a in addresses]
        if destinations:
            return destinations, ttl
        # §4.2: no SRV records: A/AAAA of the name, UDP (TLS for sips:) unless a transport
        # was given, on its default port.
        chosen = transport or "UDP"
        addresses, a_ttl = await self._addresses(host)
        return self._at(chosen, addresses, _DEFAULT_PORT[chosen], host), min(ttl, a_ttl)

    def _at(self, transport: str, addresses: list[str], port: int, host: str) -> list[Destination]:
        if transport not in self.transports:
            raise ResolutionFailed(f"{host}: transport {transport} is not enabled here")
        return [Destination(transport, a, port) for a in addresses]

    async def _naptr(self, host: str, secure: bool) -> tuple[list[tuple[str, str]], float]:
        answers = await self._query(self.resolver.lookupNamingAuthorityPointer, host)
        usable: list[tuple[int, int, str, str]] = []
        ttl = float("inf")
        for rr in answers:
            record = rr.payload
            if not isinstance(record, dns.Record_NAPTR):
                continue
            service = record.service.string.decode("ascii", "replace").upper()
            transport = _NAPTR_SERVICES.get(service)
            if (
                transport is None
                or record.flags.string.lower() != b"s"
                or (secure and transport != "TLS")
                or transport not in self.transports
            ):
                continue
            usable.append((record.order, record.preference, transport, _name(record.replacement)))
            ttl = min(ttl, rr.ttl)
        usable.sort(key=lambda u: (u[0], u[1]))
        return [(transport, name) for _, _, transport, name in usable], ttl

    async def _srv(self, name: str) -> tuple[list[dns.Record_SRV], float]:
        answers = await self._query(self.resolver.lookupService, name)
        records: list[dns.Record_SRV] = []
        ttl = float("inf")
        for rr in answers:
            if isinstance(rr.payload, dns.Record_SRV):
                records.append(rr.payload)
                ttl = min(ttl, rr.ttl)
        return records, ttl

    async def _addresses(self, host: str, required: bool = True) -> tuple[list[str], float]:
        found: list[str] = []
        ttl = float("inf")
        failures: list[Failure] = []
        for lookup in (self.resolver.lookupAddress, self.resolver.lookupIPV6Address):
            try:
                answers = await self._query(lookup, host)
            except Exception:
                # One family failing (a SERVFAIL for AAAA) is no reason to drop the other.
                failures.append(Failure())
                continue
            for rr in answers:
                payload = rr.payload
                if isinstance(payload, dns.Record_A):
                    found.append(payload.dottedQuad())
                elif isinstance(payload, dns.Record_AAAA):
                    found.append(socket.inet_ntop(socket.AF_INET6, payload.address))
                else:
                    continue
                ttl = min(ttl, rr.ttl)
        if not found and len(failures) == 2:
            failures[0].raiseException()
        if not found and required:
            raise ResolutionFailed(f"{host}: no address (A/AAAA) found")
        return found, ttl

    async def _query(self, lookup: Any, name: str) -> list[dns.RRHeader]:
        self.queries += 1
        try:
            answers, _, _ = await lookup(name)
        except error.DNSNameError:
            return []  # NXDOMAIN: no such record, go on to the next step
        return list(answers)


def _failed(reason: str) -> Deferred[list[Destination]]:
    d: Deferred[list[Destination]] = Deferred()
    d.errback(ResolutionFailed(reason))
    return d


def system_resolver(reactor: IReactorTime) -> IResolver:
    """
    The machine's resolver on ``reactor``: ``/etc/hosts``, then the servers of
    ``/etc/resolv.conf`` (twisted.names: asynchronous, never blocking the reactor).
    """
    from twisted.names import client, hosts, resolve

    chain: IResolver = resolve.ResolverChain(
        [
            hosts.Resolver(file=b"/etc/hosts"),
            client.Resolver(resolv="/etc/resolv.conf", reactor=reactor),
        ]
    )
    return chain
