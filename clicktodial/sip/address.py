"""
Where SIP messages go and come from: plain values shared by the transport,
transaction and dialog layers.

Pure: no Twisted imports. Transport names are the Via tokens, upper case
(``"UDP"``, ``"TCP"``, ``"TLS"``; RFC 3261 §20.42).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import attrs

__all__ = [
    "DEFAULT_PORTS",
    "NO_RECONNECT",
    "Destination",
    "Source",
    "default_port",
    "format_host_port",
]

#: ``Destination.reconnect_port`` of an RFC 5626 flow: never re-opened once gone (§5.3).
NO_RECONNECT = 0

#: RFC 3261 §19.1.2 / §18.2.2: the port used when none is given.
DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "SCTP": 5060, "TLS": 5061, "WS": 80, "WSS": 443}


def default_port(transport: str) -> int:
    """The port for ``transport`` when a Via or URI names none (5060; 5061 for TLS)."""
    return DEFAULT_PORTS.get(transport.upper(), 5060)


def format_host_port(host: str, port: int | None) -> str:
    """``host:port`` as written in SIP, an IPv6 address in brackets (RFC 5118)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


class _TransportNames(dict[str, str]):
    """Transport names upper-cased and interned (a few names, kept in every dialog's and
    call leg's Destination), by spelling. The usual spellings are entries, so that a
    Destination or Source is built without a Python-level call for its converter; any
    other is computed on each look-up and never stored (the dict never grows)."""

    def __missing__(self, text: str) -> str:
        return sys.intern(text.upper())


_TRANSPORT_NAMES = _TransportNames(
    (spelling, sys.intern(name))
    for name in ("UDP", "TCP", "TLS", "SCTP", "WS", "WSS")
    for spelling in (name, name.lower())
)
if TYPE_CHECKING:  # (attrs' mypy plugin takes only named functions as converters)

    def _upper(text: str) -> str: ...

else:
    _upper = _TRANSPORT_NAMES.__getitem__


@attrs.frozen
class Destination:
    """
    Where to send a message: a transport, a host (an IP address, or a host
    name the transport resolves) and a port.

    :ivar connection: for a connection-oriented transport, the key of an
        open connection to prefer (a :class:`Source`'s ``connection``);
        ``None`` to use any connection to ``host``/``port`` or open one.
    :ivar reconnect_port: for a stream flow (``port`` is the ephemeral source
        port of the phone's connection): when no connection to ``host``/``port``
        is open, the port to open one to instead (the phone's Contact port,
        RFC 3261 §18.1.1); :data:`NO_RECONNECT` for an RFC 5626 flow, which is
        never re-opened (§5.3); ``None``: open one to ``host``/``port``.
    """

    transport: str = attrs.field(converter=_upper)
    host: str
    port: int
    connection: int | None = None
    reconnect_port: int | None = None

    def __str__(self) -> str:
        return f"{self.transport} {format_host_port(self.host, self.port)}"


@attrs.frozen
class Source:
    """
    Where a received message came from and which of our sockets it arrived on.

    :ivar transport: ``"UDP"`` or ``"TCP"``.
    :ivar remote_host: the peer's IP address (IPv4-mapped IPv6 addresses are
        given as IPv4).
    :ivar connection: for TCP, the key of the connection it arrived on, so
        that responses can go back over it (RFC 3261 §18.2.2); ``None`` for UDP.
    """

    transport: str = attrs.field(converter=_upper)
    remote_host: str
    remote_port: int
    local_host: str
    local_port: int
    connection: int | None = None

    @property
    def peer(self) -> str:
        """``host:port`` of the peer, for logs."""
        return format_host_port(self.remote_host, self.remote_port)

    def reply_destination(self) -> Destination:
        """The peer as a :class:`Destination` on the same transport (and connection)."""
        return Destination(self.transport, self.remote_host, self.remote_port, self.connection)

    def __str__(self) -> str:
        return f"{self.transport} {self.peer}"
