"""
The SQLite write lock shared by the processes writing one file (clicktodial.store.writelock):
a file beside the database, held around every write transaction of the store.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from clicktodial.store.sql import SQLStore, create_sql_engine, upgrade_schema
from clicktodial.store.sqlbatch import BatchExecutor
from clicktodial.store.sqljobs import Batch, SQLJob
from clicktodial.store.writelock import (
    NO_WRITE_LOCK,
    FileWriteLock,
    lock_path_for,
    write_lock_for,
)
from clicktodial.testing.fakes import InlineReactor, InlineThreadPool, success_result_of


def held_elsewhere(path: str) -> bool:
    """Whether another open file (as another process's would be) cannot take the lock now."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def test_a_sqlite_file_gets_a_lock_file_beside_it_other_databases_none(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    assert lock_path_for(url) == f"{tmp_path}/db.sqlite-writelock"
    assert isinstance(write_lock_for(url), FileWriteLock)
    assert write_lock_for("postgresql+psycopg://u@/d") is NO_WRITE_LOCK
    assert write_lock_for("sqlite:///:memory:") is NO_WRITE_LOCK


def test_the_lock_excludes_other_processes_until_released(tmp_path: Path) -> None:
    lock = FileWriteLock(str(tmp_path / "db-writelock"))
    with lock:
        assert held_elsewhere(lock.path)
    assert not held_elsewhere(lock.path)
    lock.close()


def test_a_waiting_thread_is_let_in_when_the_holder_releases(tmp_path: Path) -> None:
    """Threads of one process exclude each other too (flock alone would not)."""
    lock = FileWriteLock(str(tmp_path / "db-writelock"))
    order: list[str] = []
    entered = threading.Event()

    def waiter() -> None:
        with lock:
            order.append("waiter")

    with lock:
        thread = threading.Thread(target=waiter)
        thread.start()
        entered.wait(0.05)  # the waiter is blocked meanwhile (not a timing assertion)
        order.append("holder")
    thread.join(30)
    assert order == ["holder", "waiter"]
    lock.close()


def test_a_failure_inside_releases_the_lock(tmp_path: Path) -> None:
    lock = FileWriteLock(str(tmp_path / "db-writelock"))
    with pytest.raises(RuntimeError), lock:
        raise RuntimeError("the transaction failed")
    assert not held_elsewhere(lock.path)
    with lock:  # and this process can take it again
        pass
    lock.close()


class LookingJob(SQLJob):
    """A job that looks, inside its batch's transaction, whether the lock is held."""

    rank = 0

    def __init__(self, path: str, seen: list[bool]) -> None:
        self.path = path
        self.seen = seen

    def order(self) -> tuple[int, str]:
        return (0, "")

    def run(self, batch: Batch) -> None:
        self.seen.append(held_elsewhere(self.path))


@pytest.fixture
def locked_executor() -> Iterator[Callable[[Path], tuple[str, BatchExecutor]]]:
    """``(lock file, executor)`` on a new SQLite file with its write lock; closed after."""
    opened: list[tuple[BatchExecutor, Engine, FileWriteLock]] = []

    def make(tmp_path: Path) -> tuple[str, BatchExecutor]:
        url = f"sqlite:///{tmp_path}/db.sqlite"
        upgrade_schema(url)
        path = lock_path_for(url)
        assert path is not None
        engine = create_sql_engine(url)
        lock = FileWriteLock(path)
        executor = BatchExecutor(engine, lock)
        opened.append((executor, engine, lock))
        return path, executor

    yield make
    for executor, engine, lock in opened:
        executor.close()
        engine.dispose()
        lock.close()


def test_a_write_batch_holds_the_lock_for_its_whole_transaction(
    tmp_path: Path, locked_executor: Callable[[Path], tuple[str, BatchExecutor]]
) -> None:
    path, executor = locked_executor(tmp_path)
    seen: list[bool] = []
    executor.execute([LookingJob(path, seen), LookingJob(path, seen)])
    executor.run_alone(LookingJob(path, seen))
    assert seen == [True, True, True]
    assert not held_elsewhere(path)


class ReadingLookingJob(LookingJob):
    """A job that only reads (as the credentials read does)."""

    writes = False


def test_a_batch_that_only_reads_takes_no_lock_a_mixed_one_does(
    tmp_path: Path, locked_executor: Callable[[Path], tuple[str, BatchExecutor]]
) -> None:
    """Reads wait for no writer of another process; a batch with one write holds the lock."""
    path, executor = locked_executor(tmp_path)
    seen: list[bool] = []
    executor.execute([ReadingLookingJob(path, seen), ReadingLookingJob(path, seen)])
    executor.run_alone(ReadingLookingJob(path, seen))
    assert seen == [False, False, False]
    seen.clear()
    executor.execute([ReadingLookingJob(path, seen), LookingJob(path, seen)])
    assert seen == [True, True]
    assert not held_elsewhere(path)


def test_the_sql_store_takes_the_lock_beside_its_sqlite_file(tmp_path: Path) -> None:
    """Every write of the store (batches, users) goes through it: a store whose lock is
    held elsewhere waits; once released, its write is done."""
    url = f"sqlite:///{tmp_path}/db.sqlite"
    upgrade_schema(url)
    path = lock_path_for(url)
    assert path is not None
    reactor = InlineReactor()
    store = SQLStore(reactor, url, InlineThreadPool(), InlineThreadPool(), realm="r")
    success_result_of(store.start())
    # another process's lock file, held while the store writes on a thread of its own
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    done = threading.Event()
    thread = threading.Thread(
        target=lambda: (store.create_call("alice", "bob", 1.0, "n"), done.set())
    )
    thread.start()
    assert not done.wait(0.2)  # blocked in flock, not failing
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    thread.join(30)
    assert done.is_set()
    success_result_of(store.stop())
