"""
``[daemon] workers``: the dispatch rules of the local bus (clicktodial.workers.bus), the
supervisor's restarts and lost calls (clicktodial.workers.supervisor), the workers'
configuration and the shared sockets. The bus runs over real AMP connections pumped in
memory (twisted.test.iosim); time is a task.Clock.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs
import pytest
from cluster.test_cluster_calls import FakeController, Recorder  # type: ignore[import-not-found]
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessProtocol, IReactorProcess
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface import implementer
from zope.interface.verify import verifyObject

from clicktodial.calls.values import CallInfo, CallRefused
from clicktodial.cluster.bus import CONNECTED
from clicktodial.cluster.calls import ClusterCalls
from clicktodial.cluster.nodes import CONTROL_CHANNEL
from clicktodial.config import ConfigError, parse_config, parse_workers
from clicktodial.interfaces import ICallController, IEventBus
from clicktodial.store.memory import MemoryStore
from clicktodial.testing.fakes import InlineThreadPool, success_result_of
from clicktodial.workers.bus import WorkerBus, WorkerHub, WorkerPlacement
from clicktodial.workers.node import (
    WorkerLink,
    check_workers_config,
    worker_config,
    worker_node,
)
from clicktodial.workers.sockets import TCP_FD, UDP_FD, SharedSockets
from clicktodial.workers.supervisor import WorkerPool

BASE_INI = """\
[sip]
domain = example.test
listen = 127.0.0.1:5060
[web]
listen = tcp:8080:interface=127.0.0.1
[store]
url = sqlite:///:memory:
[daemon]
workers = 2
"""


def config(extra: str = "", base: str = BASE_INI) -> object:
    return parse_config(base + extra, "w.ini")


# --- the bus ---------------------------------------------------------------------------


class WorkerController(FakeController):
    """A worker's calls: ids unique across workers, as the store's UUIDs are."""

    def __init__(self, clock: Clock, prefix: str) -> None:
        super().__init__(clock)
        self.prefix = prefix
        self.placed = 0

    def place_call(self, caller_username: str, callee_username: str) -> Deferred[CallInfo]:
        self.placed += 1
        info = CallInfo(
            f"{self.prefix}-c{self.placed}",
            caller_username,
            callee_username,
            "calling-caller",
            self.clock.seconds(),
        )
        self.set(info)
        return succeed(info)


@attrs.define
class Worker:
    bus: WorkerBus
    pump: iosim.IOPump
    controller: WorkerController
    link: WorkerLink
    seen: list[tuple[str, dict[str, object]]]


@attrs.define
class Deployment:
    clock: Clock
    hub: WorkerHub
    workers: list[Worker]
    main_seen: list[tuple[str, dict[str, object]]]

    def flush(self) -> None:
        """Pump every pipe and run the deliveries due, a few rounds (forwarded messages)."""
        for _ in range(4):
            for worker in self.workers:
                worker.pump.flush()
            self.clock.advance(0)


def deployment(count: int = 2, ready: bool = True) -> Deployment:
    clock = Clock()
    hub = WorkerHub(clock)
    hub.startService()
    main_seen: list[tuple[str, dict[str, object]]] = []
    for channel in ("calls", CONTROL_CHANNEL, "test"):
        hub.subscribe(channel, lambda m, c=channel: main_seen.append((c, m)))
    workers = []
    for index in range(count):
        made: list[object] = []
        bus = WorkerBus(clock, f"node/w{index}", connect=made.append)
        controller = WorkerController(clock, f"w{index}")
        records = MemoryStore(clock, realm="example.test", hash_pool=InlineThreadPool())
        link = WorkerLink(clock, bus, controller, records)
        seen: list[tuple[str, dict[str, object]]] = []
        bus.subscribe("test", lambda m, s=seen: s.append(("test", m)))
        link.startService()
        main_side = hub.attach(index)
        worker_side = made[0]
        pump = iosim.connect(
            main_side,
            iosim.makeFakeServer(main_side),
            worker_side,
            iosim.makeFakeClient(worker_side),
            greet=False,
        )
        workers.append(Worker(bus, pump, controller, link, seen))
        if ready:
            bus.ready()
    d = Deployment(clock, hub, workers, main_seen)
    d.flush()
    return d


def test_the_buses_provide_the_event_bus_interface() -> None:
    d = deployment(1)
    assert verifyObject(IEventBus, d.hub)
    assert verifyObject(IEventBus, d.workers[0].bus)
    assert verifyObject(ICallController, WorkerPlacement(d.hub))


def test_a_workers_message_reaches_the_main_process_and_every_other_worker_once() -> None:
    d = deployment(3)
    d.workers[1].bus.publish("test", {"n": 1})
    d.flush()
    assert [m["n"] for c, m in d.main_seen if c == "test"] == [1]
    # the sender gets its own message once (its local delivery), never echoed back
    assert [[m["n"] for _, m in w.seen] for w in d.workers] == [[1], [1], [1]]
    assert all(m["node"] == "node/w1" for w in d.workers for _, m in w.seen)


def test_a_workers_call_events_stop_at_the_main_process() -> None:
    """The calls channel: the main process's web shows every call; the other workers,
    which serve no page, are not sent them."""
    d = deployment(2)
    seen: list[list[str]] = [[], []]
    for index, worker in enumerate(d.workers):
        worker.bus.subscribe("calls", lambda m, i=index: seen[i].append(str(m["node"])))
    main_calls: list[str] = []
    d.hub.subscribe("calls", lambda m: main_calls.append(str(m["node"])))
    d.workers[0].bus.publish("calls", {"type": "test"})
    d.flush()
    assert main_calls == ["node/w0"]
    assert seen == [["node/w0"], []]  # its own local delivery only


def test_the_main_processs_message_reaches_every_worker_and_itself() -> None:
    d = deployment(2)
    d.hub.publish("test", {"n": 2})
    d.flush()
    assert [[m["node"] for _, m in w.seen] for w in d.workers] == [["main"], ["main"]]
    assert [m["n"] for c, m in d.main_seen if c == "test"] == [2]


def test_a_worker_bus_tells_its_subscribers_it_connected() -> None:
    clock = Clock()
    made: list[object] = []
    bus = WorkerBus(clock, "n/w0", connect=made.append)
    connected: list[dict[str, object]] = []
    bus.subscribe(CONNECTED, connected.append)
    bus.startService()
    hub = WorkerHub(clock)
    hub.startService()
    main_side = hub.attach(0)
    iosim.connect(
        main_side,
        iosim.makeFakeServer(main_side),
        made[0],
        iosim.makeFakeClient(made[0]),
        greet=False,
    ).flush()
    clock.advance(0)
    assert connected == [{"node": "n/w0"}]


def test_a_worker_whose_main_process_is_gone_is_told_to_stop() -> None:
    clock = Clock()
    made: list[object] = []
    stopped: list[bool] = []
    bus = WorkerBus(clock, "n/w0", connect=made.append, lost=lambda: stopped.append(True))
    bus.startService()
    hub = WorkerHub(clock)
    hub.startService()
    main_side = hub.attach(0)
    pump = iosim.connect(
        main_side,
        iosim.makeFakeServer(main_side),
        made[0],
        iosim.makeFakeClient(made[0]),
        greet=False,
    )
    pump.flush()
    main_side.transport.loseConnection()
    pump.flush()
    assert stopped == [True]
    assert hub.connections == {}


def test_new_calls_are_placed_round_robin_over_the_ready_workers() -> None:
    d = deployment(2)
    placement = WorkerPlacement(d.hub)
    placed = [placement.place_call("alice", "bob") for _ in range(4)]
    d.flush()
    assert all(success_result_of(p).caller == "alice" for p in placed)
    assert [len(w.controller.calls) for w in d.workers] == [2, 2]


def test_a_worker_that_is_not_ready_gets_no_call_and_none_ready_refuses() -> None:
    d = deployment(2, ready=False)
    placement = WorkerPlacement(d.hub)
    refused = placement.place_call("alice", "bob")
    failure = _failure_of(refused)
    assert failure.check(CallRefused) and failure.value.reason == "unavailable"
    d.workers[1].bus.ready()
    d.flush()
    for _ in range(3):
        placement.place_call("alice", "bob")
    d.flush()
    assert [len(w.controller.calls) for w in d.workers] == [0, 3]


def test_a_workers_refusal_reaches_the_web_with_its_reason() -> None:
    d = deployment(1)

    def refuse(caller: str, callee: str) -> Deferred[CallInfo]:
        raise CallRefused("caller-limit", "alice is in too many calls")

    d.workers[0].controller.place_call = lambda c, e: _failed(refuse, c, e)  # type: ignore[method-assign]
    placed = WorkerPlacement(d.hub).place_call("alice", "bob")
    d.flush()
    failure = _failure_of(placed)
    assert failure.check(CallRefused)
    assert (failure.value.reason, str(failure.value)) == (
        "caller-limit",
        "alice is in too many calls",
    )


def test_the_web_sees_every_workers_calls_and_a_hang_up_reaches_only_the_owner() -> None:
    d = deployment(2)
    web = ClusterCalls(d.clock, WorkerPlacement(d.hub), d.hub, None)
    web.start()
    recorder = Recorder()
    web.subscribe(recorder)
    placed = [web.place_call("alice", "bob"), web.place_call("carol", "dave")]
    d.flush()
    ids = [success_result_of(p).call_id for p in placed]
    # each worker numbers its own calls: c0 on both; the owner is the node that announced it
    assert sorted(info.caller for info in web.active_calls()) == ["alice", "carol"]
    assert {owner for owner, _ in web.remote.values()} == {"node/w0", "node/w1"}
    owner_of_carol = next(o for o, i in web.remote.values() if i.caller == "carol")
    call_id = next(i.call_id for o, i in web.remote.values() if i.caller == "carol")
    assert ids  # placed
    assert web.hang_up(call_id, "carol")
    d.flush()
    hung = {w.bus.node_id: w.controller.hung_up for w in d.workers}
    assert hung[owner_of_carol] == [(call_id, "carol")]
    assert all(h == [] for node, h in hung.items() if node != owner_of_carol)
    assert [i.caller for i in web.active_calls()] == ["alice"]
    assert (call_id, "failed") in recorder.states()


def test_a_lost_workers_calls_leave_the_web_as_lost() -> None:
    d = deployment(2)
    web = ClusterCalls(d.clock, WorkerPlacement(d.hub), d.hub, None)
    web.start()
    web.place_call("alice", "bob")
    d.flush()
    d.hub.publish(CONTROL_CHANNEL, {"type": "node_lost", "lost": "node/w0", "at": 5.0})
    d.flush()
    assert web.active_calls() == []


def _failed(f: Callable[..., Deferred[CallInfo]], *args: str) -> Deferred[CallInfo]:
    try:
        return f(*args)
    except CallRefused as e:
        d: Deferred[CallInfo] = Deferred()
        d.errback(e)
        return d


def _failure_of(d: Deferred[CallInfo]) -> Failure:
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures, "the Deferred did not fail"
    return failures[0]


# --- the supervisor ----------------------------------------------------------------------


@implementer(IReactorProcess)
class FakeProcesses(Clock):
    """Records spawnProcess; each spawned process is a FakeProcess the test ends."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[FakeProcess] = []

    def spawnProcess(
        self,
        processProtocol: IProcessProtocol,
        executable: object,
        args: object = (),
        env: Mapping[str, str] | None = None,
        path: object = None,
        uid: object = None,
        gid: object = None,
        usePTY: bool = False,
        childFDs: object = None,
    ) -> FakeProcess:
        process = FakeProcess(
            processProtocol,
            list(args),
            dict(env or {}),
            childFDs,  # type: ignore[call-overload]
            1000 + len(self.spawned),
        )
        self.spawned.append(process)
        processProtocol.makeConnection(process)  # type: ignore[arg-type]
        return process


