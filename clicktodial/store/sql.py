"""
The SQL store: SQLAlchemy 2 Core on SQLite or PostgreSQL (psycopg 3).

Every database call runs on a dedicated thread pool through ``deferToThreadPool``; only plain
values (the attrs classes of :mod:`clicktodial.store.values`) come back to the reactor thread.
Transient errors (a dropped connection, a locked SQLite file, a PostgreSQL serialization
failure) are retried a few times with a backoff timed by the reactor, as buildbot's
``db/pool.py`` does, then reported as :class:`StoreUnavailable`.

Several daemons may share one PostgreSQL database: a REGISTER locks its AOR's binding rows
(``SELECT ... FOR UPDATE``) and inserts new ones under the primary key, so two nodes updating
one AOR serialise instead of losing an update. On SQLite, write transactions start with
``BEGIN IMMEDIATE`` (the write lock up front) and wait on ``busy_timeout``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from argon2 import PasswordHasher
from attrs import frozen
from sqlalchemy import (
    URL,
    Connection,
    Engine,
    and_,
    bindparam,
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
)
from clicktodial.store import migrations
from clicktodial.store.base import StoreBase, UserRecord
from clicktodial.store.bindings import plan_register, sort_bindings
from clicktodial.store.errors import (
    NoSuchCall,
    NoSuchUser,
    SchemaOutOfDate,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
    UserExists,
)
from clicktodial.store.groupcommit import GroupCommit, Job, Outcome
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
from clicktodial.store.traces import (
    CallTrace,
    TraceAppend,
    TraceLimits,
    fit_messages,
    pack_messages,
    unpack_messages,
)
from clicktodial.store.values import (
    ApiToken,
    Binding,
    BindingChanges,
    CallRecord,
    CallUpdate,
    SipCredentials,
)

T = TypeVar("T")

#: How long a SQLite connection waits for another writer, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 10_000
#: Seconds a PostgreSQL connection attempt may take (libpq ``connect_timeout``), unless the
#: URL sets ``?connect_timeout=``.
POSTGRESQL_CONNECT_TIMEOUT = 10

#: Rows per IN (...) list: below every SQLite build's host-parameter limit.
_CHUNK = 500

_UPGRADE_HINT = "run `clicktodial --config FILE db upgrade`"

#: Reads of an AOR after losing a race to insert one of its bindings.
_INSERT_RACE_ATTEMPTS = 3


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
                " use backend = memory, or a SQLite file", key="url")
        engine = create_engine(url, pool_size=pool_size, max_overflow=0)
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        # libpq waits for a server that accepts and never answers for ever; a bound keeps
        # start-up (and a stop during it) from hanging on one. ?connect_timeout= overrides.
        connect_args = {} if "connect_timeout" in url.query else {
            "connect_timeout": POSTGRESQL_CONNECT_TIMEOUT}
        return create_engine(url, pool_size=pool_size, max_overflow=0,
                             connect_args=connect_args)
    raise StoreConfigError(
        f"unsupported database {backend!r}: use sqlite:///PATH or"
        " postgresql+psycopg://USER@HOST/DBNAME", key="url")


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
            f"the database has no clicktodial schema yet: {_UPGRADE_HINT} to create it")
    known = {script.revision for script in migrations.script_directory().walk_revisions()}
    if not current <= known:
        raise SchemaOutOfDate(
            f"the database schema ({', '.join(sorted(current))}) is newer than this version of"
            f" clicktodial knows ({', '.join(sorted(expected))}): upgrade clicktodial")
    raise SchemaOutOfDate(
        f"the database schema is at revision {', '.join(sorted(current))}, this version of"
        f" clicktodial needs {', '.join(sorted(expected))}: {_UPGRADE_HINT}")


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


def _binding_row(key: str, binding: Binding) -> dict[str, object]:
    return {
        "aor": binding.aor,
        "binding_key": key,
        "contact": binding.contact,
        "q": binding.q,
        "expires_at": binding.expires_at,
        "call_id": binding.call_id,
        "cseq": binding.cseq,
        "instance_id": binding.instance_id,
        "reg_id": binding.reg_id,
        "path": json.dumps(list(binding.path)),
        "received": binding.received,
        "user_agent": binding.user_agent,
    }


_CALL_FIELDS = tuple(c.name for c in calls.columns)

# Rewrites one stored binding (executemany: one set of new_* parameters per binding).
_UPDATE_BINDING = (
    update(bindings)
    .where(bindings.c.aor == bindparam("new_aor"),
           bindings.c.binding_key == bindparam("new_binding_key"))
    .values({c.name: bindparam(f"new_{c.name}") for c in bindings.columns
             if c.name not in ("aor", "binding_key")})
)


# The hot statements of a REGISTER, as DBAPI text run on a raw cursor by the group commit
# (SQLAlchemy's per-execution work cost more than the statements themselves). Written with
# qmark parameters; converted to psycopg's format style for PostgreSQL.
_SQL_CREDENTIALS = "SELECT ha1_md5, ha1_sha256, disabled FROM users WHERE username = ?"
_BINDING_COLUMNS = ("contact", "q", "expires_at", "call_id", "cseq", "instance_id", "reg_id",
                    "path", "received", "user_agent")
_SQL_SELECT_BINDINGS = (
    f"SELECT binding_key, {', '.join(_BINDING_COLUMNS)} FROM bindings WHERE aor = ?"
    " ORDER BY binding_key")
_SQL_DELETE_BINDING = "DELETE FROM bindings WHERE aor = ? AND binding_key = ?"
_SQL_INSERT_BINDING = (
    f"INSERT INTO bindings ({', '.join(_BINDING_COLUMNS)}, aor, binding_key)"
    f" VALUES ({', '.join('?' * (len(_BINDING_COLUMNS) + 2))})")
_SQL_UPDATE_BINDING = (
    f"UPDATE bindings SET {', '.join(f'{c} = ?' for c in _BINDING_COLUMNS)}"
    " WHERE aor = ? AND binding_key = ?")


# PostgreSQL: the advisory locks that serialise REGISTERs of the same AORs across
# transactions and nodes, taken in the order of the (sorted) array. Row locks alone
# (FOR UPDATE) miss the bindings another node is inserting: two REGISTERs could each add
# bindings under [registrar] max_contacts and together exceed it. The two-key form, its
# first key ours ("clkb"), keeps out of other users' (and the migrations') lock keys.
_PG_LOCK_AORS = (
    "SELECT count(pg_advisory_xact_lock(1668049762, hashtext(aor)))"
    " FROM unnest(%s::text[]) AS aor")


# Call records, group-committed too (a click-to-dial call writes its record three times).
_SQL_INSERT_CALL = (
    f"INSERT INTO calls ({', '.join(_CALL_FIELDS)}) VALUES ({', '.join('?' * len(_CALL_FIELDS))})")
_SQL_SELECT_CALL = f"SELECT {', '.join(_CALL_FIELDS)} FROM calls WHERE call_id = ?"


@frozen
class _HotStatements:
    """The hot statements in one database's parameter style."""

    credentials: str
    select_bindings: str
    delete_binding: str
    insert_binding: str
    update_binding: str
    insert_call: str
    select_call: str
    #: "?" or "%s": for the UPDATE of a call record, made per set of fields.
    parameter: str

    def select_bindings_of(self, count: int) -> str:
        """The binding rows (AOR first) of ``count`` AORs, in AOR then key order."""
        p = self.parameter
        text = (f"SELECT aor, binding_key, {', '.join(_BINDING_COLUMNS)} FROM bindings"
                f" WHERE aor IN ({', '.join([p] * count)}) ORDER BY aor, binding_key")
        # "%s" is psycopg's style: PostgreSQL, where the rows are locked (for_dialect).
        return text + " FOR UPDATE" if p == "%s" else text

    @classmethod
    def for_dialect(cls, dialect: str) -> _HotStatements:
        select_bindings = _SQL_SELECT_BINDINGS
        if dialect == "postgresql":
            # See _update_bindings_once: lock the AOR's rows, in key order.
            select_bindings += " FOR UPDATE"
        statements: tuple[str, ...] = (_SQL_CREDENTIALS, select_bindings, _SQL_DELETE_BINDING,
                      _SQL_INSERT_BINDING, _SQL_UPDATE_BINDING, _SQL_INSERT_CALL,
                      _SQL_SELECT_CALL, "?")
        if dialect == "postgresql":
            statements = tuple(text.replace("?", "%s") for text in statements)
        return cls(*statements)


