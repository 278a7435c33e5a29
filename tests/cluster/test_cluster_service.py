"""The daemon with and without [cluster] bus = postgres (built, not started)."""

from __future__ import annotations

import pytest
from zope.interface.verify import verifyObject

from clicktodial.cluster.calls import ClusterCalls
from clicktodial.cluster.service import ClusterService, record_node
from clicktodial.config import ConfigError, parse_config
from clicktodial.interfaces import IClusterStorage, IEventBus, INodeRegistry
from clicktodial.service import CALLS_SERVICE_NAME, CLUSTER_SERVICE_NAME, build_service
from clicktodial.store.memory import MemoryStore
from clicktodial.store.sql import SQLStore
from clicktodial.testing.fakes import InlineThreadPool
from clicktodial.testing.transport import FakeReactor

PG_URL = "postgresql+psycopg://postgres@/clicktodial?host=/var/run/postgresql"


def pg_store(reactor: FakeReactor) -> SQLStore:
    """The sql store on PostgreSQL, built (it connects to nothing until started)."""
    return SQLStore(reactor, PG_URL, InlineThreadPool(), InlineThreadPool(), realm="127.0.0.1")


def ini(cluster: str, store: str = f"url = {PG_URL}\n") -> str:
    return (
        "[sip]\ndomain = 127.0.0.1\nlisten = 127.0.0.2:5060\n"
        "[web]\nlisten = tcp:8181:interface=127.0.0.1\n"
        f"[store]\n{store}[cluster]\n{cluster}"
    )


def test_a_postgres_bus_needs_a_store_providing_cluster_storage() -> None:
    """[cluster] bus = postgres with a store lacking IClusterStorage stops start-up naming
    both (the sql backend provides it on PostgreSQL only)."""
    for store in ("url = sqlite:///x.sqlite\n", "backend = memory\n"):
        config = parse_config(ini("bus = postgres\n", store), "x.ini")
        with pytest.raises(ConfigError) as info:
            build_service(config, FakeReactor())
        backend = config.store.backend
        assert str(info.value) == (
            "x.ini: [cluster] bus: postgres needs a store backend providing IClusterStorage"
            f" (the sql backend on PostgreSQL); [store] backend = {backend} does not"
        )


def test_the_sql_store_on_postgresql_provides_cluster_storage() -> None:
    postgres = pg_store(FakeReactor())
    storage = IClusterStorage(postgres, None)
    assert storage is not None
    assert verifyObject(IClusterStorage, storage)
    assert verifyObject(INodeRegistry, storage.node_registry())
    assert verifyObject(IEventBus, storage.event_bus("node-a"))
    sqlite = SQLStore(FakeReactor(), "sqlite:///x.sqlite", realm="127.0.0.1")
    assert IClusterStorage(sqlite, None) is None


def test_a_single_daemon_has_no_cluster_service_and_no_node_in_records() -> None:
    config = parse_config(ini(""), "x.ini")
    reactor = FakeReactor()
    store = MemoryStore(reactor, realm="127.0.0.1", hash_pool=InlineThreadPool())
    root = build_service(config, reactor, store=store)
    assert CLUSTER_SERVICE_NAME not in [s.name for s in root]
    assert record_node(config) is None


def test_a_cluster_node_stops_its_cluster_service_after_its_calls() -> None:
    """The cluster service comes before the call service (MultiService stops in reverse
    order), and the call records carry the node id."""
    config = parse_config(ini("bus = postgres\nnode_id = node-a\n"), "x.ini")
    reactor = FakeReactor()
    root = build_service(config, reactor, store=pg_store(reactor))
    names = [s.name for s in root]
    assert names.index(CLUSTER_SERVICE_NAME) < names.index(CALLS_SERVICE_NAME)
    cluster = root.getServiceNamed(CLUSTER_SERVICE_NAME)
    assert isinstance(cluster, ClusterService)
    assert isinstance(cluster.calls, ClusterCalls)
    assert cluster.bus.node_id == "node-a"
    assert record_node(config) == "node-a"
    assert root.getServiceNamed(CALLS_SERVICE_NAME).controller.node == "node-a"
