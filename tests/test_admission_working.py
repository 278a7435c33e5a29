"""
[limits] max_transactions counts transactions doing work, not finished ones waiting out
Timer J/K/I/D/L/M for retransmissions (the daemon on a fake reactor).
"""

from __future__ import annotations

import os

from clicktodial.config import parse_config
from clicktodial.service import build_service
from clicktodial.sip.address import Source
from clicktodial.testing.sipfakes import sip_request, unissued_nonce_authorization
from clicktodial.testing.transport import FakeReactor

CONFIG = (
    "[sip]\ndomain = 127.0.0.1\n[store]\nbackend = memory\n"
    "[limits]\nmax_transactions = 10\nrate_max_requests = 0\n"
)


def statuses(port: object) -> list[int]:
    from clicktodial.sip.message import Response
    from clicktodial.sip.parser import parse_message

    found = []
    for data, _ in port.written:  # type: ignore[attr-defined]
        message = parse_message(data)
        if isinstance(message, Response):
            found.append(message.status)
    return found


def test_answered_registers_waiting_for_timer_j_do_not_count_towards_the_overload_bound() -> None:
    """25 REGISTERs, one every 100 ms, each answered (401) at once: at most one is doing work
    at any time, so none gets 503, although all 25 transactions still wait out Timer J
    (32 s) to absorb retransmissions. (Each carries credentials with a nonce we never
    issued: a REGISTER without credentials would be challenged statelessly, with no
    transaction at all.)"""
    reactor = FakeReactor()
    root = build_service(parse_config(CONFIG, "x.ini"), reactor)
    root.startService()
    sip = root.getServiceNamed("sip")
    for _ in range(25):
        via = f"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{os.urandom(4).hex()};rport"
        register = sip_request(
            "REGISTER", "sip:127.0.0.1", via=via, extra=(unissued_nonce_authorization(),)
        )
        sip.transport.handler.request_received(
            register, Source("UDP", "127.0.0.1", 5070, "127.0.0.1", 5060)
        )
        reactor.pump([0.1])
    [port] = reactor.udp_ports
    assert statuses(port) == [401] * 25
    assert sip.transactions.active_count == 25
    assert sip.transactions.working_count == 0
    root.stopService()


def test_a_register_without_credentials_is_challenged_without_a_transaction() -> None:
    """The first REGISTER of every registration gets its 401 statelessly: 25 of them leave no
    transaction (and no Timer J) behind, and a retransmission is challenged again."""
    reactor = FakeReactor()
    root = build_service(parse_config(CONFIG, "x.ini"), reactor)
    root.startService()
    sip = root.getServiceNamed("sip")
    source = Source("UDP", "127.0.0.1", 5070, "127.0.0.1", 5060)
    timers_before = set(reactor.getDelayedCalls())
    for _ in range(25):
        via = f"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{os.urandom(4).hex()};rport"
        register = sip_request("REGISTER", "sip:127.0.0.1", via=via)
        sip.transport.handler.request_received(register, source)
        sip.transport.handler.request_received(register, source)  # a retransmission
    [port] = reactor.udp_ports
    assert statuses(port) == [401] * 50
    assert sip.transactions.active_count == 0
    assert set(reactor.getDelayedCalls()) == timers_before
    from clicktodial.sip.parser import parse_message

    first, again = (parse_message(data) for data, _ in port.written[:2])
    assert first.headers.get("WWW-Authenticate") != again.headers.get("WWW-Authenticate")
    assert first.headers.get("Server") is not None
    root.stopService()
