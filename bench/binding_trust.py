"""
bench/binding_trust.py — where a click's INVITEs go, and how many, when a phone registers
a hostile Path or hundreds of Contacts (docs/registrar.md, "Binding trust").

Method: start the daemon (``twistd -n clicktodial``) from the checkout ``--tree`` (default:
this one) with SQLite, the demo users and default ``[registrar]``/``[calls]`` settings,
T1 = 0.5 s; carol is added with the CLI. Phones are raw UDP sockets on 127.0.0.1 that
register with Digest (tests/interop/calltools.py) and then listen on the port they
registered from; a trap listens on 127.0.0.5:5099 (UDP and TCP).

1. Path steering: alice registers ``Contact: <sip:+19005550123@premium.itsp.test>`` with
   ``Path: <sip:127.0.0.5:5099;lr>``; bob registers a phone; one click (``POST
   /api/v1/calls`` as alice, callee bob). Counted for ``--window`` seconds: datagrams and
   TCP connections at the trap, INVITE datagrams at alice's phone.
2. Fan-out: carol sends three REGISTERs of 200 Contacts each (distinct URIs, all at her
   phone's port), then six REGISTERs of one Contact each (other Call-IDs, other URIs);
   then one click as carol. Counted for ``--window`` seconds: INVITE
   transactions (distinct top-Via branches) and INVITE datagrams (retransmissions
   included) at carol's phone.

Must run where 127.0.0.5 is local and nothing else listens:
    unshare -n sh -c 'ip link set lo up && exec python3 bench/binding_trust.py [--tree DIR]'
Prints the figures; the daemon is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import re
import select
import socket
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(HERE / "tests"), str(HERE / "tests" / "interop")]

from calltools import daemon_ini, register_status, web_place_call  # noqa: E402
from conftest import find_free_port  # noqa: E402

from clicktodial.testing.daemon import DaemonProcess, run_cli, tcp_accepts  # noqa: E402

TRAP = ("127.0.0.5", 5099)


def collect(socks: list[socket.socket], seconds: float) -> dict[socket.socket, list[str]]:
    """Datagrams (first lines) and accepted TCP connections per socket, for ``seconds``."""
    seen: dict[socket.socket, list[str]] = {s: [] for s in socks}
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        for s in select.select(socks, [], [], left)[0]:
            if s.type == socket.SOCK_STREAM:
                connection, _ = s.accept()
                connection.close()
                seen[s].append("TCP connection")
            else:
                seen[s].append(s.recv(65536).decode(errors="replace"))
    return seen


def invites(texts: list[str]) -> tuple[int, int]:
    """(INVITE transactions, INVITE datagrams) among ``texts``."""
    datagrams = [t for t in texts if t.startswith("INVITE ")]
    branches = {m.group(1) for t in datagrams if (m := re.search(r"branch=([^;\s]+)", t))}
    return len(branches), len(datagrams)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=HERE, help="checkout the daemon runs")
    parser.add_argument("--window", type=float, default=6.0, help="seconds counted per click")
    args = parser.parse_args()
    tree = args.tree.resolve()
    work = Path(tempfile.mkdtemp(prefix="binding-trust-"))
    sip_port, web_port = find_free_port(), find_free_port()
    ini = work / "daemon.ini"
    ini.write_text(
        daemon_ini(sip_port, web_port, str(work))
        + f"[log]\nlevel = info\nfile = {work / 'daemon.log'}\n"
    )
    daemon = DaemonProcess(ini, tree=tree, output=work / "twistd.out").start()
    trap_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    trap_tcp = socket.socket()
    trap_udp.bind(TRAP)
    trap_tcp.bind(TRAP)
    trap_tcp.listen(8)
    try:
        daemon.wait_ready(lambda: tcp_accepts(web_port), 30, f"the web port {web_port}")
        run_cli(ini, "user", "add", "carol", "--sip-password", "carol", tree=tree)
        tokens = {
            user: run_cli(ini, "token", "create", user, tree=tree).strip()
            for user in ("alice", "carol")
        }
        bob_port = find_free_port()
        register_status("bob", "bob", bob_port, sip_port)
        print(f"daemon code: {tree}")

        # 1. Path steering.
        alice_port = find_free_port()
        status, _ = register_status(
            "alice",
            "alice",
            alice_port,
            sip_port,
            contacts=["<sip:+19005550123@premium.itsp.test>"],
            headers=("Path: <sip:127.0.0.5:5099;lr>",),
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
            phone.bind(("127.0.0.1", alice_port))
            web_place_call(web_port, tokens["alice"], "bob")
            seen = collect([phone, trap_udp, trap_tcp], args.window)
        trapped = seen[trap_udp] + seen[trap_tcp]
        print(
            f"Path-steering REGISTER: {status}; in {args.window:g} s after the click:"
            f" {len(trapped)} datagram(s)/connection(s) at {TRAP[0]}:{TRAP[1]}"
            f" (first: {trapped[0].splitlines()[0] if trapped else '-'}),"
            f" {invites(seen[phone])[1]} INVITE datagram(s) at the phone's source"
            f" 127.0.0.1:{alice_port}"
        )

        # 2. Fan-out.
        carol_port = find_free_port()
        statuses, bound = [], 0
        for batch in range(3):
            status, text = register_status(
                "carol",
                "carol",
                carol_port,
                sip_port,
                contacts=[f"<sip:carol-{batch}-{n}@127.0.0.1:{carol_port}>" for n in range(200)],
            )
            statuses.append(status)
        singles = []
        for n in range(6):
            status, text = register_status(
                "carol",
                "carol",
                carol_port,
                sip_port,
                contacts=[f"<sip:carol-{n}@127.0.0.1:{carol_port}>"],
            )
            singles.append(status)
            if status == 200:
                bound = len(re.findall(r"^Contact:", text, re.M))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
            phone.bind(("127.0.0.1", carol_port))
            web_place_call(web_port, tokens["carol"], "bob")
            seen = collect([phone], args.window)
        transactions, datagrams = invites(seen[phone])
        print(
            f"3 REGISTERs of 200 Contacts: {statuses}; then 6 of one: {singles};"
            f" {bound} binding(s);"
            f" in {args.window:g} s after one click: {transactions} INVITE(s),"
            f" {datagrams} INVITE datagram(s) with retransmissions"
        )
    finally:
        daemon.stop()
        trap_udp.close()
        trap_tcp.close()


if __name__ == "__main__":
    main()
