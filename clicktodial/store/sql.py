"""
The SQL store: SQLAlchemy 2 Core on SQLite or PostgreSQL (psycopg 3).

Every database call runs on a dedicated thread pool through ``deferToThreadPool``; only plain
values (the attrs classes of :mod:`clicktodial.store.values`) come back to the reactor thread.
Transient errors (a dropped connection, a locked SQLite file, a PostgreSQL serialization
failure) are retried a few times with a backoff timed by the reactor, as buildbot's
``db/pool.py`` does, then reported as :class:`StoreUnavailable`.

Each operation has one implementation, on one of two paths. The hot operations of the
REGISTER and call paths (SIP credentials, binding updates, call records, call traces) are
job types of :mod:`clicktodial.store.sqljobs`, group-committed and run on raw DBAPI cursors
by :class:`clicktodial.store.sqlbatch.BatchExecutor` (SQLAlchemy's per-execution work cost
more than their statements); after an aborted batch, or called blocking (``_op_*``), the same
job runs alone. Everything else (users, tokens, listings, purges, schema) is rare and stays
on SQLAlchemy Core below, where one statement reads clearly on both databases.

Several daemons may share one PostgreSQL database: a REGISTER locks its AOR's binding rows
(``SELECT ... FOR UPDATE``) and inserts new ones under the primary key, so two nodes updating
one AOR serialise instead of losing an update. On SQLite, write transactions start with
``BEGIN IMMEDIATE`` (the write lock up front), inside a file lock shared by every process
writing the file (:mod:`clicktodial.store.writelock`: a waiting writer is woken when it
frees, instead of polling in SQLite's busy handler); ``busy_timeout`` stays for writers
that do not take it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from argon2 import PasswordHasher
from sqlalchemy import (
    URL,
    Connection,
    Engine,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    make_url,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import alsoProvides, implementer

from clicktodial.interfaces import (
    IActiveCallClaims,
    ICallTraceStore,
    IClusterStorage,
    IEventBus,
    INodeRegistry,
    IOutboundQuota,
    ISchemaManagement,
    IStoreBackend,
    IStoreLoad,
    IVerifiedRegistration,
)
from clicktodial.store import migrations
from clicktodial.store.base import StoreBase, UserRecord
from clicktodial.store.bindings import sort_bindings
from clicktodial.store.errors import (
    NoSuchUser,
    SchemaOutOfDate,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
    UserExists,
)
from clicktodial.store.groupcommit import BUSY_INTERVAL, BatchRunner, GroupCommit
from clicktodial.store.passwords import PasswordHashing, default_hash_pool, token_id_of_digest
from clicktodial.store.schema import (
    api_tokens,
    bindings,
    call_trace_messages,
    call_traces,
    calls,
    outbound_counts,
    users,
)
from clicktodial.store.sqlbatch import BatchExecutor
from clicktodial.store.sqljobs import (
    CALL_FIELDS,
    AppendTraces,
    Credentials,
    InsertCall,
    SQLJob,
    UpdateBindings,
    UpdateCall,
    VerifiedUpdateBindings,
    chunks,
)
from clicktodial.store.traces import (
    CallTrace,
    TraceAppend,
    TraceLimits,
    unpack_messages,
)
from clicktodial.store.values import (
    ApiToken,
    Binding,
    BindingChanges,
    CallRecord,
    CallUpdate,
    SipCredentials,
    VerifiedUpdate,
)
from clicktodial.store.writelock import FileWriteLock, write_lock_for

T = TypeVar("T")

#: The oldest SQLite the store runs on (UPDATE ... FROM: 3.33).
SQLITE_MIN_VERSION = (3, 33, 0)
#: How long a SQLite connection waits for another writer, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 10_000
#: Seconds a PostgreSQL connection attempt may take (libpq ``connect_timeout``), unless the
#: URL sets ``?connect_timeout=``.
POSTGRESQL_CONNECT_TIMEOUT = 10

_UPGRADE_HINT = "run `clicktodial --config FILE db upgrade`"


def create_sql_engine(url: str | URL, pool_size: int = 4) -> Engine:
    """
    An engine for our stores: a connection per database thread, and for SQLite WAL mode,
    ``busy_timeout``, foreign keys and ``BEGIN IMMEDIATE`` for writes.

    No ``pool_pre_ping``: it cost a ``SELECT 1`` round trip per transaction. A connection
    that died while idle fails its first statement instead, with an error
    :class:`SQLStore` treats as transient (the pool invalidates it) and retries.

    :raises StoreConfigError: for an in-memory SQLite URL (use ``backend = memory``) or a
        database we do not support.
    """
    url = make_url(url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database in (None, "", ":memory:") or url.query.get("mode") == "memory":
            raise StoreConfigError(
                "an in-memory SQLite database lives in one connection and vanishes with it:"
                " use backend = memory, or a SQLite file",
                key="url",
            )
        engine = create_engine(url, pool_size=pool_size, max_overflow=0)
        version = engine.dialect.loaded_dbapi.sqlite_version_info
        if version < SQLITE_MIN_VERSION:
            # UPDATE ... FROM (the binding refreshes of a batch in one statement).
            raise StoreConfigError(
                f"SQLite {'.'.join(map(str, version))} is too old: the SQL store needs SQLite"
                f" {'.'.join(map(str, SQLITE_MIN_VERSION))} or later",
                key="url",
            )
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        # libpq waits for a server that accepts and never answers for ever; a bound keeps
        # start-up (and a stop during it) from hanging on one. ?connect_timeout= overrides.
        connect_args = (
            {}
            if "connect_timeout" in url.query
            else {"connect_timeout": POSTGRESQL_CONNECT_TIMEOUT}
        )
        return create_engine(url, pool_size=pool_size, max_overflow=0, connect_args=connect_args)
    raise StoreConfigError(
        f"unsupported database {backend!r}: use sqlite:///PATH or"
        " postgresql+psycopg://USER@HOST/DBNAME",
        key="url",
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself, instead of pysqlite's
        # implicit deferred BEGIN before the first write (which may fail to upgrade its read
        # lock with SQLITE_BUSY, without waiting for busy_timeout).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL: readers do not block the writer and the writer does not block readers;
        # synchronous=NORMAL is durable against application crashes (WAL checkpoints).
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def begin(connection: Connection) -> None:
        if connection.get_execution_options().get("clicktodial_write"):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")


def _is_transient(error: DBAPIError) -> bool:
    """Whether retrying the whole transaction may succeed."""
    if error.connection_invalidated:
        return True
    if not isinstance(error, OperationalError):
        return False
    message = str(error.orig).lower()
    # SQLite reports a missing table as an OperationalError: that needs an upgrade, not a
    # retry.
    return not ("no such table" in message or "no such column" in message)


def check_schema_connection(connection: Connection) -> None:
    """
    :raises SchemaOutOfDate: unless the database is at the migrations' head.
    """
    current = migrations.current_revisions(connection)
    expected = migrations.head_revisions()
    if current == expected:
        return
    if not current:
        raise SchemaOutOfDate(
            f"the database has no clicktodial schema yet: {_UPGRADE_HINT} to create it"
        )
    known = {script.revision for script in migrations.script_directory().walk_revisions()}
    if not current <= known:
        raise SchemaOutOfDate(
            f"the database schema ({', '.join(sorted(current))}) is newer than this version of"
            f" clicktodial knows ({', '.join(sorted(expected))}): upgrade clicktodial"
        )
    raise SchemaOutOfDate(
        f"the database schema is at revision {', '.join(sorted(current))}, this version of"
        f" clicktodial needs {', '.join(sorted(expected))}: {_UPGRADE_HINT}"
    )


def check_schema(url: str | URL) -> None:
    """
    Check (blocking) that the database at ``url`` has the schema this code expects.

    :raises SchemaOutOfDate: with a message saying to run ``clicktodial db upgrade``.
    """
    engine = create_sql_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            check_schema_connection(connection)
    finally:
        engine.dispose()


def upgrade_schema(url: str | URL, revision: str = "head") -> None:
    """Apply the migrations (blocking); see :func:`clicktodial.store.migrations.upgrade`."""
    engine = create_sql_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            connection = connection.execution_options(clicktodial_write=True)
            with connection.begin():
                migrations.upgrade(connection, revision)
    finally:
        engine.dispose()


def _user_record(row: Row[Any]) -> UserRecord:
    return UserRecord(
        username=row.username,
        display_name=row.display_name,
        password_hash=row.password_hash,
        ha1_md5=row.ha1_md5,
        ha1_sha256=row.ha1_sha256,
        is_admin=bool(row.is_admin),
        disabled=bool(row.disabled),
        created_at=row.created_at,
    )


def _binding(row: Row[Any]) -> Binding:
    return Binding(
        aor=row.aor,
        contact=row.contact,
        expires_at=row.expires_at,
        call_id=row.call_id,
        cseq=row.cseq,
        q=row.q,
        instance_id=row.instance_id,
        reg_id=row.reg_id,
        path=tuple(json.loads(row.path)),
        received=row.received,
        user_agent=row.user_agent,
    )


def _dialect_insert(dialect: str) -> Any:
    """The INSERT construct with ON CONFLICT of ``dialect`` (sqlite or postgresql)."""
    if dialect == "postgresql":
        return postgresql_insert
    if dialect == "sqlite":
        return sqlite_insert
    raise StoreError(f"daily outbound counts need SQLite or PostgreSQL, not {dialect}")


def _call_record(row: Row[Any]) -> CallRecord:
    return CallRecord(**{name: getattr(row, name) for name in CALL_FIELDS})


@implementer(
    IStoreBackend,
    IStoreLoad,
    ISchemaManagement,
    IActiveCallClaims,
    ICallTraceStore,
    IOutboundQuota,
    IVerifiedRegistration,
)
class SQLStore(StoreBase):
    """
    All three stores in a SQL database. Capabilities: :class:`IStoreLoad`,
    :class:`IVerifiedRegistration` (a REGISTER's credentials and bindings in one job),
    :class:`ISchemaManagement`, :class:`IActiveCallClaims`, :class:`ICallTraceStore` (the
    calls' traces), and on
    PostgreSQL :class:`IClusterStorage` (the nodes table, the LISTEN/NOTIFY bus).

    :param reactor: provides ``IReactorTime`` and ``IReactorFromThreads``.
    :param url: SQLAlchemy URL (``sqlite:///PATH``, ``postgresql+psycopg://...``).
    :param threadpool: the database thread pool (owned: started and stopped with the store);
        ``pool_size`` threads if not given.
    :param batch_thread: where the group commit's batches run (owned likewise): a
        :class:`~clicktodial.store.groupcommit.BatchThread`; on ``threadpool`` if not given
        (a test's inline pool runs them at once).
    :param hash_pool: the password hashing pool (owned likewise); one thread per core if not
        given.
    :param realm: the SIP digest realm for HA1s.
    :param hasher: the Argon2 hasher (default parameters if not given).
    :param pool_size: database connections (and default database threads).
    :param auto_upgrade: apply pending migrations in :meth:`start` instead of failing.
    :param attempts: tries of a transaction that fails with a transient error.
    :param retry_delay: seconds before the first retry; doubled for each further one.
    :param busy_interval: the group commit's least time between two batches while the
        store is busy (:data:`~clicktodial.store.groupcommit.BUSY_INTERVAL`).
    """

    def __init__(
        self,
        reactor: IReactorTime,
        url: str | URL,
        threadpool: ThreadPool | None = None,
        hash_pool: ThreadPool | None = None,
        *,
        batch_thread: BatchRunner | None = None,
        realm: str,
        hasher: PasswordHasher | None = None,
        pool_size: int = 4,
        auto_upgrade: bool = False,
        attempts: int = 4,
        retry_delay: float = 0.1,
        busy_interval: float = BUSY_INTERVAL,
    ) -> None:
        # Every reactor provides IReactorFromThreads as well as IReactorTime; the type of the
        # parameter names the one the store reads time from.
        self._from_threads = cast(IReactorFromThreads, reactor)
        super().__init__(
            reactor,
            realm,
            PasswordHashing(
                self._from_threads,
                hash_pool if hash_pool is not None else default_hash_pool(),
                hasher,
            ),
        )
        # One connection more than the threads: the batches keep theirs (BatchExecutor).
        self._engine = create_sql_engine(url, pool_size + 1)
        self._dialect = self._engine.dialect.name
        self._pool = (
            threadpool
            if threadpool is not None
            else ThreadPool(minthreads=0, maxthreads=pool_size, name="clicktodial-db")
        )
        self._auto_upgrade = auto_upgrade
        self._attempts = attempts
        self._retry_delay = retry_delay
        # A SQLite file's writers (this daemon's database threads, its worker processes)
        # queue on a file lock that wakes the next at release (clicktodial.store.writelock).
        self._write_lock = write_lock_for(url)
        self._batch_thread = batch_thread
        #: Operations submitted to the thread pool and not finished (see :meth:`pending`).
        self._pool_operations = 0
        self._batches = BatchExecutor(self._engine, self._write_lock)
        #: The hot operations (credentials, binding updates, call records, call traces),
        #: group-committed: see :mod:`clicktodial.store.sqljobs`.
        self.group_commit: GroupCommit[SQLJob] = GroupCommit(
            self._from_threads,
            batch_thread if batch_thread is not None else self._pool,
            self._batches.execute,
            self._run_alone,
            clock=reactor,
            busy_interval=busy_interval,
        )
        self._url = url
        if self._dialect == "postgresql":
            # Several daemons can share this database: nodes table and LISTEN/NOTIFY bus.
            alsoProvides(self, IClusterStorage)

    # -- capabilities ------------------------------------------------------------

    def pending(self) -> int:
        """
        See :meth:`IStoreLoad.pending`: the group commit's operations waiting for the next
        batch, and the other operations on the thread pool (waiting or running: counted
        here, since asking Twisted's pool for its queue cost half a dozen calls per SIP
        request).
        """
        return self.group_commit.waiting + self._pool_operations

    def upgrade_schema(self) -> None:
        """See :meth:`ISchemaManagement.upgrade_schema` (blocking; ``db upgrade``)."""
        upgrade_schema(self._url)

    def check_schema(self) -> None:
        """See :meth:`ISchemaManagement.check_schema` (blocking; ``db check``)."""
        check_schema(self._url)

    def node_registry(self) -> INodeRegistry:
        """See :meth:`IClusterStorage.node_registry` (PostgreSQL only): its own engine and
        one-thread pool, so heartbeats never queue behind REGISTER traffic."""
        from clicktodial.store.nodes import SQLNodeRegistry

        return SQLNodeRegistry(self._clock, self._url)

    def event_bus(self, node_id: str) -> IEventBus:
        """See :meth:`IClusterStorage.event_bus` (PostgreSQL only): LISTEN/NOTIFY."""
        from clicktodial.cluster.bus import PostgresEventBus, libpq_conninfo

        return PostgresEventBus(self._clock, libpq_conninfo(self._url), node_id)

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Start the pools, then check (or with ``auto_upgrade``, bring) the schema to head."""
        self._pool.start()
        if self._batch_thread is not None:
            self._batch_thread.start()
        super().start()
        if self._auto_upgrade:
            return self._run(self._op_upgrade)
        return self._run(self._op_check_schema)

    def stop(self) -> Deferred[None]:
        """Stop the pools (waiting for running jobs) and close the connections."""
        if self._batch_thread is not None:
            self._batch_thread.stop()
        self._pool.stop()
        self._batches.close()
        self._engine.dispose()
        if isinstance(self._write_lock, FileWriteLock):
            self._write_lock.close()
        return super().stop()

    def _op_check_schema(self) -> None:
        with self._engine.connect() as connection:
            check_schema_connection(connection)

    def _op_upgrade(self) -> None:
        with self._write() as connection:
            migrations.upgrade(connection)

    # -- running operations ------------------------------------------------------

    def _run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        async def attempt() -> T:
            delay = self._retry_delay
            for attempt in range(1, self._attempts + 1):
                try:
                    self._pool_operations += 1
                    try:
                        return await deferToThreadPool(self._from_threads, self._pool, f, *args)
                    finally:
                        self._pool_operations -= 1
                except DBAPIError as e:
                    if not _is_transient(e):
                        raise
                    if attempt == self._attempts:
                        raise StoreUnavailable(
                            f"database unavailable after {attempt} attempts: {e.orig}"
                        ) from e
                    self.log.warn(
                        "transient database error in {operation} (attempt {attempt}),"
                        " retrying in {delay}s: {error}",
                        operation=getattr(f, "__name__", repr(f)),
                        attempt=attempt,
                        delay=delay,
                        error=str(e.orig),
                    )
                await deferLater(self._clock, delay)
                delay *= 2
            raise AssertionError("unreachable")

        return Deferred.fromCoroutine(attempt())

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as connection, connection.begin():
            yield connection

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._write_lock, self._engine.connect() as connection:
            connection = connection.execution_options(clicktodial_write=True)
            with connection.begin():
                yield connection

    # -- users -----------------------------------------------------------------

    def _existing(self, connection: Connection, usernames: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in chunks(usernames):
            found.update(
                connection.scalars(select(users.c.username).where(users.c.username.in_(chunk)))
            )
        return found

    def _op_existing_usernames(self, usernames: list[str]) -> set[str]:
        with self._read() as connection:
            return self._existing(connection, usernames)

    def _op_insert_users(self, records: list[UserRecord]) -> None:
        names = [record.username for record in records]
        try:
            with self._write() as connection:
                existing = self._existing(connection, names)
                if existing:
                    raise UserExists(existing)
                # One executemany in one transaction: SQLAlchemy batches it into multi-row
                # INSERTs ("insertmanyvalues").
                connection.execute(
                    insert(users),
                    [
                        {
                            "username": r.username,
                            "display_name": r.display_name,
                            "password_hash": r.password_hash,
                            "ha1_md5": r.ha1_md5,
                            "ha1_sha256": r.ha1_sha256,
                            "is_admin": r.is_admin,
                            "disabled": r.disabled,
                            "created_at": r.created_at,
                        }
                        for r in records
                    ],
                )
        except IntegrityError:
            # Another node added one of them between our check and our insert.
            raise UserExists(self._op_existing_usernames(names) or names) from None

    def _op_get_user(self, username: str) -> UserRecord | None:
        with self._read() as connection:
            row = connection.execute(select(users).where(users.c.username == username)).first()
        return _user_record(row) if row is not None else None

    def _op_list_users(self) -> list[UserRecord]:
        with self._read() as connection:
            rows = connection.execute(select(users)).all()
        # Sorted here, not by ORDER BY: database collations disagree about punctuation.
        return sorted((_user_record(row) for row in rows), key=lambda r: r.username)

    def _op_update_user(self, username: str, fields: dict[str, object]) -> UserRecord:
        with self._write() as connection:
            if fields:
                result = connection.execute(
                    update(users).where(users.c.username == username).values(**fields)
                )
                if result.rowcount == 0:
                    raise NoSuchUser(username)
            row = connection.execute(select(users).where(users.c.username == username)).first()
        if row is None:
            raise NoSuchUser(username)
        return _user_record(row)

    def _op_delete_user(self, username: str) -> None:
        with self._write() as connection:
            connection.execute(delete(api_tokens).where(api_tokens.c.username == username))
            result = connection.execute(delete(users).where(users.c.username == username))
            if result.rowcount == 0:
                raise NoSuchUser(username)

    def _op_insert_token(self, digest: str, username: str, label: str, created_at: float) -> None:
        with self._write() as connection:
            exists = connection.scalar(select(users.c.username).where(users.c.username == username))
            if exists is None:
                raise NoSuchUser(username)
            connection.execute(
                insert(api_tokens).values(
                    digest=digest,
                    token_id=token_id_of_digest(digest),
                    username=username,
                    label=label,
                    created_at=created_at,
                )
            )

    def _op_token_owner(self, digest: str) -> str | None:
        with self._read() as connection:
            return connection.scalar(
                select(api_tokens.c.username)
                .join(users, users.c.username == api_tokens.c.username)
                .where(api_tokens.c.digest == digest, users.c.disabled.is_(False))
            )

    def _op_list_tokens(self, username: str) -> list[ApiToken]:
        with self._read() as connection:
            rows = connection.execute(
                select(api_tokens).where(api_tokens.c.username == username)
            ).all()
        tokens = [ApiToken(row.token_id, row.username, row.label, row.created_at) for row in rows]
        return sorted(tokens, key=lambda t: (t.created_at, t.token_id))

    def _op_delete_token(self, digest: str | None, token_id: str | None) -> bool:
        condition = (
            api_tokens.c.digest == digest
            if digest is not None
            else api_tokens.c.token_id == token_id
        )
        with self._write() as connection:
            return bool(connection.execute(delete(api_tokens).where(condition)).rowcount)

    # -- the hot operations: group commit (clicktodial.store.sqljobs) ------------------

    def get_sip_credentials(self, username: str) -> Deferred[SipCredentials | None]:
        # Group-committed with the other REGISTERs' work; see GroupCommit.
        return self.group_commit.submit(Credentials(username))

    def update_bindings(
        self, aor: str, changes: BindingChanges, now: float
    ) -> Deferred[list[Binding]]:
        return self.group_commit.submit(UpdateBindings(aor, changes, now))

    def update_bindings_if_verified(
        self,
        username: str,
        verify: Callable[[SipCredentials | None], bool],
        aor: str,
        changes: BindingChanges,
        now: float,
    ) -> Deferred[VerifiedUpdate]:
        """See :meth:`IVerifiedRegistration.update_bindings_if_verified`: one job of the
        group commit (``verify`` runs on the batch thread)."""
        return self.group_commit.submit(VerifiedUpdateBindings(username, verify, aor, changes, now))

    def create_call(
        self, caller: str, callee: str, created_at: float, node: str | None = None
    ) -> Deferred[str]:
        record = CallRecord(
            call_id=uuid.uuid4().hex, caller=caller, callee=callee, created_at=created_at, node=node
        )
        # (The job fires with the id: no callback of our own per call.)
        return self.group_commit.submit(InsertCall(record))

    def update_call(self, call_id: str, update: CallUpdate) -> Deferred[CallRecord]:
        return self.group_commit.submit(UpdateCall(call_id, update.changed_fields()))

    def write_call(self, call_id: str, update: CallUpdate) -> Deferred[None]:
        """See :meth:`ICallRecordWrites.write_call`: the UPDATE alone (no SELECT after)."""
        return self.group_commit.submit(
            UpdateCall(call_id, update.changed_fields(), read_back=False)
        )

    def _run_alone(self, job: SQLJob) -> Deferred[Any]:
        # After an aborted batch: the same job in a transaction of its own, with retries.
        return self._run(self._batches.run_alone, job)

    # -- bindings ----------------------------------------------------------------

    def _op_get_bindings(self, aor: str, now: float) -> list[Binding]:
        with self._read() as connection:
            rows = connection.execute(
                select(bindings).where(bindings.c.aor == aor, bindings.c.expires_at > now)
            ).all()
        return sort_bindings([_binding(row) for row in rows])

    def _op_update_bindings(self, aor: str, changes: BindingChanges, now: float) -> list[Binding]:
        # StoreBase's blocking form (one transaction): the hot path's job, alone.
        result: list[Binding] = self._batches.run_alone(UpdateBindings(aor, changes, now))
        return result

    def _op_remove_all(self, aor: str) -> int:
        with self._write() as connection:
            return connection.execute(delete(bindings).where(bindings.c.aor == aor)).rowcount

    def _op_purge_expired(self, now: float) -> int:
        with self._write() as connection:
            return connection.execute(delete(bindings).where(bindings.c.expires_at <= now)).rowcount

    def _op_registered_aors(self, now: float) -> list[str]:
        with self._read() as connection:
            aors = connection.scalars(
                select(bindings.c.aor).where(bindings.c.expires_at > now).distinct()
            ).all()
        return sorted(aors)

    def _op_all_bindings(self, now: float) -> list[Binding]:
        with self._read() as connection:
            rows = connection.execute(select(bindings).where(bindings.c.expires_at > now)).all()
        return sort_bindings([_binding(row) for row in rows])

    # -- call records --------------------------------------------------------------

    def _op_insert_call(self, record: CallRecord) -> None:
        self._batches.run_alone(InsertCall(record))

    def _op_update_call(self, call_id: str, fields: dict[str, object]) -> CallRecord:
        record: CallRecord = self._batches.run_alone(UpdateCall(call_id, fields))
        return record

    def _op_get_call(self, call_id: str) -> CallRecord | None:
        with self._read() as connection:
            row = connection.execute(select(calls).where(calls.c.call_id == call_id)).first()
        return _call_record(row) if row is not None else None

    def _op_list_calls(
        self, user: str | None, limit: int, offset: int, before: float | None
    ) -> list[CallRecord]:
        query = select(calls)
        if user is not None:
            query = query.where(or_(calls.c.caller == user, calls.c.callee == user))
        if before is not None:
            query = query.where(calls.c.created_at < before)
        query = (
            query.order_by(calls.c.created_at.desc(), calls.c.call_id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._read() as connection:
            return [_call_record(row) for row in connection.execute(query)]

    def _active(self, node: str | None) -> Any:
        condition = calls.c.ended_at.is_(None)
        return condition if node is None else and_(condition, calls.c.node == node)

    def _op_count_active(self, node: str | None) -> int:
        with self._read() as connection:
            return int(
                connection.scalar(select(func.count()).select_from(calls).where(self._active(node)))
                or 0
            )

    def _op_end_active_calls(self, node: str | None, ended_at: float, reason: str) -> int:
        with self._write() as connection:
            return connection.execute(
                update(calls)
                .where(self._active(node))
                .values(ended_at=ended_at, end_reason=reason, who_hung_up="system")
            ).rowcount

    def _op_claim_active_calls(self, node: str | None, ended_at: float, reason: str) -> list[str]:
        # UPDATE ... RETURNING (PostgreSQL, SQLite 3.35+): a row ended by a concurrent claim
        # no longer matches "ended_at IS NULL" once its lock is released (PostgreSQL re-checks
        # the condition), so every call is returned to one claimer only.
        with self._write() as connection:
            statement = (
                update(calls)
                .where(self._active(node))
                .values(ended_at=ended_at, end_reason=reason, who_hung_up="system")
            )
            if self._engine.dialect.update_returning:
                return [row[0] for row in connection.execute(statement.returning(calls.c.call_id))]
            # Without RETURNING: lock the rows, then end exactly those.
            ids = [
                row[0]
                for row in connection.execute(
                    select(calls.c.call_id).where(self._active(node)).with_for_update()
                )
            ]
            if ids:
                connection.execute(statement.where(calls.c.call_id.in_(ids)))
            return ids

    # -- outbound call counts (IOutboundQuota) --------------------------------------

    def count_outbound_call(self, username: str, day: str, limit: int) -> Deferred[bool]:
        return self._run(self._op_count_outbound_call, username, day, limit)

    def uncount_outbound_call(self, username: str, day: str) -> Deferred[None]:
        return self._run(self._op_uncount_outbound_call, username, day)

    def outbound_calls(self, username: str, day: str) -> Deferred[int]:
        return self._run(self._op_outbound_calls, username, day)

    def _op_count_outbound_call(self, username: str, day: str, limit: int) -> bool:
        # One statement, atomic on both databases: INSERT ... ON CONFLICT DO UPDATE ... WHERE
        # count < limit RETURNING count. PostgreSQL locks the conflicting row and re-checks
        # the WHERE against its newest version, so concurrent claims (from any daemon) are
        # counted one after another and the ones past the limit return no row; SQLite
        # (3.35+) runs one writer at a time.
        if limit < 1:
            return False
        upsert = _dialect_insert(self._engine.dialect.name)(outbound_counts).values(
            username=username, day=day, count=1
        )
        statement = upsert.on_conflict_do_update(
            index_elements=[outbound_counts.c.username, outbound_counts.c.day],
            set_={"count": outbound_counts.c.count + 1},
            where=outbound_counts.c.count < limit,
        ).returning(outbound_counts.c.count)
        with self._write() as connection:
            return connection.execute(statement).first() is not None

    def _op_uncount_outbound_call(self, username: str, day: str) -> None:
        # One UPDATE: atomic against concurrent counts; never below 0.
        with self._write() as connection:
            connection.execute(
                update(outbound_counts)
                .where(
                    outbound_counts.c.username == username,
                    outbound_counts.c.day == day,
                    outbound_counts.c.count > 0,
                )
                .values(count=outbound_counts.c.count - 1)
            )

    def _op_outbound_calls(self, username: str, day: str) -> int:
        with self._read() as connection:
            return int(
                connection.scalar(
                    select(outbound_counts.c.count).where(
                        outbound_counts.c.username == username, outbound_counts.c.day == day
                    )
                )
                or 0
            )

    # -- call traces (ICallTraceStore) ---------------------------------------------

    def append_traces(self, appends: Sequence[TraceAppend], limits: TraceLimits) -> Deferred[None]:
        # Group-committed with the REGISTER path and the call records: one transaction
        # with them, instead of a write transaction of its own that the call path's
        # batches would wait for (SQLite has one writer).
        return self.group_commit.submit(AppendTraces(tuple(appends), limits))

    def get_trace(self, call_id: str) -> Deferred[CallTrace | None]:
        return self._run(self._op_get_trace, call_id)

    def purge_traces(self, before: float) -> Deferred[int]:
        return self._run(self._op_purge_traces, before)

    def _op_get_trace(self, call_id: str) -> CallTrace | None:
        with self._read() as connection:
            stored = connection.execute(
                select(call_traces).where(call_traces.c.call_id == call_id)
            ).first()
            if stored is None:
                return None
            rows = connection.execute(
                select(call_trace_messages.c.data)
                .where(call_trace_messages.c.call_id == call_id)
                .order_by(call_trace_messages.c.first_index)
            ).all()
        messages = tuple(m for row in rows for m in unpack_messages(bytes(row.data)))
        return CallTrace(call_id, messages, int(stored.dropped))

    def _op_purge_traces(self, before: float) -> int:
        cutoff = int(before * 1000)
        with self._write() as connection:
            old = select(call_traces.c.call_id).where(call_traces.c.last_at_ms < cutoff)
            connection.execute(
                delete(call_trace_messages).where(call_trace_messages.c.call_id.in_(old))
            )
            return int(
                connection.execute(
                    delete(call_traces).where(call_traces.c.last_at_ms < cutoff)
                ).rowcount
            )
