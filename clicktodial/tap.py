"""
``twistd clicktodial``: command-line options and the service twistd runs.

This is the only module that touches the global reactor (imported in :func:`makeService`, so
that importing this module does not install a reactor before twistd chooses one).
"""

import signal
from collections.abc import Callable
from types import FrameType

from twisted.application.service import IService, IServiceCollection, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError, ReactorNotRunning
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads, IReactorTime
from twisted.logger import ILogObserver, Logger
from twisted.python import usage
from twisted.python.components import Componentized

from clicktodial import __version__
from clicktodial.calls.trace import TraceUnavailable
from clicktodial.config import Config, ConfigError, load_config
from clicktodial.gcpolicy import apply_daemon_gc_policy
from clicktodial.log import LOG_LEVELS, DaemonLogObserver, make_log_observer
from clicktodial.reload import LIVE_SETTINGS, ConfigReloader
from clicktodial.service import build_service
from clicktodial.systemd import SystemdNotifier

__all__ = ["DaemonSignals", "Options", "TwistdRoot", "makeService"]

log = Logger()

_SignalHandler = Callable[[int, FrameType | None], object] | int | None


class Options(usage.Options):
    """Options of ``twistd clicktodial``."""

    synopsis = "--config FILE"
    longdesc = (
        "Runs the clicktodial daemon: a SIP registrar and click-to-dial call controller with"
        " a web interface. Everything is set in the INI file given with --config (every key is"
        " documented in conf/example.ini). Logging follows its [log] section, which replaces"
        " twistd's --logfile and --syslog. SIGTERM stops the daemon cleanly (exit status 0);"
        " SIGHUP re-reads the INI file and applies what can change live (docs/deploy.md)."
    )
    optParameters = [
        ["config", "c", None, "Path of the INI configuration file (required)."],
    ]

    def postOptions(self) -> None:
        if self["config"] is None:
            raise usage.UsageError("--config FILE is required (see conf/example.ini)")


class TwistdRoot(MultiService):
    """
    The service handed to twistd: the daemon's services, plus the ``[log]`` observer.

    twistd passes its Application to :meth:`setServiceParent` before it starts logging; an
    ``ILogObserver`` component on the Application replaces twistd's own log observer
    (``twisted.application.app.AppLogger.start``). Events logged before that are buffered by
    twisted.logger and replayed to this observer.
    """

    def __init__(self, observer: ILogObserver) -> None:
        super().__init__()
        self.observer = observer

    def setServiceParent(self, parent: IServiceCollection) -> None:
        if isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.observer)
        super().setServiceParent(parent)

    def privilegedStartService(self) -> None:
        # twistd listens here (before dropping privileges); a port in use or an address that
        # is not ours ends start-up with one clear line instead of a traceback.
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            raise SystemExit(f"clicktodial: {e}") from None


