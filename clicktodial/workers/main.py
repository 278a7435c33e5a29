"""
The main process of ``[daemon] workers = N`` (N > 1): the store, the web interface and the
administration run here; the SIP stack and the calls run in N worker processes
(``python -m clicktodial.worker``) that share the ``[sip] listen`` sockets this process
binds (:mod:`clicktodial.workers.sockets`). See docs/deploy.md, "Worker processes".
"""

from __future__ import annotations

import os
import secrets
import sys

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorTime

from clicktodial.calls.relay import LostCalls
from clicktodial.cluster.calls import ClusterCalls
from clicktodial.config import Config
from clicktodial.interfaces import IBindingChangeNotifier, ICallRecordStore, ILocationStore
from clicktodial.metrics import ReadinessResource
from clicktodial.pluginconfig import build_location_store
from clicktodial.service import (
    DaemonService,
    serve_web,
    store_for_daemon,
    web_connection_limit,
)
from clicktodial.startup import load_named_resources
from clicktodial.store.plugins import StoreEnvironment
from clicktodial.web.app import make_web_app
from clicktodial.web.resource import make_operator_root, make_root_resource
from clicktodial.workers.bus import WorkerHub, WorkerPlacement
from clicktodial.workers.metrics import WorkerMetricsResource, WorkerReadinessResource
from clicktodial.workers.node import NONCE_SECRET_ENV, check_workers_config, worker_node
from clicktodial.workers.sockets import SharedSockets
from clicktodial.workers.supervisor import WorkerPool

__all__ = ["WORKERS_SERVICE_NAME", "MainProcess", "WorkersService", "build_main_service"]

#: The name of the workers' service in the main process's tree.
WORKERS_SERVICE_NAME = "workers"


class WorkersService(MultiService):
    """
    The local bus hub, then the workers (children, started in that order, stopped in the
    reverse), and the :class:`ClusterCalls` the web uses: every worker's calls, new calls
    placed by a worker, hang-ups sent to the call's worker. Stopping ends every worker
    (their graceful stop) before the bus.
    """

    def __init__(
        self,
        hub: WorkerHub,
        pool: WorkerPool,
        calls: ClusterCalls,
        sockets: SharedSockets,
        records: ICallRecordStore,
    ) -> None:
        super().__init__()
        self.hub = hub
        self.pool = pool
        self.calls = calls
        self.sockets = sockets
        self.records = records
        hub.setServiceParent(self)
        pool.setServiceParent(self)

    def startService(self) -> None:
        self.calls.start()
        super().startService()

    def stopService(self) -> Deferred[None]:
        stopped: Deferred[None] = super().stopService()

        def after(result: object) -> None:
            self.calls.stop()

        return stopped.addBoth(after)


@attrs.frozen
class MainProcess:
    """What :func:`build_main_service` built: the root service and its worker pool."""

    root: DaemonService
    workers: WorkersService


def build_main_service(
    config: Config,
    reactor: IReactorCore,
    config_path: str,
    *,
    python: str = sys.executable,
    sockets: SharedSockets | None = None,
) -> MainProcess:
    """
    The main process's service tree for ``config`` (``[daemon] workers`` > 1).

    :param config_path: the INI file the workers load.
    :param sockets: the shared SIP sockets (bound here by default).
    :raises clicktodial.config.ConfigError: as :func:`~clicktodial.service.build_service`,
        or a setting workers do not support (:func:`check_workers_config`).
    :raises OSError: the ``[sip] listen`` address cannot be bound.
    """
    check_workers_config(config)
    load_named_resources(config)
    clock = IReactorTime(reactor)
    store = store_for_daemon(config, clock)
    location = build_location_store(
        config, StoreEnvironment(reactor=clock, realm=config.sip.domain)
    )
    locations: ILocationStore = location if location is not None else store
    root = DaemonService(store, reactor, demo_users=config.store.demo_users, location=location)
    count = config.daemon.workers
    if sockets is None:
        sockets = SharedSockets.bind(config.sip.listen, config.sip.transports, count)
    # One nonce secret for every worker: a nonce one issued is good on the others.
    secret = config.registrar.nonce_secret or secrets.token_bytes(32)
    # The workers do not talk to systemd (NotifyAccess=main): the main process does.
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env[NONCE_SECRET_ENV] = secret.hex()
    path = os.path.abspath(config_path)
    hub = WorkerHub(clock)
    pool = WorkerPool(
        reactor,
        hub,
        count,
        command=lambda index: [
            python,
            "-m",
            "clicktodial.worker",
            "--config",
            path,
            "--index",
            str(index),
        ],
        child_fds=sockets.child_fds,
        node_of=lambda index: worker_node(config, index),
        records=store,
        env=env,
        lost=LostCalls(None),
        # A worker drains its calls for shutdown_grace, then stops its stack.
        stop_timeout=config.daemon.shutdown_grace + 10.0,
    )
    calls = ClusterCalls(clock, WorkerPlacement(hub), hub, store)
    workers = WorkersService(hub, pool, calls, sockets, store)
    workers.setName(WORKERS_SERVICE_NAME)
    workers.setServiceParent(root)

    web_app = make_web_app(config, clock, store, calls, locations)
    root.reload_hooks.append(web_app.dialler.reload)
    binding_notices = IBindingChangeNotifier(locations, None)
    if binding_notices is not None:
        binding_notices.subscribe(web_app.registrations.aor_changed)
    operator_root = make_operator_root()
    # /metrics: every worker's families (labelled worker) and the main process's;
    # /readyz: every worker serves and the store answers (clicktodial.workers.metrics).
    operator_root.putChild(
        b"metrics", WorkerMetricsResource(clock, count, hub.scrape, lambda: pool.restarts)
    )
    operator_root.putChild(
        b"readyz",
        WorkerReadinessResource(
            count,
            hub.ready_indexes,
            ReadinessResource(clock, store, locations=location),
            draining=lambda: not pool.running,
        ),
    )
    # The web's listeners as in the single process: slow clients timed out, connections
    # capped per client address ([web] max_connections_per_client).
    serve_web(
        root,
        config,
        clock,
        reactor,
        make_root_resource(web_app, operator_root),
        operator_root,
        web_connection_limit(config, clock),
    )
    return MainProcess(root, workers)
