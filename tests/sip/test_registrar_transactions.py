"""
The registrar behind the real transaction layer: REGISTER datagrams in,
responses out through a recording transport, on a fake clock. The UA core
that will route REGISTERs is stood in for by a ten-line transaction user.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from zope.interface import implementer

from clicktodial.sip.address import Source
from clicktodial.sip.digest import compute_ha1, compute_response, parse_auth_params
from clicktodial.sip.interfaces import ITransactionUser
from clicktodial.sip.message import Request, Response
from clicktodial.sip.parser import parse_message
from clicktodial.sip.registrar import Registrar, RegistrarSettings
from clicktodial.sip.transactions import ServerTransaction, Timers, TransactionLayer
from clicktodial.store.memory import MemoryStore
from clicktodial.testing.fakes import (
    InlineReactor,
    InlineThreadPool,
    cheap_password_hasher,
    success_result_of,
)
from clicktodial.testing.sipfakes import RecordingTransport
from clicktodial.throttle import AuthThrottle, ThrottleSettings

DATA = Path(__file__).parent.parent / "data"
PHONE = Source("UDP", "192.0.2.125", 5060, "127.0.0.1", 5060)


@implementer(ITransactionUser)
class RegistrarUser:
    """Hands each REGISTER server transaction to the registrar."""

    def __init__(self, registrar: Registrar) -> None:
        self.registrar = registrar

    def request_received(self, server_tx: ServerTransaction, request: Request) -> None:
        d = self.registrar.handle_register(request, cast(Source, server_tx.source))
        d.addCallback(server_tx.respond)

    def cancel_received(self, server_tx: ServerTransaction) -> None:
        raise AssertionError("no CANCEL in these tests")

    def ack_received(self, request: Request, source: object) -> None:
        raise AssertionError("no ACK in these tests")

    def stray_response(self, response: Response) -> None:
        raise AssertionError("no responses in these tests")


class Setup:
    def __init__(self, throttle: ThrottleSettings | None = None) -> None:
        self.clock = InlineReactor()
        self.clock.advance(1_700_000_000)
        self.store = MemoryStore(
            self.clock,
            realm="example.com",
            hash_pool=InlineThreadPool(),
            hasher=cheap_password_hasher(),
        )
        success_result_of(self.store.start())
        success_result_of(self.store.add_user("j.user", sip_password="pw"))
        self.registrar = Registrar(
            self.clock,
            self.store,
            self.store,
            "example.com",
            RegistrarSettings(),
            AuthThrottle(self.clock, throttle),
        )
        self.transport = RecordingTransport(self.clock)
        self.layer = TransactionLayer(
            self.clock, self.transport, RegistrarUser(self.registrar), Timers()
        )

    def receive(self, datagram: bytes) -> None:
        message = parse_message(datagram)
        assert isinstance(message, Request)
        self.layer.request_received(message, PHONE)

    def statuses(self) -> list[int | None]:
        return [sent.status for sent in self.transport.responses()]


def answer(
    datagram: bytes, challenge: Response, password: str = "pw", branch: str = "z9hG4bKsecond"
) -> bytes:
    """The same REGISTER with credentials, a new branch and the next CSeq."""
    params = parse_auth_params(
        challenge.headers.get_fields("WWW-Authenticate")[0][len("Digest ") :]
    )
    ha1 = compute_ha1("j.user", params["realm"], password, params["algorithm"])
    digest = compute_response(
        ha1,
        params["nonce"],
        "00000001",
        "c",
        "auth",
        "REGISTER",
        "sip:example.com",
        params["algorithm"],
    )
    authorization = (
        f'Authorization: Digest username="j.user", realm="{params["realm"]}", '
        f'nonce="{params["nonce"]}", uri="sip:example.com", response="{digest}", '
        f'algorithm={params["algorithm"]}, cnonce="c", nc=00000001, qop=auth\r\n'
    )
    return (
        datagram.replace(b"CSeq: 8 REGISTER", b"CSeq: 9 REGISTER")
        .replace(b"z9hG4bKkdjuw23492", branch.encode())
        .replace(b"Content-Length: 0\r\n", authorization.encode() + b"Content-Length: 0\r\n", 1)
    )


def test_dblreq_registers_through_the_transaction_layer() -> None:
    """RFC 4475 dblreq as a UDP datagram: one REGISTER transaction, a 401,
    then 200 once authenticated; the trailing INVITE bytes are ignored."""
    setup = Setup()
    datagram = (DATA / "rfc4475" / "dblreq.dat").read_bytes()
    setup.receive(datagram)
    assert setup.statuses() == [401]
    challenge = cast(Response, setup.transport.responses()[0].message)
    setup.receive(answer(datagram, challenge))
    assert setup.statuses() == [401, 200]
    bindings = success_result_of(
        setup.store.get_bindings("sip:j.user@example.com", setup.clock.seconds())
    )
    assert [b.contact for b in bindings] == ["sip:j.user@host.example.com"]
    assert not setup.transport.requests("INVITE")


def test_retransmissions_absorbed_while_a_failure_is_delayed() -> None:
    """While the throttle holds a 401 back, UDP retransmissions of the
    request are absorbed by the server transaction: one 401 goes out when
    the delay ends, and later retransmissions get that same 401 again."""
    setup = Setup(ThrottleSettings(free_failures=0, base_delay=2.0))
    datagram = (DATA / "rfc4475" / "dblreq.dat").read_bytes()
    setup.receive(datagram)
    challenge = cast(Response, setup.transport.responses()[0].message)
    wrong = answer(datagram, challenge, password="guess")
    setup.receive(wrong)
    for _ in range(3):
        setup.clock.pump([0.25] * 2)
        setup.receive(wrong)
    assert setup.statuses() == [401]
    setup.clock.pump([0.25] * 2)
    assert setup.statuses() == [401, 401]
    setup.receive(wrong)
    assert setup.statuses() == [401, 401, 401]
    assert setup.transport.sent[-1].data == setup.transport.sent[-2].data
