"""
Retransmission counts (TransactionLayer.counts): every retransmission a machine sends or
absorbs is one increment, read by /metrics at scrape time. Driven on a fake clock.
"""

from __future__ import annotations

from clicktodial.sip.address import Destination
from clicktodial.sip.message import Request, Response, make_response
from clicktodial.sip.transactions import (
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
)
from clicktodial.testing.sipfakes import TransactionHarness, in_transaction, run_for, sip_request

UDP = Destination("UDP", "127.0.0.1", 5070)
TCP = Destination("TCP", "127.0.0.1", 5070)


class Harness(TransactionHarness):
    def __init__(self) -> None:
        super().__init__()
        self.responses: list[Response] = []

    @property
    def counts(self) -> tuple[int, int, int, int]:
        c = self.layer.counts
        return (c.requests_sent, c.responses_sent, c.requests_received, c.responses_received)

    def server(self, request: Request) -> ServerTransaction:
        self.receive(request)
        return self.user.requests[-1][0]


def test_client_retransmissions_and_absorbed_final_responses_are_counted() -> None:
    """Timer E: each request sent again is counted; a final response received again in
    completed is absorbed and counted."""
    h = Harness()
    request = sip_request("OPTIONS")
    h.layer.send_request(request, UDP, h.responses.append)
    run_for(h.clock, 4.0)  # E at 0.5, 1.5, 3.5
    assert len(h.transport.requests("OPTIONS")) == 4
    assert h.counts == (3, 0, 0, 0)
    h.reply(request, 200)
    h.reply(request, 200)
    h.reply(request, 200)
    assert [r.status for r in h.responses] == [200]
    assert h.counts == (3, 0, 0, 2)


def test_invite_client_counts_timer_a_and_the_ack_re_sent_for_a_retransmitted_failure() -> None:
    h = Harness()
    request = sip_request("INVITE")
    h.layer.send_request(request, UDP, h.responses.append)
    run_for(h.clock, 1.6)  # A at 0.5, 1.5
    assert h.counts == (2, 0, 0, 0)
    h.reply(request, 486)
    h.reply(request, 486)
    assert len(h.transport.requests("ACK")) == 2
    assert h.counts == (3, 0, 0, 1)


def test_invite_client_counts_2xx_received_again_in_accepted() -> None:
    h = Harness()
    request = sip_request("INVITE")
    h.layer.send_request(request, TCP, h.responses.append)
    h.reply(request, 200)
    h.reply(request, 200)
    assert [r.status for r in h.responses] == [200, 200]  # the TU ACKs each
    assert h.counts == (0, 0, 0, 1)


def test_server_counts_absorbed_requests_and_responses_sent_again() -> None:
    """A retransmitted request is counted as received again (it never reaches the TU);
    the response re-sent to it is counted as sent again."""
    h = Harness()
    request = sip_request("OPTIONS", via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKo1;rport")
    tx = h.server(request)
    assert isinstance(tx, NonInviteServerTransaction)
    h.receive(request)  # trying: absorbed, nothing to re-send
    assert h.counts == (0, 0, 1, 0)
    tx.respond(make_response(tx.request, 200, to_tag="t1"))
    h.receive(request)
    h.receive(request)
    assert len(h.transport.responses(200)) == 3
    assert len(h.user.requests) == 1
    assert h.counts == (0, 2, 3, 0)


def test_invite_server_counts_timer_g_and_absorbed_ack_retransmissions() -> None:
    h = Harness()
    invite = sip_request("INVITE", via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKi1;rport")
    tx = h.server(invite)
    assert isinstance(tx, InviteServerTransaction)
    tx.respond(make_response(tx.request, 486, to_tag="t1"))
    run_for(h.clock, 1.6)  # G at 0.5, 1.5
    assert len(h.transport.responses(486)) == 3
    assert h.counts == (0, 2, 0, 0)
    ack = in_transaction(
        invite, "ACK", h.transport.responses(486)[-1].message.headers.get("To") or ""
    )
    h.receive(ack)  # the ACK: confirmed
    h.receive(ack)  # its retransmission, absorbed
    assert tx.state == "confirmed"
    assert h.counts == (0, 2, 1, 0)


def test_invite_server_counts_2xx_retransmissions_of_the_tu() -> None:
    """RFC 6026 accepted: the TU re-sends its 2xx through the transaction (counted)."""
    h = Harness()
    tx = h.server(sip_request("INVITE", via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKi2"))
    ok = make_response(tx.request, 200, to_tag="t1")
    tx.respond(ok)
    tx.respond(ok)
    assert h.counts == (0, 1, 0, 0)


def test_reliable_transports_count_no_timer_retransmissions() -> None:
    h = Harness()
    h.layer.send_request(sip_request("OPTIONS"), TCP, h.responses.append)
    h.layer.send_request(sip_request("INVITE"), TCP, h.responses.append)
    run_for(h.clock, 10.0)
    assert h.counts == (0, 0, 0, 0)


def test_working_count_leaves_out_transactions_only_waiting_out_a_timer() -> None:
    """working_count: transactions waiting for an answer; those in completed, confirmed or
    accepted (Timers D, I, J, K, L, M) are active but not working, until they end."""
    h = Harness()
    options = sip_request("OPTIONS", via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKw1;rport")
    server = h.server(options)
    client = h.layer.send_request(sip_request("INVITE"), UDP, h.responses.append)
    invite = sip_request("INVITE", via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKw2;rport")
    accepted = h.server(invite)
    assert (h.layer.active_count, h.layer.working_count) == (3, 3)
    server.respond(make_response(server.request, 200, to_tag="t1"))  # Timer J
    h.reply(client.request, 486)  # Timer D
    accepted.respond(make_response(accepted.request, 200, to_tag="t2"))  # Timer L
    assert (h.layer.active_count, h.layer.working_count) == (3, 0)
    assert h.layer.counts.lingering == 3
    run_for(h.clock, 33.0)
    assert (h.layer.active_count, h.layer.working_count) == (0, 0)
    assert h.layer.counts.lingering == 0


def test_terminate_all_leaves_no_lingering_count() -> None:
    h = Harness()
    tx = h.server(sip_request("OPTIONS", via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKw3"))
    tx.respond(make_response(tx.request, 200, to_tag="t1"))
    h.layer.send_request(sip_request("OPTIONS"), UDP, h.responses.append)
    assert (h.layer.counts.lingering, h.layer.working_count) == (1, 1)
    assert h.layer.terminate_all() == 2
    assert (h.layer.counts.lingering, h.layer.working_count, h.layer.active_count) == (0, 0, 0)
