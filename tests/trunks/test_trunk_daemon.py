"""
The trunks in the whole daemon (build_service on a fake reactor): a [trunk:NAME] registers
as the daemon starts, and a request from the trunk's address is refused before the
registrar sees it.
"""

from __future__ import annotations

from clicktodial.config import parse_config
from clicktodial.service import build_service
from clicktodial.sip.parser import parse_message
from clicktodial.testing.transport import FakeReactor

CONFIG = (
    "[sip]\ndomain = 127.0.0.1\n[web]\nlisten = tcp:8181:interface=127.0.0.1\n"
    "[store]\nbackend = memory\n"
    "[trunk:provider]\nproxy = sip:127.0.0.9:5999\nusername = 4930111\npassword = pw\n"
    "register = yes\nkeepalive_interval = 0\n"
)

REGISTER = (
    "REGISTER sip:127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP {host}:5999;branch=z9hG4bK{branch}\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=1\r\nTo: <sip:alice@127.0.0.1>\r\n"
    "Call-ID: {branch}@x\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@{host}:5999>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def test_daemon_registers_and_refuses_requests_from_the_trunk() -> None:
    reactor = FakeReactor()
    root = build_service(parse_config(CONFIG, "x.ini"), reactor)
    root.startService()
    [port] = reactor.udp_ports
    sent = port.take()
    registers = [(data, addr) for data, addr in sent if data.startswith(b"REGISTER ")]
    assert [addr for _, addr in registers] == [("127.0.0.9", 5999)]
    # The provider's address: 403, the registrar never sees it (no 401 challenge).
    port.receive(REGISTER.format(host="127.0.0.9", branch="a1").encode(), "127.0.0.9", 5999)
    [(answer, _)] = port.take()
    assert parse_message(answer).status == 403  # type: ignore[union-attr]
    # A phone: the registrar challenges it as usual.
    port.receive(REGISTER.format(host="127.0.0.5", branch="b2").encode(), "127.0.0.5", 5999)
    [(answer, _)] = port.take()
    assert parse_message(answer).status == 401  # type: ignore[union-attr]
    root.stopService()
