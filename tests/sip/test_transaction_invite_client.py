"""
The INVITE client transaction (RFC 3261 §17.1.1, RFC 6026 §8.4), driven
through the TransactionLayer on a fake clock and a recording transport.
"""

from __future__ import annotations

import pytest
from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure

from clicktodial.config import parse_config
from clicktodial.sip.address import Destination
from clicktodial.sip.message import Request, Response, make_response
from clicktodial.sip.transactions import (
    InviteClientTransaction,
    RequestReleased,
    Timers,
)
from clicktodial.sip.transactions.layer import TransactionLayer
from clicktodial.sip.transport import SIPTransportLayer
from clicktodial.testing.sipfakes import (
    RecordingUser,
    TransactionHarness,
    assert_quiescent,
    run_for,
    sip_request,
)
from clicktodial.testing.transport import FakeReactor

UDP = Destination("UDP", "127.0.0.1", 5070)
TCP = Destination("TCP", "127.0.0.1", 5070)


class Harness(TransactionHarness):
    def __init__(self, timers: Timers | None = None) -> None:
        super().__init__(timers or Timers())
        self.responses: list[tuple[float, Response]] = []
        self.invites: dict[InviteClientTransaction, Request] = {}

    def on_response(self, response: Response) -> None:
        self.responses.append((self.clock.seconds(), response))

    def invite(self, destination: Destination = UDP) -> InviteClientTransaction:
        tx = self.layer.send_request(sip_request("INVITE"), destination, self.on_response)
        assert isinstance(tx, InviteClientTransaction)
        # The transaction lets go of its request at the final response: keep it here.
        self.invites[tx] = tx.request
        return tx

    def reply_to(self, tx: InviteClientTransaction, status: int, to_tag: str | None = "b1") -> None:
        """A peer's response to ``tx``'s INVITE (a 100 never has a To tag)."""
        self.reply(self.invites[tx], status, to_tag if status > 100 else None)

    @property
    def statuses(self) -> list[int]:
        return [r.status for _, r in self.responses]


def test_invite_is_retransmitted_at_doubling_intervals_then_timer_b_reports_408_at_64_t1() -> None:
    """Timer A: 0, .5, 1.5, 3.5, 7.5, 15.5, 31.5 s; Timer B: local 408 at 32 s."""
    h = Harness()
    tx = h.invite()
    assert tx.state == "calling"
    run_for(h.clock, 40)
    assert h.transport.times("INVITE") == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert [(t, r.status) for t, r in h.responses] == [(32.0, 408)]
    assert tx.state == "terminated"
    assert_quiescent(h.clock, h.layer)


def test_invite_retransmissions_are_identical_to_the_first_send() -> None:
    """A retransmission is the same request, same branch (§17.1.1.2)."""
    h = Harness()
    tx = h.invite()
    run_for(h.clock, 2)
    sent = h.transport.requests("INVITE")
    assert len(sent) == 3
    assert sent[0].data == sent[1].data == sent[2].data
    assert tx.branch.startswith("z9hG4bK") and len(tx.branch) > 7
    assert f"branch={tx.branch}" in sent[0].data.decode()
    assert ";rport" in sent[0].data.decode()


def test_provisional_response_stops_retransmission_and_timer_b() -> None:
    """In proceeding the INVITE is not retransmitted and Timer B does not fire."""
    h = Harness()
    tx = h.invite()
    run_for(h.clock, 0.25)
    h.reply_to(tx, 180)
    assert tx.state == "proceeding"
    run_for(h.clock, 120)
    assert h.transport.times("INVITE") == [0]
    assert h.statuses == [180]
    assert h.layer.active_count == 1
    assert h.clock.getDelayedCalls() == []


