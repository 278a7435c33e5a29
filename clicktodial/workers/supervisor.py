"""
:class:`WorkerPool`: the main process spawns the worker processes, restarts one that dies
(with a back-off) after ending its calls as a lost node's, forwards SIGHUP, and on stop
sends each SIGTERM (a worker then drains its calls for ``[daemon] shutdown_grace``, as a
single daemon does) and waits for them, killing those still alive after ``stop_timeout``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import attrs
from twisted.application.service import Service
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProcessTransport,
    IReactorProcess,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from clicktodial.calls.relay import LostCalls
from clicktodial.cluster.nodes import CONTROL_CHANNEL
from clicktodial.interfaces import ICallRecordStore
from clicktodial.workers.bus import WorkerConnection, WorkerHub

__all__ = ["WorkerPool"]

log = Logger(namespace="clicktodial.workers.supervisor")


#: The address of either end of a worker's pipes.
_PIPE = UNIXAddress(None)


@implementer(ITransport)
class _PipeTransport:
    """The main process's AMP writes to the worker's standard input."""

    disconnecting = False

    def __init__(self, process: IProcessTransport) -> None:
        self.process = process

    def write(self, data: bytes) -> None:
        self.process.writeToChild(0, data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.process.writeToChild(0, b"".join(data))

    def loseConnection(self) -> None:
        self.disconnecting = True
        self.process.closeChildFD(0)

    def getPeer(self) -> IAddress:
        return _PIPE  # a process has no address (Process.getPeer raises)

    def getHost(self) -> IAddress:
        return _PIPE


class _WorkerProcess(ProcessProtocol):
    """One worker process: its stdout carries AMP from it, stdin AMP to it."""

    def __init__(self, pool: WorkerPool, index: int, connection: WorkerConnection) -> None:
        self.pool = pool
        self.index = index
        self.connection = connection

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.connection.makeConnection(_PipeTransport(self.transport))

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 1:
            self.connection.dataReceived(data)

    def processEnded(self, reason: Failure) -> None:
        self.connection.connectionLost(reason)
        self.pool.worker_ended(self.index, reason)


@attrs.define
class _Worker:
    process: IProcessTransport | None = None
    started_at: float = 0.0
    backoff: float = 0.0
    restart: IDelayedCall | None = None


class WorkerPool(Service):
    """
    See the module.

    :param reactor: provides ``IReactorProcess`` and ``IReactorTime``.
    :param command: worker index -> the argument vector that runs it
        (``python -m clicktodial.worker ...``).
    :param child_fds: worker index -> the shared sockets it inherits (``childFDs`` entries
        beyond the pipes).
    :param node_of: worker index -> its node id in call records and on the bus.
    :param lost: ends a dead worker's calls (and their media relay sessions) as lost.
    """

    def __init__(
        self,
        reactor: object,
        hub: WorkerHub,
        count: int,
        *,
        command: Callable[[int], list[str]],
        child_fds: Callable[[int], Mapping[int, int]],
        node_of: Callable[[int], str],
        records: ICallRecordStore,
        env: Mapping[str, str],
        lost: LostCalls | None = None,
        stop_timeout: float = 40.0,
        min_backoff: float = 1.0,
        max_backoff: float = 30.0,
        stable_after: float = 60.0,
    ) -> None:
        #: provides IReactorProcess and IReactorTime
        self.processes = IReactorProcess(reactor)
        self.clock = IReactorTime(reactor)
        self.hub = hub
        self.count = count
        self.command = command
        self.child_fds = child_fds
        self.node_of = node_of
        self.records = records
        self.env = dict(env)
        self.lost = lost if lost is not None else LostCalls(None)
        self.stop_timeout = stop_timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.workers = [_Worker() for _ in range(count)]
        #: fires once every worker has said Ready (systemd's READY=1 waits for it)
        self.ready: Deferred[None] = Deferred()
        self._ready: set[int] = set()
        self._stopped: Deferred[None] | None = None
        self._kill: IDelayedCall | None = None
        #: how many times a worker was restarted (tests, logs, /metrics)
        self.restarts = 0
        #: called with a one-line status ("1 of 2 workers serving; worker 1 restarting")
        #: each time a worker becomes ready or dies: systemd's STATUS=
        self.on_status: list[Callable[[str], object]] = []
        hub.on_ready.append(self._worker_ready)

    # -- service ------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        # Calls an earlier run left active (its workers are gone): ended as lost, as a
        # single daemon's start-up does, before any worker runs a new one.
        ended = self.lost.end(self.records, None, self.clock.seconds())
        ended.addErrback(lambda f: log.failure("cannot end the calls left active", f))
        ended.addBoth(lambda _: self._spawn_all())

    def _spawn_all(self) -> None:
        if self.running:
            for index in range(self.count):
                self._spawn(index)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for worker in self.workers:
            if worker.restart is not None and worker.restart.active():
                worker.restart.cancel()
            worker.restart = None
        if not self._alive():
            return succeed(None)
        self._stopped = Deferred()
        self.signal_all("TERM")
        self._kill = self.clock.callLater(self.stop_timeout, self._kill_all)
        return self._stopped

    def reload(self) -> None:
        """SIGHUP each worker: it re-reads the configuration file as a single daemon does."""
        self.signal_all("HUP")

    def signal_all(self, name: str) -> None:
        for worker in self.workers:
            if worker.process is not None:
                try:
                    worker.process.signalProcess(name)
                except ProcessExitedAlready:
                    pass

    # -- workers ------------------------------------------------------------------------

    def _alive(self) -> bool:
        return any(worker.process is not None for worker in self.workers)

    def _spawn(self, index: int) -> None:
        worker = self.workers[index]
        worker.restart = None
        connection = self.hub.attach(index)
        fds: dict[int, int | str] = {0: "w", 1: "r", 2: 2}
        fds.update(self.child_fds(index))
        argv = self.command(index)
        worker.process = self.processes.spawnProcess(
            _WorkerProcess(self, index, connection), argv[0], argv, env=self.env, childFDs=fds
        )
        worker.started_at = self.clock.seconds()
        log.info(
            "worker {index} started (pid {pid}, node {node})",
            index=index,
            pid=worker.process.pid,
            node=self.node_of(index),
        )

    def _worker_ready(self, index: int) -> None:
        self._ready.add(index)
        if len(self._ready) == self.count and not self.ready.called:
            self.ready.callback(None)
        self._tell_status()

    def _tell_status(self, restarting: int | None = None) -> None:
        serving = len(self.hub.ready_workers())
        status = f"{serving} of {self.count} workers serving"
        if restarting is not None:
            status += f"; worker {restarting} restarting"
        for callback in list(self.on_status):
            callback(status)

    def worker_ended(self, index: int, reason: Failure) -> None:
        """Worker ``index``'s process ended: restart it, unless we are stopping."""
        worker = self.workers[index]
        worker.process = None
        if not self.running:
            if not self._alive() and self._stopped is not None:
                if self._kill is not None and self._kill.active():
                    self._kill.cancel()
                stopped, self._stopped = self._stopped, None
                stopped.callback(None)
            return
        how = "exited with status 0" if reason.check(ProcessDone) else reason.getErrorMessage()
        now = self.clock.seconds()
        if now - worker.started_at >= self.stable_after:
            worker.backoff = 0.0
        worker.backoff = (
            self.min_backoff if not worker.backoff else min(worker.backoff * 2, self.max_backoff)
        )
        log.error(
            "worker {index} died ({how}); its calls are ended as lost, restarting it in {delay}s",
            index=index,
            how=how,
            delay=worker.backoff,
        )
        Deferred.fromCoroutine(self._end_calls(index)).addErrback(
            lambda f: log.failure("cannot end worker {index}'s calls", f, index=index)
        )
        worker.restart = self.clock.callLater(worker.backoff, self._restart, index)
        self._tell_status(restarting=index)

    def _restart(self, index: int) -> None:
        if self.running:
            self.restarts += 1
            self._spawn(index)

    async def _end_calls(self, index: int) -> None:
        # As for a lost node (clicktodial.cluster.nodes): record the calls as ended, then
        # tell every web page (ClusterCalls drops them with reason lost).
        node = self.node_of(index)
        at = self.clock.seconds()
        ended = await self.lost.end(self.records, node, at)
        log.warn(
            "{count} call(s) of worker {index} recorded as ended (lost)", count=ended, index=index
        )
        await self.hub.publish(CONTROL_CHANNEL, {"type": "node_lost", "lost": node, "at": at})

    def _kill_all(self) -> None:
        self._kill = None
        log.warn(
            "workers still running {timeout}s after SIGTERM: killing them",
            timeout=self.stop_timeout,
        )
        self.signal_all("KILL")
