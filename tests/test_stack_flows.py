"""
The SIP stack keeps a phone's TCP connection open while its registration lives (the
registrar tells the transport through IFlowKeeper), past the idle timeout, and lets it
close after a de-REGISTER: on a fake reactor, the connection a StringTransport.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from clicktodial.admission import AdmissionControl
from clicktodial.config import parse_config
from clicktodial.sip.address import Destination
from clicktodial.sip.digest import compute_ha1, compute_response, parse_auth_params
from clicktodial.sip.message import Response
from clicktodial.sip.parser import StreamParser
from clicktodial.sip.stack import SIPStack
from clicktodial.sip.transport import SIPTransportLayer
from clicktodial.store.memory import MemoryStore
from clicktodial.testing.fakes import InlineThreadPool, cheap_password_hasher, success_result_of
from clicktodial.testing.sipfakes import sip_request
from clicktodial.testing.transport import FakeReactor, LogCapture, accept_tcp

CONFIG = """\
[sip]
domain = example.com
listen = 127.0.0.1:5060
transports = udp, tcp
stream_idle_timeout = 30
flow_keep_margin = 10
[store]
backend = memory
[registrar]
digest_algorithms = MD5
"""


def register(cseq: int, expires: int, authorization: str = "") -> bytes:
    return (
        "REGISTER sip:example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:5070;rport;branch=z9hG4bK-t{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=f1\r\n"
        "To: <sip:alice@example.com>\r\n"
        "Call-ID: tcp-reg@127.0.0.1\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:alice@127.0.0.1:5070;transport=tcp>;expires={expires}\r\n"
        f"{authorization}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def answered(transport: StringTransport) -> Response:
    data = transport.value()
    transport.clear()
    [message] = StreamParser().feed(data)
    assert isinstance(message, Response)
    return message


def authorization(challenge: Response, nc: str = "00000001") -> str:
    header = challenge.headers.get("WWW-Authenticate") or ""
    params = parse_auth_params(header[len("Digest ") :])
    ha1 = compute_ha1("alice", params["realm"], "a-secret", "MD5")
    digest = compute_response(
        ha1, params["nonce"], nc, "cn", "auth", "REGISTER", "sip:example.com", "MD5"
    )
    return (
        f'Authorization: Digest username="alice", realm="{params["realm"]}",'
        f' nonce="{params["nonce"]}", uri="sip:example.com", response="{digest}",'
        f' algorithm=MD5, cnonce="cn", nc={nc}, qop=auth\r\n'
    )


def test_a_registered_tcp_connection_outlives_the_idle_timeout_until_a_de_register() -> None:
    reactor = FakeReactor()
    reactor.advance(1_700_000_000)
    config = parse_config(CONFIG, "stack.ini")
    store = MemoryStore(
        reactor, realm="example.com", hash_pool=InlineThreadPool(), hasher=cheap_password_hasher()
    )
    success_result_of(store.start())
    success_result_of(store.add_user("alice", sip_password="a-secret"))
    transport = SIPTransportLayer(reactor, config.sip)
    stack = SIPStack(reactor, config.sip, config.registrar, store, store, transport)
    transport.connect(stack.transactions)
    with LogCapture() as log:
        stack.startService()
        protocol, transport = accept_tcp(reactor, "127.0.0.1", 40001)
        protocol.dataReceived(register(1, 600))
        challenge = answered(transport)
        assert challenge.status == 401
        protocol.dataReceived(register(2, 600, authorization(challenge)))
        assert answered(transport).status == 200
        # Silent for 100 s, past the 30 s idle timeout: the binding keeps it open.
        reactor.pump([0.5] * 200)
        assert not transport.disconnecting
        protocol.dataReceived(register(3, 0, authorization(challenge, "00000002")))
        assert answered(transport).status == 200
        # Released: the idle timeout applies again (the binding would have held 500 s more).
        reactor.pump([0.5] * 62)
        assert transport.disconnecting
        stack.stopService()
    assert log.failures() == []


def test_a_request_over_a_refused_tcp_connection_fails_at_once_through_the_stack() -> None:
    """
    The transport's send failures reach the transaction layer through the admission control
    in front of it (as the daemon wires them): a refused connection is a 503 now, not a 408
    at Timer F.
    """
    reactor = FakeReactor()
    config = parse_config(CONFIG, "stack.ini")
    store = MemoryStore(
        reactor, realm="example.com", hash_pool=InlineThreadPool(), hasher=cheap_password_hasher()
    )
    success_result_of(store.start())
    transport = SIPTransportLayer(reactor, config.sip)
    stack = SIPStack(reactor, config.sip, config.registrar, store, store, transport)
    transport.connect(AdmissionControl(reactor, stack.transactions, transport, config.limits))
    stack.startService()
    statuses: list[int] = []
    stack.transactions.send_request(
        sip_request("OPTIONS"),
        Destination("TCP", "127.0.0.1", 5999),
        lambda response: statuses.append(response.status),
    )
    factory = reactor.tcpClients[0][2]
    factory.clientConnectionFailed(reactor.connectors[-1], Failure(ConnectionRefusedError()))
    assert statuses == [503]
    stack.stopService()