def test_failure_response_is_acked_passed_up_once_and_timer_d_ends_it() -> None:
    """300-699: ACK sent, response passed up; retransmissions re-ACKed, not passed up."""
    h = Harness()
    tx = h.invite()
    h.reply_to(tx, 100)
    run_for(h.clock, 1)
    h.reply_to(tx, 486)
    assert tx.state == "completed"
    assert h.statuses == [100, 486]
    assert len(h.transport.requests("ACK")) == 1
    run_for(h.clock, 3)
    h.reply_to(tx, 486)  # retransmitted by the server
    assert h.statuses == [100, 486]
    assert h.transport.times("ACK") == [1.0, 4.0]
    run_for(h.clock, 28.9375)  # Timer D: 32 s after entering completed
    assert tx.state == "completed"
    run_for(h.clock, 0.0625)
    assert tx.state == "terminated"
    assert_quiescent(h.clock, h.layer)


def test_ack_for_failure_follows_section_17_1_1_3() -> None:
    """The ACK copies R-URI, Call-ID, From, CSeq number, top Via and Route; To from the response."""
    h = Harness()
    request = sip_request("INVITE", extra=(("Route", "<sip:proxy.invalid;lr>"),))
    tx = h.layer.send_request(request, UDP, h.on_response)
    assert isinstance(tx, InviteClientTransaction)
    h.invites[tx] = request
    h.reply_to(tx, 404, to_tag="xyz")
    ack = h.transport.requests("ACK")[0].message
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.uri == request.uri
    assert ack.call_id == request.call_id
    assert ack.headers.get("From") == request.headers.get("From")
    assert ack.to.tag == "xyz"
    assert (ack.cseq.seq, ack.cseq.method) == (request.cseq.seq, "ACK")
    assert ack.headers.get_all("Via") == [request.headers.get_all("Via")[0]]
    assert ack.headers.get_all("Route") == ["<sip:proxy.invalid;lr>"]


def test_2xx_moves_to_accepted_and_retransmitted_2xx_reach_the_user_until_timer_m() -> None:
    """RFC 6026: 2xx -> accepted; each 2xx retransmission goes up; Timer M at 64*T1."""
    h = Harness()
    tx = h.invite()
    run_for(h.clock, 0.25)
    h.reply_to(tx, 200)
    assert tx.state == "accepted"
    with pytest.raises(RequestReleased):
        tx.request  # noqa: B018 - Timer M needs no INVITE: 64*T1 of them would pile up
    assert h.transport.requests("ACK") == []  # the UA core ACKs a 2xx
    run_for(h.clock, 10)
    h.reply_to(tx, 200)
    assert h.statuses == [200, 200]
    assert h.transport.times("INVITE") == [0]
    run_for(h.clock, 22.1875)  # Timer M: 32 s after 0.25
    assert tx.state == "terminated"
    assert_quiescent(h.clock, h.layer)
    h.reply_to(tx, 200)
    assert len(h.user.strays) == 1  # after Timer M a 2xx is stray


def test_reliable_transport_has_no_timer_a_and_timer_d_is_zero() -> None:
    """TCP: the INVITE is sent once; a 486 terminates the transaction at once."""
    h = Harness()
    tx = h.invite(TCP)
    run_for(h.clock, 10)
    assert h.transport.times("INVITE") == [0]
    h.reply_to(tx, 486)
    assert h.statuses == [486]
    assert len(h.transport.requests("ACK")) == 1
    assert tx.state == "terminated"
    assert_quiescent(h.clock, h.layer)


def test_reliable_transport_still_has_timer_b() -> None:
    """TCP: no answer at all is still a local 408 at 64*T1."""
    h = Harness()
    h.invite(TCP)
    run_for(h.clock, 40)
    assert [(t, r.status) for t, r in h.responses] == [(32.0, 408)]
    assert_quiescent(h.clock, h.layer)


def test_timer_d_is_at_least_32_seconds_whatever_t1() -> None:
    """§17.1.1.2: Timer D >= 32 s on unreliable transports even when 64*T1 is less."""
    h = Harness(Timers(t1=0.05))
    tx = h.invite()
    h.reply_to(tx, 500)
    run_for(h.clock, 31.9375)
    assert tx.state == "completed"
    run_for(h.clock, 0.0625)
    assert tx.state == "terminated"


def test_transport_error_reaches_the_user_as_503_after_send_request_returned() -> None:
    """§17.1.4: a transport failure is a local 503, delivered from the clock."""
    h = Harness()
    h.transport.fail = True
    tx = h.invite()
    assert h.responses == []
    h.clock.advance(0)
    assert h.statuses == [503]
    assert tx.state == "terminated"
    assert_quiescent(h.clock, h.layer)


