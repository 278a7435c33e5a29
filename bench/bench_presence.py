"""
How soon a registration reaches an open event stream (the web's live presence).

Starts ``twistd -n clicktodial`` (SQLite in a temporary directory, the demo users, MD5
Digest) on free loopback ports, opens ``GET /api/v1/events`` with an API token of alice, and
registers and unregisters bob ``--rounds`` times with Digest from Python, timing each from the
start of the REGISTER exchange (401 and the authenticated REGISTER) to the ``registration``
event on the stream. With ``--other-daemon`` the REGISTERs go to a second daemon sharing the
database instead: what the stream then shows comes from the poll of
``[web] presence_poll_interval``.

    unshare -n bash -c 'ip link set lo up && python3 bench/bench_presence.py [--rounds 20]
        [--other-daemon] [--poll 2]'

Prints the latencies (min, median, max). Bounded: every wait has a timeout; the daemons are
stopped by PID at the end. Loopback only: run it inside ``unshare -n``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests" / "interop"), str(REPO / "tests")]

from calltools import register  # type: ignore[import-not-found]  # noqa: E402
from conftest import find_free_port  # type: ignore[import-not-found]  # noqa: E402

from clicktodial.testing.daemon import DaemonProcess, run_cli, web_answers  # noqa: E402


def ini(tmp: Path, sip_port: int, web_port: int, poll: float) -> str:
    return (
        f"[sip]\ndomain = 127.0.0.1\nlisten = 127.0.0.1:{sip_port}\n"
        f"[web]\nlisten = tcp:{web_port}:interface=127.0.0.1\npresence_poll_interval = {poll}\n"
        f"[store]\nurl = sqlite:///{tmp}/clicktodial.sqlite\nauto_upgrade = yes\n"
        "demo_users = yes\n[registrar]\ndigest_algorithms = MD5\n"
        f"[log]\nlevel = info\nfile = {tmp}/daemon-{sip_port}.log\n"
    )


def start(tmp: Path, sip_port: int, web_port: int, poll: float) -> DaemonProcess:
    path = tmp / f"daemon-{sip_port}.ini"
    path.write_text(ini(tmp, sip_port, web_port, poll))
    daemon = DaemonProcess(path, tree=REPO, output=tmp / f"daemon-{sip_port}.out").start()
    daemon.wait_ready(lambda: web_answers(f"http://127.0.0.1:{web_port}/healthz"), 60)
    return daemon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--poll", type=float, default=2.0, help="presence_poll_interval")
    parser.add_argument("--other-daemon", action="store_true")
    args = parser.parse_args()
    rounds = max(1, min(args.rounds, 500))

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        sip_port, web_port = find_free_port(), find_free_port()
        daemons = [start(tmp, sip_port, web_port, args.poll)]
        try:
            register_port = sip_port
            if args.other_daemon:
                register_port = find_free_port()
                daemons.append(start(tmp, register_port, find_free_port(), args.poll))
            token = run_cli(
                tmp / f"daemon-{sip_port}.ini", "token", "create", "alice", tree=REPO
            ).split()[-1]
            events: queue.Queue[tuple[float, dict[str, object]]] = queue.Queue()
            request = urllib.request.Request(
                f"http://127.0.0.1:{web_port}/api/v1/events",
                headers={"Authorization": f"Bearer {token}"},
            )
            stream = urllib.request.urlopen(request, timeout=30)

            def read() -> None:
                event = ""
                for raw in stream:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "registration":
                        events.put((time.monotonic(), json.loads(line[6:])))

            threading.Thread(target=read, daemon=True).start()
            time.sleep(args.poll + 0.5)  # the monitor's first read establishes the state
            phone_port = find_free_port()
            latencies = []
            for i in range(rounds):
                registered = i % 2 == 0
                started = time.monotonic()
                register("bob", "bob", phone_port, register_port, expires=600 if registered else 0)
                at, data = events.get(timeout=args.poll * 3 + 10)
                assert data["username"] == "bob" and data["registered"] == registered, data
                latencies.append((at - started) * 1000)
            source = "another daemon (poll)" if args.other_daemon else "this daemon (push)"
            print(
                f"REGISTER via {source}, presence_poll_interval {args.poll} s,"
                f" {rounds} rounds: REGISTER start -> SSE event"
                f" min {min(latencies):.1f} ms, median {statistics.median(latencies):.1f} ms,"
                f" max {max(latencies):.1f} ms"
            )
        finally:
            for daemon in daemons:
                daemon.stop()
    os._exit(0)  # the stream reader thread is blocked in a read


if __name__ == "__main__":
    main()
