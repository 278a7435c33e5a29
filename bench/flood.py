#!/usr/bin/env python3
"""
A single-source UDP flood against the daemon while a phone registers from another address:
how many of the phone's registrations succeed, and what the flood costs the daemon.

Method:
- Isolation: the script re-runs itself under ``unshare -n`` (a private network namespace
  where only loopback exists: nothing leaves the machine, no port clashes).
- The daemon: ``twistd -n clicktodial`` as production runs it, SQLite store, ``[log] level =
  warn``, ``[sip] udp_buffer = 4194304`` (as conf/prod.ini), ``[limits]`` at their defaults
  (rate_window 2 s, rate_max_requests 200, rate_ban_seconds 60). One user ``u00000`` with
  SIP password ``p00000``. A fresh daemon for each scenario (a ban outlives a scenario).
- The flood: ``--procs`` sender processes (default 2: this machine has 2 cores), each a
  tight ``socket.sendto`` loop from 127.0.0.1 (bound explicitly: one source address), with
  no pacing: the rate is whatever they reach, measured and printed. Bounded in time
  (``--seconds``, default 12) and count (600,000 per process per second of flood). Kinds:
  ``register`` (REGISTERs without credentials, 256 distinct ones cycled: what a registration
  scanner sends; each costs a parse and a stateless 401 until the source is banned),
  ``garbage`` (256 distinct 200-byte random datagrams: the parser rejects them) and
  ``none`` (the control: the phone alone). ``--no-kernel-filter`` runs the daemon as on a
  system refusing socket filters (``banfilter.attach`` raises): banned sources are then
  dropped by the daemon alone, one look-up a datagram.
- The phone: ``bench/regload.py`` bound to 127.0.0.2, starting a registration (REGISTER →
  401 → REGISTER with Digest → 200 listing its contact, retransmitted like a UDP client
  transaction: T1 = 0.5 s) every 0.25 s from 1 s into the flood, each allowed ``--timeout``
  seconds (default 3), and none started later than ``--timeout`` + 1 s before the flood ends:
  every registration counted happens during the flood. Target: ≥ 95 % succeed.
- Figures per scenario: the phone's registrations succeeded/started; the flood rate reached
  (datagrams sent / seconds, all processes); the daemon's CPU (user + system, from
  /proc/PID/stat, over the flood) as % of one core; datagrams the kernel dropped at the
  daemon's socket (its receive buffer full: /proc/net/udp ``drops``); whether the flood's
  source was banned (the daemon's "sent more than ... banned" warning) and how many of its
  datagrams were refused (``clicktodial_sip_requests_refused{reason="rate_limited"}``).

``--micro`` (in process, no daemon, no sockets): the daemon's CPU per datagram through the
UDP protocol's ``datagramReceived`` on a fake port, best of 5 rounds of 200,000: a banned
source's datagram (dropped in the daemon, as when the kernel filter is unavailable), a
counted one from a source under the limit (then parsed, its Via stamped and handed to a
handler that does nothing: the transport's whole path), and the same without any limit
(what the count adds to every datagram).

Usage: python3 bench/flood.py [--kinds register garbage none] [--procs 2] [--seconds 12]
       python3 bench/flood.py --micro
Needs: the clicktodial package importable from this checkout (PYTHONPATH is set for the
daemon to this checkout).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from zope.interface import implementer

from clicktodial.interfaces import IMessageHandler
from clicktodial.testing.daemon import DaemonNotReady, DaemonProcess, run_cli, sip_answered

if TYPE_CHECKING:
    from clicktodial.admission import SourceRateLimiter

REPO = Path(__file__).resolve().parent.parent
SIP_PORT = 45260
WEB_PORT = 45280
FLOODER = "127.0.0.1"
PHONE = "127.0.0.2"
PROBE = "127.0.0.3"
PER_PROCESS_PER_SECOND = 600_000
#: ``[web] metrics_token``: /metrics answers only to it (or an administrator).
METRICS_TOKEN = "flood-bench-metrics-token-0123"


# -- the sender (a child process) ----------------------------------------------------------


def payloads(kind: str, sip_port: int) -> list[bytes]:
    rng = random.Random(7)
    if kind == "garbage":
        return [rng.randbytes(200) for _ in range(256)]
    return [
        (
            f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {FLOODER}:5999;rport;branch=z9hG4bKflood{i}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:flood{i}@127.0.0.1>;tag=f{i}\r\n"
            f"To: <sip:flood{i}@127.0.0.1>\r\n"
            f"Call-ID: flood-{i}@{FLOODER}\r\n"
            "CSeq: 1 REGISTER\r\n"
            f"Contact: <sip:flood{i}@{FLOODER}:5999>\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        for i in range(256)
    ]


def send(kind: str, sip_port: int, seconds: float, count: int) -> None:
    """Send ``kind`` datagrams as fast as possible; print JSON {sent, seconds}."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((FLOODER, 0))  # responses go to the rport: the real source port
    target = ("127.0.0.1", sip_port)
    messages = payloads(kind, sip_port)
    sendto = sock.sendto
    sent = 0
    begin = time.monotonic()
    deadline = begin + seconds
    while sent < count and time.monotonic() < deadline:
        for message in messages:
            try:
                sendto(message, target)
            except OSError:
                pass  # ENOBUFS: the local queue is full, go on
        sent += len(messages)
    elapsed = time.monotonic() - begin
    print(json.dumps({"sent": sent, "seconds": round(elapsed, 3)}))


