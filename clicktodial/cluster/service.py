"""
The cluster's part of the daemon (C{[cluster] bus = postgres}): the
PostgreSQL event bus, the node liveness monitor and L{ClusterCalls} around
the local call controller.  With C{bus = memory} (a single daemon) there is
nothing to add: the local controller is used as it is.
"""

from __future__ import annotations

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from clicktodial.calls.relay import LostCalls
from clicktodial.cluster.calls import ClusterCalls
from clicktodial.cluster.nodes import NodeMonitor, default_node_id
from clicktodial.config import Config, ConfigError
from clicktodial.interfaces import (
    ICallController,
    ICallRecordStore,
    IClusterStorage,
    IEventBus,
    IMediaRelay,
    INodeRegistry,
)

__all__ = ["ClusterService", "build_cluster_service", "cluster_storage", "record_node"]

log = Logger(namespace="clicktodial.cluster.service")


def record_node(config: Config) -> str | None:
    """
    The node name the call controller writes in call records: this node's id
    in a cluster or a worker process's (C{[daemon] workers}: C{NODE/wINDEX}),
    L{None} for a single daemon (whose start-up then ends every call left
    active, whichever node name it had).
    """
    if config.cluster.bus == "postgres" or config.daemon.workers > 1:
        return default_node_id(config)
    return None


class ClusterService(MultiService):
    """
    The bus and the liveness monitor (children, started in that order) and
    L{ClusterCalls} (C{calls}: give it to the web layer instead of the local
    controller).  Add it to the daemon before the call service, so that it
    stops after it: the calls hung up at shutdown are still announced.
    """

    def __init__(self, bus: IEventBus, registry: INodeRegistry,
                 monitor: NodeMonitor, calls: ClusterCalls) -> None:
        super().__init__()
        self.bus = bus
        self.registry = registry
        self.monitor = monitor
        self.calls = calls
        IService(bus).setServiceParent(self)
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


def cluster_storage(config: Config, store: object) -> IClusterStorage | None:
    """
    What C{[cluster] bus = postgres} needs of the C{[store]} backend (L{None}
    with C{bus = memory}).

    @raise ConfigError: C{bus = postgres} and the store does not provide
        L{IClusterStorage} (naming the setting and the backend); start-up and
        C{check-config} both check it.
    """
    if config.cluster.bus != "postgres":
        return None
    storage = IClusterStorage(store, None)
    if storage is None:
        raise ConfigError(
            config.source,
            f"postgres needs a store backend providing IClusterStorage (the sql backend on"
            f" PostgreSQL); [store] backend = {config.store.backend} does not",
            "cluster", "bus",
        )
    return storage


def build_cluster_service(config: Config, reactor: IReactorTime, records: ICallRecordStore,
                          controller: ICallController,
                          store: object = None, *,
                          relay: IMediaRelay | None = None) -> ClusterService | None:
    """
    The cluster service for C{config}, or L{None} with C{[cluster] bus = memory}.

    @param store: the C{[store]} backend; it provides the nodes table and the
        event bus (L{IClusterStorage}); by default C{records}.
    @param relay: the media relay (C{[media] relay}), whose sessions of the
        calls recorded as lost are deleted; L{None} without one.
    @raise ConfigError: C{bus = postgres} and the store does not provide
        L{IClusterStorage} (naming the setting and the backend).
    """
    section = config.cluster
    storage = cluster_storage(config, store if store is not None else records)
    if storage is None:
        return None
    node_id = default_node_id(config)
    bus = storage.event_bus(node_id)
    registry = storage.node_registry()
    monitor = NodeMonitor(reactor, registry, records, bus, node_id,
                          heartbeat_interval=section.heartbeat_interval,
                          dead_after=section.dead_after, lost=LostCalls(relay))
    calls = ClusterCalls(reactor, controller, bus, records)
    return ClusterService(bus, registry, monitor, calls)
