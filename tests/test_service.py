"""build_service: the daemon's service tree, built on a fake reactor."""

from typing import Any

from twisted.application.service import IService
from twisted.logger import globalLogPublisher
from twisted.web.server import Site

from clicktodial.config import parse_config
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
    assert isinstance(factory, Site)
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
