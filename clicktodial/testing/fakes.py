"""
Fakes for synchronous tests of code that uses thread pools.

:class:`InlineThreadPool` runs each job at once, in the calling thread, and
:class:`InlineReactor` (a :class:`Clock`) runs ``callFromThread`` calls at once: with
both, a Deferred from ``deferToThreadPool`` has fired by the time it is
returned, so tests need neither threads nor a running reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

T = TypeVar("T")


@implementer(IReactorFromThreads)
class InlineReactor(Clock):
    """A fake clock whose ``callFromThread`` calls the function at once."""

    def callFromThread(self, callable: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        callable(*args, **kwargs)


class InlineThreadPool(ThreadPool):
    """
    A thread pool that runs every job in the calling thread, at once.

    :ivar jobs: how many jobs it ran.
    """

    def __init__(self, name: str = "inline", max_threads: int = 1) -> None:
        super().__init__(minthreads=0, maxthreads=max_threads, name=name)
        self.jobs = 0

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, Any], object] | None,
        func: Callable[..., Any],
        *args: Any,
        **kw: Any,
    ) -> None:
        self.jobs += 1
        try:
            result = func(*args, **kw)
        except BaseException:
            if onResult is not None:
                onResult(False, Failure())
        else:
            if onResult is not None:
                onResult(True, result)


def inline_thread_pool(name: str, max_threads: int) -> ThreadPool:
    """A ``StoreEnvironment.make_thread_pool`` that makes inline pools."""
    return InlineThreadPool(name, max_threads)


def cheap_password_hasher() -> PasswordHasher:
    """
    Argon2id with the cheapest parameters: milliseconds, not a tenth of a
    second, per hash. For tests only.
    """
    return PasswordHasher.from_parameters(CHEAPEST)


class NotFired(AssertionError):
    """The Deferred has not fired (yet)."""


def success_result_of(d: Deferred[T]) -> T:
    """
    The result a Deferred has already fired with.

    :raises AssertionError: if it has not fired or it failed.
    """
    results: list[Any] = []
    d.addBoth(results.append)
    if not results:
        raise NotFired(f"{d!r} has not fired")
    result = results[0]
    if isinstance(result, Failure):
        raise AssertionError(f"expected a result, got a failure:\n{result.getTraceback()}")
    d.addCallback(lambda _: result)
    return cast(T, result)


def failure_result_of(d: Deferred[Any], *types: type[BaseException]) -> Failure:
    """
    The failure a Deferred has already failed with, checked to be one of
    ``types`` (any exception if none given). The Deferred is left handled.

    :raises AssertionError: if it has not fired, succeeded, or failed with
        another exception type.
    """
    results: list[Any] = []
    d.addBoth(results.append)
    if not results:
        raise NotFired(f"{d!r} has not fired")
    result = results[0]
    if not isinstance(result, Failure):
        raise AssertionError(f"expected a failure, got {result!r}")
    if types and not result.check(*types):
        raise AssertionError(
            f"expected one of {[t.__name__ for t in types]}, got:\n" + result.getTraceback()
        )
    return result
