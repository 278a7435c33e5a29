"""
Calls recorded as ended ``lost`` without this daemon running them (an earlier
run left them active; a dead node of the cluster ran them) get their media
relay sessions deleted (:class:`LostCalls`): by the node that records them, each
call once (IActiveCallClaims), at most ``concurrency`` deletes at a time, in
the background, relay errors logged; without a relay, or with a store
without the capability, the calls are still ended.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from clicktodial.calls.controller import CallService
from clicktodial.calls.relay import LostCalls, RelaySettings
from clicktodial.cluster.bus import MemoryEventBus, MemoryHub
from clicktodial.cluster.nodes import MemoryNodeRegistry, NodeMonitor
from clicktodial.interfaces import IActiveCallClaims, ICallRecordStore, IMediaRelay
from clicktodial.media.rtpengine import RelayError, RelayTimeout
from clicktodial.store.memory import MemoryStore
from clicktodial.store.values import CallUpdate
from clicktodial.testing.callfakes import CallWorld
from clicktodial.testing.fakes import InlineReactor, InlineThreadPool, success_result_of
from clicktodial.testing.transport import LogCapture


@implementer(IMediaRelay)
class DeleteRelay:
    """Records deletes; ``hold`` keeps them unanswered, ``failing`` fails them."""

    name = "fake"

    def __init__(self) -> None:
        self.deleted: list[str] = []
        self.hold = False
        self.held: list[Deferred[None]] = []
        self.failing: Exception | None = None

    def offer(self, call_id: str, from_tag: str, sdp: bytes, source: str | None) -> Deferred[bytes]:
        return succeed(sdp)

    def answer(
        self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, source: str | None
    ) -> Deferred[bytes]:
        return succeed(sdp)

    def delete(self, call_id: str) -> Deferred[None]:
        self.deleted.append(call_id)
        if self.failing is not None:
            return fail(self.failing)
        if self.hold:
            d: Deferred[None] = Deferred()
            self.held.append(d)
            return d
        return succeed(None)

    def query(self, call_id: str) -> Deferred[Mapping[str, object]]:
        return succeed({})

    def stats(self) -> Mapping[str, float]:
        return {}


@implementer(ICallRecordStore)
class RecordsOnly:
    """A plugin call record store without the optional IActiveCallClaims."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.ended: list[tuple[str | None, float, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def end_active_calls(
        self, node: str | None, ended_at: float, reason: str = "lost"
    ) -> Deferred[int]:
        self.ended.append((node, ended_at, reason))
        return self.store.end_active_calls(node, ended_at, reason)


def memory_store(clock: InlineReactor) -> MemoryStore:
    store = MemoryStore(clock, realm="example.com", hash_pool=InlineThreadPool())
    success_result_of(store.start())
    return store


def calls(store: MemoryStore, node: str | None, count: int) -> list[str]:
    return [
        success_result_of(store.create_call("alice", "bob", 1.0, node=node)) for _ in range(count)
    ]


def test_lost_calls_are_ended_and_their_relay_sessions_deleted_once() -> None:
    store, relay = memory_store(InlineReactor()), DeleteRelay()
    lost = calls(store, "one", 3)
    hung_up = calls(store, "one", 1)[0]
    success_result_of(
        store.update_call(hung_up, CallUpdate(ended_at=2.0, end_reason="caller-hangup"))
    )
    theirs = calls(store, "two", 1)
    lost_calls = LostCalls(relay)
    with LogCapture() as log:
        assert success_result_of(lost_calls.end(store, "one", 10.0)) == 3
    assert sorted(relay.deleted) == sorted(lost)
    assert [success_result_of(store.get_call(c)).end_reason for c in lost] == ["lost"] * 3  # type: ignore[union-attr]
    assert success_result_of(store.get_call(theirs[0])).active  # type: ignore[union-attr]
    assert lost_calls.pending == 0
    assert [
        e["count"] for e in log.events if "deleted the sessions" in e.get("log_format", "")
    ] == [3]
    # Another node reaping the same node later: nothing left to claim, nothing deleted twice.
    assert success_result_of(LostCalls(relay).end(store, "one", 11.0)) == 0
    assert len(relay.deleted) == 3


def test_deletes_are_bounded_and_do_not_hold_up_the_count() -> None:
    store, relay = memory_store(InlineReactor()), DeleteRelay()
    relay.hold = True
    lost = calls(store, None, 5)
    lost_calls = LostCalls(relay, concurrency=2)
    assert success_result_of(lost_calls.end(store, None, 10.0)) == 5  # not waiting for the relay
    assert len(relay.deleted) == 2 and lost_calls.pending == 5
    while relay.held:
        relay.held.pop(0).callback(None)
        assert len(relay.held) <= 2
    assert sorted(relay.deleted) == sorted(lost)
    assert lost_calls.pending == 0


