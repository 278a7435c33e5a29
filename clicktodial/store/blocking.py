"""
Running a command-line tool's store work on Twisted's reactor, with ``task.react``.

Admin commands use the same stores as the daemon, with real thread pools (a CSV import hashes
passwords on every core) and Deferreds. :func:`run_with_reactor` is a thin wrapper around
:func:`twisted.internet.task.react`: ``react`` runs the reactor until the command's
coroutine is done, then exits the process; the wrapper instead hands back what the command
returned, or raises what it raised (a :class:`clicktodial.cli.CommandError` keeps its usage
exit status, a store error its message), so ``clicktodial.cli.main`` treats every command
alike.

The global reactor cannot run twice in a process: one :func:`run_with_reactor` per
process, which is what a command-line invocation is (tests run the commands in a child
process). Interrupted (SIGINT/SIGTERM stop the reactor), the command's coroutine is
cancelled at the ``await`` it is waiting on, so its ``finally`` blocks stop the stores and
their thread pools before the reactor exits; then :class:`KeyboardInterrupt` is raised, as
an interrupted Python program does.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.internet.task import react
from twisted.python.failure import Failure

T = TypeVar("T")


def run_with_reactor(main: Callable[[IReactorCore], Coroutine[Any, Any, T]],
                     _reactor: IReactorCore | None = None) -> T:
    """
    Run ``main(reactor)`` on the reactor until it is done; return its result or raise its
    exception.

    :param main: the command: an ``async`` function of the reactor (which also provides
        ``IReactorTime`` and ``IReactorFromThreads``, as a store needs).
    :param _reactor: passed on to ``react`` (its testing hook); the global reactor if
        ``None``.
    :raises KeyboardInterrupt: the reactor was stopped before ``main`` finished.
    """
    outcome: list[object] = []

    def start(reactor: IReactorCore) -> Deferred[None]:
        command = Deferred.fromCoroutine(main(reactor))
        # Kept here, not reported by react (which logs a failure and exits 1).
        done = command.addBoth(outcome.append)

        def interrupted() -> Deferred[None] | None:
            if outcome:
                return None
            command.cancel()
            return done  # the reactor's shutdown waits for the command's cleanup

        reactor.addSystemEventTrigger("before", "shutdown", interrupted)
        return done

    try:
        react(start, _reactor=_reactor)
    except SystemExit:
        pass  # react always exits; our outcome is what counts
    if not outcome:
        raise KeyboardInterrupt
    result = outcome[0]
    if isinstance(result, Failure):
        if result.check(CancelledError) is not None:
            raise KeyboardInterrupt
        result.raiseException()
    return cast(T, result)
