"""
Per-source caps on open stream connections (SIP over TCP and TLS, the web): one address
cannot hold more than its share of the daemon's sockets and file descriptors.

A :class:`ConnectionLimit` counts the open connections of one listener per source address;
:meth:`ConnectionLimit.wrap` puts it in front of the listener's factory (a
:class:`twisted.protocols.policies.WrappingFactory`). A connection beyond the cap is
closed at once, before anything is read from it (``buildProtocol`` returns ``None``),
counted in :attr:`ConnectionLimit.refused` (``clicktodial_connections_refused_total``), and
logged at most once a minute per source, so a flood of refusals is not a flood of log lines.

Twisted has :class:`twisted.protocols.policies.LimitConnectionsByPeer`, but it indexes the
address objects as tuples (it fails on the first connection), exempts nobody and counts
nothing: this is its working, smaller cousin.

Addresses of ``exempt`` (the configured trusted proxies: a Kamailio front carries every
phone's connections, a web reverse proxy every browser's) are never capped. Connections
without an IP address (a unix socket) are not counted.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory, ServerFactory
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from clicktodial.netaddr import NetworkSet, ip_of

__all__ = ["LOG_INTERVAL", "ConnectionLimit", "ConnectionLimitingFactory"]

log = Logger(namespace="clicktodial.connlimit")

#: Seconds between two log lines about refusals from the same source.
LOG_INTERVAL = 60.0

_NOBODY = NetworkSet()

#: Sources remembered for :data:`LOG_INTERVAL` (beyond this, the oldest are forgotten).
_MAX_LOGGED = 4096


class ConnectionLimit:
    """
    Counts one listener's open connections per source address.

    :ivar listener: the listener's name in logs and metrics (``sip-tcp``, ``sip-tls``,
        ``web``).
    :ivar max_per_source: the most connections one address may hold open; 0: no limit.
    :ivar exempt: addresses never limited.
    :ivar refused: connections refused since start (a counter).
    :ivar open: address -> connections it holds open now.
    """

    def __init__(
        self,
        clock: IReactorTime,
        listener: str,
        max_per_source: int,
        exempt: NetworkSet = _NOBODY,
    ) -> None:
        self.clock = clock
        self.listener = listener
        self.max_per_source = max_per_source
        self.exempt = exempt
        self.refused = 0
        self.open: dict[str, int] = {}
        #: address -> when its last refusal was logged
        self._logged: dict[str, float] = {}

    def admit(self, host: str) -> bool:
        """
        Count a new connection from ``host`` (an IP address literal), or refuse it (False)
        when the address already holds ``max_per_source``.
        """
        if not self.max_per_source or host in self.exempt:
            return True
        count = self.open.get(host, 0)
        if count >= self.max_per_source:
            self.refused += 1
            self._log_refusal(host, count)
            return False
        self.open[host] = count + 1
        return True

    def release(self, host: str) -> None:
        """A connection :meth:`admit` counted for ``host`` is gone."""
        count = self.open.get(host, 0)
        if count <= 1:
            self.open.pop(host, None)
        else:
            self.open[host] = count - 1

    def wrap(self, factory: Factory[Any]) -> ConnectionLimitingFactory:
        """``factory``, behind this limit."""
        return ConnectionLimitingFactory(factory, self)

    def _log_refusal(self, host: str, count: int) -> None:
        now = self.clock.seconds()
        last = self._logged.get(host)
        if last is not None and now - last < LOG_INTERVAL:
            return
        if len(self._logged) >= _MAX_LOGGED:
            self._logged = {h: t for h, t in self._logged.items() if now - t < LOG_INTERVAL}
            if len(self._logged) >= _MAX_LOGGED:
                self._logged.clear()
        self._logged[host] = now
        log.warn(
            "refused {listener} connections from {peer}: it holds {count} open (the most"
            " one address may); not logged again for {interval:.0f} s",
            listener=self.listener,
            peer=host,
            count=count,
            interval=LOG_INTERVAL,
        )


class _CountedProtocol(ProtocolWrapper):
    """A wrapped connection, and the address it was counted under (None: not counted)."""

    counted_host: str | None = None


class ConnectionLimitingFactory(WrappingFactory[_CountedProtocol], ServerFactory):
    """``wrappedFactory`` behind a :class:`ConnectionLimit` (a listener's factory)."""

    protocol = _CountedProtocol
    #: the wrapped factory's start and stop are logged already
    noisy = False

    def __init__(self, wrappedFactory: Factory[Any], limit: ConnectionLimit) -> None:
        super().__init__(wrappedFactory)
        self.limit = limit

    def buildProtocol(self, addr: IAddress | None) -> _CountedProtocol | None:  # type: ignore[override]
        host = _host_of(addr)
        if host is not None and not self.limit.admit(host):
            return None  # Twisted closes the accepted socket without reading it
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:  # the wrapped factory refused it (a banned source)
            if host is not None:
                self.limit.release(host)
            return None
        protocol = _CountedProtocol(self, inner)
        protocol.counted_host = host
        return protocol

    def unregisterProtocol(self, p: _CountedProtocol) -> None:
        super().unregisterProtocol(p)
        host, p.counted_host = p.counted_host, None
        if host is not None:
            self.limit.release(host)


def _host_of(addr: IAddress | None) -> str | None:
    """The source IP address a limit counts (IPv4-mapped IPv6 as IPv4), or None."""
    if not isinstance(addr, (IPv4Address, IPv6Address)):
        return None
    address = ip_of(addr.host)
    return None if address is None else str(address)
