"""
The non-INVITE server transaction (RFC 3261 §17.2.2, RFC 4320 §4.1), driven
through the TransactionLayer on a fake clock and a recording transport.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from clicktodial.sip.address import Source
from clicktodial.sip.message import Request, make_response
from clicktodial.sip.parser import parse_message
from clicktodial.sip.transactions import (
    NonInviteServerTransaction,
    RequestReleased,
    TransactionLayer,
)
from clicktodial.testing.sipfakes import (
    STEP,
    RecordingTransport,
    RecordingUser,
    assert_quiescent,
    run_for,
    sip_request,
)

SOURCE = Source("UDP", "127.0.0.1", 5080, "127.0.0.1", 5060)


class Harness:
    def __init__(self, transport: str = "UDP") -> None:
        self.clock = Clock()
        self.transport = RecordingTransport(self.clock)
        self.user = RecordingUser()
        self.layer = TransactionLayer(self.clock, self.transport, self.user)
        self.request = sip_request(
            "OPTIONS",
            "sip:bob@127.0.0.1:5060",
            via=f"SIP/2.0/{transport} 127.0.0.1:5080;branch=z9hG4bKopt1",
        )

    def receive(self) -> None:
        parsed = parse_message(self.request.serialize())
        assert isinstance(parsed, Request)
        self.layer.request_received(parsed, SOURCE)

    def start(self) -> NonInviteServerTransaction:
        self.receive()
        tx = self.user.requests[0][0]
        assert isinstance(tx, NonInviteServerTransaction)
        return tx


def test_retransmission_in_trying_is_absorbed_silently() -> None:
    """§17.2.2: with no response yet, a retransmission is discarded, not passed up."""
    h = Harness()
    tx = h.start()
    h.receive()
    h.receive()
    assert tx.state == "trying"
    assert h.transport.sent == []
    assert len(h.user.requests) == 1


def test_final_response_is_resent_to_retransmissions_until_timer_j() -> None:
    """completed: each retransmission gets the final response again; Timer J at 64*T1."""
    h = Harness()
    tx = h.start()
    run_for(h.clock, 0.5)
    tx.respond(make_response(tx.request, 200, to_tag="t1"))
    assert tx.state == "completed"
    run_for(h.clock, 1)
    h.receive()
    assert h.transport.times(status=200) == [0.5, 1.5]
    assert len(h.user.requests) == 1
    run_for(h.clock, 30.9375)
    assert tx.state == "completed"
    run_for(h.clock, STEP)
    assert tx.state == "terminated"
    assert_quiescent(h.clock, h.layer)


def test_in_completed_over_udp_the_request_is_let_go_and_the_last_response_still_answers() -> None:
    """Lingering 64*T1 in completed, the transaction keeps only its final response (a
    REGISTER or BYE load holds R*32 s of them): reading the request raises
    RequestReleased; a retransmission still gets the final response; a response the
    TU sends then is refused and logged with the transaction's method."""
    h = Harness()
    tx = h.start()
    request = tx.request
    tx.respond(make_response(request, 200, to_tag="t1"))
    assert tx.state == "completed"
    with pytest.raises(RequestReleased):
        tx.request  # noqa: B018
    assert tx.method == "OPTIONS"
    h.receive()
    tx.respond(make_response(request, 500, to_tag="t1"))  # refused: no exception
    assert [sent.message.status for sent in h.transport.sent] == [200, 200]
    run_for(h.clock, 32)
    assert_quiescent(h.clock, h.layer)


def test_provisional_moves_to_proceeding_and_is_resent_to_retransmissions() -> None:
    """proceeding: retransmissions get the last provisional (a 100 after T2 ramp-up)."""
    h = Harness()
    tx = h.start()
    run_for(h.clock, 3.5)
    tx.respond(make_response(tx.request, 100))
    assert tx.state == "proceeding"
    h.receive()
    assert h.transport.times(status=100) == [3.5, 3.5]
    tx.respond(make_response(tx.request, 202, to_tag="t1"))
    assert tx.state == "completed"


def test_reliable_transport_timer_j_is_zero() -> None:
    """TCP: the final response terminates the transaction at once."""
    h = Harness("TCP")
    tx = h.start()
    tx.respond(make_response(tx.request, 200, to_tag="t1"))
    assert tx.state == "terminated"
    assert_quiescent(h.clock, h.layer)


def test_rfc4320_a_408_is_never_sent_to_a_non_invite_request() -> None:
    """RFC 4320 §4.1: respond(408) sends nothing; retransmissions get nothing; J ends it."""
    h = Harness()
    tx = h.start()
    tx.respond(make_response(tx.request, 408, to_tag="t1"))
    h.receive()
    assert h.transport.sent == []
    assert tx.state == "completed"
    run_for(h.clock, 32)
    assert tx.state == "terminated"
    assert_quiescent(h.clock, h.layer)


def test_rfc4320_no_early_100_over_udp_and_no_other_provisional() -> None:
    """RFC 4320 §4.1: no 100 before Timer E reaches T2 (3.5 s); never a 18x to non-INVITE."""
    h = Harness()
    tx = h.start()
    run_for(h.clock, 3.4375)
    tx.respond(make_response(tx.request, 100))
    tx.respond(make_response(tx.request, 180, to_tag="t1"))
    assert h.transport.sent == []
    assert tx.state == "trying"
    run_for(h.clock, STEP)
    tx.respond(make_response(tx.request, 100))
    assert h.transport.times(status=100) == [3.5]


def test_100_may_be_sent_at_once_over_tcp() -> None:
    """The RFC 4320 delay on 100 applies to unreliable transports only."""
    h = Harness("TCP")
    tx = h.start()
    tx.respond(make_response(tx.request, 100))
    assert h.transport.times(status=100) == [0]


def test_transport_error_while_responding_terminates_and_tells_the_user() -> None:
    """§17.2.4: a transport failure sending the response fails the transaction."""
    h = Harness()
    tx = h.start()
    h.transport.fail = True
    tx.respond(make_response(tx.request, 200, to_tag="t1"))
    assert tx.state == "terminated"
    assert h.user.failures == [(tx, "transport error")]
    assert_quiescent(h.clock, h.layer)
