"""
Node liveness: each node heartbeats into the ``nodes`` table; any node finding
another's heartbeat older than ``[cluster] dead_after`` takes it for dead and
records its calls in progress as ended with reason ``lost``
(``end_active_calls(node, at, reason="lost")``), then tells the other nodes
on the bus (``node_lost`` on the ``call_control`` channel) so their web pages
drop those calls.  At start-up a node ends its own calls left active by an
earlier run of itself (it cannot be running them any more).  With a media
relay (``[media] relay``), the node that ends calls as lost also deletes
their relay sessions (:class:`clicktodial.calls.relay.LostCalls`: in the
background, so the liveness loop does not wait for the relay).

Claiming a dead node is a ``DELETE ... WHERE last_seen < cutoff``: of several
survivors only one deletes the row and so only one reaps (ending calls twice
would be harmless anyway: only calls without ``ended_at`` are touched).  A
node that ended up with calls in progress but no row (a survivor died between
deleting the row and ending the calls, or the node stopped) is an orphan and
is reaped the same way.  A node that finds its own row gone (it was paused for
longer than ``dead_after`` and declared dead) logs it and heartbeats again.
"""

from __future__ import annotations

import socket

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from clicktodial.calls.relay import LostCalls
from clicktodial.config import Config
from clicktodial.interfaces import ICallRecordStore, IEventBus, INodeRegistry

__all__ = [
    "CONTROL_CHANNEL",
    "MemoryNodeRegistry",
    "NodeMonitor",
    "default_node_id",
]

log = Logger(namespace="clicktodial.cluster.nodes")

#: The bus channel of hang-up requests, resynchronisation and node_lost notices.
CONTROL_CHANNEL = "call_control"


def default_node_id(config: Config, hostname: str | None = None) -> str:
    """
    ``[cluster] node_id``, or by default ``HOSTNAME:PORT`` (the SIP port), or
    ``HOSTNAME:ADDRESS:PORT`` when the daemon listens on one address (so that
    several daemons on one host, on 127.0.0.2 and 127.0.0.3, differ).
    """
    if config.cluster.node_id:
        return config.cluster.node_id
    host = hostname if hostname is not None else socket.gethostname()
    listen = config.sip.listen
    if listen.host in ("0.0.0.0", "::"):
        return f"{host}:{listen.port}"
    return f"{host}:{listen}"


@implementer(INodeRegistry)
class MemoryNodeRegistry:
    """The table in a dictionary (a single process; no orphan detection)."""

    def __init__(self) -> None:
        self.last_seen: dict[str, float] = {}

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> None:
        """Nothing to stop."""

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


class NodeMonitor(Service):
    """
    Heartbeats this node and reaps dead ones (see the module).

    :ivar ready: fires once this node's own stale calls are ended and its
        first heartbeat is in (start the call controller after it).
    """

    def __init__(
        self,
        clock: IReactorTime,
        registry: INodeRegistry,
        records: ICallRecordStore,
        bus: IEventBus,
        node_id: str,
        *,
        heartbeat_interval: float = 2.0,
        dead_after: float = 10.0,
        lost: LostCalls | None = None,
    ) -> None:
        self.clock = clock
        #: Ends calls as lost (and deletes their media relay sessions, with a relay).
        self.lost = lost if lost is not None else LostCalls(None)
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
        ended = await self.lost.end(self.records, self.node_id, self.clock.seconds())
        if ended:
            log.warn(
                "ended {count} call(s) an earlier run of node {node} left active (lost)",
                count=ended,
                node=self.node_id,
            )
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

        return (
            Deferred.fromCoroutine(self._tick()).addErrback(self._failed, "heartbeat").addBoth(done)
        )

    async def _tick(self) -> None:
        now = self.clock.seconds()
        existed = await self.registry.heartbeat(self.node_id, now)
        if not existed and not self._declared_dead_logged:
            self._declared_dead_logged = True
            log.error(
                "node {node} had been declared dead by another node (no heartbeat for"
                " {dead_after}s): its calls were recorded as lost",
                node=self.node_id,
                dead_after=self.dead_after,
            )
        cutoff = now - self.dead_after
        for node in await self.registry.stale_nodes(cutoff):
            if node == self.node_id:
                continue
            if not await self.registry.claim(node, cutoff):
                continue
            at = self.clock.seconds()
            ended = await self.lost.end(self.records, node, at)
            log.warn(
                "node {lost} is gone (no heartbeat for {dead_after}s): {count} of its"
                " call(s) recorded as ended (lost)",
                lost=node,
                dead_after=self.dead_after,
                count=ended,
            )
            await self.bus.publish(CONTROL_CHANNEL, {"type": "node_lost", "lost": node, "at": at})

    def _failed(self, failure: Failure, what: str) -> None:
        log.warn("node liveness {what} failed: {error}", what=what, error=failure.getErrorMessage())
