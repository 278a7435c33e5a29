"""
The floor under any Twisted UDP server on this machine: the CPU a bare Twisted UDP echo
server spends per datagram it receives and sends back, with nothing else in it.

Why: a registration is two requests in and two responses out. Whatever clicktodial does per
registration (parse, digest, store, transactions), it cannot cost less than two of these
round trips, so this tells how far a target rate is from what the reactor alone allows.

Method:
- The server is ``reactor.listenUDP`` with a ``DatagramProtocol`` whose ``datagramReceived``
  writes the datagram back (the default reactor: epoll on Linux), on 127.0.0.1.
- The load runs in a separate process (so it takes none of the server's CPU): one UDP
  socket sending a 600-byte datagram (about a REGISTER's size) at RATE per second, paced
  by the clock, waiting for each echo (5 s timeout), COUNT in all.
- The figure is the server process's user + system CPU time (``os.times``) over the run,
  divided by COUNT. System time includes the kernel delivering each echo on loopback
  (``sendto`` runs the receive path of the peer's socket), as it does for the daemon.
- Bounded: COUNT datagrams, each waited for at most 5 s.
- Run it inside ``unshare -n`` (it re-runs itself there): loopback only.

Usage: python3 bench/udp_floor.py [RATE COUNT] ...   (default: 800 8000 3000 15000)
"""

from __future__ import annotations

import os
import subprocess
import sys

LOAD = """
import socket, sys, time
port, rate, count = (int(a) for a in sys.argv[1:4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
payload = b"x" * 600
t0 = time.perf_counter()
for i in range(count):
    delay = t0 + i / rate - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    s.sendto(payload, ("127.0.0.1", port))
    s.recv(2000)
"""


def measure(rate: int, count: int) -> float:
    """Server CPU seconds per echoed datagram, at ``rate`` datagrams/s."""
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol

    class Echo(DatagramProtocol):
        def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.write(data, addr)  # type: ignore[union-attr]

    port = reactor.listenUDP(0, Echo(), interface="127.0.0.1")  # type: ignore[attr-defined]
    result: list[float] = []

    def start() -> None:
        before = os.times()
        load = subprocess.Popen(
            [sys.executable, "-c", LOAD, str(port.getHost().port), str(rate), str(count)]
        )

        def check() -> None:
            if load.poll() is None:
                reactor.callLater(0.1, check)  # type: ignore[attr-defined]
                return
            after = os.times()
            used = (after.user + after.system) - (before.user + before.system)
            result.append(used / count if load.returncode == 0 else float("nan"))
            reactor.stop()  # type: ignore[attr-defined]

        check()

    reactor.callWhenRunning(start)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return result[0]


def main() -> None:
    if not os.environ.get("UDP_FLOOR_NETNS"):
        os.environ["UDP_FLOOR_NETNS"] = "1"
        script = os.path.abspath(__file__)
        os.execvp(
            "unshare",
            [
                "unshare",
                "-n",
                "sh",
                "-c",
                'ip link set lo up && exec "$0" "$@"',
                sys.executable,
                script,
                *sys.argv[1:],
            ],
        )
    args = [int(a) for a in sys.argv[1:]] or [800, 8000, 3000, 15000]
    for rate, count in zip(args[::2], args[1::2], strict=True):
        # One reactor per process: each step runs in a fresh interpreter.
        if len(args) > 2:
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), str(rate), str(count)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            print(out, end="")
            continue
        per = measure(rate, count)
        print(
            f"bare Twisted UDP echo, {rate}/s, {count} datagrams: {per * 1e6:.0f} us of server"
            f" CPU per datagram echoed; at that cost one core echoes {1 / per:,.0f}/s, i.e."
            f" {1 / per / 2:,.0f} registrations/s (2 requests in, 2 responses out each)"
        )


if __name__ == "__main__":
    main()