@attrs.define(eq=False)
class FakeProcess:
    protocol: IProcessProtocol
    args: list[str]
    env: dict[str, str]
    child_fds: object
    pid: int
    signals: list[str] = attrs.field(factory=list)
    written: bytes = b""

    def writeToChild(self, fd: int, data: bytes) -> None:
        self.written += data

    def closeChildFD(self, fd: int) -> None:
        pass

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def end(self, status: int | None = 0, signal: int | None = None) -> None:
        reason = (
            ProcessDone(0) if status == 0 and signal is None else ProcessTerminated(status, signal)
        )
        self.protocol.processEnded(Failure(reason))


@attrs.define
class Pool:
    reactor: FakeProcesses
    hub: WorkerHub
    pool: WorkerPool
    store: MemoryStore
    control: list[dict[str, object]]


def pool(count: int = 2) -> Pool:
    reactor = FakeProcesses()
    hub = WorkerHub(reactor)
    hub.startService()
    control: list[dict[str, object]] = []
    hub.subscribe(CONTROL_CHANNEL, control.append)
    store = MemoryStore(reactor, realm="example.test", hash_pool=InlineThreadPool())
    success_result_of(store.start())
    workers = WorkerPool(
        reactor,
        hub,
        count,
        command=lambda i: ["python", "-m", "clicktodial.worker", "--index", str(i)],
        child_fds=lambda i: {UDP_FD: 10 + i, TCP_FD: 20 + i},
        node_of=lambda i: f"node/w{i}",
        records=store,
        env={"X": "1"},
        stop_timeout=10.0,
    )
    workers.startService()
    return Pool(reactor, hub, workers, store, control)


