"""
Load generator for bench/calls.sh: places click-to-dial calls through the daemon's web
API as an administrator (``clicktodial user add NAME --admin``, ``clicktodial token create
NAME``) at a fixed rate, a batch of the calls due every 20 ms in one request
(``POST /api/v1/calls`` with ``{"calls": [...]}``), then checks every call's record. Prints
one line of results; asserts nothing. Loopback only; bounded in count and time.

    python3 bench/calls_rate.py register --sip 127.0.0.1:5060 --user alice --port 40000
    python3 bench/calls_rate.py step --api 127.0.0.1:8080 --token TOKEN --rate 100 \
        --seconds 5 --caller alice --callee bob --settle 20
    python3 bench/calls_rate.py hold --api 127.0.0.1:8080 --token TOKEN --calls 10000 \
        --rate 200 --pid PID --quiet 40
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

# tests/interop/calltools.py (REGISTER with Digest) imports tests/conftest.py as conftest.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "interop"))

from calltools import register  # type: ignore[import-not-found]  # tests/interop on sys.path


class Client:
    """One keep-alive HTTP connection to the web API (``/api/v1``), with a Bearer token."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
        self.connection = http.client.HTTPConnection(host, port, timeout=30)

    def request(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        path = "/api/v1" + path
        for attempt in (1, 2):
            try:
                self.connection.request(method, path, body=data, headers=self.headers)
                response = self.connection.getresponse()
                return response.status, json.loads(response.read())
            except (http.client.HTTPException, OSError):
                self.connection.close()
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def place_at_rate(
    api: tuple[str, int],
    token: str,
    rate: float,
    count: int,
    caller: str,
    callee: str,
    tick: float = 0.02,
    refusals: dict[str, int] | None = None,
    max_batch: int = 1000,
) -> tuple[list[str], int, float]:
    """
    Place ``count`` calls at ``rate``/s: every ``tick`` seconds, one POST /calls with the
    list of calls due by then (the API's batch form, for administrators), so the HTTP layer
    costs one request per tick, not per call. Returns (ids, refused, seconds).
    ``refusals`` (when given) counts the refusals by status and reason. A request holds
    at most ``max_batch`` calls (the daemon's ``[web] max_batch_calls``, 1,000 by
    default): after falling behind, the calls due go out in several requests at once,
    not in one the daemon refuses whole.
    """
    client = Client(*api, token)
    ids: list[str] = []
    refused = 0
    placed = 0
    start = time.monotonic()
    while placed < count:
        now_due = min(count, int((time.monotonic() - start) * rate) + 1)
        due = min(now_due, placed + max_batch)
        if due <= placed:
            time.sleep(max(0.0, start + placed / rate - time.monotonic()))
            continue
        batch = [{"caller": caller, "callee": callee}] * (due - placed)
        try:
            status, results = client.request("POST", "/calls", {"calls": batch})
        except OSError:
            status, results = 0, {}
        placed = due
        if status != 200:
            refused += len(batch)
            if refusals is not None:
                key = f"{status} to the batch"
                refusals[key] = refusals.get(key, 0) + len(batch)
            continue
        for result in results["calls"]:
            if result.get("status") == 201:
                ids.append(result["call"]["id"])
            else:
                refused += 1
                if refusals is not None:
                    key = f"{result.get('status')} {result.get('error', '')}".strip()
                    refusals[key] = refusals.get(key, 0) + 1
        if due < now_due:
            continue  # more are due than one request holds: the next at once
        next_tick = time.monotonic() + tick
        time.sleep(max(0.0, max(next_tick, start + placed / rate) - time.monotonic()))
    return ids, refused, time.monotonic() - start


def read_reasons(database: str, ids: list[str], wait: float = 10.0) -> list[str]:
    """
    The end reason of each call in ``ids``, read from the daemon's SQLite file (read-only),
    not through the daemon: its CPU per call then counts the calls, not the reading. The
    last updates are group-committed: calls still without a reason are read again, for at
    most ``wait`` seconds.
    """
    import sqlite3

    deadline = time.monotonic() + wait
    while True:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            found = dict(db.execute("SELECT call_id, end_reason FROM calls").fetchall())
        reasons = [str(found.get(call_id)) for call_id in ids]
        if "None" not in reasons or time.monotonic() > deadline:
            return reasons
        time.sleep(0.5)


def wait_idle(client: Client, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, active = client.request("GET", "/calls?active=true")
        if status == 200 and not active["calls"]:
            return True
        time.sleep(0.5)
    return False


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    reg = sub.add_parser("register")
    reg.add_argument("--sip", required=True)
    reg.add_argument("--user", required=True)
    reg.add_argument("--port", type=int, required=True)
    step = sub.add_parser("step")
    step.add_argument("--database", required=True, help="the daemon's SQLite file")
    hold = sub.add_parser("hold")
    for p in (step, hold):
        p.add_argument("--api", required=True, help="HOST:PORT of [web] listen")
        p.add_argument("--token", required=True, help="an administrator's API token")
        p.add_argument("--rate", type=float, required=True)
        p.add_argument("--caller", default="alice")
        p.add_argument("--callee", default="bob")
    step.add_argument("--seconds", type=float, default=5.0)
    step.add_argument("--settle", type=float, default=30.0)
    step.add_argument(
        "--tick",
        type=float,
        default=0.02,
        help="seconds between two batches (the count uses a longer one: batches as large"
        " as at a high rate)",
    )
    step.add_argument("--count-linger", type=float, default=33.0)
    step.add_argument(
        "--count-pid",
        type=int,
        help="a daemon under bench/twistd_callcount.py: SIGUSR1 before the first call,"
        " SIGUSR2 --count-linger s after every record has its end reason (no polling of the"
        " web API)",
    )
    hold.add_argument("--calls", type=int, required=True)
    hold.add_argument("--pid", type=int, required=True)
    hold.add_argument("--settle", type=float, default=120.0)
    hold.add_argument("--quiet", type=float, default=40.0)
    args = parser.parse_args()

    if args.command == "register":
        host, port = host_port(args.sip)
        register(args.user, args.user, args.port, port)
        return

    api = host_port(args.api)
    client = Client(*api, args.token)
    if args.command == "step":
        count = int(args.rate * args.seconds)
        if args.count_pid:
            os.kill(args.count_pid, signal.SIGUSR1)
        refusals: dict[str, int] = {}
        ids, refused, took = place_at_rate(
            api, args.token, args.rate, count, args.caller, args.callee, args.tick, refusals
        )
        if args.count_pid:
            # Counting: the records say when the calls ended; asking the web API (GET
            # /calls?active=true) would count its work as the calls'.
            found = read_reasons(args.database, ids, wait=args.settle)
            idle = "None" not in found
            # The calls' transactions linger up to 64*T1 = 32 s (Timer J, K, ...): their
            # timers are part of a call's work.
            time.sleep(args.count_linger)
            os.kill(args.count_pid, signal.SIGUSR2)
        else:
            idle = wait_idle(client, args.settle)
            found = read_reasons(args.database, ids)
        complete = 0
        reasons: dict[str, int] = {}
        for reason in found:
            reasons[reason] = reasons.get(reason, 0) + 1
            if reason == "caller-hangup":
                complete += 1
        failed = count - complete
        # A step passes when nothing failed and the calls were placed at (nearly) the
        # offered rate: placing is part of the work (policy, bindings, record).
        passed = failed == 0 and count / took >= 0.95 * args.rate
        print(
            json.dumps(
                {
                    "passed": passed,
                    "offered_rate": args.rate,
                    "placed": count,
                    "placing_rate": round(count / took, 1),
                    "complete": complete,
                    "failed": failed,
                    "refused": refused,
                    "refusals": refusals,
                    "drained": idle,
                    "reasons": reasons,
                }
            )
        )
        return

    # Memory per held call: RSS before, ramp up to --calls connected calls, wait until
    # they are all connected, then --quiet seconds more (the ramp's finished transactions
    # linger up to 64*T1 = 32 s: they are not part of a held call), then RSS again.
    # A warm-up tenth (at most 500 calls) first: "before" is read with those held, so
    # one-off allocations (code paths, caches, buffers) are not counted per call.
    def held(expected: int) -> int:
        deadline = time.monotonic() + args.settle
        connected = 0
        while time.monotonic() < deadline:
            status, active = client.request("GET", "/calls?active=true")
            calls = active["calls"]
            connected = sum(1 for call in calls if call["state"] == "connected")
            if connected >= expected or all(call["state"] == "connected" for call in calls):
                break  # every call placed is connected, or failed
            time.sleep(2)
        time.sleep(args.quiet)
        status, active = client.request("GET", "/calls?active=true")
        return sum(1 for call in active["calls"] if call["state"] == "connected")

    warmup = min(500, args.calls // 10)
    warm, refused, _ = place_at_rate(api, args.token, args.rate, warmup, args.caller, args.callee)
    base = held(len(warm))
    before = rss_kb(args.pid)
    ids, refused_more, ramp = place_at_rate(
        api, args.token, args.rate, args.calls - warmup, args.caller, args.callee
    )
    connected = held(base + len(ids))
    after = rss_kb(args.pid)
    print(
        json.dumps(
            {
                "held_calls": connected,
                "placed": len(warm) + len(ids),
                "refused": refused + refused_more,
                "ramp_rate": round(len(ids) / ramp, 1),
                "rss_before_kb": before,
                "rss_after_kb": after,
                "per_call_kb": round((after - before) / max(connected - base, 1), 2),
            }
        )
    )
    # The calls are left to the daemon's shutdown (bench/calls.sh stops it next).


if __name__ == "__main__":
    main()
