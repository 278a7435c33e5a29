"""
Call traces (docs/calls.md, "Call traces"): what the tracer keeps of a call's SIP messages
(both legs, direction, addresses, time, retransmissions, redaction), its bounds, how it
writes (all calls at once, never per message), lingering and retention; the transport tap;
``[calls] trace`` at start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from clicktodial.calls.trace import CallTracer, TraceUnavailable, build_tracer, redact
from clicktodial.config import parse_config
from clicktodial.interfaces import ICallTraceStore
from clicktodial.sip.address import Destination
from clicktodial.sip.interfaces import IMessageHandler, ISIPTap
from clicktodial.sip.message import Request, Response
from clicktodial.sip.parser import parse_message
from clicktodial.store.memory import MemoryStore
from clicktodial.store.traces import CallTrace, MemoryTraces, TraceAppend, TraceLimits
from clicktodial.testing.callfakes import CallWorld
from clicktodial.testing.fakes import InlineThreadPool, success_result_of
from clicktodial.testing.transport import FakeReactor
from clicktodial.testing.uafakes import Answer, sdp

CALL = "a" * 32
OTHER = "b" * 32


@implementer(ICallTraceStore)
class SpyTraceStore:
    """A trace store that counts its writes; its writes wait until released if ``hold``."""

    def __init__(self, hold: bool = False) -> None:
        self.traces = MemoryTraces()
        self.writes: list[list[TraceAppend]] = []
        self.hold = hold
        self.held: list[Deferred[None]] = []
        self.purged: list[float] = []

    def append_traces(self, appends: Sequence[TraceAppend], limits: TraceLimits) -> Deferred[None]:
        self.writes.append(list(appends))
        if self.hold:
            # Stored when released, as a database write commits.
            d: Deferred[None] = Deferred()
            d.addCallback(lambda _: self.traces.append(appends, limits))
            self.held.append(d)
            return d
        self.traces.append(appends, limits)
        return succeed(None)

    def get_trace(self, call_id: str) -> Deferred[CallTrace | None]:
        return succeed(self.traces.get(call_id))

    def purge_traces(self, before: float) -> Deferred[int]:
        self.purged.append(before)
        return succeed(self.traces.purge(before))


def message(
    call_id: str = "leg-1@127.0.0.1", method: str = "INVITE", extra: str = "", body: bytes = b""
) -> tuple[Request, bytes]:
    data = (
        f"{method} sip:bob@127.0.0.3 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1\r\n"
        f"From: <sip:alice@example.test>;tag=1\r\nTo: <sip:bob@example.test>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    parsed = parse_message(data)
    assert isinstance(parsed, Request)
    return parsed, data


def tracer(
    store: Any = None, limits: TraceLimits | None = None, clock: Clock | None = None
) -> tuple[CallTracer, Any, Clock]:
    clock = clock or Clock()
    clock.advance(1_700_000_000.25)
    store = store if store is not None else SpyTraceStore()
    return CallTracer(clock, store, limits or TraceLimits(), linger=32.0), store, clock


def passed(t: CallTracer, direction: str, msg: tuple[Request | Response, bytes]) -> None:
    t.message_passed(direction, msg[0], msg[1], "UDP", ("127.0.0.1", 5060), ("127.0.0.3", 5062))


# -- the tracer ----------------------------------------------------------------------------


def test_tracer_is_a_sip_tap() -> None:
    t, _, _ = tracer()
    assert verifyObject(ISIPTap, t)


def test_only_watched_call_ids_are_kept() -> None:
    """Messages of Call-IDs no call watches (REGISTER, OPTIONS, other calls) are ignored."""
    t, store, clock = tracer()
    t.watch(CALL, "leg-1@127.0.0.1", "callee")
    passed(t, "out", message("leg-1@127.0.0.1"))
    passed(t, "in", message("register-1@phone", "REGISTER"))
    trace = success_result_of(t.trace(CALL))
    [kept] = trace.messages
    assert (kept.direction, kept.leg, kept.sip_call_id, kept.transport) == (
        "out",
        "callee",
        "leg-1@127.0.0.1",
        "UDP",
    )
    assert (kept.local_host, kept.local_port, kept.remote_host, kept.remote_port) == (
        "127.0.0.1",
        5060,
        "127.0.0.3",
        5062,
    )
    assert kept.at_ms == 1_700_000_000_250
    assert kept.data == message("leg-1@127.0.0.1")[1]
    assert success_result_of(t.trace(OTHER)) is None


def test_same_octets_again_in_the_same_direction_are_a_retransmission() -> None:
    t, _, clock = tracer()
    t.watch(CALL, "leg-1@127.0.0.1", "caller")
    invite = message("leg-1@127.0.0.1")
    passed(t, "out", invite)
    clock.advance(0.5)
    passed(t, "out", invite)
    passed(t, "in", invite)  # the same octets the other way are not a copy of ours
    flags = [m.retransmission for m in success_result_of(t.trace(CALL)).messages]
    assert flags == [False, True, False]


def test_retransmission_keys_are_forgotten_once_no_transaction_can_resend() -> None:
    """After linger (64*T1) without a message, a held call keeps no keys; a message after
    that is not taken for a retransmission of one before."""
    t, store, clock = tracer()
    t.start()
    t.watch(CALL, "leg-1@127.0.0.1", "caller")
    options = message("leg-1@127.0.0.1", "OPTIONS")
    passed(t, "out", options)
    clock.pump([1.0] * 31)
    passed(t, "out", options)
    clock.pump([1.0] * 65)  # quiet calls are looked at every linger (32 s)
    passed(t, "out", options)
    success_result_of(t.flush())
    flags = [m.retransmission for m in store.traces.get(CALL).messages]
    assert flags == [False, True, False]
    success_result_of(t.stop())


def test_credentials_are_redacted() -> None:
    """Authorization and Proxy-Authorization values (with continuation lines) are replaced;
    other headers and the body are kept."""
    data = (
        b'INVITE sip:bob@x SIP/2.0\r\nAuthorization: Digest username="alice",\r\n'
        b' response="0123456789abcdef"\r\nproxy-authorization :Digest nonce="n",'
        b' response="fedcba"\r\nSubject: Authorization: keep\r\n'
        b"Content-Length: 26\r\n\r\nAuthorization: in the body"
    )
    redacted = redact(data)
    assert b"0123456789abcdef" not in redacted and b"fedcba" not in redacted
    assert b"Authorization: <redacted>\r\n" in redacted
    assert b"proxy-authorization : <redacted>\r\n" in redacted
    assert b"Subject: Authorization: keep\r\n" in redacted
    assert redacted.endswith(b"\r\n\r\nAuthorization: in the body")
    assert redact(b"OPTIONS sip:x SIP/2.0\r\n\r\n") == b"OPTIONS sip:x SIP/2.0\r\n\r\n"


def test_traced_messages_are_redacted() -> None:
    t, _, _ = tracer()
    t.watch(CALL, "leg-1@127.0.0.1", "caller")
    passed(
        t,
        "out",
        message("leg-1@127.0.0.1", extra='Proxy-Authorization: Digest response="secret"\r\n'),
    )
    [kept] = success_result_of(t.trace(CALL)).messages
    assert b"secret" not in kept.data
    assert b"Proxy-Authorization: <redacted>" in kept.data


def test_message_bound_counts_the_rest_as_dropped() -> None:
    t, store, _ = tracer(limits=TraceLimits(max_messages=3, max_bytes=1_000_000))
    t.watch(CALL, "leg-1@127.0.0.1", "caller")
    for i in range(5):
        passed(t, "out", message("leg-1@127.0.0.1", body=b"x" * i))
    trace = success_result_of(t.trace(CALL))
    assert (len(trace.messages), trace.dropped) == (3, 2)
    success_result_of(t.flush())
    passed(t, "out", message("leg-1@127.0.0.1", body=b"late"))
    success_result_of(t.flush())
    stored = store.traces.get(CALL)
    assert (len(stored.messages), stored.dropped) == (3, 3)


def test_byte_bound_keeps_a_prefix() -> None:
    """The first message over trace_max_kb is dropped and so is every later one."""
    small = message("leg-1@127.0.0.1")
    limit = len(small[1]) * 2 + 10
    t, _, _ = tracer(limits=TraceLimits(max_messages=100, max_bytes=limit))
    t.watch(CALL, "leg-1@127.0.0.1", "caller")
    passed(t, "out", small)
    passed(t, "out", message("leg-1@127.0.0.1", body=b"x" * 100))
    passed(t, "out", small)
    trace = success_result_of(t.trace(CALL))
    assert (len(trace.messages), trace.dropped) == (1, 2)


def test_messages_are_written_for_all_calls_at_once_never_per_message() -> None:
    """Calls that end together are written in one store call, each call's messages once."""
    t, store, clock = tracer()
    t.start()
    t.watch(CALL, "leg-1@127.0.0.1", "caller")
    t.watch(OTHER, "leg-2@127.0.0.1", "caller")
    for _ in range(10):
        passed(t, "out", message("leg-1@127.0.0.1"))
        passed(t, "in", message("leg-2@127.0.0.1"))
    t.call_over(CALL)
    t.call_over(OTHER)
    clock.pump([0.5] * 3)
    assert store.writes == []  # the BYE's answer may still come: 2 s settle
    passed(t, "in", message("leg-1@127.0.0.1", "BYE"))
    clock.pump([0.5] * 2)
    [batch] = store.writes
    assert {(a.call_id, len(a.messages)) for a in batch} == {(CALL, 11), (OTHER, 10)}
    clock.pump([1.0] * 5)
    assert len(store.writes) == 1  # nothing new: no write
    success_result_of(t.stop())


