"""
What a store or location backend factory gets besides its options: :class:`StoreEnvironment`
(a value module: it imports no interface, so :mod:`clicktodial.interfaces` can name it).
Also importable as ``clicktodial.store.plugins.StoreEnvironment``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from argon2 import PasswordHasher
from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from twisted.python.threadpool import ThreadPool

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
