"""
What the web interface believes about where a request came from: the client's address, and
whether it came over TLS, even through a reverse proxy.

A reverse proxy in front of the daemon (nginx, HAProxy) tells the client's address in
``X-Forwarded-For`` and the scheme it was reached by in ``X-Forwarded-Proto``. Anyone can
send those headers, so they are believed only from the addresses of ``[web]
trusted_proxies``; from anyone else they are ignored and the TCP peer is the client.

From that follow the ``Secure`` flag of cookies (``[web] secure_cookies``) and the
``Strict-Transport-Security`` header (RFC 6797, ``[web] hsts_max_age``).
"""

from __future__ import annotations

import ipaddress

import attrs
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web.iweb import IRequest

from clicktodial.config import WebConfig
from clicktodial.netaddr import NetworkSet

__all__ = ["RequestOrigin", "peer_host"]

#: Where a request from a unix socket comes from (no address: a local reverse proxy).
UNIX_PEER = "unix"


def peer_host(request: IRequest) -> str:
    """The IP address of the TCP peer (``unix`` for a unix socket)."""
    address = request.getClientAddress()
    if isinstance(address, (IPv4Address, IPv6Address)):
        return address.host
    return UNIX_PEER


def _forwarded_values(request: IRequest, name: bytes) -> list[str]:
    """Every comma-separated value of every ``name`` header, in order, stripped."""
    values: list[str] = []
    for raw in request.requestHeaders.getRawHeaders(name, []):
        values.extend(v.strip() for v in raw.decode("latin-1").split(","))
    return values


def _ip_text(text: str) -> str | None:
    """``text`` as an IP address in its normal form, or None (``unknown``, a name, ...)."""
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return None


@attrs.frozen
class RequestOrigin:
    """
    ``[web] trusted_proxies``, ``secure_cookies`` and ``hsts_max_age`` applied to requests.

    :ivar trusted_proxies: the proxies whose ``X-Forwarded-*`` headers are believed. A peer
        on a unix socket has no address and is never one (a proxy there: listen on
        loopback TCP instead, or use ``secure_cookies = always``).
    """

    trusted_proxies: NetworkSet = NetworkSet()
    secure_cookies: str = "auto"
    hsts_max_age: int = 31536000

    @classmethod
    def from_config(cls, web: WebConfig) -> RequestOrigin:
        return cls(web.trusted_proxies, web.secure_cookies, web.hsts_max_age)

    def from_trusted_proxy(self, request: IRequest) -> bool:
        """Whether the TCP peer is one of ``trusted_proxies``."""
        return peer_host(request) in self.trusted_proxies

    def client_address(self, request: IRequest) -> str:
        """
        The client's IP address: the TCP peer, or, when the peer is a trusted proxy, the
        rightmost ``X-Forwarded-For`` entry that is not itself a trusted proxy (each proxy
        appends the address it was reached from: entries left of an untrusted one are the
        client's own say). A value that is not an IP address ends the walk at the proxy
        that wrote it.
        """
        peer = peer_host(request)
        if peer not in self.trusted_proxies:
            return peer
        client = peer
        for entry in reversed(_forwarded_values(request, b"x-forwarded-for")):
            address = _ip_text(entry)
            if address is None:
                break
            client = address
            if address not in self.trusted_proxies:
                break
        return client

    def is_secure(self, request: IRequest) -> bool:
        """
        Whether the client reached us over TLS: the connection is TLS, or a trusted proxy
        says ``X-Forwarded-Proto: https`` (its own value: the last one, since a proxy that
        appends puts its own last).
        """
        if request.isSecure():
            return True
        if not self.from_trusted_proxy(request):
            return False
        values = _forwarded_values(request, b"x-forwarded-proto")
        return bool(values) and values[-1].lower() == "https"

    def cookie_secure(self, request: IRequest) -> bool:
        """Whether cookies set in answer to ``request`` get ``Secure``."""
        return self.secure_cookies == "always" or self.is_secure(request)

    def transport_security(self, request: IRequest) -> None:
        """
        Add ``Strict-Transport-Security`` to the answer of a request that came over TLS.
        RFC 6797 §7.2: never over plain HTTP (a browser ignores it there anyway).
        """
        if self.hsts_max_age and self.is_secure(request):
            request.setHeader(
                b"strict-transport-security", f"max-age={self.hsts_max_age}".encode("ascii")
            )