def test_a_long_calls_messages_are_written_after_max_age() -> None:
    """A call in progress is written when its oldest buffered message is max_age old."""
    t, store, clock = tracer()
    t.start()
    t.watch(CALL, "leg-1@127.0.0.1", "caller")
    passed(t, "out", message("leg-1@127.0.0.1"))
    clock.pump([1.0] * 4)
    passed(t, "in", message("leg-1@127.0.0.1", "OPTIONS"))
    assert store.writes == []
    clock.pump([1.0])
    [[append]] = store.writes
    assert len(append.messages) == 2
    success_result_of(t.stop())


def test_a_flush_waits_for_the_write_in_progress() -> None:
    store = SpyTraceStore(hold=True)
    t, _, _ = tracer(store)
    t.watch(CALL, "leg-1@127.0.0.1", "caller")
    passed(t, "out", message("leg-1@127.0.0.1"))
    first = t.flush()
    passed(t, "in", message("leg-1@127.0.0.1", "BYE"))
    second = t.flush()
    assert len(store.writes) == 1 and not second.called
    # While the first write runs, its messages are still shown (and only once).
    assert len(success_result_of(t.trace(CALL)).messages) == 2
    store.held.pop(0).callback(None)
    assert first.called and len(store.writes) == 2
    store.held.pop(0).callback(None)
    assert second.called
    # While written, the trace is whole: the store's part and nothing twice.
    assert len(success_result_of(t.trace(CALL)).messages) == 2