def test_transport_error_on_retransmission_is_a_503() -> None:
    """A transport failure while retransmitting ends the transaction with 503."""
    h = Harness()
    tx = h.invite()
    h.transport.fail = True
    run_for(h.clock, 1)
    assert h.statuses == [503]
    assert tx.state == "terminated"
    assert_quiescent(h.clock, h.layer)


def test_cancel_request_follows_section_9_1() -> None:
    """The CANCEL has the INVITE's R-URI, Call-ID, From, To, CSeq number and top Via."""
    h = Harness()
    tx = h.invite()
    cancel = tx.cancel_request()
    invite = tx.request
    assert cancel.method == "CANCEL"
    assert cancel.uri == invite.uri
    assert cancel.call_id == invite.call_id
    assert cancel.headers.get("From") == invite.headers.get("From")
    assert cancel.headers.get("To") == invite.headers.get("To")
    assert (cancel.cseq.seq, cancel.cseq.method) == (invite.cseq.seq, "CANCEL")
    assert cancel.headers.get_all("Via") == [invite.headers.get_all("Via")[0]]


def test_cancel_is_its_own_transaction_on_the_invite_branch() -> None:
    """The CANCEL keeps the INVITE's branch; responses to each go to the right one."""
    h = Harness()
    tx = h.invite()
    h.reply_to(tx, 180)
    cancel_responses: list[int] = []
    cancel_tx = h.layer.send_request(
        tx.cancel_request(), UDP, lambda r: cancel_responses.append(r.status)
    )
    assert cancel_tx.branch == tx.branch
    assert h.transport.requests("CANCEL")[0].message.headers.get_all("Via") == [
        tx.request.headers.get_all("Via")[0]
    ]
    h.layer.response_received(make_response(cancel_tx.request, 200, to_tag="b1"), None)
    h.reply_to(tx, 487)
    assert cancel_responses == [200]
    assert h.statuses == [180, 487]


def test_ack_cannot_be_sent_as_a_transaction() -> None:
    """An ACK for a 2xx goes through send_ack(), not send_request()."""
    h = Harness()
    with pytest.raises(ValueError):
        h.layer.send_request(sip_request("ACK"), UDP, h.on_response)
    ack = sip_request("ACK")
    assert h.layer.send_ack(ack, UDP)
    sent = h.transport.requests("ACK")[0].message
    assert sent.top_via.branch is not None and sent.top_via.branch.startswith("z9hG4bK")
    assert_quiescent(h.clock, h.layer)


def test_user_callback_errors_do_not_break_the_machine() -> None:
    """An exception in on_response is logged; the machine carries on."""
    h = Harness()

    def broken(response: Response) -> None:
        raise RuntimeError("bug in the TU")

    tx = h.layer.send_request(sip_request("INVITE"), UDP, broken)
    h.layer.response_received(make_response(tx.request, 486, to_tag="t"), None)
    assert tx.state == "completed"
    assert len(h.transport.requests("ACK")) == 1


def test_user_can_destroy_a_proceeding_invite_transaction() -> None:
    """§9.1: after a CANCEL goes unanswered for 64*T1 the TU destroys the INVITE transaction."""
    h = Harness()
    tx = h.invite()
    h.reply_to(tx, 180)
    tx.terminate()
    assert tx.state == "terminated"
    assert h.statuses == [180]
    assert_quiescent(h.clock, h.layer)
    h.reply_to(tx, 487)
    assert [r.status for r in h.user.strays] == [487]


