"""
The INVITE server transaction (RFC 3261 §17.2.1, RFC 6026 §8.5-8.7), driven
through the TransactionLayer on a fake clock and a recording transport.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from clicktodial.sip.address import Source
from clicktodial.sip.message import Request, make_response
from clicktodial.sip.parser import parse_message
from clicktodial.sip.transactions import InviteServerTransaction, TransactionLayer
from clicktodial.testing.sipfakes import (
    STEP,
    RecordingTransport,
    RecordingUser,
    assert_quiescent,
    run_for,
    sip_request,
)

SOURCE = Source("UDP", "127.0.0.1", 5080, "127.0.0.1", 5060)
UDP_VIA = "SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKinv1;rport"
TCP_VIA = "SIP/2.0/TCP 127.0.0.1:5080;branch=z9hG4bKinv1"


class Harness:
    def __init__(self, via: str = UDP_VIA) -> None:
        self.clock = Clock()
        self.transport = RecordingTransport(self.clock, port=5060)
        self.user = RecordingUser()
        self.layer = TransactionLayer(self.clock, self.transport, self.user)
        self.invite = sip_request("INVITE", "sip:bob@127.0.0.1:5060", via=via)

    def receive(self, request: Request) -> None:
        parsed = parse_message(request.serialize())
        assert isinstance(parsed, Request)
        self.layer.request_received(parsed, SOURCE)

    def start(self) -> InviteServerTransaction:
        self.receive(self.invite)
        assert len(self.user.requests) == 1
        tx = self.user.requests[0][0]
        assert isinstance(tx, InviteServerTransaction)
        return tx

    def ack(self, tx: InviteServerTransaction, branch: str | None = None) -> Request:
        """An ACK for the last response (same branch: a non-2xx ACK by default)."""
        invite = self.invite
        assert tx.last_status >= 200
        [last] = [s for s in self.transport.sent if not s.is_request][-1:]
        via = invite.headers.get_all("Via")[0]
        if branch is not None:
            via = via.replace("z9hG4bKinv1", branch)
        return Request(
            "ACK",
            invite.uri,
            [
                ("Via", via),
                ("Max-Forwards", "70"),
                ("From", invite.headers.get("From") or ""),
                ("To", last.message.headers.get("To") or ""),
                ("Call-ID", invite.call_id),
                ("CSeq", f"{invite.cseq.seq} ACK"),
            ],
        )


def test_100_trying_is_sent_when_the_user_is_silent_for_200_ms() -> None:
    """§17.2.1: the transaction answers 100 Trying if the TU has not answered in 200 ms."""
    h = Harness()
    tx = h.start()
    assert tx.state == "proceeding"
    run_for(h.clock, 0.1875)
    assert h.transport.sent == []
    run_for(h.clock, STEP)
    assert h.transport.times(status=100) == [0.25]
    assert h.transport.responses()[0].message.to.tag is None


def test_no_100_trying_when_the_user_answers_quickly() -> None:
    """A provisional from the TU within 200 ms replaces the automatic 100."""
    h = Harness()
    tx = h.start()
    tx.respond(make_response(tx.request, 180, to_tag="t1"))
    run_for(h.clock, 1)
    assert [s.status for s in h.transport.responses()] == [180]


def test_retransmitted_invite_gets_the_last_provisional_without_reaching_the_user() -> None:
    """§17.2.1: INVITE retransmissions in proceeding re-send the latest provisional."""
    h = Harness()
    tx = h.start()
    h.receive(h.invite)  # before any response: nothing to send
    assert h.transport.sent == []
    tx.respond(make_response(tx.request, 180, to_tag="t1"))
    h.receive(h.invite)
    assert [s.status for s in h.transport.responses()] == [180, 180]
    assert len(h.user.requests) == 1


def test_failure_response_is_retransmitted_by_timer_g_until_timer_h() -> None:
    """Timer G: 0, .5, 1.5, 3.5, 7.5, 11.5, ... 31.5 (capped at T2); Timer H ends at 32 s."""
    h = Harness()
    tx = h.start()
    tx.respond(make_response(tx.request, 486, to_tag="t1"))
    assert tx.state == "completed"
    run_for(h.clock, 40)
    assert h.transport.times(status=486) == [
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
    assert tx.state == "terminated"
    assert [(t, reason) for t, reason in h.user.failures] == [(tx, "timer H")]
    assert_quiescent(h.clock, h.layer)


def test_ack_confirms_absorbs_retransmissions_and_timer_i_ends_it() -> None:
    """ACK in completed -> confirmed; G/H stop; further ACKs absorbed for T4."""
    h = Harness()
    tx = h.start()
    tx.respond(make_response(tx.request, 603, to_tag="t1"))
    run_for(h.clock, 1)
    h.receive(h.ack(tx))
    assert tx.state == "confirmed"
    h.receive(h.ack(tx))
    h.receive(h.invite)  # a late INVITE retransmission is absorbed too
    run_for(h.clock, 4.9375)
    assert tx.state == "confirmed"
    run_for(h.clock, STEP)
    assert tx.state == "terminated"
    assert h.transport.times(status=603) == [0, 0.5]
    assert h.user.acks == []
    assert h.user.failures == []
    assert_quiescent(h.clock, h.layer)


def test_retransmitted_invite_in_completed_gets_the_final_response_again() -> None:
    """§17.2.1: INVITE retransmission in completed re-sends the final response."""
    h = Harness()
    tx = h.start()
    tx.respond(make_response(tx.request, 486, to_tag="t1"))
    run_for(h.clock, 0.25)
    h.receive(h.invite)
    assert h.transport.times(status=486) == [0, 0.25]
    assert len(h.user.requests) == 1


def test_2xx_moves_to_accepted_where_acks_reach_the_user_until_timer_l() -> None:
    """RFC 6026: 2xx -> accepted; INVITEs absorbed, ACKs to the TU, TU 2xx re-sent; L at 32 s."""
    h = Harness()
    tx = h.start()
    ok = make_response(tx.request, 200, to_tag="t1")
    tx.respond(ok)
    assert tx.state == "accepted"
    h.receive(h.invite)
    assert len(h.transport.responses()) == 1  # no automatic 2xx retransmission
    assert len(h.user.requests) == 1
    run_for(h.clock, 0.5)
    tx.respond(ok)  # the UA core retransmits its 2xx (§13.3.1.4)
    assert h.transport.times(status=200) == [0, 0.5]
    h.receive(h.ack(tx, branch="z9hG4bKack2"))
    h.receive(h.ack(tx))  # even with the INVITE's branch, it goes to the TU
    assert len(h.user.acks) == 2
    tx.respond(make_response(tx.request, 486, to_tag="t1"))  # refused
    assert h.transport.times(status=486) == []
    run_for(h.clock, 31.4375)
    assert tx.state == "accepted"
    run_for(h.clock, STEP)
    assert tx.state == "terminated"
    assert_quiescent(h.clock, h.layer)
    h.receive(h.ack(tx, branch="z9hG4bKack3"))
    assert len(h.user.acks) == 3  # after Timer L, ACKs match nothing: TU


def test_reliable_transport_has_no_timer_g_and_timer_i_is_zero() -> None:
    """TCP: the 486 is sent once; the ACK terminates at once."""
    h = Harness(TCP_VIA)
    tx = h.start()
    tx.respond(make_response(tx.request, 486, to_tag="t1"))
    run_for(h.clock, 10)
    assert h.transport.times(status=486) == [0]
    h.receive(h.ack(tx))
    assert tx.state == "terminated"
    assert_quiescent(h.clock, h.layer)


def test_reliable_transport_keeps_timer_h() -> None:
    """TCP: without an ACK, Timer H still ends the transaction at 64*T1."""
    h = Harness(TCP_VIA)
    tx = h.start()
    tx.respond(make_response(tx.request, 486, to_tag="t1"))
    run_for(h.clock, 31.9375)
    assert tx.state == "completed"
    run_for(h.clock, STEP)
    assert tx.state == "terminated"
    assert h.user.failures == [(tx, "timer H")]
    assert_quiescent(h.clock, h.layer)


def test_transport_error_while_responding_terminates_and_tells_the_user() -> None:
    """§17.2.4: a transport failure sending a response fails the transaction."""
    h = Harness()
    tx = h.start()
    h.transport.fail = True
    tx.respond(make_response(tx.request, 486, to_tag="t1"))
    assert tx.state == "terminated"
    assert h.user.failures == [(tx, "transport error")]
    assert_quiescent(h.clock, h.layer)


def test_responses_in_completed_are_refused() -> None:
    """Once a final response is sent, the TU cannot send another."""
    h = Harness()
    tx = h.start()
    tx.respond(make_response(tx.request, 486, to_tag="t1"))
    tx.respond(make_response(tx.request, 200, to_tag="t1"))
    assert h.transport.times(status=200) == []
    assert tx.state == "completed"