def test_a_call_is_watched_for_the_linger_time_after_it_is_over() -> None:
    t, store, clock = tracer()
    t.watch(CALL, "leg-1@127.0.0.1", "caller")
    t.call_over(CALL)
    clock.advance(31)
    passed(t, "in", message("leg-1@127.0.0.1", "ACK"))
    clock.advance(1)
    passed(t, "in", message("leg-1@127.0.0.1", "BYE"))
    success_result_of(t.flush())
    assert [m.data.split(b" ")[0] for m in store.traces.get(CALL).messages] == [b"ACK"]
    assert t.watched_calls == 0


def test_the_tracer_is_watching_only_while_it_watches_a_call_id() -> None:
    """ISIPTap.watching: false until a Call-ID is watched, false again once the last
    watched call's Call-IDs are forgotten (the transport then skips the tap)."""
    t, _, clock = tracer()
    assert t.watching is False
    t.watch(CALL, "leg-1@127.0.0.1", "caller")
    t.watch("call-2", "leg-2@127.0.0.1", "caller")
    assert t.watching is True
    t.call_over(CALL)
    clock.advance(32)
    assert t.watching is True  # call-2 is still watched
    t.call_over("call-2")
    clock.advance(32)
    assert t.watching is False
    t.watch("call-3", "leg-3@127.0.0.1", "callee")
    assert t.watching is True


