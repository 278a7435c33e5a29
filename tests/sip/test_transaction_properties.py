"""
Property tests: any sequence of inputs a peer, the TU, the transport and the
clock can produce drives each machine without an exception, passes at most one
final response (ignoring RFC 6026 2xx retransmissions) up, and leaves no timer
behind once the machine has terminated.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from clicktodial.sip.address import Destination, Source
from clicktodial.sip.message import Request, Response, make_response
from clicktodial.sip.transactions import ClientTransaction, ServerTransaction, TransactionLayer
from clicktodial.testing.sipfakes import (
    RecordingTransport,
    RecordingUser,
    assert_quiescent,
    run_for,
    sip_request,
)

STATUSES = st.sampled_from([100, 180, 183, 200, 202, 302, 404, 408, 486, 500, 603])
SOURCE = Source("UDP", "127.0.0.1", 5080, "127.0.0.1", 5060)

client_events = st.lists(
    st.one_of(
        st.tuples(st.just("response"), STATUSES),
        st.tuples(st.just("wait"), st.sampled_from([0.0625, 0.5, 2.0, 10.0])),
        st.tuples(st.just("fail"), st.booleans()),
    ),
    max_size=25,
)

server_events = st.lists(
    st.one_of(
        st.tuples(st.just("respond"), STATUSES),
        st.tuples(st.just("retransmit"), st.just(0)),
        st.tuples(st.just("ack"), st.just(0)),
        st.tuples(st.just("cancel"), st.just(0)),
        st.tuples(st.just("wait"), st.sampled_from([0.0625, 0.5, 2.0, 10.0])),
        st.tuples(st.just("fail"), st.booleans()),
    ),
    max_size=25,
)


def _finals(responses: list[Response]) -> list[int]:
    return [r.status for r in responses if r.status >= 300 or r.status in (200, 202)]


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "OPTIONS"]),
    transport=st.sampled_from(["UDP", "TCP"]),
    events=client_events,
)
def test_client_machines_survive_any_input_sequence(
    method: str, transport: str, events: list[tuple[str, object]]
) -> None:
    """Client machines never raise, pass up one non-2xx final at most, and clean up."""
    clock = Clock()
    sent = RecordingTransport(clock)
    layer = TransactionLayer(clock, sent, RecordingUser())
    got: list[Response] = []
    request = sip_request(method)
    tx: ClientTransaction = layer.send_request(
        request, Destination(transport, "127.0.0.1", 5070), got.append
    )
    for kind, value in events:
        if kind == "response":
            assert isinstance(value, int)
            layer.response_received(make_response(request, value, to_tag="b"), SOURCE)
        elif kind == "wait":
            assert isinstance(value, float)
            run_for(clock, value)
        else:
            sent.fail = bool(value)
    run_for(clock, 70, step=0.25)
    non_2xx_finals = [s for s in _finals(got) if s >= 300]
    assert len(non_2xx_finals) <= 1
    if method != "INVITE":
        assert len(_finals(got)) <= 1
    if tx.state == "proceeding":  # INVITE waiting for a final: only the TU ends it
        assert method == "INVITE"
        tx.terminate()
    assert tx.state == "terminated"
    assert_quiescent(clock, layer)


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "MESSAGE"]),
    transport=st.sampled_from(["UDP", "TCP"]),
    events=server_events,
)
def test_server_machines_survive_any_input_sequence(
    method: str, transport: str, events: list[tuple[str, object]]
) -> None:
    """Server machines never raise, reach the TU once, and clean up after a final response."""
    # (A 2xx retransmitted by the UA core is not modelled: the INVITE final is sent once.)
    clock = Clock()
    sent = RecordingTransport(clock)
    user = RecordingUser()
    layer = TransactionLayer(clock, sent, user)
    request = sip_request(
        method,
        "sip:bob@127.0.0.1:5060",
        via=f"SIP/2.0/{transport} 127.0.0.1:5080;branch=z9hG4bKprop",
    )
    layer.request_received(request, SOURCE)
    tx: ServerTransaction = user.requests[0][0]
    new_requests = 0
    for kind, value in events:
        if kind == "respond":
            assert isinstance(value, int)
            tx.respond(make_response(request, value, to_tag="t"))
        elif kind == "retransmit":
            if user.requests[-1][0].state == "terminated":
                new_requests += 1  # the transaction is gone: this is a new request
            layer.request_received(
                sip_request(
                    method,
                    "sip:bob@127.0.0.1:5060",
                    call_id=request.call_id,
                    via=request.headers.get("Via"),
                ),
                SOURCE,
            )
        elif kind == "ack":
            layer.request_received(_ack(request), SOURCE)
        elif kind == "cancel":
            layer.request_received(_cancel(request), SOURCE)
        elif kind == "wait":
            assert isinstance(value, float)
            run_for(clock, value)
        else:
            sent.fail = bool(value)
    # Retransmissions never reach the TU again while the transaction lives
    # (after it terminated, §17.2.3 makes a retransmission a new request).
    assert len(user.requests) == 1 + new_requests
    for other, _ in user.requests[1:]:
        other.respond(make_response(other.request, 500, to_tag="t"))
    if tx.state in ("trying", "proceeding"):
        # No final response yet (a 408 to a non-INVITE is never sent, RFC 4320, but is
        # final: the transaction let go of its request then).
        sent.fail = False
        tx.respond(make_response(tx.request, 500, to_tag="t"))
    sent.fail = False
    run_for(clock, 70, step=0.25)
    assert tx.state == "terminated"
    assert_quiescent(clock, layer)


def _ack(invite: Request) -> Request:
    return Request(
        "ACK",
        invite.uri,
        [
            ("Via", invite.headers.get("Via") or ""),
            ("From", invite.headers.get("From") or ""),
            ("To", f"{invite.headers.get('To')};tag=t"),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.seq} ACK"),
            ("Max-Forwards", "70"),
        ],
    )


def _cancel(invite: Request) -> Request:
    return Request(
        "CANCEL",
        invite.uri,
        [
            ("Via", invite.headers.get("Via") or ""),
            ("From", invite.headers.get("From") or ""),
            ("To", invite.headers.get("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.seq} CANCEL"),
            ("Max-Forwards", "70"),
        ],
    )
