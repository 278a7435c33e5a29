"""
The media engine on the real reactor, for interop tests and tools: sends a tone
or WAV file as RTP to one loopback destination for a bounded time, then closes
its streams and reports, as JSON lines on stdout.

    python -m clicktodial.testing.rtpapp --to 127.0.0.1:40000 --source us --codec PCMU \\
        --seconds 7 --ports 20000-20099

Events: ``streaming`` (with the local ``ports``), then ``done`` with ``sent``,
``skipped``, ``dropped``, ``ports_in_use`` and ``pending_timers`` (0 when the
streams released everything).  Loopback destinations only.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred

from clicktodial.config import parse_port_range
from clicktodial.media.codecs import Codec
from clicktodial.media.rtp import RtpPortAllocator, RtpStream
from clicktodial.media.tones import BUSY, CONGESTION, RINGBACK, PacketLoop, tone, wav_file

__all__ = ["main", "make_source"]


def make_source(name: str, codec: Codec) -> PacketLoop:
    """``us``/``uk``/``eu`` ringback, ``busy-REGION``, ``congestion-REGION`` or ``file:PATH``."""
    if name.startswith("file:"):
        return wav_file(name[len("file:") :], codec)
    kind, _, region = name.rpartition("-")
    plans = {"": RINGBACK, "busy": BUSY, "congestion": CONGESTION}
    if kind not in plans or region not in plans[kind]:
        raise SystemExit(f"unknown source {name!r}")
    return tone(plans[kind][region], codec, name)


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout."""
    print(json.dumps({"event": event, **fields}), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Run from the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--to", required=True, help="HOST:PORT on loopback")
    parser.add_argument("--source", default="us")
    parser.add_argument("--codec", choices=[c.name for c in Codec], default="PCMU")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--ports", default="20000-20999")
    options = parser.parse_args(argv)
    host, _, port_text = options.to.rpartition(":")
    host = host.strip("[]")
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"{host} is not a loopback address")
    if not 0 < options.seconds <= 60 or not 0 < options.streams <= 1000:
        raise SystemExit("at most 60 s and 1000 streams")
    source = make_source(options.source, Codec[options.codec])
    low, high = parse_port_range(options.ports)

    def run(reactor: Any) -> Deferred[None]:
        allocator = RtpPortAllocator(reactor, host, low, high)
        streams = [
            RtpStream.open(allocator, reactor, source, (host, int(port_text)))
            for _ in range(options.streams)
        ]
        emit("streaming", ports=[s.local_port for s in streams])

        def finish() -> None:
            for stream in streams:
                stream.close()
            emit(
                "done",
                sent=sum(s.sender.sent for s in streams),
                skipped=sum(s.sender.skipped for s in streams),
                dropped=sum(s.sender.dropped for s in streams),
                ports_in_use=len(allocator.in_use),
                pending_timers=sum(s.sender.running for s in streams),
            )

        return task.deferLater(reactor, options.seconds, finish)

    task.react(run)


if __name__ == "__main__":
    main(sys.argv[1:])