def _active_call(store: MemoryStore, node: str) -> str:
    return success_result_of(store.create_call("alice", "bob", 1.0, node))


def test_the_pool_spawns_each_worker_with_its_sockets_and_index() -> None:
    p = pool(2)
    assert [s.args[-1] for s in p.reactor.spawned] == ["0", "1"]
    assert p.reactor.spawned[1].child_fds == {0: "w", 1: "r", 2: 2, UDP_FD: 11, TCP_FD: 21}
    assert p.reactor.spawned[0].env == {"X": "1"}


def test_the_pool_ends_the_calls_an_earlier_run_left_before_spawning() -> None:
    reactor = FakeProcesses()
    store = MemoryStore(reactor, realm="example.test", hash_pool=InlineThreadPool())
    success_result_of(store.start())
    left = _active_call(store, "node/w1")
    hub = WorkerHub(reactor)
    hub.startService()
    WorkerPool(
        reactor,
        hub,
        1,
        command=lambda i: ["w"],
        child_fds=lambda i: {},
        node_of=lambda i: f"node/w{i}",
        records=store,
        env={},
    ).startService()
    record = success_result_of(store.get_call(left))
    assert record is not None and record.end_reason == "lost"
    assert len(reactor.spawned) == 1


def test_a_dead_workers_calls_are_ended_as_lost_and_it_is_restarted_after_a_backoff() -> None:
    p = pool(2)
    mine = _active_call(p.store, "node/w0")
    other = _active_call(p.store, "node/w1")
    p.reactor.spawned[0].end(None, 9)
    p.reactor.advance(0)
    assert success_result_of(p.store.get_call(mine)).end_reason == "lost"  # type: ignore[union-attr]
    assert success_result_of(p.store.get_call(other)).ended_at is None  # type: ignore[union-attr]
    assert [(m["type"], m["lost"]) for m in p.control] == [("node_lost", "node/w0")]
    assert len(p.reactor.spawned) == 2
    p.reactor.pump([0.1] * 9)
    assert len(p.reactor.spawned) == 2  # not before the 1 s back-off
    p.reactor.pump([0.1] * 2)
    assert [s.args[-1] for s in p.reactor.spawned] == ["0", "1", "0"]
    assert p.pool.restarts == 1


