"""
Two TransactionLayers talking over a seeded faulty datagram network (20% loss,
duplication, reordering, delay): the machines' retransmissions must recover,
each request must reach the transaction user once, each final response must
reach the client's user once, and both sides must end with no transaction and
no timer left.  Every run is seeded: a failure names the seed to replay.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from twisted.internet.task import Clock

from clicktodial.sip.address import Destination
from clicktodial.sip.message import Request, Response, make_response
from clicktodial.sip.transactions import ServerTransaction, TransactionLayer
from clicktodial.testing.sipfakes import (
    FaultyNetwork,
    RecordingUser,
    assert_quiescent,
    run_for,
    sip_request,
)

SEEDS = range(300)
BOB = Destination("UDP", "127.0.0.1", 5070)


class Pair:
    """Alice's layer (client) and Bob's layer (server) on one faulty network."""

    def __init__(
        self,
        seed: int,
        answer: Callable[[Clock], Callable[[ServerTransaction, Request], None]],
    ) -> None:
        self.clock = Clock()
        self.net = FaultyNetwork(
            self.clock, seed, loss=0.2, duplicate=0.1, reorder=0.1, delay=(0.01, 0.2)
        )
        a = self.net.endpoint("127.0.0.1", 5060)
        b = self.net.endpoint("127.0.0.1", 5070)
        self.alice_user = RecordingUser()
        self.bob_user = RecordingUser(answer(self.clock))
        self.alice = TransactionLayer(self.clock, a, self.alice_user)
        self.bob = TransactionLayer(self.clock, b, self.bob_user)
        a.attach(self.alice)
        b.attach(self.bob)
        self.responses: list[Response] = []

    def send(self, method: str) -> None:
        request = sip_request(method, "sip:bob@127.0.0.1:5070")
        self.alice.send_request(request, BOB, self.responses.append)

    @property
    def finals(self) -> list[int]:
        return [r.status for r in self.responses if r.status >= 200]


def answer_at_once(status: int) -> Callable[[Clock], Callable[[ServerTransaction, Request], None]]:
    def bind(clock: Clock) -> Callable[[ServerTransaction, Request], None]:
        def answer(tx: ServerTransaction, request: Request) -> None:
            tx.respond(make_response(request, status, to_tag="bob"))

        return answer

    return bind


def answer_later(
    delay: float, status: int, provisional: int | None = None
) -> Callable[[Clock], Callable[[ServerTransaction, Request], None]]:
    def bind(clock: Clock) -> Callable[[ServerTransaction, Request], None]:
        def answer(tx: ServerTransaction, request: Request) -> None:
            if provisional is not None:
                tx.respond(make_response(request, provisional, to_tag="bob"))
            clock.callLater(delay, tx.respond, make_response(request, status, to_tag="bob"))

        return answer

    return bind


@pytest.mark.parametrize("method", ["OPTIONS", "MESSAGE"])
def test_non_invite_exchange_survives_20_percent_loss(method: str) -> None:
    """300 seeds: the request reaches Bob's TU once, the 200 reaches Alice's once, all ends."""
    lost = 0
    for seed in SEEDS:
        pair = Pair(seed, answer_at_once(200))
        pair.send(method)
        run_for(pair.clock, 80, step=0.125)
        assert len(pair.bob_user.requests) == 1, f"seed {seed}"
        assert pair.finals == [200], f"seed {seed}"
        assert pair.bob_user.failures == [], f"seed {seed}"
        assert_quiescent(pair.clock, pair.alice, pair.bob)
        lost += pair.net.lost
    # The runs did exercise recovery: about a fifth of all datagrams were lost.
    assert lost > 100


def test_slow_non_invite_answer_absorbs_retransmissions() -> None:
    """100 seeds, Bob answers after 3 s: retransmissions never reach his TU twice."""
    for seed in range(100):
        pair = Pair(seed, answer_later(3.0, 202))
        pair.send("MESSAGE")
        run_for(pair.clock, 80, step=0.125)
        assert len(pair.bob_user.requests) == 1, f"seed {seed}"
        assert pair.finals == [202], f"seed {seed}"
        assert_quiescent(pair.clock, pair.alice, pair.bob)


def test_invite_failure_exchange_survives_20_percent_loss() -> None:
    """300 seeds: INVITE, 180, 486 after 1 s, ACK: one INVITE up, one 486 up, both end cleanly."""
    for seed in SEEDS:
        pair = Pair(seed, answer_later(1.0, 486, provisional=180))
        pair.send("INVITE")
        run_for(pair.clock, 100, step=0.125)
        assert len(pair.bob_user.requests) == 1, f"seed {seed}"
        assert pair.finals == [486], f"seed {seed}"
        # Bob's transaction ended by an ACK (confirmed -> Timer I), not by Timer H.
        assert pair.bob_user.failures == [], f"seed {seed}"
        assert pair.alice_user.strays == [], f"seed {seed}"
        assert_quiescent(pair.clock, pair.alice, pair.bob)


def test_invite_with_a_slow_user_gets_100_trying_and_survives_loss() -> None:
    """100 seeds: Bob's TU answers 603 after 2 s; the automatic 100 stops Alice retransmitting."""
    for seed in range(100):
        pair = Pair(seed, answer_later(2.0, 603))
        pair.send("INVITE")
        run_for(pair.clock, 100, step=0.125)
        assert len(pair.bob_user.requests) == 1, f"seed {seed}"
        assert pair.finals == [603], f"seed {seed}"
        assert 100 in [r.status for r in pair.responses] or pair.net.lost > 0, f"seed {seed}"
        assert_quiescent(pair.clock, pair.alice, pair.bob)


def test_the_faulty_network_is_deterministic_per_seed() -> None:
    """The same seed loses, duplicates and delays the same datagrams."""
    counts = []
    for seed in (42, 42, 43):
        pair = Pair(seed, answer_later(1.0, 486, provisional=180))
        pair.send("INVITE")
        run_for(pair.clock, 100, step=0.125)
        counts.append((pair.net.sent, pair.net.lost, pair.net.delivered))
    assert counts[0] == counts[1]
    assert counts[0] != counts[2]
