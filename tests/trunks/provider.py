"""
A fake provider for the trunk unit tests: the daemon's side is a real
:class:`TransactionLayer` over a :class:`RecordingTransport`; the provider answers what was sent,
checking digest answers with our own server-side :class:`DigestAuthenticator`.
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock

from clicktodial.sip.digest import DigestAuthenticator, Verdict, compute_ha1, parse_authorization
from clicktodial.sip.message import Request, Response, make_response, new_tag
from clicktodial.sip.transactions import TransactionLayer
from clicktodial.testing.sipfakes import RecordingTransport, RecordingUser
from clicktodial.trunks.config import TrunkConfig
from clicktodial.trunks.resolver import ProxyResolver
from clicktodial.trunks.trunk import Trunk

from .fakes import FakeResolver, a

REALM = "provider.example"
USER = "4930111"
PASSWORD = "s3cret-pw"


def trunk_config(**changes: object) -> TrunkConfig:
    from clicktodial.config import build_section

    values = {
        "proxy": "sip:provider.example:5060",
        "username": USER,
        "password": PASSWORD,
        "register": "yes",
        "register_expires": "600",
        "keepalive_interval": "0",
    }
    values.update({k: str(v) for k, v in changes.items()})
    config: TrunkConfig = build_section("test.ini", "trunk:provider", TrunkConfig, values)
    return config


class Harness:
    """A trunk on a real transaction layer, a fake DNS, and a provider to answer."""

    def __init__(
        self, config: TrunkConfig | None = None, *records: object, name: str = "provider"
    ) -> None:
        self.clock = Clock()
        self.transport = RecordingTransport(self.clock, "192.0.2.10", 5060)
        self.layer = TransactionLayer(self.clock, self.transport, RecordingUser())
        self.dns = FakeResolver(*(records or (a("provider.example", "198.51.100.1"),)))  # type: ignore[arg-type]
        self.resolver = ProxyResolver(self.clock, self.dns, ("UDP", "TCP"))
        self.config = config if config is not None else trunk_config()
        self.trunk = Trunk(
            self.clock, name, self.config, self.resolver, self.layer, rng=random.Random(3)
        )
        self.server = DigestAuthenticator(self.clock, REALM, b"k" * 32)
        self.answered = 0

    def requests(self, method: str) -> list[Request]:
        """The requests of ``method`` sent, retransmissions left out."""
        seen: dict[tuple[str, int], Request] = {}
        for sent in self.transport.requests(method):
            if isinstance(sent.message, Request):
                key = (sent.message.call_id, sent.message.cseq.seq)
                seen.setdefault(key, sent.message)
        return list(seen.values())

    def last(self, method: str) -> Request:
        return self.requests(method)[-1]

    def respond(
        self, request: Request, status: int, headers: list[tuple[str, str]] = ()
    ) -> Response:  # type: ignore[assignment]
        response = make_response(request, status, to_tag=new_tag())
        for name, value in headers:
            response.headers.add(name, value)
        self.layer.response_received(response, None)
        return response

    def verdict(self, request: Request, password: str = PASSWORD) -> Verdict:
        credentials = parse_authorization(request.headers.get("Authorization") or "")
        issued_at = self.server.check_nonce(credentials)
        assert issued_at is not None
        ha1 = compute_ha1(credentials.username, REALM, password, credentials.algorithm)
        return self.server.verify(credentials, request.method, ha1, issued_at)

    def challenge(self, request: Request, stale: bool = False) -> None:
        self.respond(
            request, 401, [("WWW-Authenticate", c) for c in self.server.challenges(stale=stale)]
        )

    def accept(self, request: Request, expires: int | None = None) -> None:
        """A 200 listing our Contact with the expiry asked for (or ``expires``)."""
        contact = request.headers.get("Contact") or ""
        granted = expires if expires is not None else int(request.headers.get("Expires") or 0)
        self.respond(request, 200, [("Contact", f"{contact};expires={granted}")])

    def serve_register(self) -> None:
        """Answer the last REGISTER as a provider would: challenge, then accept."""
        request = self.last("REGISTER")
        if "Authorization" not in request.headers:
            self.challenge(request)
        else:
            assert self.verdict(request) is Verdict.OK
            self.accept(request)
