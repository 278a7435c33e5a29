#!/usr/bin/env python3
"""
check_guess: how many password guesses sent at once are checked before the daemon refuses?
SIP: --sip-guesses (40) Digest REGISTERs for --guess-user, all answering the nonce of one
challenge, one from each of 40 addresses (127.0.0.100...), sent before any answer is read.
Web: --web-guesses (30) POST /login for --guess-user at once from 127.0.0.150. "Checked" is
counted in the daemon's log (--log: one line per failed check). The guessed user is by
default one that does not exist (the same work and the same limits as a real one, and the
run's other checks still need --user and --user2 unrefused). PASS: at most --sip-limit
([registrar] auth_refuse_after, 20) and --web-limit ([web] login_refuse_after, 10) checked,
the rest refused (SIP 503, web 429), nothing accepted.
"""

from __future__ import annotations

import select
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from attacktools import (
    authorization,
    challenge,
    fail,
    log_text,
    main_guard,
    parse_args,
    sip_request,
    status_of,
    verdict,
    web_login,
)

#: Seconds to wait for every answer: delayed 401s wait up to auth_max_delay (8 s).
BURST_TIMEOUT = 40.0


def sip_burst(args, user: str, count: int) -> list[int | None]:  # type: ignore[no-untyped-def]
    hosts = [f"127.0.0.{100 + i}" for i in range(count)]
    socks = []
    for host in hosts:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, 0))
        socks.append(sock)
    target = (args.sip_host, args.sip_port)
    try:
        first = socks[0]
        first.settimeout(10)
        first.sendto(
            sip_request(args, "REGISTER", user, first.getsockname(), call_id="burst"), target
        )
        params = challenge(first.recv(65535))
        if not params:
            return [None] * count
        for i, sock in enumerate(socks):
            auth = authorization(
                user, f"guess-{i}", params, f"sip:{args.domain}", "REGISTER", nc=i + 1
            )
            sock.sendto(
                sip_request(
                    args,
                    "REGISTER",
                    user,
                    sock.getsockname(),
                    call_id=f"guess-{i}",
                    cseq=2,
                    headers=[f"Authorization: {auth}"],
                ),
                target,
            )
        result: list[int | None] = [None] * count
        index = {s.fileno(): i for i, s in enumerate(socks)}
        deadline = time.monotonic() + BURST_TIMEOUT
        while None in result and time.monotonic() < deadline:
            waiting = [s for i, s in enumerate(socks) if result[i] is None]
            readable, _, _ = select.select(waiting, [], [], max(0.0, deadline - time.monotonic()))
            for sock in readable:
                status = status_of(sock.recv(65535))
                if status >= 200:
                    result[index[sock.fileno()]] = status
        return result
    finally:
        for sock in socks:
            sock.close()


def run() -> int:
    args, options = parse_args(
        __doc__.split("\n\n")[0],
        extra=[
            ("--guess-user", {"default": "guess-target"}),
            ("--sip-guesses", {"type": int, "default": 40}),
            ("--web-guesses", {"type": int, "default": 30}),
            ("--sip-limit", {"type": int, "default": 20}),
            ("--web-limit", {"type": int, "default": 10}),
        ],
    )
    if not args.log:
        return fail("needs --log (the daemon's log file) to count the checked guesses")
    user = options.guess_user
    sip_line, web_line = f"Authentication failed for {user} ", f"web login failed for {user} "
    sip_before, web_before = log_text(args).count(sip_line), log_text(args).count(web_line)
    with ThreadPoolExecutor(max_workers=options.web_guesses + 1) as pool:
        sip = pool.submit(sip_burst, args, user, options.sip_guesses)
        web = [
            pool.submit(web_login, args, user, f"guess-{i}", "127.0.0.150")
            for i in range(options.web_guesses)
        ]
        sip_statuses = sip.result(timeout=BURST_TIMEOUT + 20)
        web_statuses = [w.result(timeout=120) for w in web]
    time.sleep(0.5)
    text = log_text(args)
    sip_checked = text.count(sip_line) - sip_before
    web_checked = text.count(web_line) - web_before

    def spread(statuses: list[int | None]) -> str:
        return ", ".join(f"{s}: {statuses.count(s)}" for s in sorted(set(statuses), key=str))

    figures = (
        f"SIP: {options.sip_guesses} guesses at once from {options.sip_guesses}"
        f" addresses, one nonce: {sip_checked} checked; answers {spread(sip_statuses)}\n"
        f"web: {options.web_guesses} logins at once from one address: {web_checked}"
        f" checked; answers {spread(web_statuses)}"
    )
    problems = []
    if sip_checked > options.sip_limit:
        problems.append(f"SIP: {sip_checked} guesses checked (limit {options.sip_limit})")
    if web_checked > options.web_limit:
        problems.append(f"web: {web_checked} logins checked (limit {options.web_limit})")
    if 200 in sip_statuses or 303 in web_statuses:
        problems.append("a guess was accepted")
    if None in sip_statuses:
        problems.append(f"{sip_statuses.count(None)} SIP guesses got no answer")
    return verdict(figures, problems)


if __name__ == "__main__":
    main_guard(run)
