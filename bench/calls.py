"""
User-agent core throughput: complete calls (INVITE/180/200/ACK/BYE/200) per
second between two cores on the in-memory network, every message serialized
and parsed again.  Prints, asserts nothing.

    python3 bench/calls.py [--calls N] [--loss P]

Bounded: N calls (default 2000) in batches of 100 (twisted's ``task.Clock``
re-sorts all its timers on every ``callLater``, so one big batch would
measure the fake clock), each batch on a fresh clock pumped until every
timer has run out.  Wall-clock time covers both sides (UAC and UAS), so one
core's share is about half of it.
"""

from __future__ import annotations

import argparse
import time

from twisted.internet.task import Clock

from clicktodial.sip.message import Response
from clicktodial.sip.ua import OutgoingCall, Session
from clicktodial.testing.sipfakes import FaultyNetwork, run_for
from clicktodial.testing.uafakes import Answer, EventLog, Party, sdp

BATCH = 100


def run_batch(first: int, count: int, loss: float) -> tuple[list[EventLog], float, int, int, int]:
    """``count`` calls on a fresh clock: (logs, seconds, sent, lost, left behind)."""
    clock = Clock()
    net = FaultyNetwork(clock, seed=first, loss=loss)
    alice = Party.on_network(clock, net, "127.0.0.1", 5060, "alice")
    bob = Party.on_network(clock, net, "127.0.0.2", 5060, "bob", answer=Answer(ring=True))

    def hang_up(call: OutgoingCall, session: Session, response: Response) -> None:
        clock.callLater(1.0, session.bye)

    logs = []
    started = time.perf_counter()
    for _ in range(count):
        log = EventLog()
        log.on_answered = hang_up
        alice.call(bob, offer=sdp("alice"), handler=log)
        logs.append(log)
    run_for(clock, 120.0, step=0.05)
    elapsed = time.perf_counter() - started
    left = alice.ua.active_count + bob.ua.active_count
    left += alice.layer.active_count + bob.layer.active_count + len(clock.getDelayedCalls())
    return logs, elapsed, net.sent, net.lost, left


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--loss", type=float, default=0.0)
    args = parser.parse_args()

    logs: list[EventLog] = []
    elapsed = 0.0
    sent = lost = left = 0
    for first in range(0, args.calls, BATCH):
        batch = run_batch(first, min(BATCH, args.calls - first), args.loss)
        logs += batch[0]
        elapsed += batch[1]
        sent += batch[2]
        lost += batch[3]
        left += batch[4]

    completed = sum(1 for log in logs if log.of("answered") and log.of("terminated"))
    print(f"calls placed        {args.calls}")
    print(f"calls completed     {completed}")
    print(f"datagrams           {sent} sent, {lost} lost")
    print(f"wall time           {elapsed:.2f} s")
    print(f"calls per second    {completed / elapsed:.0f} (both cores on one CPU)")
    print(f"left behind         {left} (core entries, transactions, timers)")


if __name__ == "__main__":
    main()
