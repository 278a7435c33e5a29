"""
The cluster's part of the daemon (C{[cluster] bus = postgres}): the
PostgreSQL event bus, the node liveness monitor and L{ClusterCalls} around
the local call controller.  With C{bus = memory} (a single daemon) there is
nothing to add: the local controller is used as it is.
"""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from clicktodial.cluster.bus import PostgresEventBus, libpq_conninfo
from clicktodial.cluster.calls import ClusterCalls
from clicktodial.cluster.nodes import NodeMonitor, SQLNodeRegistry, default_node_id
from clicktodial.config import Config
from clicktodial.interfaces import ICallController, ICallRecordStore

__all__ = ["ClusterService", "build_cluster_service", "record_node"]

log = Logger(namespace="clicktodial.cluster.service")


def record_node(config: Config) -> str | None:
    """
    The node name the call controller writes in call records: this node's id
    in a cluster, L{None} for a single daemon (whose start-up then ends every
    call left active, whichever node name it had).
    """
    return default_node_id(config) if config.cluster.bus == "postgres" else None


class ClusterService(MultiService):
    """
    The bus and the liveness monitor (children, started in that order) and
    L{ClusterCalls} (C{calls}: give it to the web layer instead of the local
    controller).  Add it to the daemon before the call service, so that it
    stops after it: the calls hung up at shutdown are still announced.
    """

    def __init__(self, bus: PostgresEventBus, registry: SQLNodeRegistry,
                 monitor: NodeMonitor, calls: ClusterCalls) -> None:
        super().__init__()
        self.bus = bus
        self.registry = registry
        self.monitor = monitor
        self.calls = calls
        bus.setServiceParent(self)
        monitor.setServiceParent(self)

    def startService(self) -> None:
        log.info("cluster node {node} starting (PostgreSQL event bus)", node=self.bus.node_id)
        self.registry.start()
        self.calls.start()
        super().startService()

    def stopService(self) -> Deferred[None]:
        self.calls.stop()
        stopped: Deferred[None] = super().stopService()

        def stop_registry(result: object) -> None:
            self.registry.stop()

        return stopped.addBoth(stop_registry)


def build_cluster_service(config: Config, reactor: IReactorTime, records: ICallRecordStore,
                          controller: ICallController) -> ClusterService | None:
    """
    The cluster service for C{config}, or L{None} with C{[cluster] bus = memory}.

    @raise ValueError: C{bus = postgres} without a PostgreSQL C{[store] url}.
    """
    section = config.cluster
    if section.bus != "postgres":
        return None
    node_id = default_node_id(config)
    bus = PostgresEventBus(reactor, libpq_conninfo(config.store.url), node_id)
    registry = SQLNodeRegistry(reactor, config.store.url)
    monitor = NodeMonitor(reactor, registry, records, bus, node_id,
                          heartbeat_interval=section.heartbeat_interval,
                          dead_after=section.dead_after)
    calls = ClusterCalls(reactor, controller, bus, records)
    return ClusterService(bus, registry, monitor, calls)
