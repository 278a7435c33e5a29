"""
A worker's side of ``[daemon] workers``: its configuration (private SIP port, node id, the
main process's nonce secret) and :class:`WorkerLink`, the local bus and the
:class:`~clicktodial.cluster.calls.ClusterCalls` that announces its calls on it and
executes the hang-ups sent to it.
"""

from __future__ import annotations

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from clicktodial.cluster.calls import ClusterCalls
from clicktodial.cluster.nodes import default_node_id
from clicktodial.config import Config, ConfigError, HostPort
from clicktodial.interfaces import ICallController, ICallRecordStore
from clicktodial.sip.transport import AdoptedSockets
from clicktodial.workers.bus import WorkerBus

__all__ = [
    "NONCE_SECRET_ENV",
    "WorkerLink",
    "WorkerRole",
    "check_workers_config",
    "worker_config",
    "worker_node",
]

#: The environment variable that gives the workers the main process's nonce secret (hex)
#: when ``[registrar] nonce_secret = random``: one secret for all, so that a nonce one
#: worker issued is good on any other.
NONCE_SECRET_ENV = "CLICKTODIAL_WORKER_NONCE_SECRET"


@attrs.frozen
class WorkerRole:
    """What makes :func:`~clicktodial.service.build_service` build a worker."""

    index: int
    adopted: AdoptedSockets
    bus: WorkerBus


def worker_node(config: Config, index: int) -> str:
    """Worker ``index``'s node id in call records and on the bus: ``NODE/wINDEX``."""
    return f"{default_node_id(config)}/w{index}"


def worker_config(config: Config, index: int, nonce_secret: bytes | None) -> Config:
    """
    Worker ``index``'s configuration: ``[sip] listen`` becomes its private port
    (``[daemon] worker_ports`` + index, or 0: the system picks), ``[cluster] node_id`` its
    node id, and a random nonce secret the main process's.
    """
    base = config.daemon.worker_ports
    listen = HostPort(config.sip.listen.host, base + index if base else 0)
    registrar = config.registrar
    if registrar.nonce_secret is None and nonce_secret is not None:
        registrar = attrs.evolve(registrar, nonce_secret=nonce_secret)
    return attrs.evolve(
        config,
        sip=attrs.evolve(config.sip, listen=listen),
        cluster=attrs.evolve(config.cluster, node_id=worker_node(config, index)),
        registrar=registrar,
    )


def check_workers_config(config: Config) -> None:
    """
    :raises ConfigError: ``[daemon] workers`` > 1 with a setting workers do not support
        yet (naming it), or private ports beyond 65535.
    """
    daemon = config.daemon
    if daemon.workers == 1:
        return
    source = config.source

    def refuse(problem: str, section: str, key: str | None) -> ConfigError:
        return ConfigError(source, f"{problem} with [daemon] workers = {daemon.workers}"
                           " (use workers = 1)", section, key)

    if "tls" in config.sip.transports:
        raise refuse("tls is not served by worker processes yet", "sip", "transports")
    if config.cluster.bus == "postgres":
        raise refuse("a cluster node cannot run workers yet", "cluster", "bus")
    trunks = config.plugins.names("trunk")
    if trunks:
        raise refuse("a trunk would register once per worker", f"trunk:{trunks[0]}", None)
    if daemon.worker_ports and daemon.worker_ports + daemon.workers - 1 > 65535:
        raise ConfigError(source, f"{daemon.worker_ports} + {daemon.workers} workers is beyond"
                          " port 65535", "daemon", "worker_ports")
    if daemon.worker_ports and config.sip.listen.port in range(
            daemon.worker_ports, daemon.worker_ports + daemon.workers):
        raise ConfigError(source, "the workers' private ports include [sip] listen's port",
                          "daemon", "worker_ports")


class WorkerLink(MultiService):
    """
    The worker's bus to the main process (a child: started first, stopped last) and the
    :class:`ClusterCalls` around its call controller: its calls are announced on the bus,
    hang-ups for them executed, and the main process's ``PlaceCall`` placed with it.
    Added to the daemon before the call service, so that it stops after it: the calls hung
    up at shutdown are still announced.
    """

    def __init__(self, clock: IReactorTime, bus: WorkerBus, controller: ICallController,
                 records: ICallRecordStore) -> None:
        super().__init__()
        self.bus = bus
        self.calls = ClusterCalls(clock, controller, bus, records)
        bus.serve_calls(controller)
        bus.setServiceParent(self)

    def startService(self) -> None:
        self.calls.start()
        super().startService()

    def stopService(self) -> Deferred[None]:
        self.calls.stop()
        stopped: Deferred[None] = super().stopService()
        return stopped
