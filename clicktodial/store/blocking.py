"""
Running Deferred-returning store code to completion in a command-line tool.

Admin commands use the same stores as the daemon, with real thread pools (a CSV import hashes
passwords on every core), but they have no reactor: the daemon's global reactor belongs to
``tap.py``. :class:`BlockingDriver` is the small part of a reactor those stores need: a clock
for retry back-off, and ``callFromThread`` whose calls it runs on the calling thread while
:meth:`BlockingDriver.wait` waits for a Deferred.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

T = TypeVar("T")

# The longest wait for work from another thread before checking timers again.
_POLL_SECONDS = 0.5


@implementer(IReactorFromThreads)
class BlockingDriver(Clock):
    """A wall clock and a queue of calls from threads, run by :meth:`wait`."""

    def __init__(self) -> None:
        super().__init__()
        self._calls: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...],
                                             dict[str, Any]]] = queue.SimpleQueue()

    def seconds(self) -> float:
        """The wall-clock time: users and tokens get real creation times."""
        return time.time()

    def callFromThread(self, callable: Callable[..., Any], *args: Any,
                       **kwargs: Any) -> None:
        """Queue a call for the thread running :meth:`wait` (thread-safe)."""
        self._calls.put((callable, args, kwargs))

    def wait(self, d: Deferred[T]) -> T:
        """
        Run queued calls and due timers until ``d`` fires; return its result or raise its
        exception.
        """
        outcome: list[Any] = []
        d.addBoth(outcome.append)
        while not outcome:
            timeout = _POLL_SECONDS
            if self.calls:
                timeout = min(timeout, max(0.0, self.calls[0].getTime() - self.seconds()))
            try:
                callable, args, kwargs = self._calls.get(timeout=timeout)
            except queue.Empty:
                pass
            else:
                callable(*args, **kwargs)
            # Clock.advance runs every call due by seconds(), which here is the wall clock.
            self.advance(0)
        result = outcome[0]
        if isinstance(result, Failure):
            result.raiseException()
        return cast(T, result)
