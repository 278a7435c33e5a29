#!/usr/bin/env python3
"""
check_conn_exhaust: how many connections can one address hold open, and do slow clients
hold them? From 127.0.0.20 it opens --count (300) TCP connections to the SIP port and as
many to the web port, and counts after a second how many are still open (a refused one is
closed by the daemon before it is read: EOF or reset). While they are held, a phone on
127.0.0.21 registers over TCP and a user on 127.0.0.22 logs in. Then slow-loris: from
127.0.0.23 a SIP REGISTER and a web request are sent a byte a second; how long until the
daemon closes each (the driver sets [sip] stream_idle_timeout and [web] request_timeout to
8 s). PASS: at most [sip] max_connections_per_source (100) and [web]
max_connections_per_client (256) stay open, the phone registers, the user logs in, and each
slow client is cut off within --slow-limit (15) seconds.
"""

from __future__ import annotations

import errno
import select
import socket
import threading
import time

from attacktools import (
    SipClient,
    main_guard,
    metric,
    metric_delta,
    parse_args,
    register,
    verdict,
    web_login,
)

ATTACKER = "127.0.0.20"


def open_many(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` connections from ATTACKER, opened by 20 threads at once."""
    held: list[socket.socket] = []
    lock = threading.Lock()

    def open_some(n: int) -> None:
        for _ in range(n):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((ATTACKER, 0))
            sock.settimeout(10)
            try:
                sock.connect((host, port))
            except OSError:
                sock.close()
                continue
            with lock:
                held.append(sock)

    threads = [
        threading.Thread(target=open_some, args=(count // 20 + (i < count % 20),))
        for i in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return held


def still_open(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the daemon has not closed (no EOF, no reset)."""
    alive = 0
    for sock in socks:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            alive += 1
            continue
        try:
            sock.setblocking(False)
            if sock.recv(1, socket.MSG_PEEK):
                alive += 1
        except BlockingIOError:
            alive += 1
        except OSError as e:
            if e.errno not in (errno.ECONNRESET, errno.EPIPE):
                alive += 1
    return alive


def slow(
    host: str, port: int, data: bytes, limit: float, result: dict[str, float | None], key: str
) -> None:
    """Send ``data`` a byte a second; seconds until the peer closed (None: not in ``limit``)."""
    sock = socket.socket()
    sock.bind(("127.0.0.23", 0))
    sock.connect((host, port))
    begin = time.monotonic()
    result[key] = None
    try:
        for byte in data:
            if time.monotonic() - begin > limit:
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                result[key] = time.monotonic() - begin
                return
            readable, _, _ = select.select([sock], [], [], 1.0)
            if readable:
                try:
                    if not sock.recv(4096):
                        result[key] = time.monotonic() - begin
                        return
                except OSError:
                    result[key] = time.monotonic() - begin
                    return
    finally:
        sock.close()


def run() -> int:
    args, options = parse_args(
        __doc__.split("\n\n")[0],
        extra=[
            ("--count", {"type": int, "default": 300}),
            ("--sip-max", {"type": int, "default": 100}),
            ("--web-max", {"type": int, "default": 256}),
            ("--slow-limit", {"type": float, "default": 15.0}),
        ],
    )
    refused_before = metric(args, "clicktodial_connections_refused_total")
    # Counted half a second after the last is opened (the daemon has accepted them all),
    # before the driver's short idle times (8 s) close them.
    begin = time.monotonic()
    sip_held = open_many(args.sip_host, args.sip_port, options.count)
    time.sleep(0.5)
    sip_open = still_open(sip_held)
    sip_seconds = time.monotonic() - begin
    begin = time.monotonic()
    web_held = open_many(args.web_host, args.web_port, options.count)
    time.sleep(0.5)
    web_open = still_open(web_held)
    web_seconds = time.monotonic() - begin
    with SipClient(args, "127.0.0.21", transport="TCP", timeout=10) as phone:
        phone_status = register(args, args.user2, args.password2, phone, expires=60)[0]
        register(args, args.user2, args.password2, phone, contacts=["*"], expires=0)
    login_status = web_login(args, args.user, args.password, source="127.0.0.22")
    refused = metric(args, "clicktodial_connections_refused_total")
    for sock in sip_held + web_held:
        sock.close()
    results: dict[str, float | None] = {}
    sip_slow = (
        f"REGISTER sip:{args.domain} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.23:5999;"
        "branch=z9hG4bKslow\r\n" + "X-Slow: " + "a" * 200
    ).encode()
    web_slow = ("GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + "a" * 200).encode()
    threads = [
        threading.Thread(
            target=slow,
            args=(args.sip_host, args.sip_port, sip_slow, options.slow_limit, results, "sip"),
        ),
        threading.Thread(
            target=slow,
            args=(args.web_host, args.web_port, web_slow, options.slow_limit, results, "web"),
        ),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    def seconds(value: float | None) -> str:
        return (
            f"cut off after {value:.1f} s"
            if value is not None
            else (f"still open after {options.slow_limit:g} s")
        )

    refused_text = metric_delta(refused, refused_before)
    figures = (
        f"one address opened {len(sip_held)} SIP TCP connections: {sip_open} held open"
        f" ({sip_seconds:.1f} s); {len(web_held)} web connections: {web_open} held open"
        f" ({web_seconds:.1f} s);"
        f" clicktodial_connections_refused_total +{refused_text}\n"
        f"meanwhile a phone from another address registered over TCP: {phone_status};"
        f" a user logged in from another address: {login_status}\n"
        f"slow-loris, a byte a second: SIP {seconds(results.get('sip'))},"
        f" web {seconds(results.get('web'))}"
    )
    problems = []
    if sip_open > options.sip_max:
        problems.append(f"{sip_open} SIP connections held (max {options.sip_max})")
    if web_open > options.web_max:
        problems.append(f"{web_open} web connections held (max {options.web_max})")
    if phone_status != 200:
        problems.append(f"the phone's REGISTER got {phone_status}")
    if login_status != 303:
        problems.append(f"the login got {login_status}")
    for key in ("sip", "web"):
        if results.get(key) is None:
            problems.append(f"the slow {key} client was not cut off")
    return verdict(figures, problems)


if __name__ == "__main__":
    main_guard(run)
