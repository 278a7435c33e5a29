"""
Matching requests to server transactions (RFC 3261 §17.2.3, with the RFC 2543
fallback), CANCEL handling (§9.2), ACK routing and stray responses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clicktodial.sip.address import Source
from clicktodial.sip.message import Request, make_response
from clicktodial.sip.transactions import (
    InviteServerTransaction,
    ServerTransaction,
    has_rfc3261_branch,
)
from clicktodial.testing.sipfakes import (
    TransactionHarness,
    assert_quiescent,
    in_transaction,
    run_for,
    sip_request,
)

TORTURE = Path(__file__).parent.parent / "data" / "rfc4475"
SOURCE = Source("UDP", "127.0.0.1", 5080, "127.0.0.1", 5060)
VIA = "SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKm1;rport"


class Harness(TransactionHarness):
    def statuses(self, method: str | None = None) -> list[int | None]:
        return [s.status for s in self.transport.responses() if method in (None, s.method)]


def test_same_branch_from_another_sent_by_is_another_transaction() -> None:
    """§17.2.3: the key is branch + sent-by + method."""
    h = Harness()
    h.receive(sip_request("OPTIONS", via=VIA, call_id="c1"))
    h.receive(sip_request("OPTIONS", via=VIA.replace("5080", "5081"), call_id="c1"))
    h.receive(sip_request("INFO", via=VIA, call_id="c1"))
    assert len(h.user.requests) == 3
    assert h.layer.active_count == 3


def test_cancel_of_a_pending_invite_gets_200_and_the_user_answers_487() -> None:
    """§9.2: CANCEL matching a proceeding INVITE -> 200 from the layer, cancel_received."""
    h = Harness()
    invite = sip_request("INVITE", via=VIA)
    h.receive(invite)
    itx = h.user.requests[0][0]
    itx.respond(make_response(itx.request, 180, to_tag="t9"))
    h.receive(in_transaction(invite, "CANCEL"))
    assert h.user.cancels == [itx]
    assert len(h.user.requests) == 1  # the CANCEL never reaches request_received
    assert h.statuses("CANCEL") == [200]
    cancel_200 = [s.message for s in h.transport.responses(200)][0]
    assert cancel_200.to.tag == "t9"  # §9.2: same To tag as the INVITE's response
    h.receive(in_transaction(invite, "CANCEL"))  # sent again: 200 again, TU not told twice
    assert h.statuses("CANCEL") == [200, 200]
    assert len(h.user.cancels) == 1
    itx.respond(make_response(itx.request, 487, to_tag="t9"))
    h.receive(in_transaction(invite, "ACK", f"{invite.headers.get('To')};tag=t9"))
    assert itx.state == "confirmed"
    assert h.user.acks == []
    run_for(h.clock, 40)
    assert_quiescent(h.clock, h.layer)


def test_cancel_after_the_final_response_gets_200_and_has_no_effect() -> None:
    """§9.2: the transaction exists but has answered: 200 to the CANCEL, no cancel_received."""
    h = Harness()
    invite = sip_request("INVITE", via=VIA)
    h.receive(invite)
    itx = h.user.requests[0][0]
    itx.respond(make_response(itx.request, 200, to_tag="t1"))
    h.receive(in_transaction(invite, "CANCEL"))
    assert h.statuses("CANCEL") == [200]
    assert h.user.cancels == []
    assert itx.state == "accepted"


def test_cancel_matching_no_transaction_gets_481() -> None:
    """§9.2: "If the UAS did not find a matching transaction for the CANCEL ... 481"."""
    h = Harness()
    h.receive(in_transaction(sip_request("INVITE", via=VIA), "CANCEL"))
    assert h.statuses() == [481]
    assert h.user.cancels == []
    assert h.user.requests == []
    run_for(h.clock, 40)
    assert_quiescent(h.clock, h.layer)


def test_ack_for_a_2xx_reaches_the_user() -> None:
    """An ACK matching no transaction (a 2xx ACK has its own branch) goes to ack_received."""
    h = Harness()
    h.receive(in_transaction(sip_request("INVITE", via=VIA), "ACK", "<sip:bob@127.0.0.1>;tag=x"))
    assert len(h.user.acks) == 1
    assert h.transport.sent == []
    assert h.layer.active_count == 0


def test_response_matching_no_client_transaction_is_stray() -> None:
    """§17.1.3: an unmatched response goes to stray_response."""
    h = Harness()
    response = make_response(sip_request("INVITE", via=VIA), 200, to_tag="x")
    h.layer.response_received(response, SOURCE)
    assert h.user.strays == [response]


def test_request_with_unreadable_headers_gets_400_statelessly() -> None:
    """A request whose CSeq cannot be read cannot be matched: 400, no transaction."""
    h = Harness()
    request = sip_request("OPTIONS", via=VIA)
    request.headers.set("CSeq", "one OPTIONS")
    h.layer.request_received(request, SOURCE)
    assert [s.status for s in h.transport.sent] == [400]
    assert h.user.requests == []
    assert h.layer.active_count == 0


def test_request_whose_cseq_method_differs_gets_400() -> None:
    """RFC 4475 mismatch01: CSeq method must match the request method."""
    h = Harness()
    request = sip_request("OPTIONS", via=VIA)
    request.headers.set("CSeq", "1 INVITE")
    h.layer.request_received(request, SOURCE)
    assert [s.status for s in h.transport.sent] == [400]
    assert h.layer.active_count == 0


def test_user_failure_is_answered_500() -> None:
    """A TU raising on a new request gets the request a 500, not a traceback out."""
    h = Harness()

    def broken(tx: ServerTransaction, request: Request) -> None:
        raise RuntimeError("bug")

    h.user.answer = broken
    h.receive(sip_request("OPTIONS", via=VIA))
    assert h.statuses() == [500]


def test_rfc2543_invite_is_matched_without_a_branch() -> None:
    """RFC 4475 inv2543.dat: no branch; retransmission and ACK matched the RFC 2543 way."""
    h = Harness()
    data = (TORTURE / "inv2543.dat").read_bytes()
    h.receive(data)
    assert len(h.user.requests) == 1
    itx = h.user.requests[0][0]
    assert isinstance(itx, InviteServerTransaction)
    h.receive(data)  # retransmission: absorbed
    assert len(h.user.requests) == 1
    itx.respond(make_response(itx.request, 486, to_tag="busy1"))
    h.receive(data)  # retransmission in completed: the 486 again
    assert h.statuses() == [486, 486]
    invite = itx.request
    h.receive(in_transaction(invite, "ACK", f"{invite.headers.get('To')};tag=other"))
    assert itx.state == "completed"  # To tag is not the response's: not this transaction
    assert len(h.user.acks) == 1
    h.receive(in_transaction(invite, "ACK", f"{invite.headers.get('To')};tag=busy1"))
    assert itx.state == "confirmed"
    run_for(h.clock, 10)
    assert_quiescent(h.clock, h.layer)


def test_rfc2543_cancel_matches_its_invite() -> None:
    """§9.2 with RFC 2543 matching: a CANCEL without branch finds its INVITE."""
    h = Harness()
    data = (TORTURE / "inv2543.dat").read_bytes()
    h.receive(data)
    itx = h.user.requests[0][0]
    h.receive(in_transaction(itx.request, "CANCEL"))
    assert h.user.cancels == [itx]
    assert h.statuses("CANCEL") == [200]


@pytest.mark.parametrize("branch", ["z9hG4bK", None, "1234"])
def test_branch_without_an_rfc3261_identifier_is_not_a_key(branch: str | None) -> None:
    """A branch that is only the magic cookie (badbranch.dat) is not used as a key."""
    assert not has_rfc3261_branch(branch)
    assert has_rfc3261_branch("z9hG4bKx")


def test_badbranch_torture_request_uses_rfc2543_matching() -> None:
    """RFC 4475 badbranch.dat: processed normally; two such requests never collide."""
    h = Harness()
    data = (TORTURE / "badbranch.dat").read_bytes()
    h.receive(data)
    h.receive(data)  # retransmission: absorbed
    assert len(h.user.requests) == 1
    h.receive(data.replace(b"badbranch.sadonfo23i420jv0as0derf3j3n", b"another-call"))
    assert len(h.user.requests) == 2
    h.user.requests[0][0].respond(make_response(h.user.requests[0][1], 200, to_tag="t"))
    h.receive(data)
    assert h.statuses() == [200, 200]


def test_terminate_all_leaves_no_transaction_and_no_timer() -> None:
    """At shutdown every transaction can be ended at once, timers cancelled."""
    h = Harness()
    h.receive(sip_request("INVITE", via=VIA))
    h.receive(sip_request("OPTIONS", via=VIA.replace("m1", "m2")))
    h.user.requests[1][0].respond(make_response(h.user.requests[1][1], 200, to_tag="t"))
    h.layer.send_request(sip_request("MESSAGE"), SOURCE.reply_destination(), lambda r: None)
    assert h.layer.terminate_all() == 3
    assert_quiescent(h.clock, h.layer)