class _BindingWrites:
    """A batch's binding writes not sent yet: sent together (executemany per statement)."""

    __slots__ = ("_hot", "delete", "insert", "update")

    def __init__(self, hot: _HotStatements) -> None:
        self._hot = hot
        self.delete: list[tuple[Any, ...]] = []
        self.insert: list[tuple[Any, ...]] = []
        self.update: list[tuple[Any, ...]] = []

    def flush(self, cursor: Any) -> None:
        """Send what is pending. Rows of one AOR are never pending twice (see the caller),
        so the order of the three statements does not matter."""
        hot = self._hot
        for statement, parameters in ((hot.delete_binding, self.delete),
                                      (hot.insert_binding, self.insert),
                                      (hot.update_binding, self.update)):
            if parameters:
                cursor.executemany(statement, parameters)
                parameters.clear()


def _binding_of_tuple(aor: str, row: Sequence[Any]) -> Binding:
    # row: binding_key, then _BINDING_COLUMNS.
    path = row[8]
    return Binding(aor=aor, contact=row[1], q=row[2], expires_at=row[3], call_id=row[4],
                   cseq=row[5], instance_id=row[6], reg_id=row[7],
                   path=() if path == "[]" else tuple(json.loads(path)),
                   received=row[9], user_agent=row[10])


