"""
Node liveness: each node heartbeats into the C{nodes} table; any node finding
another's heartbeat older than C{[cluster] dead_after} takes it for dead and
records its calls in progress as ended with reason C{lost}
(C{end_active_calls(node, at, reason="lost")}), then tells the other nodes
on the bus (C{node_lost} on the C{call_control} channel) so their web pages
drop those calls.  At start-up a node ends its own calls left active by an
earlier run of itself (it cannot be running them any more).

Claiming a dead node is a C{DELETE ... WHERE last_seen < cutoff}: of several
survivors only one deletes the row and so only one reaps (ending calls twice
would be harmless anyway: only calls without C{ended_at} are touched).  A
node that ended up with calls in progress but no row (a survivor died between
deleting the row and ending the calls, or the node stopped) is an orphan and
is reaped the same way.  A node that finds its own row gone (it was paused for
longer than C{dead_after} and declared dead) logs it and heartbeats again.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import URL, Connection, delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from clicktodial.config import Config
from clicktodial.interfaces import ICallRecordStore, IEventBus
from clicktodial.store.schema import calls, nodes
from clicktodial.store.sql import create_sql_engine

__all__ = [
    "CONTROL_CHANNEL",
    "MemoryNodeRegistry",
    "NodeMonitor",
    "NodeRegistry",
    "SQLNodeRegistry",
    "default_node_id",
]

log = Logger(namespace="clicktodial.cluster.nodes")

T = TypeVar("T")

#: The bus channel of hang-up requests, resynchronisation and node_lost notices.
CONTROL_CHANNEL = "call_control"


def default_node_id(config: Config, hostname: str | None = None) -> str:
    """
    C{[cluster] node_id}, or by default C{HOSTNAME:PORT} (the SIP port), or
    C{HOSTNAME:ADDRESS:PORT} when the daemon listens on one address (so that
    several daemons on one host, on 127.0.0.2 and 127.0.0.3, differ).
    """
    if config.cluster.node_id:
        return config.cluster.node_id
    host = hostname if hostname is not None else socket.gethostname()
    listen = config.sip.listen
    if listen.host in ("0.0.0.0", "::"):
        return f"{host}:{listen.port}"
    return f"{host}:{listen}"


class NodeRegistry(Protocol):
    """The C{nodes} table, as the monitor uses it."""

    def heartbeat(self, node: str, at: float) -> Deferred[bool]:
        """Set C{node}'s C{last_seen}; fires with whether its row existed."""

    def stale_nodes(self, cutoff: float) -> Deferred[list[str]]:
        """Nodes whose C{last_seen} is before C{cutoff}, and orphans (see the module)."""

    def claim(self, node: str, cutoff: float) -> Deferred[bool]:
        """Delete C{node}'s row if still stale; fires with whether this caller should reap."""

    def remove(self, node: str) -> Deferred[None]:
        """Delete C{node}'s row (a clean stop)."""


class MemoryNodeRegistry:
    """The table in a dictionary (a single process; no orphan detection)."""

    def __init__(self) -> None:
        self.last_seen: dict[str, float] = {}

    def heartbeat(self, node: str, at: float) -> Deferred[bool]:
        existed = node in self.last_seen
        self.last_seen[node] = at
        return succeed(existed)

    def stale_nodes(self, cutoff: float) -> Deferred[list[str]]:
        return succeed(sorted(n for n, seen in self.last_seen.items() if seen < cutoff))

    def claim(self, node: str, cutoff: float) -> Deferred[bool]:
        seen = self.last_seen.get(node)
        if seen is not None and seen < cutoff:
            del self.last_seen[node]
            return succeed(True)
        return succeed(seen is None)

    def remove(self, node: str) -> Deferred[None]:
        self.last_seen.pop(node, None)
        return succeed(None)