def test_a_worker_dying_again_at_once_waits_twice_as_long_then_calms_down() -> None:
    p = pool(1)
    p.reactor.spawned[-1].end(1)
    p.reactor.pump([0.5] * 3)  # 1 s back-off
    assert len(p.reactor.spawned) == 2
    p.reactor.spawned[-1].end(1)
    p.reactor.pump([0.5] * 3)
    assert len(p.reactor.spawned) == 2  # 2 s now
    p.reactor.pump([0.5] * 2)
    assert len(p.reactor.spawned) == 3
    p.reactor.pump([1.0] * 61)  # ran stable_after: the back-off starts over
    p.reactor.spawned[-1].end(1)
    p.reactor.pump([0.5] * 3)
    assert len(p.reactor.spawned) == 4


def test_stopping_sends_sigterm_and_waits_for_every_worker() -> None:
    p = pool(2)
    stopped = p.pool.stopService()
    assert [s.signals for s in p.reactor.spawned] == [["TERM"], ["TERM"]]
    p.reactor.spawned[0].end(0)
    assert not stopped.called
    p.reactor.spawned[1].end(0)
    assert stopped.called
    p.reactor.pump([1.0] * 20)
    assert len(p.reactor.spawned) == 2  # no restart while stopping
    assert p.control == []  # a clean stop loses no call