def _binding_parameters(aor: str, key: str, b: Binding) -> tuple[Any, ...]:
    # _BINDING_COLUMNS, then aor and binding_key (the INSERT's and the UPDATE's order).
    return (b.contact, b.q, b.expires_at, b.call_id, b.cseq, b.instance_id, b.reg_id,
            json.dumps(list(b.path)) if b.path else "[]", b.received, b.user_agent, aor, key)


def _dialect_insert(dialect: str) -> Any:
    """The INSERT construct with ON CONFLICT of ``dialect`` (sqlite or postgresql)."""
    if dialect == "postgresql":
        return postgresql_insert
    if dialect == "sqlite":
        return sqlite_insert
    raise StoreError(f"daily outbound counts need SQLite or PostgreSQL, not {dialect}")


def _call_record(row: Row[Any]) -> CallRecord:
    return CallRecord(**{name: getattr(row, name) for name in _CALL_FIELDS})


#: How _execute_batch orders a batch: credential reads, then binding updates by AOR, then
#: call record writes as submitted (sorted() is stable).
_BATCH_ORDER: dict[str, Callable[[Job], tuple[int, str]]] = {
    "credentials": lambda job: (0, job.args[0]),
    "update_bindings": lambda job: (1, job.args[0]),
    "insert_call": lambda job: (2, ""),
    "update_call": lambda job: (2, ""),
    # Call traces last (they only add rows, and keep no lock another job needs first).
    "append_traces": lambda job: (3, ""),
}


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


@implementer(IStoreBackend, IStoreLoad, ISchemaManagement, IActiveCallClaims, ICallTraceStore,
             IOutboundQuota)
