"""
The SQL store's batch executor: runs a group commit's batch of hot jobs
(:mod:`clicktodial.store.sqljobs`) in one transaction on a DBAPI connection it keeps, and
one job alone, in a transaction of its own on a pooled connection, after its batch was
aborted.

Batches run one at a time (the group commit has at most one in flight), so the executor
keeps one connection for them instead of checking one out of SQLAlchemy's pool per batch
(the checkout and check-in, with their reset, were about 40 Python function calls). A
batch that fails for any reason other than a job's refusal drops that connection (we do
not tell a dead connection from a failed statement); the next batch opens a new one.

A batch: open the write transaction (``BEGIN IMMEDIATE`` on SQLite), take the AORs'
advisory locks (PostgreSQL; the same statement reads the jobs' credentials) and read every
changed AOR's bindings in one statement, run the jobs in their order (:meth:`SQLJob.order`),
send the pending binding writes (one statement per kind and up to
:data:`~clicktodial.store.sqljobs.WRITE_ROWS` rows), commit. A job
raising a :class:`StoreError` (before it wrote anything) has that error as its outcome; any
other error rolls the batch back, drops the connection and is raised, so that the group
commit runs every job alone.

DBAPI errors leave here as SQLAlchemy's (:class:`sqlalchemy.exc.DBAPIError` and its
``OperationalError``, ``IntegrityError``, ...), as if the statements had gone through
SQLAlchemy, so the store's retry rules apply to them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import suppress
from itertools import repeat
from typing import Any, TypeVar, cast

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.pool import PoolProxiedConnection

from clicktodial.store.errors import StoreError
from clicktodial.store.groupcommit import Outcome
from clicktodial.store.sqljobs import Batch, SQLDialect, SQLJob
from clicktodial.store.writelock import NO_WRITE_LOCK, WriteLock

T = TypeVar("T")

#: Tries of a job alone that lost a race to insert a binding (see :meth:`run_alone`).
INSERT_RACE_ATTEMPTS = 3
#: The most statement cursors kept with the batches' connection (one per statement text,
#: where the dialect wants that): past this many (batches of unusual sizes have statements
#: of their own), they are closed and made again as needed.
KEPT_CURSORS = 64

#: A batch's general cursor, and the cursor for each statement text.
_Cursors = tuple[Any, "defaultdict[str, Any]"]


class BatchExecutor:
    """
    Runs :class:`SQLJob` batches (one at a time, on one connection it keeps out of
    ``engine``'s pool) and jobs alone (on pooled connections); called on database threads.

    :param engine: the store's engine (SQLite or PostgreSQL); its pool needs a connection
        more than the threads that run jobs alone.
    :param write_lock: held around each transaction that writes (a SQLite file's
        cross-process lock: :mod:`clicktodial.store.writelock`); a batch that only reads
        takes no lock and opens no write transaction.
    """

    def __init__(self, engine: Engine, write_lock: WriteLock = NO_WRITE_LOCK) -> None:
        self._engine = engine
        self._write_lock = write_lock
        self._dialect = SQLDialect.named(engine.dialect.name)
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        #: The batches' connection (a pool checkout never checked in), once opened.
        self._kept: PoolProxiedConnection | None = None
        #: Connections the batches opened (the first, and one after each failed batch).
        self.connections_opened = 0
        #: The kept connection's cursors, where kept (SQLDialect.cursor_per_statement).
        self._kept_cursors: _Cursors | None = None

    def close(self) -> None:
        """Give the batches' connection back to the pool (when no batch runs any more)."""
        kept, self._kept = self._kept, None
        cursors, self._kept_cursors = self._kept_cursors, None
        if cursors is not None:
            cursors[0].close()
            for cursor in cursors[1].values():
                cursor.close()
        if kept is not None:
            kept.close()

    def execute(self, jobs: Sequence[SQLJob]) -> list[Outcome]:
        """
        Run ``jobs`` in one transaction; one outcome per job, in the given order.

        :raises sqlalchemy.exc.DBAPIError: (or another error) the batch was rolled back.
        """
        outcomes: list[Outcome] = [(False, None)] * len(jobs)
        order: Sequence[int] = range(len(jobs))
        if len(jobs) > 1:
            order = sorted(order, key=lambda i: jobs[i].order())
        kept = self._kept
        if kept is None:
            kept = self._kept = self._connect()
            self.connections_opened += 1

        def run(batch: Batch) -> None:
            for i in order:
                try:
                    outcomes[i] = (True, jobs[i].run(batch))
                except StoreError as e:
                    outcomes[i] = (False, e)

        self._in_transaction(jobs, kept, True, run)
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
                return self._in_transaction([job], self._connect(), False, job.run)
            except IntegrityError:
                if attempt == INSERT_RACE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _connect(self) -> PoolProxiedConnection:
        try:
            return self._engine.raw_connection()
        except self._dbapi_error as e:
            raise self._sqlalchemy_error(e) from e

    def _in_transaction(
        self,
        jobs: Sequence[SQLJob],
        connection: PoolProxiedConnection,
        keep: bool,
        work: Callable[[Batch], T],
    ) -> T:
        # On the DBAPI connection, transaction handled here: SQLAlchemy's per-transaction
        # work (events, BEGIN through exec_driver_sql) cost as much as the statements.
        # ``keep``: the batches' connection, not given back to the pool afterwards (unless
        # it failed: then dropped). Plain try blocks, not context managers: this runs for
        # every batch. A batch that writes holds the write lock (a SQLite file's writers,
        # across processes: clicktodial.store.writelock) for its whole transaction.
        if len(jobs) == 1:
            job = jobs[0]
            writes = job.writes
            aor = job.changes_aor()
            aors = [aor] if aor is not None else []
            username = job.reads_user()
            usernames = [username] if username else []
        else:
            writes = any([job.writes for job in jobs])
            aors = sorted({aor for aor in (job.changes_aor() for job in jobs) if aor is not None})
            usernames = list(dict.fromkeys(u for u in (job.reads_user() for job in jobs) if u))
        # (No lock, PostgreSQL: no context manager entered and left for every batch.)
        if writes and self._write_lock is not NO_WRITE_LOCK:
            with self._write_lock:
                return self._run_transaction(connection, keep, writes, aors, usernames, work)
        return self._run_transaction(connection, keep, writes, aors, usernames, work)

    def _run_transaction(
        self,
        connection: PoolProxiedConnection,
        keep: bool,
        writes: bool,
        aors: list[str],
        usernames: list[str],
        work: Callable[[Batch], T],
    ) -> T:
        dbapi: Any = connection.dbapi_connection
        try:
            try:
                cursor, cursors = self._cursors(dbapi, keep)
                if writes and self._dialect.begin is not None:
                    cursor.execute(self._dialect.begin)
                batch = Batch(cursor, cursors, self._dialect, aors, usernames)
                result = work(batch)
                batch.flush()
                # The transaction's own cursors are closed (SQLite's are one cursor); kept
                # ones too when there are too many. (Inline: no Python call per batch.)
                kept = self._kept_cursors is not None and cursors is self._kept_cursors[1]
                if not kept or len(cursors) > KEPT_CURSORS:
                    if kept:
                        self._kept_cursors = None
                    cursor.close()
                    for statement_cursor in cursors.values():
                        statement_cursor.close()
                dbapi.commit()
                return result
            except self._dbapi_error as e:
                raise self._sqlalchemy_error(e) from e
        except StoreError:
            # A job's refusal (alone): nothing was written, the connection is fine.
            dbapi.rollback()
            raise
        except BaseException:
            if keep:
                self._kept = None
                self._kept_cursors = None
                keep = False
            # The connection is dropped either way; a dead one cannot roll back, and the
            # batch's own error is the one to report.
            with suppress(Exception):
                dbapi.rollback()
            connection.invalidate()
            raise
        finally:
            if not keep:
                connection.close()

    def _cursors(self, dbapi: Any, keep: bool) -> _Cursors:
        # A batch's cursors (see SQLDialect.cursor_per_statement): one for every statement,
        # made for the transaction, or one per statement text, kept with the batches'
        # connection. A defaultdict makes them as asked for; once made, a statement's
        # cursor is found without a Python call (itertools.repeat's __next__ is C).
        if keep and self._kept_cursors is not None:
            return self._kept_cursors
        cursor = dbapi.cursor()
        if not self._dialect.cursor_per_statement:
            return cursor, defaultdict(repeat(cursor).__next__)
        cursors: _Cursors = (cursor, defaultdict(dbapi.cursor))
        if keep:
            self._kept_cursors = cursors
        return cursors

    def _sqlalchemy_error(self, error: Exception) -> BaseException:
        return cast(
            BaseException,
            DBAPIError.instance(None, None, error, self._dbapi_error, dialect=self._engine.dialect),
        )
