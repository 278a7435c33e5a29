"""
The PostgreSQL event bus against the real server (``$CLICKTODIAL_TEST_PG_URL``, the unix
socket by default): messages between two nodes, and recovery after the server drops the
listening connection. The reactor is a fake whose ``callFromThread`` queues; the test runs
the queue, with every wait bounded.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from twisted.internet.task import Clock

from clicktodial.cluster.bus import CONNECTED, PostgresEventBus, libpq_conninfo
from clicktodial.testing.postgres import create_database_if_missing, test_database_url

pytestmark = pytest.mark.interop

TIMEOUT = 20.0

Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class QueueReactor(Clock):
    """``callFromThread`` queues; :meth:`run_until` runs the queue on the test's thread."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: queue.Queue[Call] = queue.Queue()

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.from_threads.put((f, args, kwargs))

    def run_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"timed out waiting for {what}")
            try:
                f, args, kwargs = self.from_threads.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue
            f(*args, **kwargs)
            self.advance(0)


@pytest.fixture
def conninfo() -> str:
    url = test_database_url()
    if url is None:
        pytest.skip("CLICKTODIAL_TEST_PG_URL is empty")
    create_database_if_missing(url)
    return libpq_conninfo(url)


@pytest.fixture
def buses(conninfo: str) -> Iterator[tuple[QueueReactor, PostgresEventBus, PostgresEventBus]]:
    reactor = QueueReactor()
    one = PostgresEventBus(reactor, conninfo, "one", poll_interval=0.1, min_backoff=0.1)
    two = PostgresEventBus(reactor, conninfo, "two", poll_interval=0.1, min_backoff=0.1)
    yield reactor, one, two
    for bus in (one, two):
        if bus.running:
            stopped = bus.stopService()
            done: list[object] = []
            stopped.addBoth(done.append)
            reactor.run_until(lambda done=done: bool(done), "the bus to stop")  # type: ignore[misc]


def test_messages_reach_both_nodes_and_survive_a_dropped_connection(
    buses: tuple[QueueReactor, PostgresEventBus, PostgresEventBus], conninfo: str
) -> None:
    """Every subscriber of a channel on every node gets each message with its publisher's
    node; when the server terminates a node's listening connection, the node reconnects,
    tells its bus_connected subscribers and gets messages again."""
    reactor, one, two = buses
    seen: list[tuple[str, dict[str, object]]] = []
    connects: list[str] = []
    for bus in (one, two):
        bus.subscribe("calls", lambda m, n=bus.node_id: seen.append((n, m)))  # type: ignore[misc]
        bus.subscribe(CONNECTED, lambda m: connects.append(str(m["node"])))
        bus.startService()
    reactor.run_until(lambda: sorted(connects) == ["one", "two"], "both buses connected")

    sent: list[object] = []
    one.publish("calls", {"n": 1, "text": "é ünïcode"}).addCallback(sent.append)
    # The NOTIFY can reach the listeners before the publisher's own Deferred is
    # delivered from its thread: wait for both.
    reactor.run_until(lambda: len(seen) == 2 and bool(sent), "the message on both nodes")
    assert sent == [True]
    assert sorted(n for n, _ in seen) == ["one", "two"]
    assert all(m == {"n": 1, "text": "é ünïcode", "node": "one"} for _, m in seen)

    # The server drops node two's listening connection.
    with psycopg.connect(conninfo, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (two.application_name("listen"),),
        ).fetchall()
    assert killed == [(True,)]
    reactor.run_until(lambda: connects.count("two") == 2, "node two to reconnect")
    seen.clear()
    two.publish("calls", {"n": 2})
    reactor.run_until(lambda: len(seen) == 2, "the message after reconnection")
    assert sorted(n for n, _ in seen) == ["one", "two"]