class SQLStore(StoreBase):
    """
    All three stores in a SQL database. Capabilities: :class:`IStoreLoad`,
    :class:`ISchemaManagement`, :class:`IActiveCallClaims`, :class:`ICallTraceStore` (the
    calls' traces), and on
    PostgreSQL :class:`IClusterStorage` (the nodes table, the LISTEN/NOTIFY bus).

    :param reactor: provides ``IReactorTime`` and ``IReactorFromThreads``.
    :param url: SQLAlchemy URL (``sqlite:///PATH``, ``postgresql+psycopg://...``).
    :param threadpool: the database thread pool (owned: started and stopped with the store);
        ``pool_size`` threads if not given.
    :param hash_pool: the password hashing pool (owned likewise); one thread per core if not
        given.
    :param realm: the SIP digest realm for HA1s.
    :param hasher: the Argon2 hasher (default parameters if not given).
    :param pool_size: database connections (and default database threads).
    :param auto_upgrade: apply pending migrations in :meth:`start` instead of failing.
    :param attempts: tries of a transaction that fails with a transient error.
    :param retry_delay: seconds before the first retry; doubled for each further one.
    """

    def __init__(self, reactor: IReactorTime, url: str | URL,
                 threadpool: ThreadPool | None = None, hash_pool: ThreadPool | None = None,
                 *, realm: str, hasher: PasswordHasher | None = None, pool_size: int = 4,
                 auto_upgrade: bool = False, attempts: int = 4,
                 retry_delay: float = 0.1) -> None:
        # Every reactor provides IReactorFromThreads as well as IReactorTime; the type of the
        # parameter names the one the store reads time from.
        self._from_threads = cast(IReactorFromThreads, reactor)
        super().__init__(reactor, realm, PasswordHashing(
            self._from_threads,
            hash_pool if hash_pool is not None else default_hash_pool(), hasher))
        self._engine = create_sql_engine(url, pool_size)
        self._dialect = self._engine.dialect.name
        self._pool = (threadpool if threadpool is not None
                      else ThreadPool(minthreads=0, maxthreads=pool_size, name="clicktodial-db"))
        self._auto_upgrade = auto_upgrade
        self._attempts = attempts
        self._retry_delay = retry_delay
        self._hot = _HotStatements.for_dialect(self._dialect)
        #: The REGISTER path's operations (credentials, binding updates), group-committed.
        self.group_commit = GroupCommit(self._from_threads, self._pool, self._execute_batch,
                                        self._run_alone)
        self._url = url
        if self._dialect == "postgresql":
            # Several daemons can share this database: nodes table and LISTEN/NOTIFY bus.
            alsoProvides(self, IClusterStorage)

    # -- capabilities ------------------------------------------------------------

    def pending(self) -> int:
        """See :meth:`IStoreLoad.pending`: operations waiting for a database thread."""
        return self._pool.q.qsize()

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
        super().start()
        if self._auto_upgrade:
            return self._run(self._op_upgrade)
        return self._run(self._op_check_schema)

    def stop(self) -> Deferred[None]:
        """Stop the pools (waiting for running jobs) and close the connections."""
        self._pool.stop()
        self._engine.dispose()
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
                    return await deferToThreadPool(self._from_threads, self._pool, f, *args)
                except DBAPIError as e:
                    if not _is_transient(e):
                        raise
                    if attempt == self._attempts:
                        raise StoreUnavailable(
                            f"database unavailable after {attempt} attempts: {e.orig}") from e
                    self.log.warn(
                        "transient database error in {operation} (attempt {attempt}),"
                        " retrying in {delay}s: {error}", operation=getattr(f, "__name__", repr(f)),
                        attempt=attempt, delay=delay, error=str(e.orig))
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
        with self._engine.connect() as connection:
            connection = connection.execution_options(clicktodial_write=True)
            with connection.begin():
                yield connection

    # -- users -----------------------------------------------------------------

    def _existing(self, connection: Connection, usernames: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(usernames):
            found.update(connection.scalars(
                select(users.c.username).where(users.c.username.in_(chunk))))
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
                connection.execute(insert(users), [
                    {
                        "username": r.username,
                        "display_name": r.display_name,
                        "password_hash": r.password_hash,
                        "ha1_md5": r.ha1_md5,
                        "ha1_sha256": r.ha1_sha256,
                        "is_admin": r.is_admin,
                        "disabled": r.disabled,
                        "created_at": r.created_at,
                    } for r in records])
        except IntegrityError:
            # Another node added one of them between our check and our insert.
            raise UserExists(self._op_existing_usernames(names) or names) from None

    def _op_get_user(self, username: str) -> UserRecord | None:
        with self._read() as connection:
            row = connection.execute(
                select(users).where(users.c.username == username)).first()
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
                    update(users).where(users.c.username == username).values(**fields))
                if result.rowcount == 0:
                    raise NoSuchUser(username)
            row = connection.execute(
                select(users).where(users.c.username == username)).first()
        if row is None:
            raise NoSuchUser(username)
        return _user_record(row)

    def _op_delete_user(self, username: str) -> None:
        with self._write() as connection:
            connection.execute(delete(api_tokens).where(api_tokens.c.username == username))
            result = connection.execute(delete(users).where(users.c.username == username))
            if result.rowcount == 0:
                raise NoSuchUser(username)

    def _op_insert_token(self, digest: str, username: str, label: str,
                         created_at: float) -> None:
        with self._write() as connection:
            exists = connection.scalar(
                select(users.c.username).where(users.c.username == username))
            if exists is None:
                raise NoSuchUser(username)
            connection.execute(insert(api_tokens).values(
                digest=digest, token_id=token_id_of_digest(digest), username=username,
                label=label, created_at=created_at))

    def _op_token_owner(self, digest: str) -> str | None:
        with self._read() as connection:
            return connection.scalar(
                select(api_tokens.c.username)
                .join(users, users.c.username == api_tokens.c.username)
                .where(api_tokens.c.digest == digest, users.c.disabled.is_(False)))

    def _op_list_tokens(self, username: str) -> list[ApiToken]:
        with self._read() as connection:
            rows = connection.execute(
                select(api_tokens).where(api_tokens.c.username == username)).all()
        tokens = [ApiToken(row.token_id, row.username, row.label, row.created_at)
                  for row in rows]
        return sorted(tokens, key=lambda t: (t.created_at, t.token_id))

    def _op_delete_token(self, digest: str | None, token_id: str | None) -> bool:
        condition = (api_tokens.c.digest == digest if digest is not None
                     else api_tokens.c.token_id == token_id)
        with self._write() as connection:
            return bool(connection.execute(delete(api_tokens).where(condition)).rowcount)

    # -- the REGISTER path: group commit ---------------------------------------------

    def get_sip_credentials(self, username: str) -> Deferred[SipCredentials | None]:
        # Group-committed with the other REGISTERs' work; see GroupCommit.
        return self.group_commit.submit("credentials", username)

    def update_bindings(self, aor: str, changes: BindingChanges,
                        now: float) -> Deferred[list[Binding]]:
        return self.group_commit.submit("update_bindings", aor, changes, now)

    def create_call(self, caller: str, callee: str, created_at: float,
                    node: str | None = None) -> Deferred[str]:
        record = CallRecord(call_id=uuid.uuid4().hex, caller=caller, callee=callee,
                            created_at=created_at, node=node)
        return self.group_commit.submit("insert_call", record).addCallback(
            lambda _: record.call_id)

    def update_call(self, call_id: str, update: CallUpdate) -> Deferred[CallRecord]:
        return self.group_commit.submit("update_call", call_id, update.changed_fields())

    def _run_alone(self, job: Job) -> Deferred[Any]:
        # After an aborted batch: the usual path, one transaction (and retries) per job.
        if job.kind == "credentials":
            return super().get_sip_credentials(*job.args)
        if job.kind == "insert_call":
            return self._run(self._op_insert_call, *job.args)
        if job.kind == "update_call":
            return self._run(self._op_update_call, *job.args)
        if job.kind == "append_traces":
            return self._run(self._op_append_traces, *job.args)
        return self._run(self._op_update_bindings, *job.args)

    def _execute_batch(self, batch: Sequence[Job]) -> list[Outcome]:
        """
        Run a batch in one write transaction on raw DBAPI cursors (a pool thread). A
        refused REGISTER (``OutOfOrderRegistration``, raised before it writes) is that
        job's outcome; any other error aborts the transaction and the batch.
        """
        outcomes: list[Outcome] = [(False, None)] * len(batch)
        # Credential reads first, then the updates by AOR (stable: one AOR's REGISTERs keep
        # their order): every node locks AORs in the same order, so two nodes' batches
        # cannot deadlock on each other's binding rows.
        # Call record writes come last, in the order they were submitted (a record's
        # creation before its updates).
        order = sorted(range(len(batch)), key=lambda i: _BATCH_ORDER[batch[i].kind](batch[i]))
        # A raw pooled connection, transaction handled here: SQLAlchemy's per-transaction
        # work (events, BEGIN through exec_driver_sql) cost as much as the statements.
        connection = self._engine.raw_connection()
        try:
            cursor = connection.cursor()
            if self._dialect == "sqlite":
                # As _write: the write lock up front (see _configure_sqlite). psycopg opens
                # the transaction implicitly.
                cursor.execute("BEGIN IMMEDIATE")
            # The binding rows of every AOR of the batch in one read (locked, in AOR then
            # key order: the order one-by-one reads would lock them in), and the binding
            # writes sent together before the next read and at the end: two round trips
            # for the batch's REGISTERs instead of two for each.
            writes = _BindingWrites(self._hot)
            aors = sorted({job.args[0] for job in batch if job.kind == "update_bindings"})
            if aors and self._dialect == "postgresql":
                cursor.execute(_PG_LOCK_AORS, (aors,))
            prefetched = self._prefetch_bindings(cursor, aors)
            for i in order:
                job = batch[i]
                try:
                    if job.kind == "credentials":
                        value: Any = self._fast_credentials(cursor, *job.args)
                    elif job.kind == "update_bindings":
                        value = self._fast_update_bindings(
                            cursor, *job.args, prefetched=prefetched, writes=writes)
                    elif job.kind == "insert_call":
                        self._fast_insert_call(cursor, *job.args)
                        value = None
                    elif job.kind == "append_traces":
                        self._fast_append_traces(cursor, *job.args)
                        value = None
                    else:
                        value = self._fast_update_call(cursor, *job.args)
                except StoreError as e:
                    outcomes[i] = (False, e)
                else:
                    outcomes[i] = (True, value)
            writes.flush(cursor)
            cursor.close()
            connection.commit()
        except BaseException:
            # Rare (the batch's jobs then run alone). We do not tell a dead connection from
            # a failed statement: roll back if we can, and drop the connection either way
            # (the pool opens a new one).
            try:
                connection.rollback()
            finally:
                connection.invalidate()
            raise
        finally:
            connection.close()
        return outcomes

    def _fast_credentials(self, cursor: Any, username: str) -> SipCredentials | None:
        cursor.execute(self._hot.credentials, (username,))
        row = cursor.fetchone()
        if row is None or row[2] or row[0] is None or row[1] is None:
            return None
        return SipCredentials(row[0], row[1])

    def _prefetch_bindings(self, cursor: Any,
                           aors: Sequence[str]) -> dict[str, dict[str, Binding]]:
        # The stored bindings of the batch's AORs (distinct, sorted), in one statement
        # (locked on PostgreSQL: FOR UPDATE, rows in AOR then key order, as AOR-by-AOR reads
        # in sorted order lock them). An AOR without rows maps to {}.
        distinct = aors
        prefetched: dict[str, dict[str, Binding]] = {aor: {} for aor in distinct}
        if len(distinct) < 2:
            return {}  # one AOR: _fast_update_bindings reads it as before
        for chunk in _chunks(distinct):
            cursor.execute(self._hot.select_bindings_of(len(chunk)), tuple(chunk))
            for row in cursor.fetchall():
                aor = row[0]
                prefetched[aor][row[1]] = _binding_of_tuple(aor, row[1:])
        return prefetched

    def _fast_update_bindings(self, cursor: Any, aor: str, changes: BindingChanges,
                              now: float, *, prefetched: dict[str, dict[str, Binding]],
                              writes: _BindingWrites) -> list[Binding]:
        # As _update_bindings_once, inside the batch's transaction. plan_register raises
        # (OutOfOrderRegistration) before anything is written. The AOR's rows come from
        # the batch's read the first time; a second REGISTER of the AOR in the batch reads
        # them again, after the first one's writes went out.
        stored = prefetched.pop(aor, None)
        if stored is None:
            writes.flush(cursor)
            cursor.execute(self._hot.select_bindings, (aor,))
            stored = {row[0]: _binding_of_tuple(aor, row) for row in cursor.fetchall()}
        plan = plan_register(aor, stored, changes, now)
        writes.delete.extend((aor, key) for key in sorted(plan.delete))
        for key, b in plan.write.items():
            (writes.update if key in stored else writes.insert).append(
                _binding_parameters(aor, key, b))
        return list(plan.result)

    def _fast_insert_call(self, cursor: Any, record: CallRecord) -> None:
        cursor.execute(self._hot.insert_call,
                       tuple(getattr(record, name) for name in _CALL_FIELDS))

    def _fast_update_call(self, cursor: Any, call_id: str,
                          fields: dict[str, object]) -> CallRecord:
        # As _op_update_call. NoSuchCall is raised after an UPDATE that matched no row:
        # nothing was written.
        if fields:
            names = sorted(fields)
            unknown = set(names).difference(_CALL_FIELDS)
            if unknown:
                raise ValueError(f"not call record fields: {sorted(unknown)}")
            p = self._hot.parameter
            cursor.execute(
                f"UPDATE calls SET {', '.join(f'{name} = {p}' for name in names)}"
                f" WHERE call_id = {p}", (*(fields[name] for name in names), call_id))
        cursor.execute(self._hot.select_call, (call_id,))
        row = cursor.fetchone()
        if row is None:
            raise NoSuchCall(call_id)
        return CallRecord(**dict(zip(_CALL_FIELDS, row, strict=True)))

    # -- bindings ----------------------------------------------------------------

    def _op_get_bindings(self, aor: str, now: float) -> list[Binding]:
        with self._read() as connection:
            rows = connection.execute(select(bindings).where(
                bindings.c.aor == aor, bindings.c.expires_at > now)).all()
        return sort_bindings([_binding(row) for row in rows])

    def _op_update_bindings(self, aor: str, changes: BindingChanges,
                            now: float) -> list[Binding]:
        for attempt in range(1, _INSERT_RACE_ATTEMPTS + 1):
            try:
                return self._update_bindings_once(aor, changes, now)
            except IntegrityError:
                # Another node inserted one of our new bindings after we read the AOR (its
                # row did not exist to be locked). The transaction was rolled back; read
                # again, now seeing that row.
                if attempt == _INSERT_RACE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _update_bindings_once(self, aor: str, changes: BindingChanges,
                              now: float) -> list[Binding]:
        # One transaction: read the AOR's bindings, locking them, apply RFC 3261 §10.3 in
        # Python, write the difference; nothing is written if plan_register refuses.
        # On PostgreSQL, FOR UPDATE makes a concurrent REGISTER of the same AOR on another
        # node wait and then see our committed rows (in key order, so two of them cannot
        # deadlock); a binding both insert at once makes the later one fail on the primary
        # key and start over. On SQLite, BEGIN IMMEDIATE already serialises writers.
        query = select(bindings).where(bindings.c.aor == aor).order_by(bindings.c.binding_key)
        if self._dialect == "postgresql":
            query = query.with_for_update()
        with self._write() as connection:
            if self._dialect == "postgresql":
                # As in _execute_batch: also waits for a binding another node is inserting.
                connection.exec_driver_sql(_PG_LOCK_AORS, ([aor],))
            stored = {row.binding_key: _binding(row) for row in connection.execute(query)}
            plan = plan_register(aor, stored, changes, now)
            if plan.delete:
                connection.execute(delete(bindings).where(
                    bindings.c.aor == aor, bindings.c.binding_key.in_(sorted(plan.delete))))
            new = [_binding_row(key, b) for key, b in plan.write.items() if key not in stored]
            if new:
                connection.execute(insert(bindings), new)
            rewritten = [_binding_row(key, b) for key, b in plan.write.items() if key in stored]
            if rewritten:
                connection.execute(_UPDATE_BINDING, [
                    {f"new_{name}": value for name, value in row.items()}
                    for row in rewritten])
        return list(plan.result)

    def _op_remove_all(self, aor: str) -> int:
        with self._write() as connection:
            return connection.execute(delete(bindings).where(bindings.c.aor == aor)).rowcount

    def _op_purge_expired(self, now: float) -> int:
        with self._write() as connection:
            return connection.execute(
                delete(bindings).where(bindings.c.expires_at <= now)).rowcount

    def _op_registered_aors(self, now: float) -> list[str]:
        with self._read() as connection:
            aors = connection.scalars(
                select(bindings.c.aor).where(bindings.c.expires_at > now).distinct()).all()
        return sorted(aors)

    def _op_all_bindings(self, now: float) -> list[Binding]:
        with self._read() as connection:
            rows = connection.execute(
                select(bindings).where(bindings.c.expires_at > now)).all()
        return sort_bindings([_binding(row) for row in rows])

    # -- call records --------------------------------------------------------------

    def _op_insert_call(self, record: CallRecord) -> None:
        with self._write() as connection:
            connection.execute(insert(calls).values(
                **{name: getattr(record, name) for name in _CALL_FIELDS}))

    def _op_update_call(self, call_id: str, fields: dict[str, object]) -> CallRecord:
        with self._write() as connection:
            if fields:
                connection.execute(
                    update(calls).where(calls.c.call_id == call_id).values(**fields))
            row = connection.execute(select(calls).where(calls.c.call_id == call_id)).first()
        if row is None:
            raise NoSuchCall(call_id)
        return _call_record(row)

    def _op_get_call(self, call_id: str) -> CallRecord | None:
        with self._read() as connection:
            row = connection.execute(select(calls).where(calls.c.call_id == call_id)).first()
        return _call_record(row) if row is not None else None

    def _op_list_calls(self, user: str | None, limit: int, offset: int,
                       before: float | None) -> list[CallRecord]:
        query = select(calls)
        if user is not None:
            query = query.where(or_(calls.c.caller == user, calls.c.callee == user))
        if before is not None:
            query = query.where(calls.c.created_at < before)
        query = (query.order_by(calls.c.created_at.desc(), calls.c.call_id.desc())
                 .limit(limit).offset(offset))
        with self._read() as connection:
            return [_call_record(row) for row in connection.execute(query)]

    def _active(self, node: str | None) -> Any:
        condition = calls.c.ended_at.is_(None)
        return condition if node is None else and_(condition, calls.c.node == node)

    def _op_count_active(self, node: str | None) -> int:
        with self._read() as connection:
            return int(connection.scalar(
                select(func.count()).select_from(calls).where(self._active(node))) or 0)

    def _op_end_active_calls(self, node: str | None, ended_at: float, reason: str) -> int:
        with self._write() as connection:
            return connection.execute(update(calls).where(self._active(node)).values(
                ended_at=ended_at, end_reason=reason, who_hung_up="system")).rowcount

    def _op_claim_active_calls(self, node: str | None, ended_at: float,
                               reason: str) -> list[str]:
        # UPDATE ... RETURNING (PostgreSQL, SQLite 3.35+): a row ended by a concurrent claim
        # no longer matches "ended_at IS NULL" once its lock is released (PostgreSQL re-checks
        # the condition), so every call is returned to one claimer only.
        with self._write() as connection:
            statement = update(calls).where(self._active(node)).values(
                ended_at=ended_at, end_reason=reason, who_hung_up="system")
            if self._engine.dialect.update_returning:
                return [row[0] for row in connection.execute(statement.returning(calls.c.call_id))]
            # Without RETURNING: lock the rows, then end exactly those.
            ids = [row[0] for row in connection.execute(
                select(calls.c.call_id).where(self._active(node)).with_for_update())]
            if ids:
                connection.execute(statement.where(calls.c.call_id.in_(ids)))
            return ids

    # -- outbound call counts (IOutboundQuota) --------------------------------------

    def count_outbound_call(self, username: str, day: str, limit: int) -> Deferred[bool]:
        return self._run(self._op_count_outbound_call, username, day, limit)

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
            username=username, day=day, count=1)
        statement = upsert.on_conflict_do_update(
            index_elements=[outbound_counts.c.username, outbound_counts.c.day],
            set_={"count": outbound_counts.c.count + 1},
            where=outbound_counts.c.count < limit,
        ).returning(outbound_counts.c.count)
        with self._write() as connection:
            return connection.execute(statement).first() is not None

    def _op_outbound_calls(self, username: str, day: str) -> int:
        with self._read() as connection:
            return int(connection.scalar(select(outbound_counts.c.count).where(
                outbound_counts.c.username == username, outbound_counts.c.day == day)) or 0)

    # -- call traces (ICallTraceStore) ---------------------------------------------

    def append_traces(self, appends: Sequence[TraceAppend],
                      limits: TraceLimits) -> Deferred[None]:
        # Group-committed with the REGISTER path and the call records: one transaction
        # with them, instead of a write transaction of its own that the call path's
        # batches would wait for (SQLite has one writer).
        return self.group_commit.submit("append_traces", list(appends), limits)

    def get_trace(self, call_id: str) -> Deferred[CallTrace | None]:
        return self._run(self._op_get_trace, call_id)

    def purge_traces(self, before: float) -> Deferred[int]:
        return self._run(self._op_purge_traces, before)

    def _op_append_traces(self, appends: list[TraceAppend], limits: TraceLimits) -> None:
        # Alone (after an aborted batch): its own transaction, the same statements.
        with self._write() as connection:
            cursor = connection.connection.cursor()
            try:
                self._fast_append_traces(cursor, appends, limits)
            finally:
                cursor.close()

    def _fast_append_traces(self, cursor: Any, appends: list[TraceAppend],
                            limits: TraceLimits) -> None:
        # Every call's messages in a few statements on a DBAPI cursor: the calls' counts in
        # one read (locked on PostgreSQL) to apply the bounds, then executemany of the
        # messages and of the counts.
        if not appends:
            return
        p = self._hot.parameter
        lock = " FOR UPDATE" if self._dialect == "postgresql" else ""
        stored: dict[str, list[int]] = {}
        ids = sorted({append.call_id for append in appends})
        for chunk in _chunks(ids):
            cursor.execute(
                "SELECT call_id, message_count, byte_count, dropped, last_at_ms"
                f" FROM call_traces WHERE call_id IN ({', '.join([p] * len(chunk))})"
                f" ORDER BY call_id{lock}", tuple(chunk))
            for row in cursor.fetchall():
                stored[row[0]] = [int(value) for value in row[1:]]
        existing = set(stored)
        rows: list[tuple[Any, ...]] = []
        for append in appends:
            counts = stored.setdefault(append.call_id, [0, 0, 0, 0])
            count, size, dropped, last = counts
            kept, over = fit_messages(count, size, dropped, append.messages, limits)
            if kept:
                rows.append((append.call_id, count, len(kept), pack_messages(kept)))
            counts[:] = [count + len(kept), size + sum(len(m.data) for m in kept),
                         dropped + over + append.dropped,
                         max([last, *(m.at_ms for m in append.messages)])]
        if rows:
            cursor.executemany(
                "INSERT INTO call_trace_messages (call_id, first_index, message_count, data)"
                f" VALUES ({', '.join([p] * 4)})", rows)
        new = [(call_id, *counts) for call_id, counts in stored.items()
               if call_id not in existing]
        if new:
            cursor.executemany(
                "INSERT INTO call_traces (call_id, message_count, byte_count, dropped,"
                f" last_at_ms) VALUES ({', '.join([p] * 5)})", new)
        changed = [(*counts, call_id) for call_id, counts in stored.items()
                   if call_id in existing]
        if changed:
            cursor.executemany(
                f"UPDATE call_traces SET message_count = {p}, byte_count = {p},"
                f" dropped = {p}, last_at_ms = {p} WHERE call_id = {p}", changed)

    def _op_get_trace(self, call_id: str) -> CallTrace | None:
        with self._read() as connection:
            stored = connection.execute(
                select(call_traces).where(call_traces.c.call_id == call_id)).first()
            if stored is None:
                return None
            rows = connection.execute(
                select(call_trace_messages.c.data)
                .where(call_trace_messages.c.call_id == call_id)
                .order_by(call_trace_messages.c.first_index)).all()
        messages = tuple(m for row in rows for m in unpack_messages(bytes(row.data)))
        return CallTrace(call_id, messages, int(stored.dropped))

    def _op_purge_traces(self, before: float) -> int:
        cutoff = int(before * 1000)
        with self._write() as connection:
            old = select(call_traces.c.call_id).where(call_traces.c.last_at_ms < cutoff)
            connection.execute(delete(call_trace_messages).where(
                call_trace_messages.c.call_id.in_(old)))
            return int(connection.execute(
                delete(call_traces).where(call_traces.c.last_at_ms < cutoff)).rowcount)
