"""
What a store or location backend factory gets besides its options: :class:`StoreEnvironment`
(a value module: it imports no interface, so :mod:`clicktodial.interfaces` can name it).
Also importable as ``clicktodial.store.plugins.StoreEnvironment``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from twisted.python.threadpool import ThreadPool

if TYPE_CHECKING:
    from clicktodial.store.groupcommit import BatchRunner

__all__ = ["StoreEnvironment", "default_thread_pool"]


def default_thread_pool(name: str, max_threads: int) -> ThreadPool:
    """A real thread pool: threads start when the store starts."""
    return ThreadPool(minthreads=0, maxthreads=max_threads, name=name)


@frozen
class StoreEnvironment:
    """
    What a backend factory gets besides its options.

    :ivar reactor: provides :class:`IReactorTime` and :class:`IReactorFromThreads`.
    :ivar realm: the SIP digest realm (the configured ``[sip] domain``).
    :ivar make_thread_pool: ``(name, max_threads) -> ThreadPool``; the store
        owns, starts and stops the pools it makes (tests pass a factory of
        inline pools).
    :ivar password_hasher: the Argon2 hasher, or ``None`` for
        argon2-cffi's defaults.
    """

    reactor: IReactorTime
    realm: str
    make_thread_pool: Callable[[str, int], ThreadPool] = default_thread_pool
    password_hasher: PasswordHasher | None = None

    def hash_pool(self) -> ThreadPool:
        """A pool for password hashing: one thread per core."""
        return self.make_thread_pool("clicktodial-password-hash", os.cpu_count() or 2)

    def batch_thread(self, name: str) -> BatchRunner:
        """
        Where a store's group-commit batches run: a dedicated
        :class:`~clicktodial.store.groupcommit.BatchThread`, or, when this environment
        makes its own pools (tests: inline pools), a one-thread pool of those.
        """
        from clicktodial.store.groupcommit import BatchThread

        if self.make_thread_pool is default_thread_pool:
            return BatchThread(name)
        return self.make_thread_pool(name, 1)
