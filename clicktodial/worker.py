"""
``python -m clicktodial.worker --config FILE --index I``: one worker process of
``[daemon] workers = N``, spawned and supervised by the main process
(:mod:`clicktodial.workers`), never run by hand.

It inherits the shared SIP sockets as file descriptors 3 (UDP) and 4 (TCP), talks to the
main process over its standard input and output (the local bus: nothing else may write to
standard output; the log goes where ``[log] file`` says, by default standard error), and
stops when the main process's pipe closes. SIGTERM drains its calls as a single daemon does
(``[daemon] shutdown_grace``); SIGHUP re-reads the configuration file. Like
:mod:`clicktodial.tap`, this module is allowed the global reactor.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogEvent, globalLogBeginner
from zope.interface import provider

from clicktodial.config import ConfigError, load_config
from clicktodial.gcpolicy import apply_daemon_gc_policy
from clicktodial.log import LOG_LEVELS, make_log_observer
from clicktodial.netaddr import ip_of
from clicktodial.reload import LIVE_SETTINGS, ConfigReloader
from clicktodial.service import build_service
from clicktodial.sip.transport import AdoptedSockets
from clicktodial.tap import DaemonSignals
from clicktodial.workers.bus import WorkerBus
from clicktodial.workers.node import NONCE_SECRET_ENV, WorkerRole, worker_config, worker_node
from clicktodial.workers.sockets import TCP_FD, UDP_FD

__all__ = ["main"]


def worker_tagged(observer: ILogObserver, index: int) -> ILogObserver:
    """
    ``observer`` with the worker named in every event: ``worker`` (JSON lines) and the
    text line's system, ``[w1 clicktodial.sip.registrar#info]``; the processes of one
    daemon share its log.
    """

    @provider(ILogObserver)
    def tagged(event: LogEvent) -> None:
        event["worker"] = index
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
        event["log_system"] = f"w{index} {system}"
        observer(event)

    return tagged


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    """Run one worker until it is stopped; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m clicktodial.worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    args = parser.parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        file_config = load_config(args.config)
        observer = make_log_observer(file_config.log, gate=LOG_LEVELS)
    except (ConfigError, OSError) as e:
        print(f"clicktodial worker {args.index}: {e}", file=sys.stderr)
        return 1
    secret_hex = env.get(NONCE_SECRET_ENV)
    secret = bytes.fromhex(secret_hex) if secret_hex else None
    config = worker_config(file_config, args.index, secret)
    globalLogBeginner.beginLoggingTo(
        [worker_tagged(observer, args.index)], redirectStandardIO=False
    )

    from twisted.internet import reactor, stdio

    address = ip_of(config.sip.listen.host)
    family = socket.AF_INET6 if address is not None and address.version == 6 else socket.AF_INET
    transports = config.sip.transports
    adopted = AdoptedSockets(
        family, UDP_FD if "udp" in transports else None, TCP_FD if "tcp" in transports else None
    )

    def stop() -> None:
        if reactor.running:
            reactor.stop()

    bus = WorkerBus(
        reactor,
        worker_node(file_config, args.index),
        connect=lambda protocol: stdio.StandardIO(protocol, reactor=reactor),
        lost=stop,
    )
    try:
        daemon = build_service(config, reactor, worker=WorkerRole(args.index, adopted, bus))
    except ConfigError as e:
        print(f"clicktodial worker {args.index}: {e}", file=sys.stderr)
        return 1
    daemon.started.addCallback(lambda _: apply_daemon_gc_policy())
    daemon.reload_hooks.insert(0, lambda new: observer.set_level(new.log.level))
    operations = daemon.operations
    assert operations is not None
    # The reloader compares the file's settings: this worker's own (its port, its node)
    # are not in the file.
    reloader = ConfigReloader(
        args.config,
        file_config,
        daemon.reload_hooks,
        live=LIVE_SETTINGS | operations.live_settings,
        checks=operations.reload_checks,
    )

    def drain() -> Deferred[None]:
        return operations.graceful_stop.run()

    root = MultiService()
    daemon.setServiceParent(root)
    signals = DaemonSignals(reactor, lambda: reloader.reload(), drain)
    signals.setServiceParent(root)
    signals.hold_sigterm()
    reactor.callWhenRunning(root.startService)
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
