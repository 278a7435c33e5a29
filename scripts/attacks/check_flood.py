#!/usr/bin/env python3
"""
check_flood: does a phone still register while one address floods the SIP port? For
--seconds (3) a separate process on 127.0.0.70 sends UDP garbage and unauthenticated
REGISTERs (bench/flood.py's datagrams) as fast as it can, at most --max-datagrams
(2,000,000); meanwhile a phone on 127.0.0.71 registers --user2 every 0.25 s (each allowed
2 s a round trip), starting 0.5 s into the flood, the last 0.5 s before its end. PASS: at
least --min-success (90 %) of the phone's registrations succeed. Figures: the flood's
rate, the phone's successes, the datagrams the daemon refused as rate-limited and those
the kernel dropped (from /metrics, with --metrics-token).
"""

from __future__ import annotations

import multiprocessing
import random
import socket
import time

from attacktools import (
    SipClient,
    fail,
    main_guard,
    metric,
    metric_delta,
    parse_args,
    passed,
    register,
    unregister_all,
)

FLOODER = "127.0.0.70"
PHONE = "127.0.0.71"


def payloads(domain: str) -> list[bytes]:
    """bench/flood.py's two kinds, interleaved: random garbage and REGISTERs."""
    rng = random.Random(7)
    garbage = [rng.randbytes(200) for _ in range(128)]
    registers = [
        (
            f"REGISTER sip:{domain} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {FLOODER}:5999;rport;branch=z9hG4bKflood{i}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:flood{i}@{domain}>;tag=f{i}\r\n"
            f"To: <sip:flood{i}@{domain}>\r\n"
            f"Call-ID: flood-{i}@{FLOODER}\r\n"
            "CSeq: 1 REGISTER\r\n"
            f"Contact: <sip:flood{i}@{FLOODER}:5999>\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        for i in range(128)
    ]
    return [d for pair in zip(garbage, registers, strict=True) for d in pair]


def flood(
    target: tuple[str, int],
    domain: str,
    seconds: float,
    limit: int,
    sent_out: multiprocessing.Value,
) -> None:  # type: ignore[valid-type]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((FLOODER, 0))
    messages = payloads(domain)
    sent = 0
    deadline = time.monotonic() + seconds
    while sent < limit and time.monotonic() < deadline:
        for message in messages:
            try:
                sock.sendto(message, target)
            except OSError:
                pass  # ENOBUFS: the local queue is full
        sent += len(messages)
    sent_out.value = sent


def run() -> int:
    args, options = parse_args(
        __doc__.split("\n\n")[0],
        extra=[
            ("--seconds", {"type": float, "default": 3.0}),
            ("--max-datagrams", {"type": int, "default": 2_000_000}),
            ("--min-success", {"type": float, "default": 0.9}),
        ],
    )
    refused_before = metric(args, 'clicktodial_sip_requests_refused{reason="rate_limited"}')
    dropped_before = metric(args, "clicktodial_sip_udp_kernel_drops")
    sent = multiprocessing.Value("q", 0)
    flooder = multiprocessing.Process(
        target=flood,
        args=(
            (args.sip_host, args.sip_port),
            args.domain,
            options.seconds,
            options.max_datagrams,
            sent,
        ),
    )
    begin = time.monotonic()
    flooder.start()
    results = []
    try:
        with SipClient(args, PHONE) as phone:
            start = begin + 0.5
            while start <= begin + options.seconds - 0.5:
                time.sleep(max(0.0, start - time.monotonic()))
                status, _ = register(
                    args, args.user2, args.password2, phone, expires=60, timeout=2.0
                )
                results.append(status)
                start += 0.25
                # A registration that took long (a lost datagram) shifts the next ones.
                start = max(start, time.monotonic())
    finally:
        flooder.join(options.seconds + 30)
        if flooder.is_alive():
            flooder.kill()
    flood_seconds = time.monotonic() - begin
    time.sleep(0.5)
    refused = metric(args, 'clicktodial_sip_requests_refused{reason="rate_limited"}')
    dropped = metric(args, "clicktodial_sip_udp_kernel_drops")
    unregister_all(args, args.user2, args.password2, PHONE)
    succeeded = results.count(200)
    rate = sent.value / max(options.seconds, 0.001)
    refused_text = metric_delta(refused, refused_before)
    dropped_text = metric_delta(dropped, dropped_before)
    figures = (
        f"flood from {FLOODER}: {sent.value} datagrams in about {options.seconds:g} s"
        f" ({rate:,.0f}/s); rate-limited by the daemon: {refused_text}, dropped by"
        f" the kernel (filter or full buffer): {dropped_text};"
        f" phone on {PHONE}: {succeeded} of {len(results)} registrations succeeded"
        f" (statuses {sorted(set(results))}); {flood_seconds:.1f} s in all"
    )
    if not results or succeeded < options.min_success * len(results):
        print(figures)
        return fail(f"only {succeeded} of {len(results)} registrations succeeded during the flood")
    return passed(figures)


if __name__ == "__main__":
    main_guard(run)