def test_workers_still_running_after_the_stop_timeout_are_killed() -> None:
    p = pool(1)
    stopped = p.pool.stopService()
    p.reactor.pump([1.0] * 11)
    assert p.reactor.spawned[0].signals == ["TERM", "KILL"]
    p.reactor.spawned[0].end(None, 9)
    assert stopped.called


def test_sighup_is_forwarded_to_every_worker() -> None:
    p = pool(2)
    p.pool.reload()
    assert [s.signals for s in p.reactor.spawned] == [["HUP"], ["HUP"]]


def test_the_pool_is_ready_once_every_worker_said_so() -> None:
    p = pool(2)
    p.hub.worker_ready(p.hub.connections[0])
    assert not p.pool.ready.called
    p.hub.worker_ready(p.hub.connections[1])
    assert p.pool.ready.called


def test_the_pools_status_for_systemd_follows_the_workers() -> None:
    """STATUS= lines: how many workers serve, and which is restarting after it died."""
    p = pool(2)
    statuses: list[str] = []
    p.pool.on_status.append(statuses.append)
    for index in (0, 1):
        connection = p.hub.connections[index]
        connection.ready = True
        p.hub.worker_ready(connection)
    p.reactor.spawned[1].end(None, 9)
    p.reactor.advance(0)
    assert statuses == [
        "1 of 2 workers serving",
        "2 of 2 workers serving",
        "1 of 2 workers serving; worker 1 restarting",
    ]


# --- configuration and sockets --------------------------------------------------------


def test_workers_auto_is_one_per_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert parse_workers("auto") == 6
    assert parse_workers("3") == 3
    for bad in ("0", "-1", "many", "257"):
        with pytest.raises(ValueError, match="workers"):
            parse_workers(bad)


def test_a_worker_gets_its_private_port_node_id_and_the_shared_nonce_secret() -> None:
    base = config("worker_ports = 7000\n[cluster]\nnode_id = box\n")
    one = worker_config(base, 1, b"s" * 32)  # type: ignore[arg-type]
    assert (one.sip.listen.host, one.sip.listen.port) == ("127.0.0.1", 7001)
    assert one.cluster.node_id == "box/w1" == worker_node(base, 1)  # type: ignore[arg-type]
    assert one.registrar.nonce_secret == b"s" * 32
    assert worker_config(config(), 0, None).sip.listen.port == 0  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ("[cluster]\nbus = postgres\n", "[cluster] bus"),
        ("worker_ports = 65535\n", "[daemon] worker_ports"),
        ("worker_ports = 5059\n", "[daemon] worker_ports"),
    ],
)
def test_settings_workers_cannot_serve_are_refused_naming_the_key(extra: str, where: str) -> None:
    text = BASE_INI + extra
    with pytest.raises(ConfigError) as raised:
        check_workers_config(parse_config(text, "w.ini"))  # type: ignore[arg-type]
    assert str(raised.value).startswith(f"w.ini: {where}")


def test_the_shared_sockets_share_one_port_one_pair_per_worker() -> None:
    from clicktodial.config import HostPort

    shared = SharedSockets.bind(HostPort("127.0.0.1", 0), ("udp", "tcp"), 2)
    try:
        assert shared.port != 0
        ports = {s.getsockname()[1] for s in shared.udp + shared.tcp}
        assert ports == {shared.port}
        assert shared.child_fds(1) == {
            UDP_FD: shared.udp[1].fileno(),
            TCP_FD: shared.tcp[1].fileno(),
        }
        # a datagram to the port reaches one of the group's sockets
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(b"x", ("127.0.0.1", shared.port))
            import select

            readable, _, _ = select.select(list(shared.udp), [], [], 2)
            assert len(readable) == 1
    finally:
        shared.close()


def test_workers_1_builds_todays_single_process(tmp_path: Path) -> None:
    """workers = 1 is today's daemon: record_node stays None, nothing to check."""
    from clicktodial.cluster.service import record_node

    one = config(base=BASE_INI.replace("workers = 2", "workers = 1"))
    check_workers_config(one)  # type: ignore[arg-type]
    assert record_node(one) is None  # type: ignore[arg-type]
    assert record_node(config()) is not None  # type: ignore[arg-type]


