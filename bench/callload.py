"""
Click-to-dial call load through the web API as an administrator (``--token``: made with
``clicktodial user add NAME --admin`` and ``clicktodial token create NAME``): PAIRS worker
threads, worker k places calls c{k} -> d{k} one after the other on the web APIs given
(round-robin; ``POST /api/v1/calls`` with a batch of one), waits until the call is
connected, hangs it up and waits for its record to end. The phones are one SIPp UAS
(tests/interop/sipp/call_phone_answer.xml) every c/d user is registered at. Prints completed
calls per second. Bounded by --calls and --max-seconds; loopback only.

    python3 bench/callload.py --api 127.0.0.2:8080 [--api ...] --token TOKEN --calls 200 \
        --pairs 10
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(method: str, url: str, token: str, body: object = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with OPENER.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def one_call(base: str, token: str, caller: str, callee: str, timeout: float) -> str | None:
    """Place, wait connected, hang up, wait ended; None on success, else what failed."""
    status, placed = call("POST", f"{base}/calls", token,
                          {"calls": [{"caller": caller, "callee": callee}]})
    result = placed["calls"][0] if status == 200 else {"status": status}
    if result["status"] != 201:
        return f"place {result['status']}"
    url = f"{base}/calls/{result['call']['id']}"
    deadline = time.monotonic() + timeout
    while True:
        status, info = call("GET", url, token)
        if info.get("state") == "connected":
            break
        if info.get("ended_at") is not None or time.monotonic() > deadline:
            return f"not connected ({info.get('reason')})"
        time.sleep(0.02)
    call("DELETE", url, token)
    while True:
        status, info = call("GET", url, token)
        if info.get("ended_at") is not None:
            return None
        if time.monotonic() > deadline:
            return "not ended"
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", action="append", required=True,
                        help="HOST:PORT of a node's [web] listen")
    parser.add_argument("--token", required=True, help="an administrator's API token")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=15.0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    bases = [f"http://{api}/api/v1" for api in args.api]
    lock = threading.Lock()
    counters = {"started": 0, "ok": 0, "failed": 0}
    failures: dict[str, int] = {}
    stop_at = time.monotonic() + args.max_seconds

    def worker(k: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            with lock:
                if counters["started"] >= args.calls:
                    return
                counters["started"] += 1
            error = one_call(bases[(k + n) % len(bases)], args.token, f"c{k:02d}", f"d{k:02d}",
                             args.timeout)
            n += 1
            with lock:
                if error is None:
                    counters["ok"] += 1
                else:
                    counters["failed"] += 1
                    failures[error] = failures.get(error, 0) + 1

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.pairs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    result = {"ok": counters["ok"], "failed": counters["failed"], "failures": failures,
              "seconds": round(elapsed, 2), "rate": round(counters["ok"] / elapsed, 1)}
    print(json.dumps(result) if args.json else
          f"{result['ok']} calls in {result['seconds']} s: {result['rate']} calls/s,"
          f" {result['failed']} failed {failures or ''}")


if __name__ == "__main__":
    main()
