#!/usr/bin/env python3
"""
check_fanout: how many INVITEs can one click make the daemon send, when a phone registers
hundreds of Contacts? The phone (UDP 127.0.0.40) sends three REGISTERs of 200 Contacts
each for --user, all at its own port, then six REGISTERs of one Contact each; then one
click (the web API, logged in as --user: a call to --user2, who has a phone on 127.0.0.41
meanwhile)
and, for --window (4) seconds, the INVITEs reaching the phone's socket are counted
(transactions: distinct branches; datagrams: with retransmissions). The call is then
hung up and the bindings removed. PASS: at most --max-forks ([calls] max_forks, 5) INVITE
transactions, and at least one.
"""

from __future__ import annotations

import re
import time

from attacktools import (
    SipClient,
    fail,
    main_guard,
    parse_args,
    passed,
    register,
    unregister_all,
)
from sipattack import WebSession

PHONE = "127.0.0.40"
CALLEE = "127.0.0.41"


def run() -> int:
    args, options = parse_args(__doc__.split("\n\n")[0], extra=[
        ("--max-forks", {"type": int, "default": 5}),
        ("--window", {"type": float, "default": 4.0}),
    ])
    # The callee needs a phone too: a call to a user with none fails before ringing anyone.
    with SipClient(args, CALLEE) as callee:
        callee_status = register(args, args.user2, args.password2, callee, expires=60)[0]
    if callee_status != 200:
        return fail(f"{args.user2}'s phone could not register: {callee_status}")
    with SipClient(args, PHONE) as phone:
        port = phone.local[1]
        big = []
        for batch in range(3):
            contacts = [f"<sip:{args.user}-{batch}-{n}@{PHONE}:{port}>" for n in range(200)]
            big.append(register(args, args.user, args.password, phone, contacts=contacts)[0])
        singles, bound = [], 0
        for n in range(6):
            status, text = register(args, args.user, args.password, phone,
                                    contacts=[f"<sip:{args.user}-{n}@{PHONE}:{port}>"])
            singles.append(status)
            if status == 200:
                bound = len(re.findall(rb"\r\n(?:Contact|m)[ \t]*:", text, re.I))
        web = WebSession(args.web, args.user, args.password)
        try:
            call_id = web.place_call(args.user2)
        except RuntimeError as e:
            return fail(f"the click failed: {e}")
        branches: set[str] = set()
        datagrams = 0
        deadline = time.monotonic() + options.window
        while (left := deadline - time.monotonic()) > 0:
            data = phone.receive(left)
            if data.startswith(b"INVITE "):
                datagrams += 1
                branch = re.search(rb"branch=([^;,\s]+)", data)
                branches.add(branch.group(1).decode() if branch else "?")
        web.hang_up(call_id)
    unregister_all(args, args.user, args.password, PHONE)
    unregister_all(args, args.user2, args.password2, CALLEE)
    figures = (f"3 REGISTERs of 200 Contacts: {big}; then 6 of one: {singles};"
               f" {bound} binding(s); in {options.window:g} s after one click:"
               f" {len(branches)} INVITE transaction(s), {datagrams} INVITE datagram(s)"
               f" with retransmissions")
    if len(branches) > options.max_forks:
        print(figures)
        return fail(f"{len(branches)} INVITEs for one click (max_forks {options.max_forks})")
    if not branches:
        print(figures)
        return fail("the click rang no phone")
    return passed(figures)


if __name__ == "__main__":
    main_guard(run)
