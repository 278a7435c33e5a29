"""/metrics shows the transaction layer's retransmission counters (the daemon on a fake reactor)."""

from __future__ import annotations

import os

from twisted.web.test.requesthelper import DummyRequest

from clicktodial.config import parse_config
from clicktodial.metrics import MetricsResource
from clicktodial.service import build_service
from clicktodial.sip.address import Source
from clicktodial.testing.sipfakes import sip_request, unissued_nonce_authorization
from clicktodial.testing.transport import FakeReactor

CONFIG = "[sip]\ndomain = 127.0.0.1\n[store]\nbackend = memory\n"
SOURCE = Source("UDP", "127.0.0.1", 5070, "127.0.0.1", 5060)


def scrape(resource: MetricsResource) -> str:
    return resource.render_GET(DummyRequest([b"metrics"])).decode()  # type: ignore[arg-type]


def test_a_retransmitted_register_is_counted_received_and_its_answer_sent_again() -> None:
    reactor = FakeReactor()
    root = build_service(parse_config(CONFIG, "x.ini"), reactor)
    root.startService()
    assert root.operations is not None
    metrics = MetricsResource(root.operations.metrics.registry)
    before = scrape(metrics)
    assert 'clicktodial_sip_retransmissions_sent_total{message="request"} 0.0' in before
    assert 'clicktodial_sip_retransmissions_received_total{message="request"} 0.0' in before
    sip = root.getServiceNamed("sip")
    via = f"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{os.urandom(4).hex()};rport"
    # Credentials with a nonce we never issued: a stateful 401 (without any, the 401 is
    # stateless and a retransmission is simply challenged again).
    register = sip_request(
        "REGISTER", "sip:127.0.0.1", via=via, extra=(unissued_nonce_authorization(),)
    )
    sip.transport.handler.request_received(register, SOURCE)
    reactor.pump([0.1] * 5)  # answered 401
    sip.transport.handler.request_received(register, SOURCE)  # the phone's Timer E
    text = scrape(metrics)
    assert 'clicktodial_sip_retransmissions_received_total{message="request"} 1.0' in text
    assert 'clicktodial_sip_retransmissions_sent_total{message="response"} 1.0' in text
    assert 'clicktodial_sip_retransmissions_received_total{message="response"} 0.0' in text
    assert "# TYPE clicktodial_sip_retransmissions_sent_total counter" in text
    root.stopService()


def test_inputs_without_a_transition_in_the_ua_core_are_counted() -> None:
    """/metrics shows the UA core's inputs that had no transition, by machine/state/input."""
    reactor = FakeReactor()
    root = build_service(parse_config(CONFIG, "x.ini"), reactor)
    root.startService()
    assert root.operations is not None
    metrics = MetricsResource(root.operations.metrics.registry)
    sip = root.getServiceNamed("sip")
    sip.user_agent.count_unexpected("OutgoingCall", "calling", "fork window end")
    text = scrape(metrics)
    assert (
        'clicktodial_sip_unexpected_inputs_total{transition="OutgoingCall calling/fork window'
        ' end"} 1.0' in text
    )
    root.stopService()