def test_the_worker_entry_point_refuses_a_bad_config_with_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clicktodial.worker import main

    bad = tmp_path / "bad.ini"
    bad.write_text(BASE_INI.replace("workers = 2", "workers = lots"))
    assert main(["--config", str(bad), "--index", "0"], environ={}) == 1
    assert "[daemon] workers" in capsys.readouterr().err


_WRITER = """
import sys, uuid
from clicktodial.store.schema import calls
from clicktodial.store.sql import create_sql_engine
engine = create_sql_engine(sys.argv[1])
for i in range(int(sys.argv[3])):
    with engine.connect().execution_options(clicktodial_write=True) as c, c.begin():
        c.execute(calls.insert().values(call_id=uuid.uuid4().hex, caller="a", callee="b",
                                        node=sys.argv[2], state="connected", created_at=i))
"""


def test_worker_processes_write_one_sqlite_database_at_once(tmp_path: Path) -> None:
    """WAL and busy_timeout: two processes writing call records at once lose none."""
    import subprocess
    import sys

    from clicktodial.store.sql import create_sql_engine, upgrade_schema

    url = f"sqlite:///{tmp_path}/shared.sqlite"
    upgrade_schema(url)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, url, f"n/w{i}", "150"], stderr=subprocess.PIPE
        )
        for i in range(2)
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err.decode()
    engine = create_sql_engine(url)
    with engine.connect() as c:
        rows = c.exec_driver_sql("SELECT node, count(*) FROM calls GROUP BY node").all()
        mode = c.exec_driver_sql("PRAGMA journal_mode").scalar()
    engine.dispose()
    assert sorted(rows) == [("n/w0", 150), ("n/w1", 150)]
    assert mode == "wal"


def test_a_reload_names_a_new_number_of_workers_as_needing_a_restart() -> None:
    from clicktodial.reload import LIVE_SETTINGS, _is_live, changed_settings

    old = config()
    new = config(base=BASE_INI.replace("workers = 2", "workers = 3\nshutdown_grace = 5"))
    changed = changed_settings(old, new)  # type: ignore[arg-type]
    assert sorted(changed) == ["daemon.shutdown_grace", "daemon.workers"]
    assert [s for s in changed if not _is_live(s, LIVE_SETTINGS)] == ["daemon.workers"]


def test_a_worker_serves_the_shared_sockets_talks_on_its_bus_and_has_no_web() -> None:
    """build_service(worker=...): today's composition plus the adopted sockets and the
    local bus, without the web (the main process serves it)."""
    from twisted.application.service import IServiceCollection

    from clicktodial.config import HostPort
    from clicktodial.service import WEB_SERVICE_NAME, build_service
    from clicktodial.sip.transport import AdoptedSockets
    from clicktodial.testing.transport import FakeReactor
    from clicktodial.workers.node import WorkerRole

    reactor = FakeReactor()
    shared = SharedSockets.bind(HostPort("127.0.0.1", 0), ("udp", "tcp"), 1)
    try:
        text = BASE_INI.replace("url = sqlite:///:memory:", "backend = memory")
        one = worker_config(parse_config(text, "w.ini"), 0, b"k" * 32)
        bus = WorkerBus(reactor, worker_node(one, 0), connect=lambda protocol: None)
        adopted = AdoptedSockets(socket.AF_INET, shared.udp[0].fileno(), shared.tcp[0].fileno())
        root = build_service(one, reactor, worker=WorkerRole(0, adopted, bus))
        names = [service.name for service in IServiceCollection(root)]
        assert WEB_SERVICE_NAME not in names
        assert isinstance(root.getServiceNamed("cluster"), WorkerLink)
        root.startService()
        # its private port (the system's pick: FakeReactor's 40000) and the shared pair
        assert [(p.host, p.port) for p in reactor.udp_ports] == [("127.0.0.1", 40000)]
        assert [(fd, family) for fd, family, *_ in reactor.adoptedPorts] == [
            (shared.udp[0].fileno(), socket.AF_INET),
            (shared.tcp[0].fileno(), socket.AF_INET),
        ]
        assert all(s[0] != 8080 for s in reactor.tcpServers)  # no web listener
        root.stopService()
    finally:
        shared.close()


