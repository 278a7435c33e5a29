"""
What the authentication throttle costs per REGISTER (clicktodial.throttle), alone.

Run: python3 bench/throttle_bench.py [--users 1000] [--repeat 7]

Method: an AuthThrottle on a fake clock; 1,000 users registering from one address.
"known": each (address, user) pair authenticated before (the steady state of refreshing
phones): begin() then succeeded(), as the registrar does for a 200. "first": pairs never
seen (a first registration): begin() then succeeded(), each on a fresh throttle so no pair
is known. The best of --repeat runs of 20 passes is printed, in microseconds per
REGISTER. No I/O; one core.
"""

from __future__ import annotations

import argparse
import timeit

from twisted.internet.task import Clock

from clicktodial.throttle import AuthThrottle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    clock = Clock()
    clock.advance(1_700_000_000)
    users = [f"u{i}" for i in range(args.users)]
    known = AuthThrottle(clock)
    for user in users:
        known.begin("127.0.0.1", user).succeeded()

    def refreshes() -> None:
        for user in users:
            known.begin("127.0.0.1", user).succeeded()

    def first_registrations() -> None:
        throttle = AuthThrottle(clock)
        for user in users:
            throttle.begin("127.0.0.1", user).succeeded()

    passes = 20
    for name, run in (("known", refreshes), ("first", first_registrations)):
        best = min(timeit.repeat(run, number=passes, repeat=args.repeat))
        print(
            f"{name}: {best / passes / len(users) * 1e6:.2f} us per REGISTER"
            f" (best of {args.repeat} x {passes} passes of {len(users)} users)"
        )


if __name__ == "__main__":
    main()
