#!/usr/bin/env python3
"""
Attack check: can anyone make the daemon send its SIP responses to a third party?

An attacker on 127.0.0.1 sends REGISTER, OPTIONS and INVITE datagrams whose top Via names
a victim -- a trap of ours on another loopback address -- with ``maddr`` (RFC 3261 §18.2.2
would send the response there), with ``maddr`` and a TCP Via (the daemon would open a TCP
connection to it), or with a ``received`` it wrote itself.  A 401 with its challenge is
larger than the REGISTER asking for it, and the INVITE's final response is retransmitted
until an ACK that never comes: a reflector with amplification.

The trap must receive nothing (no datagram, no TCP connection) and the attacker's own
socket must get the answers (the daemon answered, at the packet's source).  Prints the
counts per attack, then ``PASS`` or ``FAIL: reason`` on the last line; exit status 0/1.

    python3 check_reflector.py --sip 127.0.0.1:5060 --web http://127.0.0.1:8080 \\
        --user alice --password alice --user2 bob --password2 bob
"""

from __future__ import annotations

import secrets
import select
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sipattack import Trap, parse_args, split_host_port

#: How long each attack's answers (and retransmissions) are collected.
WAIT = 3.0

#: (name, method, top Via template, whether the attacker's UDP socket must get the answer):
#: {trap} is the victim's address, {me} the attacker's; both use the same port, {port}.
#: A TCP Via is answered over TCP at the attacker's address, where nothing listens.
ATTACKS = [
    ("maddr", "REGISTER", "SIP/2.0/UDP {me}:{port};maddr={trap};rport", True),
    ("maddr", "OPTIONS", "SIP/2.0/UDP {me}:{port};maddr={trap}", True),
    ("maddr", "INVITE", "SIP/2.0/UDP {me}:{port};maddr={trap}", True),
    ("maddr-tcp", "REGISTER", "SIP/2.0/TCP {me}:{port};maddr={trap}", False),
    ("received", "REGISTER", "SIP/2.0/UDP {me}:{port};received={trap}", True),
    ("received", "INVITE", "SIP/2.0/UDP {me}:{port};received={trap}", True),
]


def request(method: str, via: str, sip: tuple[str, int], user: str) -> bytes:
    tag, call_id = secrets.token_hex(4), secrets.token_hex(8)
    uri = f"sip:{sip[0]}:{sip[1]}" if method == "REGISTER" else f"sip:{user}@{sip[0]}:{sip[1]}"
    body = ""
    extra = ""
    if method == "INVITE":
        body = (
            "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 4000 RTP/AVP 0\r\n"
        )
        extra = "Content-Type: application/sdp\r\n"
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: {via};branch=z9hG4bK{secrets.token_hex(6)}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{sip[0]}>;tag={tag}\r\n"
        f"To: <sip:{user}@{sip[0]}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\n"
        f"Contact: <sip:{user}@127.0.0.1:5099>\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def attack(
    sip: tuple[str, int], user: str, name: str, method: str, via: str, trap_host: str
) -> tuple[int, int, int, int]:
    """One attack: (bytes sent, packets at the trap, bytes at the trap, answers at the source)."""
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind(("127.0.0.1", 0))
    try:
        trap = Trap(trap_host, attacker.getsockname()[1])
    except OSError:
        attacker.close()
        raise
    try:
        data = request(
            method, via.format(me="127.0.0.1", port=trap.port, trap=trap_host), sip, user
        )
        attacker.sendto(data, sip)
        answers = 0
        end = time.monotonic() + WAIT
        while (left := end - time.monotonic()) > 0:
            if select.select([attacker], [], [], min(left, 0.05))[0]:
                attacker.recv(65536)
                answers += 1
            trap.poll()
        return len(data), trap.packets, trap.bytes, answers
    finally:
        attacker.close()
        trap.close()


def wait_for_sip(sip: tuple[str, int], timeout: float = 10.0) -> None:
    """Until the daemon answers an honest OPTIONS (it may still be starting)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        me = sock.getsockname()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.sendto(request("OPTIONS", f"SIP/2.0/UDP {me[0]}:{me[1]};rport", sip, "ping"), sip)
            if select.select([sock], [], [], 0.5)[0]:
                return
        raise TimeoutError(f"no answer to OPTIONS from {sip[0]}:{sip[1]}")


def run(sip: tuple[str, int], user: str, trap_host: str = "127.0.0.9") -> list[str]:
    """Every attack; the failures (empty: PASS). Prints one line per attack."""
    wait_for_sip(sip)
    failures = []
    for name, method, via, answered in ATTACKS:
        sent, packets, trap_bytes, answers = attack(sip, user, name, method, via, trap_host)
        print(
            f"reflector {name:9} {method:8}: sent {sent} bytes; at the trap {packets} packets"
            f" ({trap_bytes} bytes); answers at the source {answers}"
        )
        if packets:
            failures.append(f"{method} with Via {name} reflected {packets} packets to the trap")
        elif answered and answers == 0:
            failures.append(f"{method} with Via {name} got no answer at its source")
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.split("\n\n")[0], argv)
    failures = run(split_host_port(args.sip), args.user, args.trap_host)
    print("PASS" if not failures else f"FAIL: {failures[0]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
