"""
The write lock of a SQLite file shared by several processes (``[daemon] workers``, or a
``clicktodial`` command beside the daemon).

SQLite lets one writer in at a time; a connection finding the lock taken waits in SQLite's
busy handler, which *sleeps* in growing steps (1, 2, 5, 10 … 100 ms) and looks again, instead
of being woken when the lock frees: with two worker processes writing REGISTER batches,
each batch then waited a good part of those steps for a lock held a millisecond, and two
workers registered half as many phones a second as one.

:class:`FileWriteLock` takes an exclusive ``flock(2)`` on a file beside the database
(``PATH-writelock``) around each write transaction: a process waiting for it sleeps in the
kernel and is woken when the holder releases it (or dies: the kernel releases the locks of
a closed file). Inside one process, a :class:`threading.Lock` orders the database threads
first (``flock`` does not exclude threads sharing one open file). SQLite's own lock and
``busy_timeout`` stay as they were, for writers that do not take this lock (the ``sqlite3``
shell, WAL checkpoints).

:func:`write_lock_for` gives the lock to take for a database URL: a file lock for a SQLite
file, :data:`NO_WRITE_LOCK` for PostgreSQL (whose row locks serialise writers without
polling). The store's batch executor (:mod:`clicktodial.store.sqlbatch`) and its other
write transactions (:mod:`clicktodial.store.sql`) take it.
"""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType

from sqlalchemy import URL, make_url

__all__ = ["NO_WRITE_LOCK", "FileWriteLock", "WriteLock", "lock_path_for", "write_lock_for"]

#: What a write transaction holds around itself: entered before ``BEGIN``, left after
#: ``COMMIT`` or ``ROLLBACK``.
WriteLock = AbstractContextManager[None]

#: The lock of a database whose writers need none of ours (PostgreSQL).
NO_WRITE_LOCK: WriteLock = nullcontext()

#: Appended to the database's path for the lock file.
LOCK_SUFFIX = "-writelock"


class FileWriteLock(AbstractContextManager[None]):
    """
    An exclusive lock between the threads of this process and every process locking
    ``path`` (see the module). Reentrant use is an error (it would deadlock).

    The file is opened on first use and kept open (one ``open`` per process, two
    ``flock`` calls per transaction).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._threads = threading.Lock()
        self._fd: int | None = None

    def _file(self) -> int:
        if self._fd is None:
            # Group-writable like the database beside it may be; never truncated.
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o660)
        return self._fd

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            fd = self._fd  # (opened once: no _file() frame for each transaction)
            fcntl.flock(self._file() if fd is None else fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        """Close the lock file (the store stops); a later use opens it again."""
        with self._threads:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def lock_path_for(url: str | URL) -> str | None:
    """The lock file of a SQLite file URL (absolute), or ``None`` for another database."""
    url = make_url(url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return os.path.abspath(url.database) + LOCK_SUFFIX


def write_lock_for(url: str | URL) -> WriteLock:
    """The lock a write transaction on ``url`` takes (see the module)."""
    path = lock_path_for(url)
    return NO_WRITE_LOCK if path is None else FileWriteLock(path)
