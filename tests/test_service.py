"""build_service: the daemon's service tree, built on a fake reactor."""

from typing import Any

from twisted.application.service import IService
from twisted.logger import globalLogPublisher
from twisted.web.server import Site

from clicktodial.config import parse_config
from clicktodial.connlimit import ConnectionLimitingFactory
from clicktodial.service import SIP_SERVICE_NAME, WEB_SERVICE_NAME, build_service
from clicktodial.testing.transport import FakeReactor

CONFIG = (
    "[sip]\ndomain = 127.0.0.1\n[web]\nlisten = tcp:8181:interface=127.0.0.1\n"
    "[store]\nbackend = memory\n"
)


def test_nothing_listens_before_the_service_starts() -> None:
    reactor = FakeReactor()
    build_service(parse_config(CONFIG, "x.ini"), reactor)
    assert reactor.tcpServers == []


def test_started_service_listens_on_the_configured_web_endpoint() -> None:
    reactor = FakeReactor()
    root = build_service(parse_config(CONFIG, "x.ini"), reactor)
    root.startService()
    [(port, factory, _backlog, interface)] = [s for s in reactor.tcpServers if s[0] == 8181]
    assert (port, interface) == (8181, "127.0.0.1")
    assert isinstance(factory, ConnectionLimitingFactory)
    assert isinstance(factory.wrappedFactory, Site)
    assert (factory.limit.listener, factory.limit.max_per_source) == ("web", 256)
    assert IService(root.getServiceNamed(WEB_SERVICE_NAME)).running
    root.stopService()


def test_started_service_listens_for_sip_on_udp_and_tcp() -> None:
    """[sip] listen (default 127.0.0.1:5060) gets a UDP and a TCP listener."""
    reactor = FakeReactor()
    root = build_service(parse_config(CONFIG, "x.ini"), reactor)
    root.startService()
    assert [(p.host, p.port) for p in reactor.udp_ports] == [("127.0.0.1", 5060)]
    assert (5060, "127.0.0.1") in [(s[0], s[3]) for s in reactor.tcpServers]
    assert IService(root.getServiceNamed(SIP_SERVICE_NAME)).running
    root.stopService()


def test_start_and_stop_are_logged() -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        root = build_service(parse_config(CONFIG, "x.ini"), FakeReactor())
        root.startService()
        stopped: list[object] = []
        root.stopService().addCallback(stopped.append)
    finally:
        globalLogPublisher.removeObserver(events.append)
    formats = [e.get("log_format") for e in events]
    assert "clicktodial {version} starting" in formats
    assert "clicktodial stopped" in formats
    assert len(stopped) == 1


class InlineFakeReactor(FakeReactor):
    """A FakeReactor whose callFromThread runs at once (with the store's inline pools)."""

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


def test_sip_waits_for_the_store_and_demo_users_are_created() -> None:
    """The SIP stack listens only once the store has started; with [store] demo_users the
    demo users alice and bob exist by then."""
    from twisted.internet.defer import Deferred

    from clicktodial.store.memory import MemoryStore
    from clicktodial.testing.fakes import InlineThreadPool, cheap_password_hasher

    reactor = InlineFakeReactor()
    store = MemoryStore(
        reactor, realm="127.0.0.1", hash_pool=InlineThreadPool(), hasher=cheap_password_hasher()
    )
    starting: Deferred[None] = Deferred()
    real_start = store.start
    store.start = lambda: starting.addCallback(lambda _: real_start())  # type: ignore[method-assign]
    config = parse_config(CONFIG + "demo_users = yes\n", "x.ini")
    root = build_service(config, reactor, store=store)
    root.startService()
    assert reactor.udp_ports == []
    starting.callback(None)
    assert [(p.host, p.port) for p in reactor.udp_ports] == [("127.0.0.1", 5060)]
    users: list[object] = []
    store.list_users().addCallback(users.extend)
    assert sorted(u.username for u in users) == ["alice", "bob"]  # type: ignore[attr-defined]
    root.stopService()


def test_a_store_that_cannot_start_stops_the_daemon() -> None:
    """A store failing to start (e.g. an out-of-date schema) is logged as critical with its
    message, nothing listens for SIP, and the reactor is stopped."""
    from twisted.internet.defer import fail

    from clicktodial.store.errors import SchemaOutOfDate
    from clicktodial.store.memory import MemoryStore
    from clicktodial.testing.fakes import InlineThreadPool

    reactor = FakeReactor()
    store = MemoryStore(reactor, realm="127.0.0.1", hash_pool=InlineThreadPool())
    message = "run `clicktodial --config FILE db upgrade`"
    store.start = lambda: fail(SchemaOutOfDate(message))  # type: ignore[method-assign]
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        root = build_service(parse_config(CONFIG, "x.ini"), reactor, store=store)
        root.startService()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert reactor.udp_ports == []
    assert reactor.hasStopped
    critical = [e for e in events if e.get("log_format") == "clicktodial cannot start: {error}"]
    assert len(critical) == 1 and "db upgrade" in critical[0]["error"]


