"""Node liveness: heartbeats, a dead node's calls recorded as lost, own stale calls at start."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from clicktodial.cluster.bus import MemoryEventBus, MemoryHub
from clicktodial.cluster.nodes import (
    CONTROL_CHANNEL,
    MemoryNodeRegistry,
    NodeMonitor,
    default_node_id,
)
from clicktodial.config import parse_config
from clicktodial.store.errors import StoreUnavailable
from clicktodial.store.memory import MemoryStore
from clicktodial.store.nodes import SQLNodeRegistry
from clicktodial.store.sql import SQLStore
from clicktodial.store.values import CallUpdate
from clicktodial.testing.fakes import (
    InlineReactor,
    InlineThreadPool,
    cheap_password_hasher,
    success_result_of,
)


def memory_store(clock: Clock) -> MemoryStore:
    store = MemoryStore(clock, realm="example.com", hash_pool=InlineThreadPool())
    success_result_of(store.start())
    return store


def monitor(
    clock: Clock, registry: object, store: object, node: str, hub: MemoryHub
) -> tuple[NodeMonitor, MemoryEventBus]:
    bus = MemoryEventBus(clock, node, hub)
    bus.startService()
    m = NodeMonitor(
        clock,
        registry,
        store,
        bus,
        node,  # type: ignore[arg-type]
        heartbeat_interval=1.0,
        dead_after=5.0,
    )
    return m, bus


def test_a_node_that_stops_heartbeating_has_its_active_calls_ended_as_lost() -> None:
    clock = InlineReactor()
    clock.advance(1000)
    store, registry, hub = memory_store(clock), MemoryNodeRegistry(), MemoryHub()
    one, _ = monitor(clock, registry, store, "one", hub)
    two, bus_two = monitor(clock, registry, store, "two", hub)
    notices: list[dict[str, object]] = []
    bus_two.subscribe(CONTROL_CHANNEL, notices.append)
    one.startService()
    two.startService()
    ended = success_result_of(store.create_call("alice", "bob", 1000.0, node="one"))
    success_result_of(store.update_call(ended, _ended(1001.0)))
    active = success_result_of(store.create_call("alice", "bob", 1000.0, node="one"))
    theirs = success_result_of(store.create_call("carol", "dave", 1000.0, node="two"))

    clock.pump([0.5] * 8)  # both heartbeat: nobody is dead
    assert success_result_of(store.count_active()) == 2
    one._loop.stop()  # type: ignore[union-attr]  # node one freezes (as after SIGKILL)
    clock.pump([0.5] * 9)  # 4.5 s without heartbeat: not yet dead
    assert success_result_of(store.count_active("one")) == 1
    clock.pump([0.5] * 4)
    lost = success_result_of(store.get_call(active))
    assert lost is not None and lost.end_reason == "lost" and lost.who_hung_up == "system"
    assert success_result_of(store.get_call(ended)).end_reason == "caller-hangup"  # type: ignore[union-attr]
    assert success_result_of(store.get_call(theirs)).ended_at is None  # type: ignore[union-attr]
    assert [n["lost"] for n in notices if n["type"] == "node_lost"] == ["one"]
    assert "one" not in registry.last_seen


def _ended(at: float) -> CallUpdate:
    return CallUpdate(ended_at=at, end_reason="caller-hangup", who_hung_up="caller")


def test_at_start_a_node_ends_the_calls_its_earlier_run_left_active() -> None:
    clock = InlineReactor()
    store, hub = memory_store(clock), MemoryHub()
    left = success_result_of(store.create_call("alice", "bob", 0.0, node="one"))
    other = success_result_of(store.create_call("alice", "bob", 0.0, node="two"))
    one, _ = monitor(clock, MemoryNodeRegistry(), store, "one", hub)
    one.startService()
    assert one.ready.called
    assert success_result_of(store.get_call(left)).end_reason == "lost"  # type: ignore[union-attr]
    assert success_result_of(store.get_call(other)).ended_at is None  # type: ignore[union-attr]


def test_a_clean_stop_removes_the_nodes_row() -> None:
    clock = InlineReactor()
    registry = MemoryNodeRegistry()
    one, _ = monitor(clock, registry, memory_store(clock), "one", MemoryHub())
    one.startService()
    assert "one" in registry.last_seen
    one.stopService()
    assert registry.last_seen == {}


@pytest.fixture
def sql_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    store = SQLStore(
        InlineReactor(),
        url,
        InlineThreadPool(),
        InlineThreadPool(),
        realm="example.com",
        hasher=cheap_password_hasher(),
        auto_upgrade=True,
    )
    success_result_of(store.start())
    store.stop()
    return url


def test_sql_registry_heartbeats_finds_stale_nodes_and_lets_one_claimant_reap(
    sql_url: str,
) -> None:
    registry = SQLNodeRegistry(InlineReactor(), sql_url, InlineThreadPool())
    registry.start()
    assert success_result_of(registry.heartbeat("one", 10.0)) is False  # new row
    assert success_result_of(registry.heartbeat("one", 11.0)) is True
    success_result_of(registry.heartbeat("two", 20.0))
    assert success_result_of(registry.stale_nodes(15.0)) == ["one"]
    assert success_result_of(registry.claim("two", 15.0)) is False  # alive
    assert success_result_of(registry.claim("one", 15.0)) is True
    assert success_result_of(registry.claim("one", 15.0)) is True  # gone: an orphan now
    assert success_result_of(registry.stale_nodes(15.0)) == []
    success_result_of(registry.remove("two"))
    assert success_result_of(registry.stale_nodes(100.0)) == []
    registry.stop()


def test_sql_registry_reports_nodes_with_active_calls_but_no_row_as_orphans(
    sql_url: str,
) -> None:
    reactor = InlineReactor()
    store = SQLStore(
        reactor,
        sql_url,
        InlineThreadPool(),
        InlineThreadPool(),
        realm="example.com",
        hasher=cheap_password_hasher(),
    )
    success_result_of(store.start())
    success_result_of(store.create_call("alice", "bob", 1.0, node="gone"))
    success_result_of(store.create_call("alice", "bob", 1.0, node="alive"))
    success_result_of(store.create_call("alice", "bob", 1.0))  # single-node call: no node
    registry = SQLNodeRegistry(reactor, sql_url, InlineThreadPool())
    registry.start()
    success_result_of(registry.heartbeat("alive", 10.0))
    assert success_result_of(registry.stale_nodes(5.0)) == ["gone"]
    registry.stop()
    store.stop()


def test_default_node_id_is_host_and_port_or_host_address_and_port() -> None:
    def config(listen: str, node_id: str = "") -> object:
        return parse_config(
            f"[sip]\ndomain = example.com\nlisten = {listen}\n[cluster]\nnode_id = {node_id}\n",
            "x.ini",
        )

    assert default_node_id(config("0.0.0.0:5060"), "sip1") == "sip1:5060"  # type: ignore[arg-type]
    assert default_node_id(config("127.0.0.2:5060"), "h") == "h:127.0.0.2:5060"  # type: ignore[arg-type]
    assert default_node_id(config("0.0.0.0:5060", "a"), "h") == "a"  # type: ignore[arg-type]


class FlakyRegistry(MemoryNodeRegistry):
    """Fails its first ``failures`` heartbeats, as an unreachable database would."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def heartbeat(self, node: str, at: float) -> Deferred[bool]:
        if self.failures:
            self.failures -= 1
            return fail(StoreUnavailable("database unavailable"))
        return super().heartbeat(node, at)


def test_start_up_is_retried_until_the_database_answers() -> None:
    clock = InlineReactor()
    registry = FlakyRegistry(failures=2)
    one, _ = monitor(clock, registry, memory_store(clock), "one", MemoryHub())
    one.startService()
    assert not one.ready.called
    clock.pump([0.5] * 4)
    assert one.ready.called
    assert "one" in registry.last_seen
