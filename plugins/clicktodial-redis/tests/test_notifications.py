"""
IBindingChangeNotifier: every daemon on one Redis hears of every AOR whose bindings changed,
whoever changed them, on its reactor thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock
from zope.interface import implementer

from clicktodial.store.values import BindingChanges, ContactChange
from clicktodial.testing.fakes import InlineThreadPool, success_result_of
from clicktodial_redis import RedisLocationStore

pytestmark = pytest.mark.interop

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
NOW = 1_000_000.0


@implementer(IReactorFromThreads)
class QueueReactor(Clock):
    """
    A fake reactor thread: ``callFromThread`` from the test's own thread runs at once (as
    an inline pool's results do), from any other thread it is queued until the test runs it
    with :meth:`run_next`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.owner = threading.current_thread()
        self.pending: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()

    def callFromThread(self, callable: Callable[..., Any], *args: object, **kwargs: object) -> None:
        if threading.current_thread() is self.owner:
            callable(*args, **kwargs)
        else:
            self.pending.put((lambda: callable(*args, **kwargs), ()))

    def run_next(self, timeout: float = 10.0) -> None:
        f, args = self.pending.get(timeout=timeout)
        f(*args)


def register(call_id: str, cseq: int, *contacts: ContactChange) -> BindingChanges:
    return BindingChanges(call_id=call_id, cseq=cseq, contacts=contacts)


class Daemon:
    """A store with its own (fake) reactor thread, and the AORs its listener was told."""

    def __init__(self, url: str, prefix: str, expiry_events: str = "configure") -> None:
        self.reactor = QueueReactor()
        self.store = RedisLocationStore(
            self.reactor,
            redis.Redis.from_url(url),
            InlineThreadPool(),
            key_prefix=prefix,
            expiry_events=expiry_events,
        )
        self.told: list[tuple[str, threading.Thread]] = []
        self.unsubscribe = self.store.subscribe(
            lambda aor: self.told.append((aor, threading.current_thread()))
        )
        success_result_of(self.store.start())
        assert self.store.wait_subscribed(10)

    def next_aor(self) -> str:
        """Run the reactor until the listener was told of an AOR; that AOR."""
        while not self.told:
            self.reactor.run_next()
        aor, thread = self.told.pop(0)
        assert thread is self.reactor.owner, "listener not called on the reactor thread"
        return aor


@pytest.fixture
def server_config(redis_url: str) -> Iterator[redis.Redis]:
    """A client for CONFIG; the server's notify-keyspace-events is put back afterwards
    (CLICKTODIAL_TEST_REDIS_URL may name a server others use)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    before = client.config_get("notify-keyspace-events")["notify-keyspace-events"] or ""
    yield client
    client.config_set("notify-keyspace-events", before)
    client.close()


@pytest.fixture
def daemons(redis_url: str, key_prefix: str) -> Iterator[tuple[Daemon, Daemon]]:
    pair = (Daemon(redis_url, key_prefix), Daemon(redis_url, key_prefix))
    yield pair
    for daemon in pair:
        daemon.store.stop()


def test_other_daemon_is_told_of_a_register(daemons: tuple[Daemon, Daemon]) -> None:
    """A REGISTER through one daemon is told to the other's listener (and its own), with
    the AOR, on the reactor thread."""
    here, there = daemons
    success_result_of(
        here.store.update_bindings(
            ALICE, register("c", 1, ContactChange("sip:alice@192.0.2.1", 60)), NOW
        )
    )
    assert there.next_aor() == ALICE
    assert here.next_aor() == ALICE


def test_removals_are_told(daemons: tuple[Daemon, Daemon]) -> None:
    """Unregistering, remove_all and purge_expired are changes too."""
    here, there = daemons
    success_result_of(
        here.store.update_bindings(
            ALICE, register("c", 1, ContactChange("sip:alice@192.0.2.1", 60)), NOW
        )
    )
    success_result_of(
        here.store.update_bindings(
            BOB, register("c", 1, ContactChange("sip:bob@192.0.2.2", 30)), NOW
        )
    )
    assert [there.next_aor(), there.next_aor()] == [ALICE, BOB]
    success_result_of(
        here.store.update_bindings(
            ALICE, register("c", 2, ContactChange("sip:alice@192.0.2.1", 0)), NOW
        )
    )
    assert there.next_aor() == ALICE
    assert success_result_of(here.store.purge_expired(NOW + 30)) == 1
    assert there.next_aor() == BOB
    success_result_of(
        here.store.update_bindings(
            ALICE, register("c", 3, ContactChange("sip:alice@192.0.2.1", 60)), NOW
        )
    )
    assert there.next_aor() == ALICE
    assert success_result_of(here.store.remove_all(ALICE)) == 1
    assert there.next_aor() == ALICE


def test_unchanged_aor_is_not_told(daemons: tuple[Daemon, Daemon]) -> None:
    """A query REGISTER (no Contact) and a refused one change nothing and tell nothing."""
    here, there = daemons
    success_result_of(here.store.update_bindings(ALICE, register("c", 1), NOW))
    success_result_of(
        here.store.update_bindings(
            BOB, register("c", 1, ContactChange("sip:bob@192.0.2.2", 30)), NOW
        )
    )
    assert there.next_aor() == BOB  # the first message on the channel is BOB's


def test_unsubscribed_listener_is_not_told(daemons: tuple[Daemon, Daemon]) -> None:
    """After unsubscribing, a listener is no longer called."""
    here, there = daemons
    there.unsubscribe()
    other: list[str] = []
    there.store.subscribe(other.append)
    success_result_of(
        here.store.update_bindings(
            ALICE, register("c", 1, ContactChange("sip:alice@192.0.2.1", 60)), NOW
        )
    )
    while not other:
        there.reactor.run_next()
    assert other == [ALICE] and there.told == []


def test_expiry_by_redis_is_told(
    redis_url: str, key_prefix: str, server_config: redis.Redis
) -> None:
    """When Redis expires an AOR's last binding (its key's TTL), every daemon is told: with
    expiry_events = configure the store turned on the server's expired-key events."""
    client = server_config
    client.config_set("notify-keyspace-events", "")
    here = Daemon(redis_url, key_prefix)
    try:
        assert set("Ex") <= set(
            client.config_get("notify-keyspace-events")["notify-keyspace-events"] or ""
        )
        success_result_of(
            here.store.update_bindings(
                ALICE, register("c", 1, ContactChange("sip:alice@192.0.2.1", 1)), NOW
            )
        )
        assert here.next_aor() == ALICE  # the REGISTER
        assert here.next_aor() == ALICE  # Redis expired it, a second later
        assert client.exists(key_prefix + "bindings:" + ALICE) == 0
    finally:
        here.store.stop()


def test_check_mode_leaves_the_server_configuration(
    redis_url: str, key_prefix: str, server_config: redis.Redis
) -> None:
    """expiry_events = check only reads the server's setting (it may be refused to change
    on a managed Redis) and starts anyway."""
    client = server_config
    client.config_set("notify-keyspace-events", "")
    here = Daemon(redis_url, key_prefix, expiry_events="check")
    try:
        assert client.config_get("notify-keyspace-events")["notify-keyspace-events"] == ""
    finally:
        here.store.stop()