def _starting_store(reactor: Any, start: Any) -> tuple[Any, list[str]]:
    """A memory store whose start is ``start()``; the list records start/stop calls."""
    from clicktodial.store.memory import MemoryStore
    from clicktodial.testing.fakes import InlineThreadPool

    store = MemoryStore(reactor, realm="127.0.0.1", hash_pool=InlineThreadPool())
    calls: list[str] = []
    real_stop = store.stop

    def starting() -> Any:
        calls.append("start")
        return start()

    def stop() -> Any:
        calls.append("stop")
        return real_stop()

    store.start = starting  # type: ignore[method-assign]
    store.stop = stop  # type: ignore[method-assign]
    return store, calls


def test_stop_during_store_start_cancels_it_stops_the_store_and_is_not_a_failure() -> None:
    """SIGTERM while the store is still starting (a slow migration, a locked database): the
    stop does not wait for the start, the store is stopped all the same (its threads must
    not outlive the reactor), nothing ever listens, and it is no start-up failure (no
    critical event, the reactor is not stopped with exit status 1)."""
    from twisted.internet.defer import CancelledError
    from twisted.internet.task import deferLater

    reactor = FakeReactor()
    store, calls = _starting_store(reactor, lambda: deferLater(reactor, 5.0))
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        root = build_service(parse_config(CONFIG, "x.ini"), reactor, store=store)
        started: list[Any] = []
        root.started.addBoth(started.append)
        root.startService()
        reactor.pump([0.1] * 10)
        stopped: list[object] = []
        root.stopService().addCallback(stopped.append)
        assert stopped == [None]
        reactor.pump([0.1] * 100)  # the start's timer would have fired by now
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert calls == ["start", "stop"]
    assert reactor.udp_ports == [] and reactor.tcpServers == []
    assert len(started) == 1 and started[0].check(CancelledError)
    assert not reactor.hasStopped
    formats = [e.get("log_format") for e in events]
    assert "the daemon stopped during start-up, before it served" in formats
    assert "clicktodial cannot start: {error}" not in formats
    assert formats.index("clicktodial stopped") > formats.index(
        "the daemon stopped during start-up, before it served"
    )


def test_stop_during_store_start_that_cannot_be_cancelled_still_stops_the_store() -> None:
    """A store whose start has no canceller and completes after the stop: the store is
    stopped once, and its late success starts nothing."""
    from twisted.internet.defer import Deferred

    reactor = FakeReactor()
    pending: Deferred[None] = Deferred()
    store, calls = _starting_store(reactor, lambda: pending)
    root = build_service(parse_config(CONFIG, "x.ini"), reactor, store=store)
    root.started.addErrback(lambda _: None)
    root.startService()
    root.stopService()
    pending.callback(None)
    assert calls == ["start", "stop"]
    assert reactor.udp_ports == []


def test_stop_after_a_failed_store_start_still_stops_the_store() -> None:
    """A store that failed to start may hold started thread pools: stopping releases them."""
    from twisted.internet.defer import fail

    from clicktodial.store.errors import StoreUnavailable

    reactor = FakeReactor()
    store, calls = _starting_store(reactor, lambda: fail(StoreUnavailable("database gone")))
    root = build_service(parse_config(CONFIG, "x.ini"), reactor, store=store)
    root.started.addErrback(lambda _: None)
    root.startService()
    assert reactor.hasStopped
    root.stopService()
    assert calls == ["start", "stop"]


def test_in_a_cluster_the_liveness_monitor_deletes_lost_calls_through_the_media_relay() -> None:
    """[cluster] bus = postgres with [media] relay: the node that records a dead node's
    calls as lost deletes their sessions through the call controller's relay."""
    from zope.interface import alsoProvides

    from clicktodial.cluster.bus import MemoryEventBus
    from clicktodial.cluster.nodes import MemoryNodeRegistry
    from clicktodial.interfaces import IClusterStorage
    from clicktodial.service import CALLS_SERVICE_NAME, CLUSTER_SERVICE_NAME
    from clicktodial.store.memory import MemoryStore
    from clicktodial.testing.fakes import InlineThreadPool

    reactor = FakeReactor()
    store: Any = MemoryStore(reactor, realm="127.0.0.1", hash_pool=InlineThreadPool())
    store.event_bus = lambda node_id: MemoryEventBus(reactor, node_id)
    store.node_registry = MemoryNodeRegistry
    alsoProvides(store, IClusterStorage)
    config = parse_config(
        CONFIG + "[cluster]\nbus = postgres\nnode_id = n1\n"
        "[media]\nrelay = rtpengine\n[media:rtpengine]\nng = 127.0.0.1:22222\n",
        "x.ini",
    )
    root = build_service(config, reactor, store=store)
    relay = root.getServiceNamed(CALLS_SERVICE_NAME).controller.relay.relay
    assert root.getServiceNamed(CLUSTER_SERVICE_NAME).monitor.lost.relay is relay
    assert root.getServiceNamed(CALLS_SERVICE_NAME).lost.relay is relay
