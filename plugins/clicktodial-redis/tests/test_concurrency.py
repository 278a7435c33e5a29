"""
Several daemons on one Redis: one REGISTER is applied whole or not at all, the CSeq rule and
``max_bindings`` hold when REGISTERs for one AOR race from two stores (two daemons).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.client import Pipeline
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from clicktodial.store.errors import OutOfOrderRegistration, TooManyBindings
from clicktodial.store.values import Binding, BindingChanges, ContactChange
from clicktodial.testing.fakes import (
    InlineReactor,
    InlineThreadPool,
    failure_result_of,
    success_result_of,
)
from clicktodial_redis import RedisLocationStore

pytestmark = pytest.mark.interop

AOR = "sip:alice@example.com"
NOW = 1_000_000.0


def register(
    call_id: str, cseq: int, *contacts: ContactChange, max_bindings: int | None = None
) -> BindingChanges:
    return BindingChanges(call_id=call_id, cseq=cseq, contacts=contacts, max_bindings=max_bindings)


def make_store(
    url: str, prefix: str, pool: ThreadPool, client: redis.Redis | None = None
) -> RedisLocationStore:
    # InlineReactor: a Deferred's callbacks run on the pool thread that fired it.
    return RedisLocationStore(
        InlineReactor(),
        client or redis.Redis.from_url(url),
        pool,
        key_prefix=prefix,
        expiry_events="off",
    )


def wait_for(d: Any, timeout: float = 30) -> Any:
    """The result of a Deferred fired on a pool thread (the InlineReactor runs callbacks
    there); raises its failure's exception."""
    fired = threading.Event()
    outcome: list[Any] = []

    def record(result: Any) -> None:
        outcome.append(result)
        fired.set()

    d.addBoth(record)
    assert fired.wait(timeout), "the Deferred never fired"
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


@pytest.fixture
def two_daemons(redis_url: str, key_prefix: str) -> Iterator[list[RedisLocationStore]]:
    """Two stores on one Redis and prefix, each with a real pool of 4 threads."""
    stores = [
        make_store(
            redis_url, key_prefix, ThreadPool(minthreads=0, maxthreads=4, name=f"daemon-{n}")
        )
        for n in (1, 2)
    ]
    for store in stores:
        wait_for(store.start())
    yield stores
    for store in stores:
        store.stop()


def run_concurrently(jobs: list[tuple[RedisLocationStore, BindingChanges]]) -> list[Any]:
    """Start every update at once on its store's pool; wait for all; their outcomes."""
    outcomes: list[Any] = [None] * len(jobs)
    done = threading.Semaphore(0)

    def record(result: Any, index: int) -> None:
        outcomes[index] = result
        done.release()

    for index, (store, changes) in enumerate(jobs):
        store.update_bindings(AOR, changes, NOW).addBoth(record, index)
    for _ in jobs:
        assert done.acquire(timeout=60), "an update never finished"
    return outcomes


def test_concurrent_registers_from_two_daemons_never_exceed_max_bindings(
    two_daemons: list[RedisLocationStore],
) -> None:
    """40 phones (Call-IDs) racing to register one AOR through two daemons: exactly
    max_bindings succeed, every other one fails whole with TooManyBindings."""
    jobs = [
        (
            two_daemons[n % 2],
            register(
                f"phone-{n}",
                1,
                ContactChange(f"sip:alice@192.0.2.{n}", 3600),
                ContactChange(f"sip:alice@198.51.100.{n}", 3600),
                max_bindings=6,
            ),
        )
        for n in range(40)
    ]
    outcomes = run_concurrently(jobs)
    succeeded = [o for o in outcomes if isinstance(o, list)]
    refused = [o for o in outcomes if isinstance(o, Failure)]
    assert len(succeeded) == 3 and len(refused) == 37
    for failure in refused:
        failure.trap(TooManyBindings)
    stored = wait_for(two_daemons[1].get_bindings(AOR, NOW))
    assert len(stored) == 6
    # All or nothing: the phones whose REGISTER succeeded are stored, each with both its
    # contacts.
    accepted = sorted(
        changes.call_id
        for (_, changes), outcome in zip(jobs, outcomes, strict=True)
        if isinstance(outcome, list)
    )
    assert sorted(b.call_id for b in stored) == sorted(accepted * 2)


