"""
What a transaction keeps while it lingers (Timers D, I, J: up to 64*T1): the octets it may
send again, never the parsed messages (a dozen GC-tracked objects each, R*32 s of them at a
rate R).  Each test shows the same octets re-sent after the messages were let go, and that
the transaction no longer references them.
"""

from __future__ import annotations

import gc

import pytest

from clicktodial.config import parse_config
from clicktodial.sip.address import Destination, Source
from clicktodial.sip.message import Message, Request, Response, make_response
from clicktodial.sip.parser import parse_message
from clicktodial.sip.transactions import (
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteServerTransaction,
    RequestReleased,
    TransactionLayer,
)
from clicktodial.sip.transactions.base import Transaction
from clicktodial.sip.transport import SIPTransportLayer
from clicktodial.testing.sipfakes import (
    RecordingUser,
    TransactionHarness,
    run_for,
    sip_request,
)
from clicktodial.testing.transport import FakeReactor

PEER_UDP = Destination("UDP", "127.0.0.1", 5070)


def holds_no_message(tx: Transaction) -> bool:
    """Whether none of ``tx``'s slots refers to a parsed message."""
    return not any(isinstance(value, Message) for value in gc.get_referents(tx))


def referenced_by(message: Message, tx: Transaction) -> bool:
    return any(referrer is tx for referrer in gc.get_referrers(message))


def test_non_invite_server_in_completed_resends_the_same_octets_without_the_response() -> None:
    """§17.2.2 completed (Timer J): a retransmitted request gets the final response's
    octets again, byte for byte; the transaction keeps neither the request nor the
    response, only the octets (and its plain last_status)."""
    h = TransactionHarness()
    request = sip_request("OPTIONS", via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKopt1")
    h.receive(request)
    [(tx, _)] = h.user.requests
    assert isinstance(tx, NonInviteServerTransaction)
    response = make_response(tx.request, 200, to_tag="t1")
    response.headers.add("Server", "lingering-test")
    tx.respond(response)
    assert tx.state == "completed"
    [first] = h.transport.sent
    h.transport.clear()
    assert not referenced_by(response, tx)
    assert holds_no_message(tx)
    assert tx.last_status == 200
    h.receive(request)
    h.receive(request)
    assert [sent.data for sent in h.transport.sent] == [first.data, first.data]
    assert all(sent.message is not response for sent in h.transport.sent)
    assert holds_no_message(tx)
    assert len(h.user.requests) == 1


def test_a_408_to_a_non_invite_leaves_nothing_to_resend() -> None:
    """RFC 4320 §4.1: the 408 is never sent, so retransmissions get nothing."""
    h = TransactionHarness()
    request = sip_request("OPTIONS", via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKopt2")
    h.receive(request)
    [(tx, _)] = h.user.requests
    tx.respond(make_response(tx.request, 408, to_tag="t1"))
    h.receive(request)
    assert h.transport.sent == []
    assert tx.last_status == 0
    assert holds_no_message(tx)


def test_invite_client_in_completed_resends_the_same_ack_without_keeping_it() -> None:
    """§17.1.1.2 completed (Timer D): each retransmitted 300-699 gets the ACK's octets
    again; the transaction keeps the octets, not the ACK nor the INVITE."""
    h = TransactionHarness()
    invite = sip_request("INVITE")
    tx = h.layer.send_request(invite, PEER_UDP, lambda response: None)
    assert isinstance(tx, InviteClientTransaction)
    h.reply(invite, 486)
    assert tx.state == "completed"
    [ack] = h.transport.requests("ACK")
    ack_message = ack.message
    h.transport.clear()
    assert not referenced_by(ack_message, tx)
    assert not referenced_by(invite, tx)
    assert holds_no_message(tx)
    h.reply(invite, 486)
    h.reply(invite, 486)
    assert [sent.data for sent in h.transport.sent] == [ack.data, ack.data]
    assert [sent.where for sent in h.transport.sent] == [PEER_UDP, PEER_UDP]
    assert h.layer.counts.requests_sent == 2
    assert holds_no_message(tx)


def test_invite_server_resends_its_final_octets_then_lets_go_of_everything_once_confirmed() -> None:
    """§17.2.1 completed: Timer G and a retransmitted INVITE send the final response's
    octets again; confirmed (Timer I) keeps no message at all, yet an RFC 2543 ACK and a
    CANCEL still find what they need (last_status, last_to_tag)."""
    h = TransactionHarness()
    invite = sip_request("INVITE", via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv9")
    h.receive(invite)
    [(tx, _)] = h.user.requests
    assert isinstance(tx, InviteServerTransaction)
    busy = make_response(tx.request, 486, to_tag="t486")
    tx.respond(busy)
    [first] = h.transport.sent
    h.transport.clear()
    assert not referenced_by(busy, tx)
    run_for(h.clock, 0.6)  # Timer G at 0.5
    h.receive(invite)
    assert [sent.data for sent in h.transport.sent] == [first.data, first.data]
    assert (tx.last_status, tx.last_to_tag) == (486, "t486")
    ack = parse_message(first.data)
    assert isinstance(ack, Response)
    h.receive(
        Request(
            "ACK",
            invite.uri,
            [
                ("Via", invite.headers.get_all("Via")[0]),
                ("From", invite.headers.get("From") or ""),
                ("To", ack.headers.get("To") or ""),
                ("Call-ID", invite.call_id),
                ("CSeq", f"{invite.cseq.seq} ACK"),
                ("Max-Forwards", "70"),
            ],
        )
    )
    assert tx.state == "confirmed"
    assert holds_no_message(tx)
    with pytest.raises(RequestReleased):
        tx.request  # noqa: B018
    h.transport.clear()
    h.receive(invite)  # absorbed in confirmed
    assert h.transport.sent == []


def test_through_the_real_transport_the_resent_datagram_is_the_first_one() -> None:
    """Over SIPTransportLayer (its Via routing, its tap-free datagram path), the final
    response to a retransmitted request and the ACK for a retransmitted 486 leave as the
    very datagrams first sent."""
    reactor = FakeReactor()
    config = parse_config("[sip]\ndomain = 127.0.0.1\nlisten = 127.0.0.1:5060\n", "x.ini").sip
    transport = SIPTransportLayer(reactor, config)
    transport.startService()
    user = RecordingUser()
    layer = TransactionLayer(reactor, transport, user)
    transport.connect(layer)
    [port] = reactor.udp_ports
    source = Source("UDP", "127.0.0.1", 5070, "127.0.0.1", 5060)
    options = sip_request("OPTIONS", via="SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bKo3")

    def receive() -> None:
        parsed = parse_message(options.serialize())
        assert isinstance(parsed, Request)
        layer.request_received(parsed, source)

    receive()
    [(tx, _)] = user.requests
    tx.respond(make_response(tx.request, 200, to_tag="t1"))
    first = port.take()
    receive()
    assert port.take() == first

    invite = sip_request("INVITE")
    layer.send_request(invite, PEER_UDP, lambda response: None)
    port.take()
    busy = parse_message(make_response(invite, 486, to_tag="b1").serialize())
    assert isinstance(busy, Response)
    layer.response_received(busy, None)
    [ack] = port.take()
    again = parse_message(make_response(invite, 486, to_tag="b1").serialize())
    assert isinstance(again, Response)
    layer.response_received(again, None)
    assert port.take() == [ack]
    layer.terminate_all()
    transport.stopService()
