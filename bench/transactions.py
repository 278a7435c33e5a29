"""
How many transactions a second the transaction layer runs (no sockets).

Two TransactionLayers are linked in memory; each exchange is a complete
client + server transaction pair over "UDP" (so every timer is scheduled and
cancelled), run to termination.  Two variants: messages handed over as
objects (the layer's own cost), and serialized + parsed again (what a UDP
peer costs, wire format included).  Bounded: N exchanges per variant.

    python3 bench/transactions.py [N]
"""

from __future__ import annotations

import gc
import heapq
import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.base import DelayedCall
from zope.interface import implementer

from clicktodial.interfaces import IMessageHandler, ISIPTransport
from clicktodial.sip.address import Destination, Source
from clicktodial.sip.message import Request, Response, make_response
from clicktodial.sip.parser import parse_message
from clicktodial.sip.transactions import ServerTransaction, TransactionLayer
from clicktodial.testing.sipfakes import RecordingUser, sip_request


class HeapClock:
    """An IReactorTime with a heap (task.Clock re-sorts a list on every call)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, DelayedCall]] = []
        self._n = 0

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, f: Callable[..., Any], *a: Any, **kw: Any) -> DelayedCall:
        call = DelayedCall(self.now + delay, f, a, kw, lambda c: None, self._moved, self.seconds)
        self._n += 1
        heapq.heappush(self._heap, (call.time, self._n, call))
        return call

    def _moved(self, call: DelayedCall) -> None:
        """``call.reset()`` made it earlier (the timer queues' one reactor timer does)."""
        self._heap = [(c.getTime(), n, c) for _, n, c in self._heap]
        heapq.heapify(self._heap)

    def getDelayedCalls(self) -> list[DelayedCall]:
        return [c for _, _, c in self._heap if c.active()]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        heap = self._heap
        while heap and heap[0][0] <= self.now:
            _, n, call = heapq.heappop(heap)
            if call.cancelled or call.called:
                continue
            if call.getTime() > self.now:  # reset() later: wait again
                heapq.heappush(heap, (call.getTime(), n, call))
                continue
            call.called = 1
            call.func(*call.args, **call.kw)
            heap = self._heap  # (_moved may have rebuilt it)


@implementer(ISIPTransport)
class Link:
    """Hands messages straight to the peer layer (optionally through the wire format)."""

    def __init__(self, port: int, wire: bool) -> None:
        self.port = port
        self.wire = wire
        self.peer: IMessageHandler | None = None
        self.source = Source("UDP", "127.0.0.1", port, "127.0.0.1", port)

    def _carry(self, message: Request | Response) -> Request | Response:
        return parse_message(message.serialize()) if self.wire else message

    def send_request(self, request: Request, destination: Destination) -> None:
        assert self.peer is not None
        self.peer.request_received(self._carry(request), self.source)  # type: ignore[arg-type]

    def send_response(self, response: Response, source: object = None) -> None:
        assert self.peer is not None
        self.peer.response_received(self._carry(response), self.source)  # type: ignore[arg-type]

    def local_address(self, transport: str) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def run(n: int, method: str, wire: bool) -> float:
    clock = HeapClock()
    a, b = Link(5060, wire), Link(5070, wire)

    def answer(tx: ServerTransaction, request: Request) -> None:
        tx.respond(make_response(request, 200 if method != "INVITE" else 486, to_tag="b"))

    alice = TransactionLayer(clock, a, RecordingUser())  # type: ignore[arg-type]
    bob = TransactionLayer(clock, b, RecordingUser(answer))  # type: ignore[arg-type]
    a.peer, b.peer = bob, alice
    bob_dest = Destination("UDP", "127.0.0.1", 5070)
    finals = 0

    def on_response(response: Response) -> None:
        nonlocal finals
        if response.status >= 200:
            finals += 1

    requests = [sip_request(method, "sip:bob@127.0.0.1:5070") for _ in range(n)]
    start = time.perf_counter()
    for request in requests:
        alice.send_request(request, bob_dest, on_response)
    clock.advance(40.0)  # Timers D/I/J/K: every transaction terminates
    elapsed = time.perf_counter() - start
    assert finals == n and alice.active_count == 0 and bob.active_count == 0
    return n / elapsed


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    print(f"{n} exchanges started back to back, then run to termination (each exchange =")
    print("one client + one server transaction, all timers scheduled over UDP)")
    for collect in (True, False):
        # The cyclic GC scans every live transaction; with N alive at once it
        # is a large share of the cost (the daemon may gc.freeze() after start).
        (gc.enable if collect else gc.disable)()
        for method in ("OPTIONS", "INVITE"):
            for wire in (False, True):
                rate = run(n, method, wire)
                kind = "serialized+parsed" if wire else "objects"
                print(
                    f"gc={'on ' if collect else 'off'} {method:8} {kind:18} {rate:8.0f} exchanges/s"
                )
    gc.enable()


if __name__ == "__main__":
    main()