def test_concurrent_cseqs_of_one_call_id_keep_the_highest_applied(
    two_daemons: list[RedisLocationStore],
) -> None:
    """Retransmitted / racing REGISTERs of one Call-ID through two daemons: each either
    applies with a CSeq above everything applied before it or fails with
    OutOfOrderRegistration; the stored binding has the highest CSeq that was applied."""
    jobs = [
        (two_daemons[cseq % 2], register("phone", cseq, ContactChange("sip:alice@192.0.2.1", 3600)))
        for cseq in range(1, 41)
    ]
    outcomes = run_concurrently(jobs)
    applied = [cseq for cseq, o in zip(range(1, 41), outcomes, strict=True) if isinstance(o, list)]
    for outcome in outcomes:
        if isinstance(outcome, Failure):
            outcome.trap(OutOfOrderRegistration)
    assert applied
    [binding] = wait_for(two_daemons[0].get_bindings(AOR, NOW))
    assert binding.cseq == max(applied)


class _InterleavingPipeline(Pipeline):
    """A pipeline that, after its first read of the AOR, lets another daemon write."""

    interleave: Any = None

    def hgetall(self, name: Any) -> Any:
        result = super().hgetall(name)
        action, type(self).interleave = type(self).interleave, None
        if action is not None:
            action()
        return result


class _InterleavingRedis(redis.Redis):
    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        return _InterleavingPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )


def test_register_planned_on_stale_bindings_is_planned_again(
    redis_url: str, key_prefix: str
) -> None:
    """Another daemon adds a binding after this one read the AOR and before it wrote:
    the write is not applied on the stale read; planned again, the REGISTER is refused by
    max_bindings, and the other daemon's binding is what is stored."""
    client = _InterleavingRedis.from_url(redis_url)
    here = make_store(redis_url, key_prefix, InlineThreadPool(), client)
    there = make_store(redis_url, key_prefix, InlineThreadPool())
    for store in (here, there):
        success_result_of(store.start())
    try:
        _InterleavingPipeline.interleave = lambda: success_result_of(
            there.update_bindings(
                AOR,
                register("desk", 1, ContactChange("sip:alice@192.0.2.1", 60), max_bindings=1),
                NOW,
            )
        )
        failure_result_of(
            here.update_bindings(
                AOR,
                register("laptop", 1, ContactChange("sip:alice@192.0.2.2", 60), max_bindings=1),
                NOW,
            ),
            TooManyBindings,
        )
        stored: list[Binding] = success_result_of(here.get_bindings(AOR, NOW))
        assert [b.call_id for b in stored] == ["desk"]
    finally:
        _InterleavingPipeline.interleave = None
        here.stop()
        there.stop()


def test_registrations_survive_a_new_store_instance(redis_url: str, key_prefix: str) -> None:
    """Bindings live in Redis: a store built afresh (a restarted daemon) finds them."""
    first = make_store(redis_url, key_prefix, InlineThreadPool())
    success_result_of(first.start())
    written = success_result_of(
        first.update_bindings(
            AOR, register("c", 1, ContactChange("sip:alice@192.0.2.1", 3600, q=0.5)), NOW
        )
    )
    first.stop()
    second = make_store(redis_url, key_prefix, InlineThreadPool())
    success_result_of(second.start())
    try:
        assert success_result_of(second.get_bindings(AOR, NOW + 1)) == written
        assert success_result_of(second.registered_aors(NOW + 1)) == [AOR]
    finally:
        second.stop()
