"""
CPU per call of call tracing in-process (docs/benchmarks.md, "Call traces on and off"):
the tap (``CallTracer.message_passed``) for a call's 16 messages (two legs of INVITE, 100,
180, 200, ACK, BYE, 200, re-INVITE) and one message of an unwatched Call-ID, then the SQL
write of those messages (``SQLStore``'s trace write on SQLite, in this thread, 500 calls a
transaction, as the group commit does).

Usage: PYTHONPATH=. python bench/trace_tap.py [CALLS (2000)]; PROF=tap or PROF=write prints
a cProfile of that part.
"""

from __future__ import annotations

import cProfile
import gc
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.task import Clock

from clicktodial.calls.trace import CallTracer
from clicktodial.sip.message import Request, Response
from clicktodial.sip.parser import parse_message
from clicktodial.store.sql import SQLStore, upgrade_schema
from clicktodial.store.traces import TraceAppend, TraceLimits

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
)
Passed = tuple[str, Request | Response, bytes]


def message(
    n: int, call_id: str, first: str, cseq: str, body: bytes = b""
) -> tuple[Request | Response, bytes]:
    data = (
        f"{first}\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-{n}-{cseq[0]};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag=1{n}\r\n"
        f"To: <sip:bob@example.test>;tag=2\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\n"
        f"Contact: <sip:alice@127.0.0.1:5062>\r\nUser-Agent: bench\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    return parse_message(data), data


def call_messages(i: int) -> tuple[list[str], list[Passed]]:
    legs, out = [], []
    for leg in ("a", "b"):
        call_id = f"{leg}{i:08d}-0123456789abcdef@127.0.0.1"
        legs.append(call_id)
        for first, cseq, body, direction in [
            ("INVITE sip:bob@127.0.0.3 SIP/2.0", "1 INVITE", SDP, "out"),
            ("SIP/2.0 100 Trying", "1 INVITE", b"", "in"),
            ("SIP/2.0 180 Ringing", "1 INVITE", b"", "in"),
            ("SIP/2.0 200 OK", "1 INVITE", SDP, "in"),
            ("ACK sip:bob@127.0.0.3 SIP/2.0", "1 ACK", b"", "out"),
            ("BYE sip:bob@127.0.0.3 SIP/2.0", "2 BYE", b"", "out"),
            ("SIP/2.0 200 OK", "2 BYE", b"", "in"),
            ("INVITE sip:bob@127.0.0.3 SIP/2.0", "3 INVITE", SDP, "out"),
        ]:
            parsed, data = message(i * 2 + (leg == "b"), call_id, first, cseq, body)
            out.append((direction, parsed, data))
    return legs, out


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    calls = [call_messages(i) for i in range(count)]
    others = [
        message(i, f"other{i}@x", "OPTIONS sip:x@127.0.0.1 SIP/2.0", "1 OPTIONS")
        for i in range(count)
    ]
    url = f"sqlite:///{tempfile.mkdtemp()}/traces.db"
    upgrade_schema(url)
    store = SQLStore(reactor, url, realm="example.test")
    clock = Clock()
    clock.advance(1_700_000_000)
    tracer = CallTracer(clock, store, TraceLimits())
    local, remote = ("127.0.0.1", 5060), ("127.0.0.3", 5062)

    def tap() -> None:
        for i, (legs, passed) in enumerate(calls):
            tracer.watch(f"call{i}", legs[0], "caller")
            tracer.watch(f"call{i}", legs[1], "callee")
            for direction, parsed, data in passed:
                tracer.message_passed(direction, parsed, data, "UDP", local, remote)
        for parsed, data in others:
            tracer.message_passed("in", parsed, data, "UDP", local, remote)

    def write() -> None:
        appends = [
            TraceAppend(call_id, tuple(tracer.unwritten(call_id)))
            for call_id in [f"call{i}" for i in range(count)]
        ]
        for start in range(0, len(appends), 500):
            store._op_append_traces(appends[start : start + 500], tracer.limits)

    gc.collect()
    gc.freeze()  # the messages made above are no part of the cost (the daemon freezes too)
    parts: list[tuple[str, Callable[[], None]]] = [("tap", tap), ("write", write)]
    for name, part in parts:
        started = time.process_time()
        if os.environ.get("PROF") == name:
            profile = cProfile.Profile()
            profile.runcall(part)
            pstats.Stats(profile).sort_stats("tottime").print_stats(15)
        else:
            part()
        cpu = time.process_time() - started
        print(f"{name}: {cpu / count * 1e6:.1f} us CPU per call ({count} calls)")


if __name__ == "__main__":
    main()
