"""
Sets of IP networks named in the configuration (``127.0.0.1, 192.0.2.0/24, ::1``):
who is trusted for what at the network edge (docs/security.md).

Pure: no Twisted imports.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

import attrs

__all__ = ["NetworkSet", "ip_of", "parse_network"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> _Network:
    """
    One address (``192.0.2.7``, ``::1``, ``[::1]``) or network with a prefix length
    (``192.0.2.0/24``); host bits set under the prefix are an error, as they usually
    mean a typo. Raises ``ValueError`` with a message fit for a configuration error.
    """
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1:].replace("]", "", 1)
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise ValueError(
            f"invalid address or network {text!r} (expected e.g. 192.0.2.7,"
            f" 192.0.2.0/24 or ::1): {e}"
        ) from None


@functools.lru_cache(maxsize=4096)
def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """
    The address a host literal names (``192.0.2.7``, ``::1``, ``[::1]``; an IPv4-mapped
    IPv6 address as its IPv4 address), or ``None`` for a name. Memoized (a pure function;
    ``ipaddress`` objects are immutable): the SIP transport calls it for the Via and the
    source of every request and for every destination.
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@attrs.frozen
class NetworkSet:
    """
    A set of IP networks: ``host in networks`` tells whether an IP address (text, as a
    :class:`~clicktodial.sip.address.Source` gives it; IPv6 with or without brackets,
    IPv4-mapped IPv6 as IPv4) lies in one of them. A host name is never in the set.
    """

    networks: tuple[_Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> NetworkSet:
        """A comma-separated list (see :func:`parse_network`), or ``-`` for none."""
        text = text.strip()
        if text == "-":
            return cls()
        return cls(tuple(parse_network(item) for item in text.split(",")))

    @classmethod
    def of(cls, items: Iterable[str]) -> NetworkSet:
        return cls(tuple(parse_network(item) for item in items))

    def __contains__(self, host: object) -> bool:
        if not self.networks or not isinstance(host, str):
            return False
        address = ip_of(host)
        if address is None:
            return False
        return any(address in network for network in self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __str__(self) -> str:
        return ", ".join(str(n) for n in self.networks) or "-"