def test_live_listeners_get_each_new_message() -> None:
    t, _, _ = tracer()
    t.watch(CALL, "leg-1@127.0.0.1", "caller")
    seen: list[str] = []
    stop = t.listen(CALL, lambda call_id, m: seen.append(m.data.split(b" ")[0].decode()))
    passed(t, "out", message("leg-1@127.0.0.1"))
    stop()
    passed(t, "out", message("leg-1@127.0.0.1", "CANCEL"))
    assert seen == ["INVITE"]


def test_old_traces_are_purged_on_the_clock() -> None:
    """At start and then every purge_interval, traces older than the retention go."""
    store = SpyTraceStore()
    clock = Clock()
    t = CallTracer(clock, store, TraceLimits(), retention=7 * 86400.0, purge_interval=3600.0)
    clock.advance(10 * 86400)
    t.start()
    assert store.purged == [3 * 86400]
    clock.advance(3600)
    assert store.purged == [3 * 86400, 3 * 86400 + 3600]
    success_result_of(t.stop())
    assert clock.getDelayedCalls() == []


# -- with a call --------------------------------------------------------------------------


def labels(trace: CallTrace, leg: str) -> list[str]:
    out = []
    for m in trace.messages:
        if m.leg != leg:
            continue
        parsed = parse_message(m.data)
        label = parsed.method if isinstance(parsed, Request) else str(parsed.status)
        out.append(f"{m.direction} {label}")
    return out


def test_a_busy_callees_call_keeps_both_legs() -> None:
    """Both legs' messages, each with its leg, in order; the 486 and the caller's BYE are
    there; after the linger time everything is written and nothing is left watched."""
    world = CallWorld(trace=TraceLimits())
    world.phone("alice", "127.0.0.2", answer=Answer(delay=1, sdp=sdp("alice")))
    world.phone("bob", "127.0.0.3", answer=Answer(reject=486, delay=1))
    info = world.place("alice", "bob")
    world.run(4)
    assert world.tracer is not None
    trace = success_result_of(world.tracer.trace(info.call_id))
    assert labels(trace, "callee")[:2] == ["out INVITE", "in 180"]
    assert "in 486" in labels(trace, "callee")
    assert labels(trace, "callee")[-1] == "out ACK"
    caller = labels(trace, "caller")
    assert caller[0] == "out INVITE" and "in 200" in caller and "out BYE" in caller
    assert len({m.sip_call_id for m in trace.messages}) == 2
    world.assert_quiescent()
    success_result_of(world.tracer.flush())
    stored = success_result_of(world.store.get_trace(info.call_id))
    assert stored.messages[-1].data.startswith(b"SIP/2.0 200")  # the BYE's 200, lingering
    assert world.tracer.watched_calls == 0


def test_calls_without_tracer_send_the_same_invites() -> None:
    """Tracing off: no tracer, calls run as before."""
    world = CallWorld()
    world.phone("alice", "127.0.0.2", answer=Answer(delay=1, sdp=sdp("alice")))
    world.phone("bob", "127.0.0.3", answer=Answer(reject=486, delay=1))
    info = world.place("alice", "bob")
    world.run(4)
    assert world.record(info.call_id).end_reason == "callee-busy"
    assert world.tracer is None


# -- the transport tap ---------------------------------------------------------------------


@implementer(ISIPTap)
class RecordingTap:
    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []
        self.watching = True

    def message_passed(
        self,
        direction: str,
        message: Request | Response,
        data: bytes,
        transport: str,
        local: tuple[str, int],
        remote: tuple[str, int],
    ) -> None:
        self.seen.append((direction, data, transport, local, remote))


@implementer(IMessageHandler)
class RecordingHandler:
    def __init__(self) -> None:
        self.requests: list[Request] = []

    def request_received(self, request: Request, source: object) -> None:
        self.requests.append(request)

    def response_received(self, response: Response, source: object) -> None:
        pass


#: an OPTIONS from 10.0.0.9, as it arrives
INCOMING = message("in-1@10.0.0.9", "OPTIONS")[1].replace(
    b"SIP/2.0/UDP 127.0.0.1:5060", b"SIP/2.0/UDP 10.0.0.9:5070"
)


