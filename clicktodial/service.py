"""
Composition: :func:`build_service` assembles the daemon's service tree from a :class:`Config`
and a reactor. It is a plain function so that a test can build the whole daemon on a
``MemoryReactorClock``; :mod:`clicktodial.tap` calls it with the real reactor.

Start-up order: the store starts first (``[store] auto_upgrade`` migrates the schema), then
the ``[location]`` backend if registrations live elsewhere, then ``demo_users`` seeds alice
and bob; only when they are usable do the SIP stack and the web interface start, so no
phone ever reaches a registrar without its database. A store that cannot start (an
out-of-date schema: "run clicktodial --config FILE db upgrade", an unreachable database) is
logged as critical and stops the daemon with exit status 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import URL
from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from zope.interface import implementer

from clicktodial import __version__
from clicktodial.admission import AdmissionControl, SourceRateLimiter
from clicktodial.calls.controller import build_call_service
from clicktodial.calls.directory import CachedDirectory
from clicktodial.calls.trace import CallTraceService, build_tracer
from clicktodial.cluster.service import build_cluster_service
from clicktodial.config import Config
from clicktodial.connlimit import ConnectionLimit
from clicktodial.interfaces import (
    IBindingChangeNotifier,
    ICallController,
    ILocationBackend,
    ILocationStore,
    IStoreBackend,
    IUserChangeNotifier,
    IVerifiedRegistration,
)
from clicktodial.metrics import DaemonMetrics, TrunkCollector
from clicktodial.operations import (
    Operations,
    install_operations,
    register_metrics,
    store_pending,
)
from clicktodial.pluginconfig import (
    build_location_store,
    build_policy,
    build_store,
    check_unchosen_sections,
    log_plugin_warnings,
)
from clicktodial.sip.interfaces import IMessageHandler
from clicktodial.sip.stack import SIPStack
from clicktodial.sip.transport import SIPTransportLayer
from clicktodial.startup import load_named_resources
from clicktodial.store.plugins import StoreEnvironment
from clicktodial.store.values import BindingChanges, SipCredentials, VerifiedUpdate
from clicktodial.trunks.inbound import TrunkInboundGuard
from clicktodial.trunks.trunk import trunks_for_daemon
from clicktodial.web.app import make_web_app
from clicktodial.web.resource import make_operator_root, make_root_resource
from clicktodial.web.site import BoundedSite
from clicktodial.workers.metrics import encode_families
from clicktodial.workers.node import WorkerLink, WorkerRole

__all__ = [
    "CALLS_SERVICE_NAME",
    "CLUSTER_SERVICE_NAME",
    "METRICS_SERVICE_NAME",
    "SIP_SERVICE_NAME",
    "WEB_SERVICE_NAME",
    "DaemonService",
    "build_service",
    "serve_web",
    "store_for_daemon",
    "web_connection_limit",
]

SIP_SERVICE_NAME = "sip"
CALLS_SERVICE_NAME = "calls"
CLUSTER_SERVICE_NAME = "cluster"
WEB_SERVICE_NAME = "web"
METRICS_SERVICE_NAME = "web-metrics"

T = TypeVar("T")


class DaemonService(MultiService):
    """
    The root of the daemon's services: starts the store, then its children; logs when the
    daemon starts and when it has stopped.

    :ivar store: the store every child uses.
    :ivar demo_users: whether to create the demo users once the store is up.
    :ivar started: fires once the children have started (or fails with why they could not).
    """

    log = Logger()

    def __init__(
        self,
        store: IStoreBackend,
        reactor: IReactorCore,
        demo_users: bool = False,
        location: ILocationBackend | None = None,
    ):
        super().__init__()
        self.store = store
        #: the ``[location]`` backend when it is not the store (started after it)
        self.location = location
        self.reactor = reactor
        self.demo_users = demo_users
        self.started: Deferred[None] = Deferred()
        #: called with the new Config on SIGHUP (clicktodial.reload): components register
        #: here to apply what they can change live
        self.reload_hooks: list[Callable[[Config], object]] = []
        #: the production pieces (clicktodial.operations): admission, graceful stop, metrics
        self.operations: Operations | None = None
        self._children_started = False
        #: store.start() was called and store.stop() not yet
        self._store_started = False
        #: the start-up in progress (store, demo users), until stopService
        self._starting: Deferred[None] | None = None

    def startService(self) -> None:
        self.log.info("clicktodial {version} starting", version=__version__)
        # Running, but the children wait for the store (MultiService would start them now).
        self.running = 1
        self._starting = Deferred.fromCoroutine(self._start())
        self._starting.addErrback(self._start_failed)

    async def _start(self) -> None:
        # From here on the store owes a stop(), even if its start never completes.
        self._store_started = True
        await self.store.start()
        if self.location is not None:
            await self.location.start()
        if self.demo_users:
            from clicktodial.store.admin import seed_demo_users

            created = await seed_demo_users(self.store)
            if created:
                self.log.info(
                    "created demo users {users} (password = username)", users=", ".join(created)
                )
        if not self.running:
            return
        for service in self:
            service.startService()
        self._children_started = True
        self.started.callback(None)

    def _start_failed(self, failure: Failure) -> None:
        if not self.running:
            # stopService came first (SIGTERM during start-up) and cancelled the start: a
            # clean stop, not a failure to start.
            self.log.info("the daemon stopped during start-up, before it served")
            self.started.errback(failure)
            return
        self.log.critical(
            "clicktodial cannot start: {error}", error=failure.getErrorMessage(), failure=failure
        )
        self.started.errback(failure)
        # twistd exits 0 once the reactor stops; a daemon that could not start must not look
        # like a clean stop to its supervisor. The log file is line-buffered.
        self.reactor.addSystemEventTrigger("after", "shutdown", _exit_failed)
        self.reactor.stop()

    def stopService(self) -> Deferred[object]:
        """
        Stop the children, then the store. During start-up (the store still starting, or
        the demo users being created) the start is cancelled first, so that stopping never
        waits for a start that may take long (a locked or unreachable database), and the
        store is stopped all the same: its thread pools must not outlive the reactor (their
        threads would keep the process from exiting).
        """
        if self._children_started:
            stopped: Deferred[object] = super().stopService()
        else:
            self.running = 0
            starting, self._starting = self._starting, None
            if starting is not None and not starting.called:
                starting.cancel()
            stopped = Deferred()
            stopped.callback(None)

        def stop_store(result: object) -> object:
            if not self._store_started:
                return result
            self._store_started = False
            location = self.location
            # A location backend whose start was never reached is stopped all the same: its
            # stop must cope (the contract of ILocationBackend.stop).
            stopped = (
                maybeDeferred(location.stop)
                if location is not None
                else maybeDeferred(lambda: None)
            )
            stopped.addErrback(lambda f: self.log.failure("cannot stop the location store", f))
            stopped.addBoth(lambda _: maybeDeferred(self.store.stop))
            return stopped.addBoth(lambda _: result)

        def log_stopped(result: object) -> object:
            self.log.info("clicktodial stopped")
            return result

        return stopped.addBoth(stop_store).addCallback(log_stopped)


def _exit_failed() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def _sqlite_directory(url: URL) -> Path | None:
    """The directory of a file SQLite database URL (created for ``auto_upgrade``)."""
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database).parent


def _environment(config: Config, reactor: IReactorTime) -> StoreEnvironment:
    return StoreEnvironment(reactor=reactor, realm=config.sip.domain)


def store_for_daemon(config: Config, reactor: IReactorTime) -> IStoreBackend:
    """
    The (not yet started) store ``[store]`` asks for, through the backend plugins
    (:mod:`clicktodial.pluginconfig`); with ``auto_upgrade`` a SQLite database's directory is
    created, so that the development configuration works from a fresh checkout.

    :raises clicktodial.config.ConfigError: unknown backend or bad option.
    """
    store = build_store(config, _environment(config, reactor))
    if config.store.auto_upgrade and config.store.backend == "sql":
        directory = _sqlite_directory(config.store.url)
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
    return store


@implementer(IVerifiedRegistration)
class _PastTheDirectory:
    """
    The store's one-operation REGISTERs, which write the bindings past the call directory:
    it drops the AOR when one starts and again when it ends, as its own ``update_bindings``
    does (a look-up running meanwhile is not kept).
    """

    def __init__(self, store: IVerifiedRegistration, directory: CachedDirectory) -> None:
        self._store = store
        self._directory = directory

    def update_bindings_if_verified(
        self,
        username: str,
        verify: Callable[[SipCredentials | None], bool],
        aor: str,
        changes: BindingChanges,
        now: float,
    ) -> Deferred[VerifiedUpdate]:
        self._directory.bindings_changed(aor)
        return self._store.update_bindings_if_verified(username, verify, aor, changes, now).addBoth(
            self._changed, aor
        )

    def _changed(self, result: T, aor: str) -> T:
        self._directory.bindings_changed(aor)
        return result


def build_service(
    config: Config,
    reactor: IReactorCore,
    *,
    store: IStoreBackend | None = None,
    location: ILocationBackend | None = None,
    worker: WorkerRole | None = None,
) -> DaemonService:
    """
    The daemon's service tree for ``config``, listening and scheduling with ``reactor``.

    Nothing listens until the service is started. ``reactor`` must provide what the services
    use: ``IReactorTCP``/``IReactorUNIX`` for the web endpoint, ``IReactorUDP`` and
    ``IReactorTime`` for SIP.

    :param store: the store to use instead of the one ``[store]`` names (tests).
    :param location: the location store to use instead of the one ``[location]`` names
        (tests).
    :param worker: build one worker process of ``[daemon] workers`` (:mod:`clicktodial.
        workers`): it also serves the shared SIP sockets, talks to the main process over
        its bus and serves no web interface (the main process does).
    :raises clicktodial.config.ConfigError: a file the configuration names cannot be used
        (``[calls] ringback``), an endpoint type is unknown, a plugin (``[store]``,
        ``[location]``, ``[calls] policy``) is unknown or refuses its options, or a feature
        needs a capability the configured store lacks.
    """
    # What the configuration names is opened first, before anything is built or listens.
    load_named_resources(config)
    clock = IReactorTime(reactor)
    if store is None:
        store = store_for_daemon(config, clock)
    environment = _environment(config, clock)
    # [location] backend: the registrations in a store of their own (None: in the store).
    if location is None:
        location = build_location_store(config, environment)
    locations: ILocationStore = location if location is not None else store
    policy = build_policy(config)
    log_plugin_warnings(check_unchosen_sections(config, environment))
    root = DaemonService(store, reactor, demo_users=config.store.demo_users, location=location)

    # --- SIP -------------------------------------------------------------------------------
    # Transports, transaction layer, UA core, registrar (clicktodial.sip.stack); the
    # click-to-dial controller plugs into sip.user_agent / set_incoming_call_handler.
    # Bindings go through the call controller's cache (clicktodial.calls.directory), so a
    # registration handled here reaches the calls at once.
    directory = CachedDirectory(clock, store, locations, config.calls.lookup_cache_seconds)
    # Changes the stores tell of (other daemons' REGISTERs, users changed) reach the
    # directory's cache at once when they can tell (optional capabilities).
    binding_notices = IBindingChangeNotifier(locations, None)
    if binding_notices is not None:
        binding_notices.subscribe(directory.bindings_changed)
    user_notices = IUserChangeNotifier(store, None)
    if user_notices is not None:
        user_notices.subscribe(directory.user_changed)
    # What /metrics shows (clicktodial.operations); the SIP stack counts REGISTERs in it.
    metrics = DaemonMetrics()
    # The per-source rate limit ([limits], clicktodial.admission) is applied by the transport
    # to every datagram before parsing it; admission control reconfigures it on reload.
    rate_limiter = SourceRateLimiter.from_config(
        clock, config.limits, config.registrar.trusted_proxies
    )
    # Per-source caps on open connections (clicktodial.connlimit); trusted fronts are exempt.
    connection_limits = {
        name: ConnectionLimit(
            clock, listener, config.sip.max_connections_per_source, config.registrar.trusted_proxies
        )
        for name, listener in (("TCP", "sip-tcp"), ("TLS", "sip-tls"))
    }
    web_limit = web_connection_limit(config, clock)
    # Call traces (docs/calls.md): the transport shows the tracer every message.
    tracer = build_tracer(config, clock, store, config.sip.t1 * 64)
    transport = SIPTransportLayer(
        clock,
        config.sip,
        source_limit=rate_limiter,
        connection_limits=connection_limits,
        tap=tracer,
        adopted=worker.adopted if worker is not None else None,
    )
    # With the bindings in the store, an authenticated REGISTER reads the credentials and
    # writes the bindings in one store operation when the store can.
    verified = IVerifiedRegistration(store, None) if location is None else None
    registrations = None if verified is None else _PastTheDirectory(verified, directory)
    sip = SIPStack(
        clock,
        config.sip,
        config.registrar,
        store,
        directory,
        transport,
        register_observers=[register_metrics(metrics)],
        registrations=registrations,
    )
    # What the transport receives goes through admission control ([limits]: 503 when
    # overloaded or stopping) to the transaction layer: transport -> admission ->
    # transactions. The transaction layer sends through the transport, so the transport is
    # connected last (SIPTransportLayer.connect).
    admission = AdmissionControl(
        clock,
        sip.transactions,
        transport,
        config.limits,
        # Transactions doing work: not the finished ones waiting out Timer J (32 s) for
        # retransmissions, or 80 REGISTERs/s with Digest would count 5,000 at rest.
        transactions_active=lambda: sip.transactions.working_count,
        store_pending=store_pending(store, location),
        server=config.sip.user_agent,
        rate_limiter=rate_limiter,
    )

    # --- trunks (issue 17: clicktodial.trunks, docs/trunks.md) -----------------------------
    # [trunk:NAME] sections: registration and OPTIONS keep-alive with each provider (started
    # after the SIP stack, stopped before it: the un-REGISTER still goes out) and the ITrunk
    # a call leg uses; the trunks' metrics are added with the operations below.
    trunks = trunks_for_daemon(config, clock, sip.transactions)
    handler: IMessageHandler = admission
    if trunks is not None:
        # In front of admission control: every new request from a provider's addresses is
        # refused before anything else sees it (no open relay).
        handler = TrunkInboundGuard(
            admission, trunks, sip.transactions, server=config.sip.user_agent
        )
    transport.connect(handler)
    sip.setName(SIP_SERVICE_NAME)
    sip.setServiceParent(root)
    if trunks is not None:
        trunks.setServiceParent(root)
    if tracer is not None:
        # Stops after the calls were hung up (their BYEs kept), before the SIP stack and
        # the store: what is buffered is written.
        CallTraceService(tracer).setServiceParent(root)
    if config.registrar.nat_keepalive_interval:
        # OPTIONS to phones behind NAT (clicktodial.sip.natping); stops before the stack.
        from clicktodial.sip.natping import NatKeepAlive

        NatKeepAlive(
            clock,
            sip.transactions,
            directory,
            domain=config.sip.domain,
            interval=config.registrar.nat_keepalive_interval,
            max_failures=config.registrar.nat_keepalive_failures,
            user_agent=config.sip.user_agent,
        ).setServiceParent(root)

    # --- calls -----------------------------------------------------------------------------
    # The click-to-dial controller (clicktodial.calls) on the stack's UA core; it stops
    # before the SIP stack, so the BYEs of a shutdown still go out.
    calls = build_call_service(
        config,
        reactor,
        sip.user_agent,
        sip.timers.timeout,
        store,
        directory,
        tracer,
        policy=policy,
        trunks=trunks,
    )
    # [cluster] bus = postgres (clicktodial.cluster): the event bus, node heartbeats and the
    # controller every node's web shows every call through; added before the call service
    # so that it stops after it (the calls hung up at shutdown are still announced).
    controller: ICallController = calls.controller
    relay = calls.controller.relay  # [media] relay: the lost calls' sessions are deleted
    if worker is not None:
        # A worker is a node on the main process's local bus (clicktodial.workers).
        link = WorkerLink(clock, worker.bus, calls.controller, store)
        link.setName(CLUSTER_SERVICE_NAME)
        link.setServiceParent(root)
        root.started.addCallback(lambda _: worker.bus.ready())
    cluster = (
        None
        if worker is not None
        else build_cluster_service(
            config,
            clock,
            store,
            calls.controller,
            store,
            relay=relay.relay if relay is not None else None,
        )
    )
    if cluster is not None:
        cluster.setName(CLUSTER_SERVICE_NAME)
        cluster.setServiceParent(root)
        controller = cluster.calls
    calls.setName(CALLS_SERVICE_NAME)
    calls.setServiceParent(root)

    if worker is not None:
        # The web interface and /metrics are the main process's; a worker keeps the
        # graceful stop and the reload of [limits].
        root.operations = install_operations(
            config,
            clock,
            sip,
            store,
            make_operator_root(),
            admission,
            metrics,
            reload_hooks=root.reload_hooks,
            call_controller=calls.controller,
            location=location,
            connection_limits=list(connection_limits.values()),
        )
        # The main process's /metrics asks every worker for its families.
        worker.bus.serve_metrics(lambda: encode_families(metrics.registry))
        return root

    # --- web -------------------------------------------------------------------------------
    # strports.service makes a failure to listen raise from startService, so twistd stops
    # instead of running without its web interface.
    web_app = make_web_app(config, clock, store, controller, locations, tracer, trunks)
    # The registrar tells the web's presence about each REGISTER it handles, so phones
    # registering here appear online at once (others' registrations: the monitor's poll,
    # or at once when the location store tells of changes made by other daemons).
    sip.registrar.binding_listeners.append(web_app.registrations.bindings_changed)
    # [dialplan] changes live on SIGHUP (a class revoked from a user at once).
    root.reload_hooks.append(web_app.dialler.reload)
    if binding_notices is not None:
        binding_notices.subscribe(web_app.registrations.aor_changed)
    # /metrics, /readyz (added by install_operations) and /healthz: to anyone on [web]
    # metrics_listen, to the metrics token and administrators only on [web] listen.
    operator_root = make_operator_root()
    web_root = make_root_resource(web_app, operator_root)
    # Graceful stop, /metrics, /readyz and the reload of [limits] (clicktodial.operations).
    root.operations = install_operations(
        config,
        clock,
        sip,
        store,
        operator_root,
        admission,
        metrics,
        reload_hooks=root.reload_hooks,
        call_controller=calls.controller,
        location=location,
        connection_limits=[*connection_limits.values(), web_limit],
    )
    if trunks is not None:
        root.operations.metrics.collector(TrunkCollector(trunks))
    serve_web(root, config, clock, reactor, web_root, operator_root, web_limit)
    return root


def web_connection_limit(config: Config, clock: IReactorTime) -> ConnectionLimit:
    """The web listener's cap on open connections per client (``[web]``)."""
    return ConnectionLimit(
        clock, "web", config.web.max_connections_per_client, config.web.trusted_proxies
    )


def serve_web(
    root: MultiService,
    config: Config,
    clock: IReactorTime,
    reactor: IReactorCore,
    web_root: Resource,
    operator_root: Resource,
    web_limit: ConnectionLimit,
) -> None:
    """
    Listen for the web interface (and for ``/metrics`` on its own ``[web] metrics_listen``):
    the single process and the main process of worker processes alike.

    A request must arrive whole within ``[web] request_timeout`` (slow clients:
    :mod:`clicktodial.web.site`); one address holds at most ``max_connections_per_client``
    connections to the web listener (``web_limit``).
    """
    site = BoundedSite(web_root, clock, config.web.request_timeout)
    web = strports.service(config.web.listen, web_limit.wrap(site), reactor=reactor)
    web.setName(WEB_SERVICE_NAME)
    web.setServiceParent(root)
    if config.web.metrics_listen is not None:
        metrics_web = strports.service(
            config.web.metrics_listen,
            BoundedSite(operator_root, clock, config.web.request_timeout),
            reactor=reactor,
        )
        metrics_web.setName(METRICS_SERVICE_NAME)
        metrics_web.setServiceParent(root)