class DaemonSignals(Service):
    """
    The daemon's signal handlers, installed once the reactor runs and removed on stop.

    - SIGHUP calls ``reload``. twistd installs no SIGHUP handler, so without this
      ``kill -HUP`` (``systemctl reload``) would kill the daemon.
    - SIGTERM stops the reactor, and so the daemon, cleanly, and twistd exits with status 0.
      The reactor's own SIGTERM handler does the same but then makes twistd end by sending
      itself SIGTERM again; a clean stop on request should look like success to a supervisor.

    The handlers are installed from ``callWhenRunning`` because the reactor installs its own
    SIGTERM handler when it starts running, after the services have started. Before that,
    :meth:`hold_sigterm` keeps a SIGTERM for later: twistd spends a moment between loading
    the configuration and running the reactor (listening, starting the store), and a stop
    requested then must be as clean as any other.
    """

    def __init__(
        self,
        reactor: IReactorCore,
        reload: Callable[[], object],
        drain: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        self._reactor = reactor
        self._reload = reload
        self._drain = drain
        self._draining = False
        self._sigterm_held = False
        self._previous: dict[int, _SignalHandler] = {}

    def hold_sigterm(self) -> None:
        """
        From now until the reactor runs, a SIGTERM is remembered instead of killing the
        process; the daemon then stops as on any SIGTERM (exit status 0).
        """
        previous = signal.signal(signal.SIGTERM, self._on_early_sigterm)
        self._previous.setdefault(signal.SIGTERM, previous)

    def startService(self) -> None:
        super().startService()
        self._reactor.callWhenRunning(self._install)

    def stopService(self) -> None:
        for signum, handler in self._previous.items():
            # None: the previous handler was not set from Python; the default is the best guess.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
        super().stopService()

    def _install(self) -> None:
        if not self.running:
            return
        handlers = {signal.SIGHUP: self._on_sighup, signal.SIGTERM: self._on_sigterm}
        for signum, handler in handlers.items():
            # setdefault: what was there before hold_sigterm() comes back on stop.
            self._previous.setdefault(signum, signal.signal(signum, handler))
        if self._sigterm_held:
            IReactorFromThreads(self._reactor).callFromThread(self._stop)

    # A Python signal handler runs between two bytecodes, possibly in the middle of the
    # reactor's own work: each hands its work over to the reactor loop.

    def _on_sighup(self, signum: int, frame: FrameType | None) -> None:
        IReactorFromThreads(self._reactor).callFromThread(self._reload)

    def _on_early_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._sigterm_held = True

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        IReactorFromThreads(self._reactor).callFromThread(self._stop)

    def _stop(self) -> None:
        log.info("Received SIGTERM, shutting down.")
        if self._drain is not None and not self._draining:
            # The graceful stop (clicktodial.shutdown): calls in progress may finish first.
            self._draining = True
            self._drain().addBoth(lambda _: self._stop_reactor())
            return
        # No graceful stop, or a second SIGTERM while draining: stop now.
        self._stop_reactor()

    def _stop_reactor(self) -> None:
        try:
            self._reactor.stop()
        except ReactorNotRunning:
            pass  # a second SIGTERM while already shutting down


def makeService(options: Options) -> IService:
    """
    Load the configuration named by ``--config`` and build the daemon's service.

    A configuration problem ends twistd before it starts anything: exit status 1, and the
    one-line :class:`ConfigError` message on standard error.
    """
    path = options["config"]
    try:
        config = load_config(path)
        try:
            observer = make_log_observer(config.log, gate=LOG_LEVELS)
        except OSError as e:
            raise ConfigError(
                path, f"cannot open {config.log.file!r}: {e.strerror}", "log", "file"
            ) from None
    except ConfigError as e:
        raise SystemExit(str(e)) from None

    from twisted.internet import reactor

    root = TwistdRoot(observer)
    if config.daemon.workers > 1:
        return _main_process(root, config, path, reactor, observer)
    try:
        # The plugins validate their [KIND:NAME] sections here (clicktodial.pluginconfig).
        daemon = build_service(config, reactor)
    except TraceUnavailable as e:
        raise SystemExit(str(ConfigError(path, str(e), "calls", "trace"))) from None
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    daemon.setServiceParent(root)
    # Once serving: freeze what start-up left alive, collect less often (clicktodial.gcpolicy).
    daemon.started.addCallback(lambda _: apply_daemon_gc_policy())
    notifier = SystemdNotifier(reactor, daemon.started)
    notifier.setServiceParent(root)
    # SIGHUP: the log level first, then the components' hooks (clicktodial.reload).
    daemon.reload_hooks.insert(0, lambda new: observer.set_level(new.log.level))
    operations = daemon.operations
    live = LIVE_SETTINGS
    checks: list[Callable[[Config], object]] = []
    if operations is not None:
        live = live | operations.live_settings
        checks = operations.reload_checks
    reloader = ConfigReloader(
        path, config, daemon.reload_hooks, notify=notifier.notify, live=live, checks=checks
    )

    def drain() -> Deferred[None]:
        notifier.notify("STOPPING=1")
        assert operations is not None
        return operations.graceful_stop.run()

    signals = DaemonSignals(
        reactor,
        lambda: reloader.reload(),
        drain if operations is not None else None,
    )
    signals.setServiceParent(root)
    signals.hold_sigterm()
    log.info("clicktodial {version}: configuration {path}", version=__version__, path=path)
    return root


def _main_process(
    root: TwistdRoot, config: Config, path: str, reactor: IReactorCore, observer: DaemonLogObserver
) -> IService:
    """
    ``[daemon] workers`` > 1: the main process (clicktodial.workers.main). READY=1 once
    every worker serves; SIGHUP re-reads the file here (the web's settings) and in every
    worker; SIGTERM sends STOPPING=1 and stops the workers (each drains its calls) before
    the main process stops.
    """
    from clicktodial.workers.main import build_main_service

    try:
        built = build_main_service(config, reactor, path)
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    except OSError as e:
        raise SystemExit(
            str(
                ConfigError(
                    path, f"cannot listen on {config.sip.listen}: {e.strerror}", "sip", "listen"
                )
            )
        ) from None
    daemon, pool = built.root, built.workers.pool
    daemon.setServiceParent(root)
    daemon.started.addCallback(lambda _: apply_daemon_gc_policy())
    serving: Deferred[None] = Deferred()
    daemon.started.addCallbacks(lambda _: pool.ready.chainDeferred(serving), serving.errback)
    notifier = SystemdNotifier(IReactorTime(reactor), serving)
    notifier.setServiceParent(root)
    # systemd's STATUS= follows the workers (a worker that died and is restarting)
    pool.on_status.append(lambda status: notifier.notify(f"STATUS={status}"))
    daemon.reload_hooks.insert(0, lambda new: observer.set_level(new.log.level))
    reloader = ConfigReloader(path, config, daemon.reload_hooks, notify=notifier.notify)

    def reload() -> None:
        reloader.reload()
        pool.reload()

    def drain() -> Deferred[None]:
        notifier.notify("STOPPING=1")
        return built.workers.stopService()

    signals = DaemonSignals(reactor, reload, drain)
    signals.setServiceParent(root)
    signals.hold_sigterm()
    log.info(
        "clicktodial {version}: configuration {path}, {count} workers",
        version=__version__,
        path=path,
        count=config.daemon.workers,
    )
    return root
