"""
Call traces on the web (docs/web.md, "Call traces"): GET /api/v1/calls/ID/trace as JSON and
text, trace.pcap for administrators, the ladder on the call page, live trace events, who may
see them (the caller, the callee, admins; anyone else 403), and the failure reasons in plain
words for every end reason.
"""

from __future__ import annotations

import io

import dpkt
import pytest

from clicktodial.calls.trace import CallTracer
from clicktodial.sip.parser import parse_message
from clicktodial.store.traces import TraceLimits
from clicktodial.store.values import END_REASONS
from clicktodial.testing.webfakes import WebClient, WebWorld, web_world
from clicktodial.web.trace import CallWording, message_label, plain_reason

LEG = "callee-leg@127.0.0.1"


def sip(first_line: str, extra: str = "", method: str = "INVITE") -> bytes:
    return (
        f"{first_line}\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1\r\n"
        f"From: <sip:alice@example.test>;tag=1\r\nTo: <sip:bob@example.test>\r\n"
        f"Call-ID: {LEG}\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


INVITE = sip("INVITE sip:bob@127.0.0.3:5062 SIP/2.0", "Subject: <script>alert(1)</script>\r\n")
BUSY = sip("SIP/2.0 486 Busy Here")
ACK = sip("ACK sip:bob@127.0.0.3:5062 SIP/2.0", method="ACK")


def feed(tracer: CallTracer, direction: str, data: bytes) -> None:
    tracer.message_passed(
        direction, parse_message(data), data, "UDP", ("127.0.0.1", 5060), ("127.0.0.3", 5062)
    )


def busy_call(world: WebWorld, written: bool = False) -> str:
    """A call from alice (admin) to bob that failed: bob's phone answered 486."""
    world.register("alice")
    world.register("bob")
    info = world.controller.place_call("alice", "bob").result
    tracer = world.app.tracer
    assert tracer is not None
    tracer.watch(info.call_id, LEG, "callee")
    feed(tracer, "out", INVITE)
    world.clock.advance(0.25)
    feed(tracer, "in", BUSY)
    world.clock.advance(0.001)
    feed(tracer, "out", ACK)
    world.controller.advance(info.call_id, "failed", "callee-busy", 486)
    if written:
        tracer.flush()
    return str(info.call_id)


@pytest.fixture
def world() -> WebWorld:
    return web_world(trace=TraceLimits())


def client_for(world: WebWorld, username: str) -> tuple[WebClient, dict[str, str]]:
    token = world.store.create_token(username).result
    return WebClient(world), {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("written", [False, True])
def test_trace_json_has_every_arrow_and_the_reason(world: WebWorld, written: bool) -> None:
    """Buffered or written, the trace is the same: one entry per message, in order."""
    call_id = busy_call(world, written)
    client, auth = client_for(world, "alice")
    reply = client.get(f"/api/v1/calls/{call_id}/trace", headers=auth)
    assert reply.code == 200
    trace = reply.json()
    assert (trace["call_id"], trace["caller"], trace["callee"], trace["dropped"]) == (
        call_id,
        "alice",
        "bob",
        0,
    )
    assert trace["reason"] == "Bob's phone answered 486 Busy Here"
    assert [(m["from"], m["to"], m["label"], m["time_ms"]) for m in trace["messages"]] == [
        ("daemon", "callee", "INVITE", 0),
        ("callee", "daemon", "486 Busy Here", 250),
        ("daemon", "callee", "ACK", 251),
    ]
    first = trace["messages"][0]
    assert (first["transport"], first["local"], first["remote"], first["leg"]) == (
        "UDP",
        "127.0.0.1:5060",
        "127.0.0.3:5062",
        "callee",
    )
    assert first["message"] == INVITE.decode()
    assert first["at"].endswith("Z") and first["retransmission"] is False


def test_the_callee_reads_the_reason_about_their_own_phone(world: WebWorld) -> None:
    call_id = busy_call(world)
    client, auth = client_for(world, "bob")
    trace = client.get(f"/api/v1/calls/{call_id}/trace", headers=auth).json()
    assert trace["reason"] == "Your phone answered 486 Busy Here"


def test_another_user_gets_403_and_an_unknown_call_404(world: WebWorld) -> None:
    call_id = busy_call(world)
    client, auth = client_for(world, "carol")
    for path in (
        f"/api/v1/calls/{call_id}/trace",
        f"/api/v1/calls/{call_id}/trace?format=text",
        f"/api/v1/calls/{call_id}/trace.pcap",
        f"/api/v1/events?trace={call_id}",
    ):
        reply = client.get(path, headers=auth)
        assert reply.code == 403, path
        assert "error" in reply.json()
    client, auth = client_for(world, "alice")
    assert client.get("/api/v1/calls/" + "0" * 32 + "/trace", headers=auth).code == 404
    assert client.get("/api/v1/calls/" + "0" * 32 + "/trace.pcap", headers=auth).code == 404


def test_trace_needs_authentication(world: WebWorld) -> None:
    call_id = busy_call(world)
    assert WebClient(world).get(f"/api/v1/calls/{call_id}/trace").code == 401


def test_trace_as_text_in_the_sipp_trace_msg_style(world: WebWorld) -> None:
    call_id = busy_call(world)
    client, auth = client_for(world, "bob")
    reply = client.get(f"/api/v1/calls/{call_id}/trace?format=text", headers=auth)
    assert reply.code == 200
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    lines = reply.text.split("\n")
    assert lines[0] == f"clicktodial call {call_id}"
    assert lines[1].startswith("-" * 47 + " ") and lines[1].endswith("(+0.000 s)")
    assert lines[2] == (
        f"UDP message sent ({len(INVITE)} bytes) from 127.0.0.1:5060 to"
        " 127.0.0.3:5062, callee's leg:"
    )
    assert lines[4] == "INVITE sip:bob@127.0.0.3:5062 SIP/2.0"
    assert (
        f"UDP message received [{len(BUSY)}] bytes from 127.0.0.3:5062 to 127.0.0.1:5060,"
        " callee's leg:"
    ) in lines
    assert "\r" not in reply.text
    assert client.get(f"/api/v1/calls/{call_id}/trace?format=xml", headers=auth).code == 400


def test_pcap_for_admins_with_synthesized_udp_headers(world: WebWorld) -> None:
    call_id = busy_call(world)
    client, auth = client_for(world, "alice")
    reply = client.get(f"/api/v1/calls/{call_id}/trace.pcap", headers=auth)
    assert reply.code == 200
    assert reply.headers["content-type"] == "application/vnd.tcpdump.pcap"
    assert f'filename="call-{call_id}.pcap"' in reply.headers["content-disposition"]
    packets = []
    for ts, frame in dpkt.pcap.Reader(io.BytesIO(reply.body)):
        ip = dpkt.ethernet.Ethernet(frame).data
        udp = ip.data
        packets.append(
            (round(ts - 1_700_000_000, 3), ip.src, ip.dst, udp.sport, udp.dport, bytes(udp.data))
        )
    here, phone = bytes([127, 0, 0, 1]), bytes([127, 0, 0, 3])
    assert packets == [
        (0.0, here, phone, 5060, 5062, INVITE),
        (0.25, phone, here, 5062, 5060, BUSY),
        (0.251, here, phone, 5060, 5062, ACK),
    ]


def test_pcap_is_refused_to_the_caller_and_callee(world: WebWorld) -> None:
    call_id = busy_call(world)
    client, auth = client_for(world, "bob")
    reply = client.get(f"/api/v1/calls/{call_id}/trace.pcap", headers=auth)
    assert reply.code == 403
    assert "administrators" in reply.json()["error"]


def test_call_page_shows_the_ladder_and_the_reason_escaped(world: WebWorld) -> None:
    call_id = busy_call(world)
    client = WebClient(world)
    client.login("bob")
    page = client.get(f"/calls/{call_id}").text
    assert 'id="trace"' in page and f'data-call-id="{call_id}"' in page
    assert (
        '<p class="trace-reason" id="trace-reason" role="status">'
        "Your phone answered 486 Busy Here</p>" in page
    )
    assert page.count('<li class="msg"') == 3
    assert page.count('class="arrow from-daemon to-callee"') == 2
    assert page.count('class="arrow from-callee to-daemon"') == 1
    assert '<span class="label">486 Busy Here</span>' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert "As text" in page and "trace.pcap" not in page
    client = WebClient(world)
    client.login("alice")
    assert f"/api/v1/calls/{call_id}/trace.pcap" in client.get(f"/calls/{call_id}").text


def test_retransmissions_are_marked_on_the_ladder(world: WebWorld) -> None:
    call_id = busy_call(world)
    assert world.app.tracer is not None
    world.app.tracer.watch(call_id, LEG, "callee")
    feed(world.app.tracer, "in", BUSY)
    client = WebClient(world)
    client.login("bob")
    page = client.get(f"/calls/{call_id}").text
    assert 'class="arrow from-callee to-daemon retransmission"' in page
    assert "486 Busy Here (retransmission)" in page


def test_call_page_of_another_user_is_403(world: WebWorld) -> None:
    call_id = busy_call(world)
    client = WebClient(world)
    client.login("carol")
    reply = client.get(f"/calls/{call_id}")
    assert reply.code == 403
    assert "ladder" not in reply.text


def test_new_messages_are_streamed_to_a_trace_subscription(world: WebWorld) -> None:
    world.register("alice")
    world.register("bob")
    info = world.controller.place_call("alice", "bob").result
    tracer = world.app.tracer
    assert tracer is not None
    tracer.watch(info.call_id, LEG, "callee")
    client, auth = client_for(world, "bob")
    reply = client.request("GET", f"/api/v1/events?trace={info.call_id}", headers=auth, stream=True)
    assert reply.code == 200
    feed(tracer, "out", INVITE)
    streamed = client.streamed().decode()
    assert "event: trace\n" in streamed
    assert '"label":"INVITE"' in streamed and f'"call_id":"{info.call_id}"' in streamed


# -- plain words ----------------------------------------------------------------------------

WORDING = CallWording(ring_timeout=30, callee_ring_timeout=60, max_duration=14400)

#: Every end reason (store vocabulary), with a status the controller records with it, and
#: what the caller (alice) reads.
CASES: dict[str, tuple[int | None, str, str]] = {
    "caller-hangup": (None, "caller", "You hung up"),
    "callee-hangup": (None, "callee", "Bob hung up"),
    "caller-no-answer": (408, "system", "Your phone did not answer within 30 s"),
    "caller-rejected": (603, "caller", "Your phone declined the call (603 Decline)"),
    "caller-busy": (486, "caller", "Your phone answered 486 Busy Here"),
    "caller-unreachable": (
        480,
        "system",
        "Your phone is not registered: there was nothing to ring (480 Temporarily Unavailable)",
    ),
    "callee-no-answer": (408, "system", "Bob's phone did not answer within 60 s"),
    "callee-busy": (486, "callee", "Bob's phone answered 486 Busy Here"),
    "callee-rejected": (603, "callee", "Bob's phone declined the call (603 Decline)"),
    "callee-unreachable": (
        408,
        "system",
        "Bob's phone did not respond: it may be off or unreachable (408 Request Timeout)",
    ),
    "cancelled": (None, "caller", "You cancelled the call"),
    "max-duration": (None, "system", "The call reached the longest allowed duration (4 h)"),
    "timeout": (
        481,
        "system",
        "A phone no longer knew the call (481 Call/Transaction Does Not Exist)",
    ),
    "error": (488, "system", "The phones share no codec (488)"),
    "lost": (None, "system", "The daemon running the call stopped during the call"),
    "media-relay-failed": (500, "system", "The media relay refused the call or did not answer"),
    "no-trunk": (None, "system", "No trunk is configured to call this number"),
    "refused": (None, "system", "The dial plan refused the number"),
}


def test_every_end_reason_has_words() -> None:
    """A new end reason fails here until it has its words."""
    assert set(CASES) == set(END_REASONS)


@pytest.mark.parametrize("reason", sorted(CASES))
def test_failure_reason_in_plain_words(reason: str) -> None:
    status, who, words = CASES[reason]
    state = "ended" if reason in ("caller-hangup", "callee-hangup", "max-duration") else "failed"
    assert (
        plain_reason(
            caller="alice",
            callee="bob",
            state=state,
            end_reason=reason,
            sip_status=status,
            who_hung_up=who,
            viewer="alice",
            wording=WORDING,
        )
        == words
    )


@pytest.mark.parametrize(
    ("reason", "status", "words"),
    [
        ("callee-no-answer", 480, "Bob's phone was not answered (480 Temporarily Unavailable)"),
        (
            "callee-unreachable",
            480,
            "Bob's phone is not registered: there was nothing to ring"
            " (480 Temporarily Unavailable)",
        ),
        ("timeout", 408, "A phone stopped responding (408 Request Timeout)"),
        ("error", 500, "The phones could not be connected (500 Server Internal Error)"),
        ("cancelled", None, "The call was cancelled (by an administrator or at shutdown)"),
    ],
)
def test_failure_reason_variants(reason: str, status: int | None, words: str) -> None:
    who = "system"
    assert (
        plain_reason(
            caller="alice",
            callee="bob",
            state="failed",
            end_reason=reason,
            sip_status=status,
            who_hung_up=who,
            viewer="alice",
            wording=WORDING,
        )
        == words
    )


def test_an_admin_reads_both_phones_by_name() -> None:
    assert (
        plain_reason(
            caller="alice",
            callee="bob",
            state="failed",
            end_reason="caller-busy",
            sip_status=486,
            who_hung_up="caller",
            viewer="carol",
            wording=WORDING,
        )
        == "Alice's phone answered 486 Busy Here"
    )


def test_no_reason_while_the_call_is_in_progress() -> None:
    assert (
        plain_reason(
            caller="alice",
            callee="bob",
            state="connected",
            end_reason=None,
            sip_status=None,
            who_hung_up=None,
            viewer="alice",
            wording=WORDING,
        )
        is None
    )


@pytest.mark.parametrize(
    ("data", "label"),
    [
        (b"INVITE sip:x SIP/2.0\r\n", "INVITE"),
        (b"SIP/2.0 486 Busy Here\r\n", "486 Busy Here"),
        (b"SIP/2.0 180 Ringing", "180 Ringing"),
    ],
)
def test_arrow_labels(data: bytes, label: str) -> None:
    assert message_label(data) == label
