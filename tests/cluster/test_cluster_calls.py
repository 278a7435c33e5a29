"""ClusterCalls: every node shows and controls every call (two nodes on a memory hub)."""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from clicktodial.calls.events import CallEvents, CallInfo
from clicktodial.cluster.bus import MemoryEventBus, MemoryHub
from clicktodial.cluster.calls import CALLS_CHANNEL, ClusterCalls
from clicktodial.cluster.nodes import CONTROL_CHANNEL
from clicktodial.interfaces import ICallController, ICallEventListener
from clicktodial.store.memory import MemoryStore
from clicktodial.testing.fakes import InlineReactor, InlineThreadPool, success_result_of


@implementer(ICallController)
class FakeController:
    """A call controller whose calls change state when the test says so."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: dict[str, CallInfo] = {}
        self.events = CallEvents()
        self.hung_up: list[tuple[str, str | None]] = []

    def place_call(self, caller_username: str, callee_username: str) -> Deferred[CallInfo]:
        info = CallInfo(
            f"c{len(self.calls)}",
            caller_username,
            callee_username,
            "calling-caller",
            self.clock.seconds(),
        )
        self.set(info)
        return succeed(info)

    def set(self, info: CallInfo) -> None:
        if info.active:
            self.calls[info.call_id] = info
        else:
            self.calls.pop(info.call_id, None)
        self.events.publish(info)

    def hang_up(self, call_id: str, by_username: str | None = None) -> bool:
        if call_id not in self.calls:
            return False
        self.hung_up.append((call_id, by_username))
        self.set(attrs.evolve(self.calls[call_id], state="failed", end_reason="cancelled"))
        return True

    def get_call(self, call_id: str) -> CallInfo | None:
        return self.calls.get(call_id)

    def active_calls(self) -> list[CallInfo]:
        return sorted(self.calls.values(), key=lambda i: i.created_at)

    def subscribe(self, listener: ICallEventListener) -> Callable[[], None]:
        return self.events.subscribe(listener)


@implementer(ICallEventListener)
class Recorder:
    def __init__(self) -> None:
        self.seen: list[CallInfo] = []

    def call_state_changed(self, info: CallInfo) -> None:
        self.seen.append(info)

    def states(self) -> list[tuple[str, str]]:
        return [(i.call_id, i.state) for i in self.seen]


@attrs.define
class Node:
    bus: MemoryEventBus
    controller: FakeController
    cluster: ClusterCalls
    web: Recorder


def cluster(n: int = 2, records: MemoryStore | None = None) -> tuple[Clock, list[Node]]:
    clock, hub = Clock(), MemoryHub()
    nodes = []
    for i in range(n):
        bus = MemoryEventBus(clock, f"node{i}", hub)
        controller = FakeController(clock)
        calls = ClusterCalls(clock, controller, bus, records, sync_grace=5)
        calls.start()
        web = Recorder()
        calls.subscribe(web)
        nodes.append(Node(bus, controller, calls, web))
    for node in nodes:
        node.bus.startService()
    clock.advance(0)
    clock.advance(0)
    return clock, nodes


def test_cluster_calls_provides_the_controller_interface() -> None:
    _, (node, _) = cluster()
    verifyObject(ICallController, node.cluster)


def test_a_calls_state_changes_reach_the_web_of_every_node() -> None:
    clock, (one, two) = cluster()
    info = success_result_of(one.cluster.place_call("alice", "bob"))
    assert one.web.states() == [(info.call_id, "calling-caller")]
    clock.advance(0)
    assert two.web.states() == [(info.call_id, "calling-caller")]
    assert two.cluster.get_call(info.call_id) == info
    assert two.cluster.active_calls() == [info]

    one.controller.set(attrs.evolve(info, state="connected", connected_at=5.0))
    clock.advance(0)
    assert two.web.states()[-1] == (info.call_id, "connected")
    one.controller.set(attrs.evolve(info, state="ended", ended_at=9.0))
    clock.advance(0)
    assert two.web.states()[-1] == (info.call_id, "ended")
    assert two.cluster.get_call(info.call_id) is None
    assert two.cluster.active_calls() == []


def test_a_node_does_not_echo_its_own_calls_back_to_itself() -> None:
    clock, (one, _) = cluster()
    one.cluster.place_call("alice", "bob")
    clock.advance(0)
    assert len(one.web.seen) == 1
    assert one.cluster.remote == {}


def test_hang_up_of_another_nodes_call_is_executed_by_that_node() -> None:
    clock, (one, two) = cluster()
    info = success_result_of(one.cluster.place_call("alice", "bob"))
    clock.advance(0)
    assert two.cluster.hang_up(info.call_id, "bob") is True
    assert one.controller.hung_up == []
    clock.advance(0)
    assert one.controller.hung_up == [(info.call_id, "bob")]
    clock.advance(0)
    assert two.web.states()[-1] == (info.call_id, "failed")
    assert two.cluster.active_calls() == []


def test_hang_up_of_a_local_call_is_local_and_of_an_unknown_call_false() -> None:
    clock, (one, two) = cluster()
    before = one.bus.published + two.bus.published
    info = success_result_of(one.cluster.place_call("alice", "bob"))
    assert one.cluster.hang_up(info.call_id, None) is True
    assert one.controller.hung_up == [(info.call_id, None)]
    assert two.cluster.hang_up("nope") is False
    # The two state changes; no forwarded hang-up.
    assert one.bus.published + two.bus.published == before + 2


def test_only_the_owner_executes_a_forwarded_hang_up() -> None:
    clock, (one, two, three) = cluster(3)
    info = success_result_of(one.cluster.place_call("alice", "bob"))
    clock.advance(0)
    three.cluster.hang_up(info.call_id, "system")
    clock.advance(0)
    assert one.controller.hung_up == [(info.call_id, "system")]
    assert two.controller.hung_up == []


def test_calls_of_a_lost_node_are_reported_ended_as_lost() -> None:
    clock, (one, two) = cluster()
    ringing = success_result_of(one.cluster.place_call("alice", "bob"))
    connected = success_result_of(one.cluster.place_call("carol", "dave"))
    one.controller.set(attrs.evolve(connected, state="connected", connected_at=1.0))
    clock.advance(0)
    two.bus.publish(CONTROL_CHANNEL, {"type": "node_lost", "lost": "node0", "at": 42.0})
    clock.advance(0)
    lost = {i.call_id: i for i in two.web.seen[-2:]}
    assert lost[ringing.call_id].state == "failed"
    assert lost[connected.call_id].state == "ended"
    assert {i.end_reason for i in lost.values()} == {"lost"}
    assert {i.ended_at for i in lost.values()} == {42.0}
    assert two.cluster.active_calls() == []


def test_after_a_reconnection_calls_are_announced_again() -> None:
    """A node whose bus reconnects asks for every call: the others re-announce theirs."""
    clock, (one, two) = cluster()
    info = success_result_of(one.cluster.place_call("alice", "bob"))
    two.cluster.remote.clear()  # as if the announcement had been missed
    two.bus.stopService()
    two.bus.startService()
    clock.advance(0)  # bus_connected → sync
    clock.advance(0)  # sync → re-announcement
    clock.advance(0)
    assert two.cluster.get_call(info.call_id) == info


def test_a_cached_call_nobody_re_announces_is_looked_up_in_the_records() -> None:
    reactor = InlineReactor()
    store = MemoryStore(reactor, realm="example.com", hash_pool=InlineThreadPool())
    success_result_of(store.start())
    call_id = success_result_of(store.create_call("alice", "bob", 1.0, node="node0"))
    clock, (one, two) = cluster(records=store)
    ghost = CallInfo(call_id, "alice", "bob", "connected", 1.0, connected_at=2.0)
    two.bus.hub.publish(
        CALLS_CHANNEL, {"type": "state", "call": attrs.asdict(ghost), "node": "node0"}
    )
    clock.advance(0)
    assert two.cluster.get_call(call_id) == ghost
    # node0 ended it while node1's bus was away, and node0 no longer has it.
    success_result_of(store.end_active_calls("node0", 3.0, "caller-hangup"))
    two.bus.stopService()
    two.bus.startService()
    clock.pump([0.5] * 12)
    assert two.cluster.get_call(call_id) is None
    assert two.web.seen[-1].state == "failed"
    assert two.web.seen[-1].end_reason == "caller-hangup"


def test_malformed_call_events_are_dropped() -> None:
    clock, (one, two) = cluster()
    one.bus.publish(CALLS_CHANNEL, {"type": "state", "call": {"call_id": "x"}})
    one.bus.publish(CALLS_CHANNEL, {"type": "state", "call": "nonsense"})
    clock.advance(0)
    assert two.web.seen == []