def test_a_workers_log_events_name_the_worker() -> None:
    from twisted.logger import ILogObserver, LogLevel

    from clicktodial.log import format_text_event
    from clicktodial.worker import worker_tagged

    seen: list[dict[str, object]] = []
    tagged = worker_tagged(seen.append, 1)
    assert ILogObserver.providedBy(tagged)
    tagged(
        {
            "log_format": "hello",
            "log_namespace": "clicktodial.x",
            "log_level": LogLevel.info,
            "log_time": 0.0,
        }
    )
    tagged({"log_format": "legacy", "log_system": "-", "log_time": 0.0})
    assert [e["worker"] for e in seen] == [1, 1]
    assert "[w1 clicktodial.x#info] hello" in (format_text_event(seen[0]) or "")
    assert "[w1 -] legacy" in (format_text_event(seen[1]) or "")


# --- /metrics and /readyz of the main process ----------------------------------------------


def _worker_registry(index: int) -> object:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from clicktodial.metrics import DaemonCollector

    registry = CollectorRegistry(auto_describe=True)
    counter = Counter("clicktodial_x_responses", "x", ["status"], registry=registry)
    counter.labels("200").inc(10 + index)
    Histogram("clicktodial_x_seconds", "h", buckets=(0.1,), registry=registry).observe(0.05)
    registry.register(DaemonCollector([("clicktodial_x_active", "g", lambda: 3.0 + index)]))
    return registry


def _scraped(d: Deployment, resource: object) -> tuple[int, str]:
    from twisted.web.test.requesthelper import DummyRequest

    request = DummyRequest([b"metrics"])
    assert resource.render(request) == 1  # type: ignore[attr-defined]  # NOT_DONE_YET
    d.flush()
    assert request.finished
    return request.responseCode or 200, b"".join(request.written).decode()


def test_main_process_metrics_hold_every_workers_families_labelled_by_worker() -> None:
    """/metrics of the main process: each worker's counters, histograms and scrape-time
    gauges (asked over the bus), a ``worker`` label on each sample; up and restarts."""
    from clicktodial.workers.metrics import WorkerMetricsResource, encode_families

    d = deployment()
    for index, worker in enumerate(d.workers):
        registry = _worker_registry(index)
        worker.bus.serve_metrics(lambda r=registry: encode_families(r))  # type: ignore[misc]
    resource = WorkerMetricsResource(d.clock, 2, d.hub.scrape, lambda: 3)
    code, text = _scraped(d, resource)
    assert code == 200
    for line in (
        'clicktodial_x_responses_total{status="200",worker="0"} 10.0',
        'clicktodial_x_responses_total{status="200",worker="1"} 11.0',
        'clicktodial_x_seconds_bucket{le="0.1",worker="1"} 1.0',
        'clicktodial_x_active{worker="0"} 3.0',
        'clicktodial_x_active{worker="1"} 4.0',
        'clicktodial_worker_up{worker="0"} 1.0',
        'clicktodial_worker_up{worker="1"} 1.0',
        "clicktodial_worker_restarts_total 3.0",
    ):
        assert line in text.splitlines(), line
    # one family, one TYPE line, whatever the number of workers
    assert text.count("# TYPE clicktodial_x_active gauge") == 1


def test_a_worker_that_is_gone_or_silent_is_up_0_and_the_others_still_count() -> None:
    from clicktodial.workers.metrics import WorkerMetricsResource, encode_families

    d = deployment(count=3)
    registry = _worker_registry(0)
    d.workers[0].bus.serve_metrics(lambda: encode_families(registry))  # type: ignore[arg-type]
    # worker 1 is gone (its pipes closed); worker 2 never answers (its pipe is not pumped)
    d.workers[1].pump.server.transport.loseConnection()  # type: ignore[attr-defined]
    d.flush()
    silent = d.workers.pop()
    resource = WorkerMetricsResource(d.clock, 3, d.hub.scrape, lambda: 0, timeout=2.0)
    from twisted.web.test.requesthelper import DummyRequest

    request = DummyRequest([b"metrics"])
    resource.render(request)
    d.flush()
    assert not request.finished  # waiting for worker 2
    d.clock.pump([0.1] * 21)
    d.flush()
    assert request.finished
    text = b"".join(request.written).decode().splitlines()
    assert 'clicktodial_worker_up{worker="0"} 1.0' in text
    assert 'clicktodial_worker_up{worker="1"} 0.0' in text
    assert 'clicktodial_worker_up{worker="2"} 0.0' in text
    assert 'clicktodial_x_active{worker="0"} 3.0' in text
    assert silent.bus.running


