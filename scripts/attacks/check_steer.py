#!/usr/bin/env python3
"""
Attack check: can a phone steer where the daemon sends the requests of its call?

Two phones (raw UDP sockets on 127.0.0.1) register as --user and --user2; --user clicks to
call --user2 over the web.  Both phones answer the daemon's INVITEs with a 180 and a 200
carrying a Contact or a Record-Route that names a trap of ours on another loopback address
(UDP, or ``transport=tcp``: the daemon would open a TCP connection to it).  RFC 3261 §12
would send the ACK, the re-INVITE and the BYE there, from the daemon's trusted address.

The trap must receive nothing (no datagram, no TCP connection), the call must connect,
and each phone must still get its ACK and its BYE (at the address it registered from).
Prints the counts per attack, then ``PASS`` or ``FAIL: reason``; exit status 0/1.

    python3 check_steer.py --sip 127.0.0.1:5060 --web http://127.0.0.1:8080 \\
        --user alice --password alice --user2 bob --password2 bob
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sipattack import Phone, Trap, WebSession, parse_args, run_phones, split_host_port

#: (name, header put in every phone's 180 and 2xx, phones of --user): {trap}/{port} name the
#: trap.  With two phones both answer at once: the second 2xx (a late fork, RFC 3261
#: §13.2.2.4) gets an ACK and a BYE of its own.
ATTACKS = [
    ("contact-udp", "Contact: <sip:x@{trap}:{port}>", 1),
    ("contact-tcp", "Contact: <sip:x@{trap}:{port};transport=tcp>", 1),
    ("record-route-udp", "Record-Route: <sip:{trap}:{port};lr>", 1),
    ("record-route-tcp", "Record-Route: <sip:{trap}:{port};lr;transport=tcp>", 1),
    ("late-fork-contact", "Contact: <sip:x@{trap}:{port}>", 2),
    ("late-fork-rr-tcp", "Record-Route: <sip:{trap}:{port};lr;transport=tcp>", 2),
]
#: Bounds: the call to connect, then to end and its last messages to arrive.
CONNECT_TIMEOUT = 15.0
SETTLE = 2.0


def attack(
    sip: tuple[str, int],
    web: WebSession,
    users: Sequence[tuple[str, str]],
    header: str,
    forks: int,
    trap_host: str,
) -> dict[str, object]:
    """One call with ``header`` in every phone's answers; what happened."""
    trap = Trap(trap_host)
    line = header.format(trap=trap_host, port=trap.port)
    phones = [Phone(*users[0], sip, [line]) for _ in range(forks)]
    phones.append(Phone(*users[1], sip, [line]))
    result: dict[str, object] = {}
    try:
        for phone in phones:
            status = phone.register()
            if status != 200:
                raise RuntimeError(f"{phone.user} could not register: {status}")

        def call() -> None:
            call_id = web.place_call(users[1][0])
            result["state"] = web.wait_state(
                call_id, ("connected", "ended", "failed"), CONNECT_TIMEOUT
            )
            trap.poll(1.0)
            web.hang_up(call_id)
            result["end"] = web.wait_state(call_id, ("ended", "failed"), CONNECT_TIMEOUT)
            trap.poll(SETTLE)

        run_phones(phones, call)
        trap.poll()
        result["trap"] = trap.packets
        result["trap_summary"] = trap.summary()
        result["phones"] = {f"{phone.user}:{phone.port}": phone.methods() for phone in phones}
        return result
    finally:
        trap.close()


def run(
    sip: tuple[str, int], base: str, users: Sequence[tuple[str, str]], trap_host: str = "127.0.0.9"
) -> list[str]:
    """Every attack; the failures (empty: PASS).  Prints one line per attack."""
    web = WebSession(base, *users[0])
    failures = []
    for name, header, forks in ATTACKS:
        result = attack(sip, web, users, header, forks, trap_host)
        phones = result["phones"]
        assert isinstance(phones, dict)
        got = "; ".join(
            f"{user} got "
            + ",".join(
                f"{m}x{methods.count(m)}"
                for m in ("INVITE", "ACK", "BYE", "CANCEL")
                if m in methods
            )
            for user, methods in phones.items()
        )
        print(
            f"steer {name:16}: call {result['state']}; at the trap {result['trap']} packets "
            f"({result['trap_summary']}); {got}"
        )
        if result["trap"]:
            failures.append(f"{name}: {result['trap']} packets reached the trap")
        elif result["state"] != "connected":
            failures.append(f"{name}: the call did not connect ({result['state']})")
        else:
            for phone, methods in phones.items():
                # A phone whose answer came too late may get a CANCEL instead.
                if ("ACK" not in methods or "BYE" not in methods) and "CANCEL" not in methods:
                    failures.append(f"{name}: phone {phone} got no ACK or no BYE ({methods})")
        time.sleep(0.2)
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.split("\n\n")[0], argv)
    users = [(args.user, args.password), (args.user2, args.password2)]
    failures = run(split_host_port(args.sip), args.web, users, args.trap_host)
    print("PASS" if not failures else f"FAIL: {failures[0]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
