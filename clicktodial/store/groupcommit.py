"""
Group commit: store operations that arrive while the database is busy are applied together,
in one transaction on one thread hop, with one ``callFromThread`` for the whole batch.

At most one batch is in flight. Operations submitted meanwhile queue on the reactor thread
and form the next batch, so batches grow with the load by themselves: one REGISTER alone is
one batch of one, sent at once (no added latency when idle). When operations did arrive
while a batch was in flight (the store is busy), the next batch starts ``busy_interval``
(5 ms) after the previous one started, not sooner: each batch costs a thread hop, a
transaction, and the batch thread's GIL hand-offs with a busy reactor (every SQLite call
releases the GIL and takes it back), so under load fewer, larger batches cost far less per
operation (at 2,500 REGISTERs/s: ~15 operations a batch instead of ~4, 0.4 → 0.25 ms of
CPU and 4.5 → 0.5 context switches per registration; docs/storage.md).

Atomicity per operation: a batch's ``execute`` reports, per operation, a result or the
documented error it raised *before writing anything* (a refused REGISTER); any other error
aborts the batch's transaction, and then every operation of the batch runs again on its own
through ``fallback`` (its own transaction, with the store's usual retries). So one failing
operation never fails the others, and none is applied twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import partial
from queue import SimpleQueue
from typing import Any, Generic, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

#: The most operations in one transaction: bounds how long a batch holds the write lock.
MAX_BATCH = 256

#: Seconds between the starts of two batches while operations keep arriving during batches
#: (see the module docstring): the most a busy store adds to an operation's latency.
BUSY_INTERVAL = 0.005

#: The operations a group commit queues: values that know how to run themselves (for the SQL
#: store, the job types of :mod:`clicktodial.store.sqljobs`).
J = TypeVar("J")


class BatchRunner(Protocol):
    """
    Where a group commit's batches run: the part of Twisted's ``ThreadPool`` it uses (a
    test's inline pool provides it too), or a :class:`BatchThread`.
    """

    def start(self) -> None:
        """Start the thread(s)."""

    def stop(self) -> None:
        """Run what was queued, then stop the thread(s)."""

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, Any], object], func: Callable[..., Any], *args: Any
    ) -> None:
        """Call ``func(*args)`` on a thread, then ``onResult(True, result)`` on that thread, or
        ``onResult(False, Failure)`` if it raised."""


class BatchThread:
    """
    One dedicated thread for a group commit's batches (at most one is in flight, so one
    thread is all they can use).

    Twisted's ``ThreadPool`` hands each call through its ``Team``, a coordinator, a worker,
    a ``queue.Queue`` (a Python ``Condition``) and a logging context: about 40 Python
    function calls per hop, paid per batch. Here the hand-off is a ``SimpleQueue`` (its
    ``put`` and ``get`` are C, the wake-up a lock): the hop costs the batch's own work and
    one ``callFromThread``.

    :param name: the thread's name (shown by ``py-spy``, ``top -H``).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._calls: SimpleQueue[tuple[Callable[[bool, Any], object], Callable[..., Any], Any]] = (
            SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Run every call queued so far, then end the thread (waits for it)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._calls.put(_STOP)
            thread.join()

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, Any], object], func: Callable[..., Any], *args: Any
    ) -> None:
        """Queue ``func(*args)`` for the thread; ``onResult`` is called there with its
        outcome: ``(True, result)`` or ``(False, Failure)``."""
        self._calls.put((onResult, func, args))

    def _work(self) -> None:
        get = self._calls.get
        while True:
            call = get()
            if call is _STOP:
                return
            on_result, func, args = call
            try:
                result = func(*args)
            except BaseException:
                on_result(False, Failure())
            else:
                on_result(True, result)


_STOP: Any = object()


#: One queued operation and the Deferred its result is delivered to (a plain tuple: one is
#: made per store operation).
Job = tuple[J, "Deferred[Any]"]


#: An operation's outcome inside a batch: ``(True, value)`` or ``(False, exception)``.
Outcome = tuple[bool, Any]


class GroupCommit(Generic[J]):
    """
    Batches operations onto one thread hop and one transaction.

    :param reactor: the reactor results are delivered on.
    :param pool: where batches run (one batch at a time): a :class:`BatchThread`, or a
        thread pool.
    :param execute: runs a batch of operations in one transaction on a pool thread; returns
        one outcome per operation, in order; raises to abort the whole batch.
    :param fallback: runs one operation on its own (called on the reactor thread) after its
        batch was aborted; fires with the operation's result.
    :param max_batch: the most jobs per batch.
    :param clock: what the ``busy_interval`` is timed with; without one, the next batch
        starts as soon as the previous one is delivered.
    :param busy_interval: the least time between the starts of two batches when the second
        holds operations that arrived while the first was in flight.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorFromThreads,
        pool: BatchRunner,
        execute: Callable[[Sequence[J]], list[Outcome]],
        fallback: Callable[[J], Deferred[Any]],
        max_batch: int = MAX_BATCH,
        *,
        clock: IReactorTime | None = None,
        busy_interval: float = BUSY_INTERVAL,
    ) -> None:
        self._reactor = reactor
        self._clock = clock
        self._busy_interval = busy_interval
        #: when the last batch started (clock seconds)
        self._started = 0.0
        #: the pending start of a batch held back by the busy interval
        self._held: IDelayedCall | None = None
        self._pool = pool
        self._execute = execute
        self._fallback = fallback
        self._max_batch = max_batch
        self._queue: list[Job[J]] = []
        self._busy = False
        #: Operations queued for the next batch (not counting the batch in flight): a plain
        #: attribute, read for every REGISTER and INVITE by the admission control.
        self.waiting = 0
        #: Batches run and jobs in them (for tests and benchmarks).
        self.batches = 0
        self.jobs = 0

    def submit(self, operation: J) -> Deferred[Any]:
        """Queue an operation; fires with its result (or fails with its error)."""
        d: Deferred[Any] = Deferred()
        self._queue.append((operation, d))
        if self._busy or self._held is not None:
            self.waiting += 1
        else:
            self._dispatch()
        return d

    def _dispatch(self) -> None:
        batch = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        self.waiting = len(self._queue)
        self._busy = True
        if self._clock is not None:
            self._started = self._clock.seconds()
        self.batches += 1
        self.jobs += len(batch)
        self._pool.callInThreadWithCallback(
            # (a partial, not a lambda: no Python frame on the batch thread)
            partial(self._reactor.callFromThread, self._finished, batch),
            self._execute,
            [operation for operation, _ in batch],
        )

    def _finished(self, batch: Sequence[Job[J]], ok: bool, result: Any) -> None:
        self._busy = False
        if self._queue and self._clock is not None:
            # Operations arrived while this batch ran: the store is busy. Held from now,
            # not after the delivery, so that what the delivery submits joins the batch.
            delay = self._started + self._busy_interval - self._clock.seconds()
            if delay > 0:
                self._held = self._clock.callLater(delay, self._release)
        if ok:
            for (_, d), (succeeded, value) in zip(batch, result, strict=True):
                if succeeded:
                    d.callback(value)
                else:
                    d.errback(Failure(value))
        else:
            failure: Failure = result
            self.log.info(
                "A batch of {count} store operations was aborted ({error});"
                " running them one by one",
                count=len(batch),
                error=failure.getErrorMessage(),
            )
            for operation, d in batch:
                self._fallback(operation).chainDeferred(d)
        if self._queue and not self._busy and self._held is None:
            self._dispatch()

    def _release(self) -> None:
        self._held = None
        if self._queue and not self._busy:
            self._dispatch()