def test_families_survive_the_encoding_and_bad_data_is_refused() -> None:
    from clicktodial.workers.metrics import decode_families, encode_families

    registry = _worker_registry(0)
    families = decode_families(encode_families(registry))  # type: ignore[arg-type]
    assert {f.name for f in families} >= {"clicktodial_x_responses", "clicktodial_x_active"}
    assert decode_families(b"") == []
    with pytest.raises(ValueError):
        decode_families(b"not zlib")


def test_main_process_readyz_waits_for_every_worker_then_asks_the_store() -> None:
    """/readyz: 503 naming the workers not serving (starting, restarting), 503 while
    stopping, else the store's answer."""
    from twisted.web.resource import Resource
    from twisted.web.test.requesthelper import DummyRequest

    from clicktodial.workers.metrics import WorkerReadinessResource

    class StoreCheck(Resource):
        isLeaf = True

        def render_GET(self, request: object) -> bytes:
            return b"ready"

    d = deployment(ready=False)
    stopping = [False]
    resource = WorkerReadinessResource(
        2, d.hub.ready_indexes, StoreCheck(), draining=lambda: stopping[0]
    )

    def get() -> tuple[int, bytes]:
        request = DummyRequest([b"readyz"])
        body = resource.render(request)
        assert isinstance(body, bytes)
        return request.responseCode or 200, body

    assert get() == (503, b"worker 0, 1 not ready")
    d.workers[1].bus.ready()
    d.flush()
    assert get() == (503, b"worker 0 not ready")
    d.workers[0].bus.ready()
    d.flush()
    assert get() == (200, b"ready")
    # a worker that dies is not ready until its successor says so
    d.workers[0].pump.server.transport.loseConnection()  # type: ignore[attr-defined]
    d.flush()
    assert get() == (503, b"worker 0 not ready")
    stopping[0] = True
    assert get() == (503, b"stopping")


def test_the_main_processs_web_caps_connections_per_client_as_the_single_process(
    tmp_path: Path,
) -> None:
    """The web interface is served by the main process with workers: its listener has the
    same per-client connection cap ([web] max_connections_per_client) and request timeout."""
    from twisted.web.server import Site

    from clicktodial.config import HostPort
    from clicktodial.connlimit import ConnectionLimitingFactory
    from clicktodial.service import WEB_SERVICE_NAME
    from clicktodial.store.sql import upgrade_schema
    from clicktodial.testing.transport import FakeReactor
    from clicktodial.workers.main import build_main_service

    @implementer(IReactorProcess)
    class FakeReactorWithProcesses(FakeReactor):
        """Network and processes (none spawned: the service is not started)."""

        def __init__(self) -> None:
            super().__init__()
            self.spawned: list[FakeProcess] = []

        spawnProcess = FakeProcesses.spawnProcess

    ini = BASE_INI.replace("sqlite:///:memory:", f"sqlite:///{tmp_path}/db.sqlite").replace(
        "[web]\n", "[web]\nmax_connections_per_client = 7\n"
    )
    cfg = parse_config(ini, "w.ini")
    upgrade_schema(f"sqlite:///{tmp_path}/db.sqlite")  # the store's start checks it
    shared = SharedSockets.bind(HostPort("127.0.0.1", 0), ("udp", "tcp"), 2)
    try:
        main = build_main_service(cfg, FakeReactorWithProcesses(), "w.ini", sockets=shared)
        web = main.root.getServiceNamed(WEB_SERVICE_NAME)
        factory = web.factory  # type: ignore[attr-defined]
        assert isinstance(factory, ConnectionLimitingFactory)
        assert isinstance(factory.wrappedFactory, Site)
        assert (factory.limit.listener, factory.limit.max_per_source) == ("web", 7)
    finally:
        shared.close()
