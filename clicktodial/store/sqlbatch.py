"""
The SQL store's batch executor: runs a group commit's batch of hot jobs
(:mod:`clicktodial.store.sqljobs`) in one transaction on a raw pooled DBAPI connection, and
one job alone, in a transaction of its own, after its batch was aborted.

A batch: open the write transaction (``BEGIN IMMEDIATE`` on SQLite), take the AORs'
advisory locks (PostgreSQL) and read every changed AOR's bindings in one statement, run the
jobs in their order (:meth:`SQLJob.order`), send the pending binding writes, commit. A job
raising a :class:`StoreError` (before it wrote anything) has that error as its outcome; any
other error rolls the batch back, drops the connection (we do not tell a dead connection
from a failed statement; the pool opens a new one) and is raised, so that the group commit
runs every job alone.

DBAPI errors leave here as SQLAlchemy's (:class:`sqlalchemy.exc.DBAPIError` and its
``OperationalError``, ``IntegrityError``, ...), as if the statements had gone through
SQLAlchemy, so the store's retry rules apply to them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from clicktodial.store.errors import StoreError
from clicktodial.store.groupcommit import Outcome
from clicktodial.store.sqljobs import Batch, SQLDialect, SQLJob
from clicktodial.store.writelock import NO_WRITE_LOCK, WriteLock

T = TypeVar("T")

#: Tries of a job alone that lost a race to insert a binding (see :meth:`run_alone`).
INSERT_RACE_ATTEMPTS = 3


class BatchExecutor:
    """
    Runs :class:`SQLJob` batches on ``engine``'s pooled connections (called on a database
    thread).

    :param engine: the store's engine (SQLite or PostgreSQL).
    :param write_lock: held around each transaction (a SQLite file's cross-process lock:
        :mod:`clicktodial.store.writelock`).
    """

    def __init__(self, engine: Engine, write_lock: WriteLock = NO_WRITE_LOCK) -> None:
        self._engine = engine
        self._write_lock = write_lock
        self._dialect = SQLDialect.named(engine.dialect.name)
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error

    def execute(self, jobs: Sequence[SQLJob]) -> list[Outcome]:
        """
        Run ``jobs`` in one transaction; one outcome per job, in the given order.

        :raises sqlalchemy.exc.DBAPIError: (or another error) the batch was rolled back.
        """
        outcomes: list[Outcome] = [(False, None)] * len(jobs)
        order = sorted(range(len(jobs)), key=lambda i: jobs[i].order())
        with self._transaction(jobs) as batch:
            for i in order:
                try:
                    outcomes[i] = (True, jobs[i].run(batch))
                except StoreError as e:
                    outcomes[i] = (False, e)
        return outcomes

    def run_alone(self, job: SQLJob) -> Any:
        """
        Run one job in a transaction of its own and return its result or raise its error.

        A job that loses a race to insert a binding (another node inserted it after our read:
        its row did not exist to be locked; ``IntegrityError``, the transaction rolled back)
        runs again and then sees that row.
        """
        for attempt in range(1, INSERT_RACE_ATTEMPTS + 1):
            try:
                with self._transaction([job]) as batch:
                    return job.run(batch)
            except IntegrityError:
                if attempt == INSERT_RACE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    @contextmanager
    def _transaction(self, jobs: Sequence[SQLJob]) -> Iterator[Batch]:
        # A raw pooled connection, transaction handled here: SQLAlchemy's per-transaction
        # work (events, BEGIN through exec_driver_sql) cost as much as the statements.
        # The write lock (if any) around the whole transaction, released after it ends.
        with self._write_lock:
            connection = self._engine.raw_connection()
            try:
                with self._sqlalchemy_errors():
                    cursor = connection.cursor()
                    if self._dialect.begin is not None:
                        cursor.execute(self._dialect.begin)
                    aors = sorted(
                        {aor for aor in (job.changes_aor() for job in jobs) if aor is not None}
                    )
                    batch = Batch(cursor, self._dialect, aors)
                    yield batch
                    batch.flush()
                    cursor.close()
                    connection.commit()
            except StoreError:
                # A job's refusal (alone): nothing was written, the connection is fine.
                connection.rollback()
                raise
            except BaseException:
                try:
                    connection.rollback()
                finally:
                    connection.invalidate()
                raise
            finally:
                connection.close()

    @contextmanager
    def _sqlalchemy_errors(self) -> Iterator[None]:
        try:
            yield
        except self._dbapi_error as e:
            raise cast(
                BaseException,
                DBAPIError.instance(None, None, e, self._dbapi_error, dialect=self._engine.dialect),
            ) from e
