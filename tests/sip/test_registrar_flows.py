"""
The registrar and the transport's flows (RFC 5626, RFC 3261 §18): a REGISTER over a TCP or
TLS connection tells the transport (IFlowKeeper) how long its bindings live, so that the
connection, the phone's way in, stays open that long; a de-REGISTER releases it. An
outbound REGISTER (reg-id, Supported: outbound) over a stream gets Require: outbound and
Flow-Timer (§4.4.1, §6).
"""

from __future__ import annotations

from zope.interface import implementer
from zope.interface.verify import verifyObject

from clicktodial.sip.address import Source
from clicktodial.sip.digest import compute_ha1, compute_response, parse_auth_params
from clicktodial.sip.interfaces import IFlowKeeper
from clicktodial.sip.message import Request, Response
from clicktodial.sip.parser import parse_message
from clicktodial.sip.registrar import Registrar, RegistrarSettings
from clicktodial.store.memory import MemoryStore
from clicktodial.testing.fakes import (
    InlineReactor,
    InlineThreadPool,
    cheap_password_hasher,
    success_result_of,
)

DOMAIN = "example.com"
NOW = 1_700_000_000.0
TCP_PHONE = Source("TCP", "192.0.2.10", 40001, "127.0.0.1", 5060, connection=7)
UDP_PHONE = Source("UDP", "192.0.2.10", 5062, "127.0.0.1", 5060)
ALICE = f"sip:alice@{DOMAIN}"
INSTANCE = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'


@implementer(IFlowKeeper)
class RecordingFlows:
    flow_timer = 95

    def __init__(self) -> None:
        self.kept: list[tuple[object, str, float]] = []

    def keep_flow(self, source: object, aor: str, until: float) -> None:
        self.kept.append((source, aor, until))


class Env:
    def __init__(self) -> None:
        self.clock = InlineReactor()
        self.clock.advance(NOW)
        self.store = MemoryStore(
            self.clock, realm=DOMAIN, hash_pool=InlineThreadPool(), hasher=cheap_password_hasher()
        )
        success_result_of(self.store.start())
        success_result_of(self.store.add_user("alice", sip_password="secret"))
        self.flows = RecordingFlows()
        self.cseq = 0
        self.registrar = Registrar(
            self.clock,
            self.store,
            self.store,
            DOMAIN,
            RegistrarSettings(digest_algorithms=("MD5",)),
            flows=self.flows,
        )

    def register(
        self, contact: str, source: Source, extra: tuple[str, ...] = (), expires: int = 600
    ) -> Response:
        self.cseq += 2
        request = register(contact, source, extra, expires, self.cseq - 1)
        challenge = success_result_of(self.registrar.handle_register(request, source))
        assert challenge.status == 401
        request = register(contact, source, extra, expires, self.cseq)
        header = challenge.headers.get("WWW-Authenticate") or ""
        params = parse_auth_params(header.split(" ", 1)[1])
        uri = str(request.uri)
        ha1 = compute_ha1("alice", params["realm"], "secret", "MD5")
        digest = compute_response(
            ha1, params["nonce"], "00000001", "c0ffee", "auth", "REGISTER", uri, "MD5"
        )
        request.headers.add(
            "Authorization",
            (
                f'Digest username="alice", realm="{params["realm"]}", nonce="{params["nonce"]}",'
                f' uri="{uri}", response="{digest}", algorithm=MD5, qop=auth, nc=00000001,'
                ' cnonce="c0ffee"'
            ),
        )
        return success_result_of(self.registrar.handle_register(request, source))


def register(
    contact: str, source: Source, extra: tuple[str, ...], expires: int, cseq: int
) -> Request:
    lines = [
        f"REGISTER sip:{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/{source.transport} {source.remote_host}:{source.remote_port}"
        f";branch=z9hG4bK-r{cseq};rport",
        "Max-Forwards: 70",
        f"From: <{ALICE}>;tag=f1",
        f"To: <{ALICE}>",
        "Call-ID: flows@192.0.2.10",
        f"CSeq: {cseq} REGISTER",
        f"Contact: {contact}",
        f"Expires: {expires}",
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, Request)
    return message


def test_recording_flows_provides_the_interface() -> None:
    verifyObject(IFlowKeeper, RecordingFlows())


def test_a_register_over_tcp_keeps_its_connection_until_the_binding_expires() -> None:
    env = Env()
    response = env.register("<sip:alice@192.0.2.10:5062;transport=tcp>", TCP_PHONE)
    assert response.status == 200
    assert env.flows.kept == [(TCP_PHONE, ALICE, NOW + 600)]


def test_a_de_register_over_tcp_releases_the_connection() -> None:
    env = Env()
    env.register("<sip:alice@192.0.2.10:5062;transport=tcp>", TCP_PHONE)
    env.register("<sip:alice@192.0.2.10:5062;transport=tcp>", TCP_PHONE, expires=0)
    assert env.flows.kept[-1] == (TCP_PHONE, ALICE, NOW)


def test_a_register_over_udp_keeps_nothing() -> None:
    env = Env()
    assert env.register("<sip:alice@192.0.2.10:5062>", UDP_PHONE).status == 200
    assert env.flows.kept == []


def outbound(source: Source, env: Env) -> Response:
    return env.register(
        f"<sip:alice@192.0.2.10:5062;transport=tcp>;+sip.instance={INSTANCE};reg-id=1",
        source,
        ("Supported: outbound, path",),
    )


def test_an_outbound_register_over_tcp_gets_require_outbound_and_flow_timer() -> None:
    """RFC 5626 §6: Require: outbound; §4.4.1: Flow-Timer, the keep-alive interval."""
    env = Env()
    response = outbound(TCP_PHONE, env)
    assert response.status == 200
    assert response.headers.get("Require") == "outbound"
    assert response.headers.get("Flow-Timer") == "95"


def test_an_outbound_register_over_udp_gets_no_flow_timer() -> None:
    """No STUN keep-alive is answered on UDP: outbound is not signalled there."""
    env = Env()
    response = outbound(UDP_PHONE, env)
    assert response.status == 200
    assert response.headers.get("Flow-Timer") is None
    assert response.headers.get("Require") is None


def test_a_plain_register_over_tcp_gets_no_flow_timer() -> None:
    env = Env()
    response = env.register("<sip:alice@192.0.2.10:5062;transport=tcp>", TCP_PHONE)
    assert response.headers.get("Flow-Timer") is None