def test_relay_errors_are_logged_and_the_calls_still_ended() -> None:
    store, relay = memory_store(InlineReactor()), DeleteRelay()
    relay.failing = RelayTimeout("delete", "no answer")
    lost = calls(store, None, 2)
    lost_calls = LostCalls(relay)
    with LogCapture() as log:
        assert success_result_of(lost_calls.end(store, None, 10.0)) == 2
    assert sorted(relay.deleted) == sorted(lost)
    assert success_result_of(store.count_active()) == 0
    assert lost_calls.pending == 0
    warned = [e for e in log.events if "failed (first" in e.get("log_format", "")]
    assert [(e["failed"], e["count"]) for e in warned] == [(2, 2)]
    assert log.failures() == []


def test_without_a_relay_the_calls_are_ended_and_nothing_deleted() -> None:
    store = memory_store(InlineReactor())
    calls(store, None, 2)
    assert success_result_of(LostCalls(None).end(store, None, 10.0)) == 2
    assert success_result_of(store.count_active()) == 0


def test_a_store_without_claims_still_ends_the_calls_and_warns_once() -> None:
    store, relay = memory_store(InlineReactor()), DeleteRelay()
    records = RecordsOnly(store)
    assert IActiveCallClaims(records, None) is None
    calls(store, None, 2)
    lost_calls = LostCalls(relay)
    with LogCapture() as log:
        assert success_result_of(lost_calls.end(records, None, 10.0)) == 2
        assert success_result_of(lost_calls.end(records, None, 11.0)) == 0
    assert records.ended == [(None, 10.0, "lost"), (None, 11.0, "lost")]
    assert relay.deleted == []
    assert len([e for e in log.events if "IActiveCallClaims" in e.get("log_format", "")]) == 1


def test_start_up_deletes_the_relay_sessions_of_calls_an_earlier_run_left_active() -> None:
    """Case (a), a single daemon: its call service ends the previous run's calls."""
    world = CallWorld()
    relay = DeleteRelay()
    world.controller.relay = RelaySettings(relay)
    left = calls(world.store, None, 2)
    service = CallService(world.controller)
    service.startService()
    assert sorted(relay.deleted) == sorted(left)
    assert success_result_of(world.store.count_active()) == 0
    service.stopService()


def _monitor(
    clock: InlineReactor,
    registry: MemoryNodeRegistry,
    store: MemoryStore,
    node: str,
    hub: MemoryHub,
    relay: DeleteRelay | None,
) -> NodeMonitor:
    bus = MemoryEventBus(clock, node, hub)
    bus.startService()
    return NodeMonitor(
        clock,
        registry,
        store,
        bus,
        node,
        heartbeat_interval=1.0,
        dead_after=5.0,
        lost=LostCalls(relay),
    )


def test_a_node_at_start_deletes_the_relay_sessions_of_its_earlier_runs_calls() -> None:
    """Case (a) in a cluster: the liveness monitor ends the node's own stale calls."""
    clock = InlineReactor()
    store, relay = memory_store(clock), DeleteRelay()
    left = calls(store, "one", 2)
    calls(store, "two", 1)
    one = _monitor(clock, MemoryNodeRegistry(), store, "one", MemoryHub(), relay)
    one.startService()
    assert one.ready.called
    assert sorted(relay.deleted) == sorted(left)


def test_the_node_that_reaps_a_dead_node_deletes_its_calls_relay_sessions() -> None:
    """Case (b): the dead node's calls, by the survivor; the loop does not wait for the relay."""
    clock = InlineReactor()
    clock.advance(1000)
    store, registry, hub = memory_store(clock), MemoryNodeRegistry(), MemoryHub()
    relay = DeleteRelay()
    relay.hold = True  # the relay never answers: the liveness loop goes on
    one = _monitor(clock, registry, store, "one", hub, None)
    two = _monitor(clock, registry, store, "two", hub, relay)
    one.startService()
    two.startService()
    lost = calls(store, "one", 3)
    mine = calls(store, "two", 1)
    clock.pump([0.5] * 4)
    one._loop.stop()  # type: ignore[union-attr]  # node one freezes (as after SIGKILL)
    clock.pump([0.5] * 14)
    assert sorted(relay.deleted) == sorted(lost)
    assert success_result_of(store.get_call(mine[0])).active  # type: ignore[union-attr]
    seen = registry.last_seen["two"]
    clock.pump([0.5] * 4)
    assert registry.last_seen["two"] > seen  # still heartbeating with the deletes outstanding
    for d in relay.held:
        d.errback(RelayError("delete", "Unknown call-ID"))
    assert two.lost.pending == 0
    two.stopService()