# -- the run -----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def socket_drops(port: int) -> int:
    hex_port = f":{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(hex_port):
            return int(fields[-1])
    return 0


def rate_limited(web_port: int) -> float:
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{web_port}/metrics",
            headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return -1.0
    match = re.search(r'clicktodial_sip_requests_refused\{reason="rate_limited"\} (\S+)', text)
    return float(match.group(1)) if match else -1.0


# --no-kernel-filter: the daemon as on a system that refuses socket filters (its fallback).
_NO_KERNEL_FILTER = """
from clicktodial.sip import banfilter
def refuse(sock, program):
    raise OSError("socket filters disabled by bench/flood.py --no-kernel-filter")
banfilter.attach = refuse
"""


class Daemon:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.ini = work / "clicktodial.ini"
        self.log = work / "clicktodial.log"
        self.process: DaemonProcess | None = None

    def provision(self) -> None:
        self.ini.write_text(
            "[sip]\n"
            "domain = 127.0.0.1\n"
            f"listen = 127.0.0.1:{SIP_PORT}\n"
            "transports = udp\n"
            "udp_buffer = 4194304\n"
            "[registrar]\ndigest_algorithms = MD5\n"
            f"[web]\nlisten = tcp:{WEB_PORT}:interface=127.0.0.1\n"
            f"metrics_token = {METRICS_TOKEN}\n"
            f"[store]\nurl = sqlite:///{self.work}/clicktodial.sqlite\n"
            f"[log]\nlevel = warn\nfile = {self.log}\n"
        )
        (self.work / "users.csv").write_text("u00000,p00000\n")
        run_cli(self.ini, "db", "upgrade", tree=REPO)
        run_cli(self.ini, "user", "import", str(self.work / "users.csv"), tree=REPO)

    def start(self, kernel_filter: bool = True) -> int:
        self.log.write_text("")
        self.process = DaemonProcess(
            self.ini, tree=REPO, prelude="" if kernel_filter else _NO_KERNEL_FILTER
        ).start()
        try:
            self.process.wait_ready(lambda: sip_answered(SIP_PORT, source=PROBE), 30)
        except DaemonNotReady as e:
            raise SystemExit(f"flood: the daemon did not start ({e}); see {self.log}") from e
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


def scenario(daemon: Daemon, kind: str, args: argparse.Namespace) -> dict[str, object]:
    pid = daemon.start(kernel_filter=not args.no_kernel_filter)
    drops_before = socket_drops(SIP_PORT)
    cpu_before = cpu_seconds(pid)
    begin = time.monotonic()
    senders = []
    if kind != "none":
        count = int(PER_PROCESS_PER_SECOND * args.seconds)
        for _ in range(args.procs):
            senders.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--send",
                        kind,
                        "--seconds",
                        str(args.seconds),
                        "--count",
                        str(count),
                    ],
                    stdout=subprocess.PIPE,
                )  # fmt: skip
            )
    time.sleep(1.0)
    phone_seconds = max(1.0, args.seconds - 2.0 - args.timeout)
    phone = subprocess.run(
        [sys.executable, str(REPO / "bench" / "regload.py"), "--target", f"127.0.0.1:{SIP_PORT}",
         "--local-host", PHONE, "--domain", "127.0.0.1", "--users", "1",
         "--count", str(int(phone_seconds * 4)), "--rate", "4", "--timeout", str(args.timeout),
         "--max-seconds", str(phone_seconds), "--window", "100", "--json"],
        capture_output=True, text=True, timeout=args.seconds + 60,
    )  # fmt: skip
    sent, sent_seconds = 0, 0.0
    for sender in senders:
        out, _ = sender.communicate(timeout=args.seconds + 30)
        result = json.loads(out)
        sent += result["sent"]
        sent_seconds = max(sent_seconds, result["seconds"])
    if not senders:
        time.sleep(max(0.0, begin + args.seconds - time.monotonic()))
    elapsed = time.monotonic() - begin
    cpu = cpu_seconds(pid) - cpu_before
    drops = socket_drops(SIP_PORT) - drops_before
    limited = rate_limited(WEB_PORT)
    log = daemon.log.read_text(errors="replace")
    daemon.stop()
    registered = json.loads(phone.stdout) if phone.stdout else {"error": phone.stderr}
    return {
        "kind": kind,
        "procs": args.procs if senders else 0,
        "phone_succeeded": registered.get("succeeded"),
        "phone_started": registered.get("started"),
        "phone_failures": registered.get("failures"),
        "phone_latency_ms": registered.get("latency_ms"),
        "flood_rate": round(sent / sent_seconds) if sent_seconds else 0,
        "flood_sent": sent,
        "daemon_cpu_percent": round(100 * cpu / elapsed, 1),
        "kernel_drops": drops,
        "flooder_banned": f"{FLOODER} sent more than" in log,
        "rate_limited": limited,
        "tracebacks": log.count("Traceback"),
        "kernel_filter": "cannot drop banned sources in the kernel" not in log,
    }