class SQLNodeRegistry:
    """
    The C{nodes} table through its own small engine and one-thread pool, so
    heartbeats never queue behind REGISTER traffic on the store's pool.
    """

    def __init__(self, reactor: IReactorTime, url: str | URL,
                 threadpool: ThreadPool | None = None) -> None:
        self._from_threads = cast(IReactorFromThreads, reactor)
        self._engine = create_sql_engine(url, pool_size=1)
        self._pool = (threadpool if threadpool is not None
                      else ThreadPool(minthreads=0, maxthreads=1, name="clicktodial-nodes"))

    def start(self) -> None:
        """Start the thread pool."""
        self._pool.start()

    def stop(self) -> None:
        """Stop the thread pool and close the connection."""
        self._pool.stop()
        self._engine.dispose()

    def _run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self._from_threads, self._pool, f, *args)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._engine.connect() as connection:
            connection = connection.execution_options(clicktodial_write=True)
            with connection.begin():
                yield connection

    def heartbeat(self, node: str, at: float) -> Deferred[bool]:
        return self._run(self._heartbeat, node, at)

    def _heartbeat(self, node: str, at: float) -> bool:
        with self._write() as connection:
            updated = connection.execute(
                update(nodes).where(nodes.c.node == node).values(last_seen=at)).rowcount
        if updated:
            return True
        try:
            with self._write() as connection:
                connection.execute(insert(nodes).values(node=node, started_at=at, last_seen=at))
        except IntegrityError:
            # Another process inserted it meanwhile: same node id twice (a misconfiguration).
            return self._heartbeat(node, at)
        return False

    def stale_nodes(self, cutoff: float) -> Deferred[list[str]]:
        return self._run(self._stale_nodes, cutoff)

    def _stale_nodes(self, cutoff: float) -> list[str]:
        orphans = (
            select(calls.c.node).distinct()
            .where(calls.c.ended_at.is_(None), calls.c.node.is_not(None),
                   ~exists().where(nodes.c.node == calls.c.node))
        )
        with self._engine.connect() as connection:
            stale = set(connection.scalars(select(nodes.c.node).where(nodes.c.last_seen < cutoff)))
            stale.update(n for n in connection.scalars(orphans) if n is not None)
        return sorted(stale)

    def claim(self, node: str, cutoff: float) -> Deferred[bool]:
        return self._run(self._claim, node, cutoff)

    def _claim(self, node: str, cutoff: float) -> bool:
        with self._write() as connection:
            deleted = connection.execute(
                delete(nodes).where(nodes.c.node == node, nodes.c.last_seen < cutoff)).rowcount
            if deleted:
                return True
            alive = connection.scalar(select(nodes.c.node).where(nodes.c.node == node))
        return alive is None

    def remove(self, node: str) -> Deferred[None]:
        return self._run(self._remove, node)

    def _remove(self, node: str) -> None:
        with self._write() as connection:
            connection.execute(delete(nodes).where(nodes.c.node == node))


class NodeMonitor(Service):
    """
    Heartbeats this node and reaps dead ones (see the module).

    @ivar ready: fires once this node's own stale calls are ended and its
        first heartbeat is in (start the call controller after it).
    """

    def __init__(self, clock: IReactorTime, registry: NodeRegistry, records: ICallRecordStore,
                 bus: IEventBus, node_id: str, *, heartbeat_interval: float = 2.0,
                 dead_after: float = 10.0) -> None:
        self.clock = clock
        self.registry = registry
        self.records = records
        self.bus = bus
        self.node_id = node_id
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after
        self.ready: Deferred[None] = Deferred()
        self._loop: LoopingCall | None = None
        self._busy = False
        self._declared_dead_logged = False

    def startService(self) -> None:
        super().startService()
        self._attempt_start()

    def _attempt_start(self) -> None:
        # The database may be unreachable at start-up: try again every heartbeat_interval.
        def retry(failure: Failure) -> None:
            self._failed(failure, "start-up")
            if self.running:
                self.clock.callLater(self.heartbeat_interval, self._attempt_start)

        if self.running:
            Deferred.fromCoroutine(self._start()).addErrback(retry)

    async def _start(self) -> None:
        ended = await self.records.end_active_calls(self.node_id, self.clock.seconds(), "lost")
        if ended:
            log.warn("ended {count} call(s) an earlier run of node {node} left active (lost)",
                     count=ended, node=self.node_id)
        await self.registry.heartbeat(self.node_id, self.clock.seconds())
        if not self.running:
            return
        loop = self._loop = LoopingCall(self.tick)
        loop.clock = self.clock
        loop.start(self.heartbeat_interval, now=False).addErrback(self._failed, "heartbeat")
        self.ready.callback(None)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        # A clean stop: the others need not wait dead_after (calls still active become
        # orphans, reaped at their next tick).
        return self.registry.remove(self.node_id).addErrback(self._failed, "stop")

    def tick(self) -> Deferred[None]:
        """One heartbeat and one look for dead nodes (skipped while the last still runs)."""
        if self._busy:
            return succeed(None)
        self._busy = True

        def done(result: object) -> None:
            self._busy = False

        return (Deferred.fromCoroutine(self._tick())
                .addErrback(self._failed, "heartbeat").addBoth(done))

    async def _tick(self) -> None:
        now = self.clock.seconds()
        existed = await self.registry.heartbeat(self.node_id, now)
        if not existed and not self._declared_dead_logged:
            self._declared_dead_logged = True
            log.error("node {node} had been declared dead by another node (no heartbeat for"
                      " {dead_after}s): its calls were recorded as lost", node=self.node_id,
                      dead_after=self.dead_after)
        cutoff = now - self.dead_after
        for node in await self.registry.stale_nodes(cutoff):
            if node == self.node_id:
                continue
            if not await self.registry.claim(node, cutoff):
                continue
            at = self.clock.seconds()
            ended = await self.records.end_active_calls(node, at, "lost")
            log.warn("node {lost} is gone (no heartbeat for {dead_after}s): {count} of its"
                     " call(s) recorded as ended (lost)", lost=node, dead_after=self.dead_after,
                     count=ended)
            await self.bus.publish(CONTROL_CHANNEL, {"type": "node_lost", "lost": node, "at": at})

    def _failed(self, failure: Failure, what: str) -> None:
        log.warn("node liveness {what} failed: {error}", what=what,
                 error=failure.getErrorMessage())