def test_accepted_transactions_share_one_reactor_timer_for_timer_m() -> None:
    """Timer M of many accepted INVITEs is one reactor timer (a LingerQueue), each
    transaction still ending 64*T1 after its own 2xx; the last one leaves nothing behind."""
    h = Harness()
    txs = []
    for _ in range(50):
        tx = h.invite(TCP)  # no Timer A: only Timer B, then M
        h.reply_to(tx, 200)
        txs.append(tx)
        run_for(h.clock, 0.25)
    assert [tx.state for tx in txs] == ["accepted"] * 50
    assert len(h.clock.getDelayedCalls()) == 1
    run_for(h.clock, 32 - 12.5)  # the first 2xx came at 0, the last at 12.25
    assert [tx.state for tx in txs].count("terminated") == 1
    run_for(h.clock, 12.25)
    assert [tx.state for tx in txs].count("terminated") == 50
    assert_quiescent(h.clock, h.layer)


def test_the_timers_of_many_invites_are_one_reactor_timer() -> None:
    """Timers A and B of many INVITEs in "calling" over UDP are entries of the layer's
    queues (one per length: T1, 64*T1, then 2*T1 as Timer A doubles), all on one reactor
    timer, not one per transaction; each INVITE is still retransmitted on its own
    schedule from its own start."""
    h = Harness()
    txs, starts = [], []
    for _ in range(20):
        starts.append(h.clock.seconds())
        txs.append(h.invite())
        h.clock.advance(1 / 16)  # started over 1.25 s: their Timers A fire apart
    [alarm] = h.clock.getDelayedCalls()
    assert alarm.getTime() == 1.3125  # the first Timer A not yet fired (14th INVITE)
    assert len(h.layer.guard_timers) == 40  # Timers A and B of each
    run_for(h.clock, 40)
    sent = h.transport.requests("INVITE")
    for tx, start in zip(txs, starts, strict=True):
        times = [round(s.time - start, 6) for s in sent if f"branch={tx.branch}" in s.data.decode()]
        assert times == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5], tx
    assert [tx.state for tx in txs] == ["terminated"] * 20
    assert_quiescent(h.clock, h.layer)


def test_a_lingering_timer_cancelled_last_leaves_no_reactor_timer() -> None:
    h = Harness()
    tx = h.invite()
    h.reply_to(tx, 200)
    assert tx.state == "accepted"
    h.layer.terminate_all()
    assert h.clock.getDelayedCalls() == []
    assert len(h.layer.lingering) == 0


def test_a_send_failure_reported_later_ends_the_invite_at_once_with_503() -> None:
    """
    RFC 3261 §8.1.3.1 / §17.1.4: when the transport reports that the INVITE never left (a
    TCP connection refused), the transaction ends with a local 503 then, not at Timer B.
    """
    h = Harness()
    tx = h.invite(TCP)
    h.clock.advance(0.25)
    h.layer.request_failed(h.invites[tx], TCP, "cannot connect: Connection refused")
    assert [(t, r.status) for t, r in h.responses] == [(0.25, 503)]
    assert tx.state == "terminated"
    assert_quiescent(h.clock, h.layer)


def test_a_send_failure_reported_after_a_2xx_changes_nothing() -> None:
    """The INVITE got through (2xx in "accepted"): a late failure report is not about it."""
    h = Harness()
    tx = h.invite(TCP)
    h.reply_to(tx, 200)
    h.layer.request_failed(h.invites[tx], TCP, "late")
    assert h.statuses == [200]
    assert tx.state == "accepted"


def test_an_invite_to_a_refused_tcp_port_fails_in_milliseconds_through_the_real_transport() -> None:
    """
    TransactionLayer over SIPTransportLayer: connectTCP is refused, and the caller gets
    503 at once instead of the 408 of Timer B 32 s later.
    """
    reactor = FakeReactor()
    config = parse_config("[sip]\ndomain = 127.0.0.1\nlisten = 127.0.0.1:5060\n", "x.ini").sip
    transport = SIPTransportLayer(reactor, config)
    transport.startService()
    responses: list[tuple[float, int]] = []
    layer = TransactionLayer(reactor, transport, RecordingUser())
    transport.connect(layer)
    layer.send_request(
        sip_request("INVITE"), TCP, lambda r: responses.append((reactor.seconds(), r.status))
    )
    reactor.advance(0.01)
    factory = reactor.tcpClients[0][2]
    factory.clientConnectionFailed(reactor.connectors[-1], Failure(ConnectionRefusedError()))
    assert responses == [(0.01, 503)]
    transport.stopService()