def tapped_layer(tap: RecordingTap) -> tuple[Any, Any]:
    """A started UDP transport layer on a fake reactor showing ``tap`` its messages, and
    its port."""
    from clicktodial.config import HostPort, SipConfig
    from clicktodial.sip.transport import SIPTransportLayer

    reactor = FakeReactor()
    config = SipConfig(
        domain="example.test",
        listen=HostPort("127.0.0.1", 5060),
        transports=("udp",),
        t1=0.5,
        t2=4.0,
        t4=5.0,
        user_agent="test",
    )
    layer = SIPTransportLayer(reactor, config, RecordingHandler(), tap=tap)
    layer.startService()
    return layer, reactor.udp_ports[0]


def test_transport_shows_the_tap_every_message_sent_and_received() -> None:
    tap = RecordingTap()
    layer, port = tapped_layer(tap)
    incoming = INCOMING
    port.receive(incoming, "127.0.0.9", 5099)
    assert len(layer.handler.requests) == 1  # type: ignore[union-attr]
    [(direction, data, transport, local, remote)] = tap.seen
    # As received: before the transport stamped received/rport on it.
    assert data == incoming
    assert (direction, transport, local, remote) == (
        "in",
        "UDP",
        ("127.0.0.1", 5060),
        ("127.0.0.9", 5099),
    )
    request, _ = message("out-1@127.0.0.1", "OPTIONS")
    layer.send_request(request, Destination("UDP", "127.0.0.3", 5062))
    direction, data, transport, local, remote = tap.seen[1]
    [(wire, _)] = port.take()
    assert (direction, data, transport, local, remote) == (
        "out",
        wire,
        "UDP",
        ("127.0.0.1", 5060),
        ("127.0.0.3", 5062),
    )
    layer.stopService()


def test_transport_skips_a_tap_that_is_not_watching() -> None:
    tap = RecordingTap()
    tap.watching = False
    layer, port = tapped_layer(tap)
    incoming = INCOMING
    port.receive(incoming, "127.0.0.9", 5099)
    request, _ = message("out-1@127.0.0.1", "OPTIONS")
    layer.send_request(request, Destination("UDP", "127.0.0.3", 5062))
    assert len(layer.handler.requests) == 1  # type: ignore[union-attr]
    assert len(port.take()) == 1
    assert tap.seen == []
    tap.watching = True
    port.receive(incoming.replace(b"in-1@", b"in-2@"), "127.0.0.9", 5099)
    assert [direction for direction, *_ in tap.seen] == ["in"]
    layer.stopService()


# -- [calls] trace at start-up ---------------------------------------------------------------


class NoTraces:
    """A call-record store that keeps no traces."""


def config(trace: str) -> Any:
    return parse_config(f"[sip]\ndomain = example.test\n[calls]\ntrace = {trace}\n", "x.ini")


def memory_store() -> MemoryStore:
    return MemoryStore(Clock(), realm="example.test", hash_pool=InlineThreadPool())


def test_trace_auto_follows_the_backend() -> None:
    assert build_tracer(config("auto"), Clock(), memory_store(), 32.0) is not None
    assert build_tracer(config("auto"), Clock(), NoTraces(), 32.0) is None


def test_trace_off_builds_no_tracer() -> None:
    assert build_tracer(config("off"), Clock(), memory_store(), 32.0) is None


def test_trace_on_with_a_backend_without_traces_names_both() -> None:
    with pytest.raises(TraceUnavailable) as raised:
        build_tracer(config("on"), Clock(), NoTraces(), 32.0)
    assert "trace = on" in str(raised.value) and "backend 'sql'" in str(raised.value)


def test_tracer_takes_the_bounds_and_retention_from_the_config() -> None:
    text = (
        "[sip]\ndomain = example.test\n[calls]\ntrace_max_messages = 10\n"
        "trace_max_kb = 4\ntrace_days = 0.5\n"
    )
    t = build_tracer(parse_config(text, "x.ini"), Clock(), memory_store(), 32.0)
    assert t is not None
    assert (t.limits, t.retention, t.linger) == (TraceLimits(10, 4096), 43200.0, 32.0)


@pytest.mark.parametrize("value", ["0", "-1", "x", "nan"])
def test_bad_trace_days_names_the_key(value: str) -> None:
    from clicktodial.config import ConfigError

    with pytest.raises(ConfigError) as raised:
        parse_config(f"[sip]\ndomain = example.test\n[calls]\ntrace_days = {value}\n", "x.ini")
    assert "[calls] trace_days" in str(raised.value)
