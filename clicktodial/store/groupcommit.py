"""
Group commit: store operations that arrive while the database is busy are applied together,
in one transaction on one thread hop, with one ``callFromThread`` for the whole batch.

At most one batch is in flight. Operations submitted meanwhile queue on the reactor thread
and form the next batch as soon as the current one is delivered, so batches grow with the
load by themselves (no timer, no added latency when idle): one REGISTER alone is one batch
of one.

Atomicity per operation: a batch's ``execute`` reports, per operation, a result or the
documented error it raised *before writing anything* (a refused REGISTER); any other error
aborts the batch's transaction, and then every operation of the batch runs again on its own
through ``fallback`` (its own transaction, with the store's usual retries). So one failing
operation never fails the others, and none is applied twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

#: The most operations in one transaction: bounds how long a batch holds the write lock.
MAX_BATCH = 256

#: The operations a group commit queues: values that know how to run themselves (for the SQL
#: store, the job types of :mod:`clicktodial.store.sqljobs`).
J = TypeVar("J")


@frozen
class Job(Generic[J]):
    """One queued operation and the Deferred its result is delivered to."""

    operation: J
    result: Deferred[Any]


#: An operation's outcome inside a batch: ``(True, value)`` or ``(False, exception)``.
Outcome = tuple[bool, Any]


class GroupCommit(Generic[J]):
    """
    Batches operations onto one thread hop and one transaction.

    :param reactor: the reactor results are delivered on.
    :param pool: the thread pool batches run on (one batch at a time).
    :param execute: runs a batch of operations in one transaction on a pool thread; returns
        one outcome per operation, in order; raises to abort the whole batch.
    :param fallback: runs one operation on its own (called on the reactor thread) after its
        batch was aborted; fires with the operation's result.
    :param max_batch: the most jobs per batch.
    """

    log = Logger()

    def __init__(self, reactor: IReactorFromThreads, pool: ThreadPool,
                 execute: Callable[[Sequence[J]], list[Outcome]],
                 fallback: Callable[[J], Deferred[Any]],
                 max_batch: int = MAX_BATCH) -> None:
        self._reactor = reactor
        self._pool = pool
        self._execute = execute
        self._fallback = fallback
        self._max_batch = max_batch
        self._queue: list[Job[J]] = []
        self._busy = False
        #: Batches run and jobs in them (for tests and benchmarks).
        self.batches = 0
        self.jobs = 0

    def submit(self, operation: J) -> Deferred[Any]:
        """Queue an operation; fires with its result (or fails with its error)."""
        d: Deferred[Any] = Deferred()
        self._queue.append(Job(operation, d))
        if not self._busy:
            self._dispatch()
        return d

    def _dispatch(self) -> None:
        batch = self._queue[:self._max_batch]
        del self._queue[:self._max_batch]
        self._busy = True
        self.batches += 1
        self.jobs += len(batch)
        self._pool.callInThreadWithCallback(
            lambda ok, result: self._reactor.callFromThread(self._finished, batch, ok, result),
            self._execute, [job.operation for job in batch])

    def _finished(self, batch: Sequence[Job[J]], ok: bool, result: Any) -> None:
        self._busy = False
        if ok:
            for job, (succeeded, value) in zip(batch, result, strict=True):
                if succeeded:
                    job.result.callback(value)
                else:
                    job.result.errback(Failure(value))
        else:
            failure: Failure = result
            self.log.info("A batch of {count} store operations was aborted ({error});"
                          " running them one by one", count=len(batch),
                          error=failure.getErrorMessage())
            for job in batch:
                self._fallback(job.operation).chainDeferred(job.result)
        if self._queue and not self._busy:
            self._dispatch()
