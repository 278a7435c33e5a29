"""
CPU cost of the media engine's RTP streams (ringback tones) on the real reactor.

Method: for each N in --streams (default 1, 100, 500), this process opens N
streams of US ringback in PCMU (packets precomputed per cadence, 50 packets/s
each) on 127.0.0.1, all sending to one loopback sink for --seconds (default 10).
The sink is a separate process that counts what arrives, so its CPU is not
ours.  CPU is this process's user+system time (``resource.getrusage``) over
the run, as a percentage of one core and of the wall time; "per stream" is
that divided by N.  Skipped packets (the reactor more than 3 periods late)
and late ticks show whether the machine kept up.  Streams are closed and
ports released after each run.  Loopback only, bounded in count and time.
Prints, asserts nothing.

    python3 bench/rtp_stream.py [--streams 1,100,500] [--seconds 10]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred

from clicktodial.media.codecs import Codec
from clicktodial.media.rtp import RtpPortAllocator, RtpStream
from clicktodial.media.tones import RINGBACK, tone

SINK = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
s.settimeout(0.2)
count, deadline = 0, time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    try:
        s.recv(2048)
        count += 1
    except TimeoutError:
        pass
print(count, flush=True)
"""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(reactor: Any, counts: list[int], seconds: float) -> None:
    source = tone(RINGBACK["us"], Codec.PCMU, "us")
    allocator = RtpPortAllocator(reactor, "127.0.0.1", 30000, 31999)
    print(f"# {seconds:g} s per run, US ringback PCMU, 50 packets/s per stream, sink on loopback")
    print(
        f"{'streams':>8} {'packets':>9} {'received':>9} {'skipped':>8} "
        f"{'CPU %':>7} {'CPU %/stream':>13} {'us/packet':>10}"
    )
    for n in counts:
        sink = subprocess.Popen(
            [sys.executable, "-c", SINK, str(seconds + 3)], stdout=subprocess.PIPE, text=True
        )
        assert sink.stdout is not None
        port = int(sink.stdout.readline())
        wall0, cpu0 = time.monotonic(), cpu_seconds()
        streams = [
            RtpStream.open(allocator, reactor, source, ("127.0.0.1", port)) for _ in range(n)
        ]
        d: Deferred[None] = task.deferLater(reactor, seconds, lambda: None)
        await d
        for stream in streams:
            stream.close()
        wall, cpu = time.monotonic() - wall0, cpu_seconds() - cpu0
        sent = sum(s.sender.sent for s in streams)
        skipped = sum(s.sender.skipped for s in streams)
        received = int(sink.stdout.readline())
        sink.wait()
        percent = 100 * cpu / wall
        print(
            f"{n:>8} {sent:>9} {received:>9} {skipped:>8} {percent:>7.1f} "
            f"{percent / n:>13.4f} {1e6 * cpu / max(sent, 1):>10.1f}"
        )
        assert not allocator.in_use


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU cost of RTP tone streams")
    parser.add_argument("--streams", default="1,100,500")
    parser.add_argument("--seconds", type=float, default=10.0)
    options = parser.parse_args()
    counts = [int(n) for n in options.streams.split(",")]
    if any(not 0 < n <= 1000 for n in counts) or not 0 < options.seconds <= 60:
        raise SystemExit("1-1000 streams, at most 60 s")
    task.react(lambda reactor: ensureDeferred(run(reactor, counts, options.seconds)))


if __name__ == "__main__":
    main()
