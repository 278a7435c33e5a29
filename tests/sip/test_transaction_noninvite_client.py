"""
The non-INVITE client transaction (RFC 3261 §17.1.2, RFC 4320), driven
through the TransactionLayer on a fake clock and a recording transport.
"""

from __future__ import annotations

import pytest

from clicktodial.sip.address import Destination
from clicktodial.sip.message import make_response
from clicktodial.sip.transactions import (
    ClientTransaction,
    NonInviteClientTransaction,
    RequestReleased,
)
from clicktodial.testing.sipfakes import (
    TransactionHarness,
    assert_quiescent,
    run_for,
    sip_request,
)

UDP = Destination("UDP", "127.0.0.1", 5070)
TCP = Destination("TCP", "127.0.0.1", 5070)


class Harness(TransactionHarness):
    def __init__(self) -> None:
        super().__init__()
        self.responses: list[tuple[float, int]] = []

    def send(self, method: str = "OPTIONS", destination: Destination = UDP) -> ClientTransaction:
        tx = self.layer.send_request(
            sip_request(method),
            destination,
            lambda r: self.responses.append((self.clock.seconds(), r.status)),
        )
        assert isinstance(tx, NonInviteClientTransaction)
        return tx


def test_request_is_retransmitted_doubling_up_to_t2_then_timer_f_reports_408() -> None:
    """Timer E: 0, .5, 1.5, 3.5, 7.5, 11.5, ... 31.5 s (capped at T2); Timer F: 408 at 32 s."""
    h = Harness()
    tx = h.send()
    assert tx.state == "trying"
    run_for(h.clock, 40)
    assert h.transport.times("OPTIONS") == [
        0,
        0.5,
        1.5,
        3.5,
        7.5,
        11.5,
        15.5,
        19.5,
        23.5,
        27.5,
        31.5,
    ]
    assert h.responses == [(32.0, 408)]
    assert tx.state == "terminated"
    assert_quiescent(h.clock, h.layer)


def test_after_a_provisional_retransmissions_continue_every_t2() -> None:
    """§17.1.2.2: in proceeding, Timer E fires and is reset to T2."""
    h = Harness()
    tx = h.send("MESSAGE")
    run_for(h.clock, 1)
    h.reply(tx.request, 100)
    assert tx.state == "proceeding"
    run_for(h.clock, 39)
    assert h.transport.times("MESSAGE") == [0, 0.5, 1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert h.responses == [(1.0, 100), (32.0, 408)]
    assert_quiescent(h.clock, h.layer)


def test_final_response_is_passed_up_once_and_timer_k_absorbs_retransmissions() -> None:
    """200-699 -> completed; retransmitted responses are absorbed for T4, then terminated."""
    h = Harness()
    tx = h.send()
    request = tx.request
    run_for(h.clock, 0.75)
    h.reply(request, 200)
    assert tx.state == "completed"
    with pytest.raises(RequestReleased):
        tx.request  # noqa: B018 - only what Timer K needs is kept
    h.reply(request, 200)
    run_for(h.clock, 4.9375)
    assert tx.state == "completed"
    h.reply(request, 200)
    assert h.responses == [(0.75, 200)]
    assert h.transport.times("OPTIONS") == [0, 0.5]
    run_for(h.clock, 0.0625)
    assert tx.state == "terminated"
    assert_quiescent(h.clock, h.layer)
    h.reply(request, 200)
    assert len(h.user.strays) == 1


def test_reliable_transport_has_no_timer_e_and_timer_k_is_zero() -> None:
    """TCP: sent once; a final response terminates at once."""
    h = Harness()
    tx = h.send(destination=TCP)
    run_for(h.clock, 5)
    assert h.transport.times("OPTIONS") == [0]
    h.reply(tx.request, 404)
    assert tx.state == "terminated"
    assert h.responses == [(5.0, 404)]
    assert_quiescent(h.clock, h.layer)


def test_reliable_transport_still_has_timer_f() -> None:
    """TCP: no response is a local 408 at 64*T1."""
    h = Harness()
    h.send(destination=TCP)
    run_for(h.clock, 40)
    assert h.responses == [(32.0, 408)]
    assert_quiescent(h.clock, h.layer)


def test_transport_error_is_a_local_503() -> None:
    """§17.1.4: transport failure on the first send or a retransmission -> 503."""
    h = Harness()
    h.transport.fail = True
    tx = h.send()
    h.clock.advance(0)
    assert h.responses == [(0.0, 503)]
    assert tx.state == "terminated"
    h.transport.fail = False
    tx = h.send()
    h.transport.fail = True
    run_for(h.clock, 0.5)
    assert h.responses == [(0.0, 503), (0.5, 503)]
    assert_quiescent(h.clock, h.layer)


def test_response_with_other_cseq_method_does_not_match() -> None:
    """§17.1.3: branch and CSeq method both have to match."""
    h = Harness()
    tx = h.send()
    response = make_response(tx.request, 200, to_tag="x")
    response.headers.set("CSeq", f"{tx.request.cseq.seq} INFO")
    h.layer.response_received(response, None)
    assert h.responses == []
    assert len(h.user.strays) == 1
    assert tx.state == "trying"


def test_a_send_failure_reported_later_is_a_local_503_at_once() -> None:
    """§17.1.4: a request the transport reports as never sent ends its transaction now."""
    h = Harness()
    tx = h.send(destination=Destination("TCP", "127.0.0.1", 5070))
    h.clock.advance(0.25)
    h.layer.request_failed(tx.request, tx.destination, "cannot connect: Connection refused")
    assert h.responses == [(0.25, 503)]
    assert tx.state == "terminated"