def micro() -> None:
    """Per-datagram CPU in ``datagramReceived`` (see the module); prints µs per datagram."""
    import timeit

    from clicktodial.admission import SourceRateLimiter
    from clicktodial.config import HostPort, SipConfig
    from clicktodial.sip.transport import SIPTransportLayer
    from clicktodial.testing.transport import FakeReactor

    register = payloads("register", SIP_PORT)[0]
    garbage = payloads("garbage", SIP_PORT)[0]
    config = SipConfig(
        domain="127.0.0.1", listen=HostPort("127.0.0.1", SIP_PORT), transports=("udp",),
        t1=0.5, t2=4.0, t4=5.0, user_agent="bench",
    )  # fmt: skip

    def receive(limit: SourceRateLimiter | None) -> Callable[[bytes, tuple[str, int]], None]:
        reactor = FakeReactor()
        layer = SIPTransportLayer(reactor, config, _Sink(), source_limit=limit)
        layer.startService()
        port = reactor.udp_ports[0]
        port.written = _Discard()  # type: ignore[assignment]
        return port.protocol.datagramReceived

    rounds = 200_000
    banned = SourceRateLimiter(FakeReactor(), 2.0, 1, 3600.0)
    banned.allow(FLOODER)
    banned.allow(FLOODER)
    cases = [
        ("banned source, REGISTER (dropped)", receive(banned), register),
        ("banned source, garbage (dropped)", receive(banned), garbage),
        ("source under the limit, REGISTER (parsed, stamped)", receive(_unlimited()), register),
        ("no limit at all, REGISTER (parsed, stamped)", receive(None), register),
    ]
    for name, handle, datagram in cases:
        call = functools.partial(handle, datagram, (FLOODER, 5999))
        best = min(timeit.repeat(call, number=rounds, repeat=5))
        print(f"{name:<48} {best / rounds * 1e6:6.2f} µs per datagram")


@implementer(IMessageHandler)
class _Sink:
    """A message handler that keeps nothing (the transport's work alone is measured)."""

    def request_received(self, request: object, source: object) -> None:
        pass

    def response_received(self, response: object, source: object) -> None:
        pass


class _Discard(list[object]):
    def append(self, item: object) -> None:
        pass


def _unlimited() -> SourceRateLimiter:
    from clicktodial.admission import SourceRateLimiter
    from clicktodial.testing.transport import FakeReactor

    # A limit it never reaches: the count is made, the datagram goes on.
    return SourceRateLimiter(FakeReactor(), 2.0, 10**12, 60.0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", nargs="+", default=["register", "garbage", "none"])
    p.add_argument("--procs", type=int, default=2, help="flood sender processes")
    p.add_argument("--seconds", type=float, default=12.0, help="length of the flood")
    p.add_argument("--timeout", type=float, default=3.0, help="the phone's timeout")
    p.add_argument("--json", action="store_true")
    p.add_argument("--micro", action="store_true", help="in-process CPU per datagram")
    p.add_argument(
        "--no-kernel-filter", action="store_true", help="banned sources dropped by the daemon only"
    )
    p.add_argument("--send", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.send:
        send(args.send, SIP_PORT, args.seconds, args.count)
        return 0
    if args.micro:
        micro()
        return 0
    if not os.environ.get("FLOOD_BENCH_NETNS"):
        os.environ["FLOOD_BENCH_NETNS"] = "1"
        os.execvp("unshare", ["unshare", "-n", sys.executable, __file__, *sys.argv[1:]])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    work = Path(tempfile.mkdtemp(prefix="flood-bench."))
    daemon = Daemon(work)
    try:
        daemon.provision()
        for kind in args.kinds:
            result = scenario(daemon, kind, args)
            if args.json:
                print(json.dumps(result), flush=True)
                continue
            print(
                f"{kind:>8}: phone {result['phone_succeeded']}/{result['phone_started']}"
                f" registered {result['phone_failures'] or ''}"
                f" (latency ms {result['phone_latency_ms']}); flood"
                f" {result['flood_rate']:,}/s ({result['flood_sent']:,} datagrams,"
                f" {result['procs']} procs); daemon CPU {result['daemon_cpu_percent']} %;"
                f" kernel drops {result['kernel_drops']:,}; flooder banned:"
                f" {result['flooder_banned']}; rate_limited {result['rate_limited']:,.0f};"
                f" tracebacks {result['tracebacks']};"
                f" kernel filter {'on' if result['kernel_filter'] else 'off'}",
                flush=True,
            )
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
