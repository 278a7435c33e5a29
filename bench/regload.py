#!/usr/bin/env python3
"""
A lean REGISTER load generator with Digest authentication (RFC 3261 §22, MD5), over UDP on
loopback.

Why not SIPp: SIPp 3.6.1 cannot take the Digest username from an injection file (``[field0]``
in ``[authentication username=...]`` is sent literally), and ``-au`` gives one username per
SIPp process. This generator registers many distinct users, each with its own password,
from one process:

    python3 bench/regload.py --target 127.0.0.1:5060 --domain 127.0.0.1 \\
        --users 10000 --count 10000 --rate 500 [--password-prefix p] [--json]

User *i* (0 ≤ i < ``--users``) is ``{user_prefix}{i:05d}`` with SIP password
``{password_prefix}{i:05d}``. Registration *k* uses user ``k mod users`` and a fresh Call-ID:
REGISTER (CSeq 1) → 401 → REGISTER with credentials (CSeq 2, a new branch) → 200. It counts as
a success only when that 200 lists the contact sent. Requests are retransmitted as a UDP
client transaction would (RFC 3261 §17.1.2.2: T1 = 0.5 s doubling to T2 = 4 s); a
registration with no final answer after ``--timeout`` seconds, or any other final status, is a
failure. Registrations start at ``--rate`` per second (paced every millisecond or so), with at
most ``--window`` in progress.

Prints one summary line (or JSON with ``--json``): started, succeeded, failed (with the
statuses seen), the achieved rate of completed registrations, latency percentiles, and
retransmissions. Loopback only: the target must be 127.0.0.0/8 or ::1. Bounded: it stops
after ``--count`` registrations or ``--max-seconds``, whichever comes first.

``--sockets N`` sends from N source ports (registration *k* from socket *k mod N*), as N
phones would: a registrar whose workers share its port with SO_REUSEPORT (``[daemon]
workers``) gets the load spread by the kernel's hash of the source address and port; from
one port it would all reach one worker.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import ipaddress
import json
import os
import re
import select
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

T1 = 0.5
T2 = 4.0

_CALL_ID = re.compile(rb"\r\n(?:Call-ID|i)[ \t]*:[ \t]*([^\r\n]+)", re.I)
_CSEQ = re.compile(rb"\r\nCSeq[ \t]*:[ \t]*(\d+)", re.I)
_CHALLENGE = re.compile(rb"\r\nWWW-Authenticate[ \t]*:[ \t]*Digest[ \t]+([^\r\n]+)", re.I)
_PARAM = re.compile(rb'([A-Za-z-]+)[ \t]*=[ \t]*(?:"([^"]*)"|([^,\s]+))')


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@dataclass
class Registration:
    """One registration in progress."""

    index: int
    user: str
    password: str
    call_id: str
    started: float
    stage: int = 1  # 1: waiting for the 401; 2: waiting for the 200
    message: bytes = b""
    next_retransmit: float = 0.0
    interval: float = T1
    sends: int = 0
    source: int = 0  # the index of the socket it is sent from


@dataclass
class Stats:
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    retransmissions: int = 0
    latencies: list[float] = field(default_factory=list)
    first_start: float = 0.0
    last_finish: float = 0.0


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        host, _, port = args.target.rpartition(":")
        host = host.strip("[]")
        if not ipaddress.ip_address(host).is_loopback:
            raise SystemExit(f"regload: refusing non-loopback target {host}")
        self.target = (host, int(port))
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socks: list[socket.socket] = []
        self.sent_bys: list[str] = []
        for n in range(args.sockets):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.buffer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, args.buffer)
            # The source address: the target's by default; --local-host for a second phone
            # address (127.0.0.2: bench/flood.py's legitimate phone beside a flooder).
            sock.bind((args.local_host or host, args.local_port + n if args.local_port else 0))
            sock.setblocking(False)
            local = sock.getsockname()[:2]
            local_host = f"[{local[0]}]" if ":" in local[0] else local[0]
            self.socks.append(sock)
            self.sent_bys.append(f"{local_host}:{local[1]}")
        self.sock = self.socks[0]
        self.local = self.sock.getsockname()[:2]
        self.sent_by = self.sent_bys[0]
        self.args = args
        self.domain = args.domain
        self.run_id = os.urandom(4).hex()
        self.pending: dict[bytes, Registration] = {}
        # (retransmit at, sequence, registration, its send count): stale entries skipped.
        self.retransmits: list[tuple[float, int, Registration, int]] = []
        self.sequence = 0
        self.stats = Stats()
        self.ha1: dict[tuple[str, str], str] = {}

    def user(self, index: int) -> tuple[str, str]:
        n = index % self.args.users
        return f"{self.args.user_prefix}{n:05d}", f"{self.args.password_prefix}{n:05d}"

    def build(self, reg: Registration, cseq: int, authorization: str = "") -> bytes:
        branch = f"z9hG4bK{self.run_id}.{reg.index}.{cseq}"
        user, domain = reg.user, self.domain
        sent_by = self.sent_bys[reg.source]
        return (
            f"REGISTER sip:{domain} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {sent_by};rport;branch={branch}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{domain}>;tag={self.run_id}{reg.index}\r\n"
            f"To: <sip:{user}@{domain}>\r\n"
            f"Call-ID: {reg.call_id}\r\n"
            f"CSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:{user}@{sent_by}>;expires={self.args.expires}\r\n"
            f"{authorization}"
            "User-Agent: regload\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    def send(self, reg: Registration, now: float) -> None:
        reg.next_retransmit = now + reg.interval
        reg.sends += 1
        self.sequence += 1
        heapq.heappush(self.retransmits, (reg.next_retransmit, self.sequence, reg, reg.sends))
        try:
            self.socks[reg.source].sendto(reg.message, self.target)
        except BlockingIOError:
            pass  # the retransmission timer will send it again

    def start(self, index: int, now: float) -> None:
        user, password = self.user(index)
        call_id = f"{self.run_id}-{index}@regload"
        reg = Registration(index, user, password, call_id, now, source=index % len(self.socks))
        reg.message = self.build(reg, 1)
        self.pending[call_id.encode()] = reg
        self.stats.started += 1
        self.send(reg, now)

    def authorization(self, reg: Registration, challenge: bytes) -> str:
        params = {
            m.group(1).decode().lower(): (m.group(2) or m.group(3) or b"").decode()
            for m in _PARAM.finditer(challenge)
        }
        realm, nonce = params.get("realm", ""), params.get("nonce", "")
        key = (reg.user, realm)
        ha1 = self.ha1.get(key)
        if ha1 is None:
            ha1 = self.ha1[key] = md5(f"{reg.user}:{realm}:{reg.password}")
        uri = f"sip:{self.domain}"
        ha2 = md5(f"REGISTER:{uri}")
        opaque = f', opaque="{params["opaque"]}"' if "opaque" in params else ""
        if "auth" in params.get("qop", "").split(","):
            cnonce = f"{reg.index:x}"
            response = md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
            qop = f', qop=auth, nc=00000001, cnonce="{cnonce}"'
        else:
            response = md5(f"{ha1}:{nonce}:{ha2}")
            qop = ""
        return (
            f'Authorization: Digest username="{reg.user}", realm="{realm}", nonce="{nonce}",'
            f' uri="{uri}", response="{response}", algorithm=MD5{qop}{opaque}\r\n'
        )

    def finish(self, reg: Registration, now: float, outcome: str | None) -> None:
        del self.pending[reg.call_id.encode()]
        stats = self.stats
        stats.last_finish = now
        if outcome is None:
            stats.succeeded += 1
            stats.latencies.append(now - reg.started)
        else:
            stats.failed += 1
            stats.statuses[outcome] += 1

    def received(self, data: bytes, now: float) -> None:
        if not data.startswith(b"SIP/2.0 "):
            return
        status = int(data[8:11])
        if status < 200:
            return
        match = _CALL_ID.search(data)
        reg = self.pending.get(match.group(1).strip()) if match else None
        if reg is None:
            return  # a retransmitted answer to a finished registration
        cseq = _CSEQ.search(data)
        if cseq is None or int(cseq.group(1)) != reg.stage:
            return  # an answer to the earlier request, retransmitted
        if reg.stage == 1:
            if status != 401:
                self.finish(reg, now, f"{status} to the first REGISTER")
                return
            challenges = _CHALLENGE.findall(data)
            md5_challenges = [c for c in challenges if b"SHA-256" not in c.upper()]
            if not md5_challenges:
                self.finish(reg, now, "401 without an MD5 challenge")
                return
            reg.stage = 2
            reg.interval = T1
            reg.message = self.build(reg, 2, self.authorization(reg, md5_challenges[0]))
            self.send(reg, now)
        elif status != 200:
            self.finish(reg, now, f"{status} to the authenticated REGISTER")
        elif f"sip:{reg.user}@{self.sent_bys[reg.source]}".encode() not in data:
            self.finish(reg, now, "200 without the contact")
        else:
            self.finish(reg, now, None)

    def timers(self, now: float) -> None:
        deadline = now - self.args.timeout
        heap = self.retransmits
        while heap and heap[0][0] <= now:
            _, _, reg, sends = heapq.heappop(heap)
            if sends != reg.sends or reg.call_id.encode() not in self.pending:
                continue  # answered, or sent again since
            if reg.started <= deadline:
                self.finish(reg, now, "timeout")
                continue
            reg.interval = min(reg.interval * 2, T2)
            self.stats.retransmissions += 1
            self.send(reg, now)

    def run(self) -> Stats:
        args = self.args
        begin = time.monotonic()
        self.stats.first_start = begin
        stop_starting = begin + args.max_seconds
        hard_stop = stop_starting + args.timeout + 1
        next_timers = begin + 0.05
        index = 0
        while True:
            now = time.monotonic()
            if now >= hard_stop:
                for reg in list(self.pending.values()):
                    self.finish(reg, now, "timeout")
                break
            # Pacing: start what the rate allows by now.
            due = min(args.count, int((now - begin) * args.rate) + 1)
            while index < due and len(self.pending) < args.window and now < stop_starting:
                self.start(index, now)
                index += 1
            if index >= args.count or now >= stop_starting:
                if not self.pending:
                    break
            # Read every datagram waiting.
            for sock in self.socks:
                while True:
                    try:
                        data = sock.recv(65535)
                    except BlockingIOError:
                        break
                    self.received(data, now)
            if now >= next_timers:
                self.timers(now)
                next_timers = now + 0.05
            select.select(self.socks, [], [], 0.001)
        return self.stats


def summary(stats: Stats, args: argparse.Namespace) -> dict[str, object]:
    elapsed = max(stats.last_finish - stats.first_start, 1e-9)
    latencies = sorted(stats.latencies)

    def percentile(p: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1)

    return {
        "target_rate": args.rate,
        "started": stats.started,
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "failures": dict(stats.statuses),
        "retransmissions": stats.retransmissions,
        "seconds": round(elapsed, 2),
        "rate": round(stats.succeeded / elapsed, 1),
        "latency_ms": {"p50": percentile(0.5), "p95": percentile(0.95), "max": percentile(1.0)},
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True, help="registrar host:port (loopback)")
    p.add_argument("--domain", required=True, help="the SIP domain (Request-URI, AORs)")
    p.add_argument("--users", type=int, default=10000)
    p.add_argument("--user-prefix", default="u")
    p.add_argument("--password-prefix", default="p")
    p.add_argument("--count", type=int, default=10000, help="registrations to make")
    p.add_argument("--rate", type=float, default=500.0, help="registrations started per second")
    p.add_argument("--window", type=int, default=5000, help="most registrations in progress")
    p.add_argument("--expires", type=int, default=3600)
    p.add_argument("--timeout", type=float, default=16.0, help="seconds before a failure")
    p.add_argument("--max-seconds", type=float, default=60.0, help="stop starting after this")
    p.add_argument("--local-host", default="", help="source address (default: the target's)")
    p.add_argument("--local-port", type=int, default=0)
    p.add_argument("--buffer", type=int, default=4194304, help="socket buffer bytes")
    p.add_argument("--sockets", type=int, default=1,
                   help="source ports to send from (spread over SO_REUSEPORT workers)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    result = summary(Generator(args).run(), args)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"rate {args.rate:g}/s: {result['succeeded']}/{result['started']} registered,"
            f" {result['failed']} failed {result['failures'] or ''}, {result['rate']}/s"
            f" achieved, latency {result['latency_ms']}, {result['retransmissions']}"
            " retransmissions"
        )
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
