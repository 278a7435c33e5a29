"""
Web interface throughput, in process (no sockets): requests per second through a real
``Site`` (treq's StubTreq) on the memory store, for the directory page and ``GET
/api/v1/users`` with N users (a tenth registered), and ``GET /api/v1/calls/{id}``.

    python3 bench/bench_web.py [--users 1000] [--seconds 3]

Prints one line per case. Bounded in time; single thread; nothing leaves the process.
"""

from __future__ import annotations

import argparse
import time

from clicktodial.store.values import NewUser
from clicktodial.testing.webfakes import WebClient, web_world


def rate(label: str, seconds: float, run: object) -> None:
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        run()  # type: ignore[operator]
        count += 1
    elapsed = time.perf_counter() - started
    print(f"{label:40s} {count / elapsed:9.1f} requests/s ({count} in {elapsed:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    world = web_world()
    world.store.add_users(
        [NewUser(f"user{i:05d}", display_name=f"User {i}") for i in range(args.users)]
    )
    for i in range(0, args.users, 10):
        world.register(f"user{i:05d}")
    world.register("alice")
    client = WebClient(world)
    client.login("alice")
    token = world.store.create_token("alice").result
    auth = {"Authorization": f"Bearer {token}"}
    call_id = client.request(
        "POST", "/api/v1/calls", json_body={"callee": "bob"}, headers=auth
    ).json()["id"]
    users = args.users + 3
    rate(f"GET /directory ({users} users)", args.seconds, lambda: client.get("/directory"))
    rate(
        f"GET /api/v1/users ({users} users)",
        args.seconds,
        lambda: client.get("/api/v1/users", headers=auth),
    )
    rate(
        "GET /api/v1/calls/{id} (token)",
        args.seconds,
        lambda: client.get(f"/api/v1/calls/{call_id}", headers=auth),
    )
    rate("GET /api/v1/me (session cookie)", args.seconds, lambda: client.get("/api/v1/me"))


if __name__ == "__main__":
    main()
