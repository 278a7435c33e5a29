"""
The SQL store's hot operations, one job type each, on raw DBAPI cursors.

The REGISTER and call paths (credentials, binding updates, call records, call traces) are
group-committed (:mod:`clicktodial.store.groupcommit`, run by
:class:`clicktodial.store.sqlbatch.BatchExecutor`): a job is a frozen value carrying its
arguments that knows its place in a batch (:meth:`SQLJob.order`), the AOR whose bindings it
changes (locked and read for the whole batch up front), and how it runs inside a batch's
transaction (:meth:`SQLJob.run`). Alone after an aborted batch it runs the same way, as a
batch of one: each hot operation has exactly one implementation.

Why raw DBAPI and not SQLAlchemy Core here: SQLAlchemy's per-execution work (compiling,
events, result processing) cost more than these short statements themselves. The statements
are written once per database in :class:`SQLDialect` (SQLite's ``?`` and psycopg's ``%s``
parameters, ``FOR UPDATE`` and advisory locks on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite).
The rarer operations (users, tokens, listings, purges, admin commands) stay on SQLAlchemy
Core in :mod:`clicktodial.store.sql`, where clarity matters more than microseconds.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from itertools import chain
from operator import attrgetter
from typing import Any, TypeVar

from attrs import frozen

from clicktodial.store.bindings import plan_register
from clicktodial.store.errors import NoSuchCall
from clicktodial.store.schema import calls
from clicktodial.store.traces import TraceAppend, TraceLimits, fit_messages, pack_messages
from clicktodial.store.values import (
    Binding,
    BindingChanges,
    CallRecord,
    SipCredentials,
    VerifiedUpdate,
)

T = TypeVar("T")

#: Rows per IN (...) list: below every SQLite build's host-parameter limit.
CHUNK = 500
#: Binding rows per multi-row INSERT, UPDATE ... FROM (VALUES ...) or DELETE (12 parameters
#: a row at most: below every SQLite build's host-parameter limit): a batch's writes of each
#: kind go in one statement per this many rows (one step of the database, one GIL hand-off
#: on the batch thread), never one a row. A statement text per row count up to this: few
#: enough for the drivers' statement caches.
WRITE_ROWS = 32
_WRITE_COUNTS = range(1, WRITE_ROWS + 1)

#: The columns of a call record, in the order of :data:`clicktodial.store.schema.calls`.
CALL_FIELDS = tuple(c.name for c in calls.columns)
#: A record's values in that order (one C call: a generator of getattr was 20 calls a record).
_call_values = attrgetter(*CALL_FIELDS)

_BINDING_COLUMNS = (
    "contact",
    "q",
    "expires_at",
    "call_id",
    "cseq",
    "instance_id",
    "reg_id",
    "path",
    "received",
    "user_agent",
)
#: The types of _BINDING_COLUMNS, then aor and binding_key, in SQL both databases read (the
#: multi-row UPDATE's first VALUES row casts its parameters to them: PostgreSQL types a
#: VALUES column by its first row, and a NULL or untyped text parameter would not be
#: assignable to a number column).
_BINDING_TYPES = (
    "TEXT",
    "DOUBLE PRECISION",
    "DOUBLE PRECISION",
    "TEXT",
    "BIGINT",
    "TEXT",
    "INTEGER",
    "TEXT",
    "TEXT",
    "TEXT",
    "TEXT",
    "TEXT",
)
_TRACE_COUNTS = ("message_count", "byte_count", "dropped", "last_at_ms")

# PostgreSQL: the advisory lock of an AOR (its key: ours, "clkb", then the AOR's hash), which
# serialises REGISTERs of the same AOR across transactions and nodes. Row locks alone
# (FOR UPDATE) miss the bindings another node is inserting: two REGISTERs could each add
# bindings under [registrar] max_contacts and together exceed it. The two-key form, its
# first key ours, keeps out of other users' (and the migrations') lock keys.
_PG_AOR_LOCK = "pg_advisory_xact_lock(1668049762, hashtext(aor))"


def chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most :data:`CHUNK`."""
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


class _Statements(dict[Any, str]):
    """Statement texts by a key, each built on first use (a dict: no Python call after)."""

    def __init__(self, build: Callable[[Any], str]) -> None:
        super().__init__()
        self._build = build

    def __missing__(self, key: Any) -> str:
        statement = self[key] = self._build(key)
        return statement


@frozen(slots=False)  # room for the cached statements
class SQLDialect:
    """
    The hot statements in one database's SQL, written once per database (each text is
    built on first use and kept).

    :ivar name: SQLAlchemy's dialect name.
    :ivar begin: the statement that opens a write transaction, or ``None`` where the DBAPI
        opens it by itself (psycopg). Reads alone run without it (SQLite: in autocommit,
        each statement its own snapshot).
    :ivar locks_aors: whether a batch takes per-AOR locks (:meth:`lock_aors`; PostgreSQL),
        or ``begin`` already serialises writers (SQLite).
    :ivar p: the DBAPI's parameter marker.
    :ivar for_update: appended to the reads whose rows the transaction then writes.
    :ivar cursor_per_statement: whether a batch runs each statement text on a cursor of its
        own, kept with the batches' connection (psycopg: a cursor keeps a statement's
        adaptation, its parameters' dumpers and its columns' loaders, looked up in Python,
        while it runs the same text again; about 30 Python calls fewer for a verified
        REGISTER), or every statement on the transaction's one cursor (sqlite3: its
        cursors are C, and closing one at the end of the transaction resets its statements).
    """

    name: str
    begin: str | None
    locks_aors: bool
    p: str
    for_update: str
    cursor_per_statement: bool

    @classmethod
    def named(cls, name: str) -> SQLDialect:
        """The statements for SQLAlchemy's dialect ``name`` (``sqlite`` or ``postgresql``)."""
        return _DIALECTS[name]

    def _list(self, count: int) -> str:
        return ", ".join([self.p] * count)

    @cached_property
    def credentials(self) -> str:
        return f"SELECT ha1_md5, ha1_sha256, disabled FROM users WHERE username = {self.p}"

    @cached_property
    def credentials_of(self) -> _Statements:
        """By count: the credentials rows (username first) of that many usernames."""
        return _Statements(
            lambda count: (
                "SELECT username, ha1_md5, ha1_sha256, disabled FROM users"
                f" WHERE username IN ({self._list(count)})"
            )
        )

    @cached_property
    def lock_aors(self) -> _Statements:
        """
        PostgreSQL, by (count, users): take the advisory locks of ``count`` AORs, in the
        order of the parameters, and read the credentials rows (username first) of the
        ``users`` usernames after them: one statement, one row of NULLs when none of them
        exists. (The credentials need no snapshot taken after the locks; the bindings do,
        and are read by the next statement.)
        """

        def build(counts: tuple[int, int]) -> str:
            count, users = counts
            statement = (
                f"SELECT count({_PG_AOR_LOCK})"
                f" FROM unnest(ARRAY[{self._list(count)}]::text[]) AS aor"
            )
            if not users:
                return statement
            # The locks' one row, left-joined: taken whether or not a user exists.
            return (
                "SELECT u.username, u.ha1_md5, u.ha1_sha256, u.disabled"
                f" FROM ({statement}) AS locked"
                f" LEFT JOIN users AS u ON u.username IN ({self._list(users)})"
            )

        return _Statements(build)

    @cached_property
    def select_bindings(self) -> str:
        """One AOR's binding rows, in key order (locked on PostgreSQL: see UpdateBindings)."""
        return (
            f"SELECT binding_key, {', '.join(_BINDING_COLUMNS)} FROM bindings"
            f" WHERE aor = {self.p} ORDER BY binding_key{self.for_update}"
        )

    @cached_property
    def select_bindings_of(self) -> _Statements:
        """By count: the binding rows (AOR first) of that many AORs, in AOR then key order."""
        return _Statements(
            lambda count: (
                f"SELECT aor, binding_key, {', '.join(_BINDING_COLUMNS)} FROM bindings"
                f" WHERE aor IN ({self._list(count)}) ORDER BY aor, binding_key"
                f"{self.for_update}"
            )
        )

    # The binding writes, indexed by row count - 1 (1 to WRITE_ROWS rows): a tuple read
    # with a subscript, no Python call per statement.

    @cached_property
    def delete_bindings(self) -> tuple[str, ...]:
        """Delete bindings by (aor, binding_key) parameters."""
        row = f"(aor = {self.p} AND binding_key = {self.p})"
        # An OR of key matches, not (aor, binding_key) IN (VALUES ...): SQLite scans the
        # table for a row-value IN, and looks each OR term up in the primary key.
        return tuple(f"DELETE FROM bindings WHERE {' OR '.join([row] * n)}" for n in _WRITE_COUNTS)

    @cached_property
    def insert_bindings(self) -> tuple[str, ...]:
        """Insert bindings (parameters: :meth:`Batch.write_bindings`)."""
        row = f"({self._list(len(_BINDING_COLUMNS) + 2)})"
        return tuple(
            f"INSERT INTO bindings ({', '.join(_BINDING_COLUMNS)}, aor, binding_key)"
            f" VALUES {', '.join([row] * n)}"
            for n in _WRITE_COUNTS
        )

    @cached_property
    def update_bindings(self) -> tuple[str, ...]:
        """
        Rewrite stored bindings (parameters: :meth:`Batch.write_bindings`), in one
        ``UPDATE ... FROM (VALUES ...)`` (PostgreSQL; SQLite 3.33+): each VALUES row is
        matched to its stored row by the primary key.
        """
        p = self.p
        first = f"({', '.join(f'CAST({p} AS {t})' for t in _BINDING_TYPES)})"
        row = f"({self._list(len(_BINDING_TYPES))})"
        # A VALUES list's columns are column1, column2, ... on both databases.
        columns = [*_BINDING_COLUMNS, "aor", "binding_key"]
        v = {name: f"v.column{i}" for i, name in enumerate(columns, start=1)}
        assignments = ", ".join(f"{c} = {v[c]}" for c in _BINDING_COLUMNS)
        return tuple(
            f"UPDATE bindings SET {assignments}"
            f" FROM (VALUES {', '.join([first] + [row] * (n - 1))}) AS v"
            f" WHERE bindings.aor = {v['aor']} AND bindings.binding_key = {v['binding_key']}"
            for n in _WRITE_COUNTS
        )

    @cached_property
    def insert_call(self) -> str:
        return (
            f"INSERT INTO calls ({', '.join(CALL_FIELDS)}) VALUES ({self._list(len(CALL_FIELDS))})"
        )

    def update_call(self, names: tuple[str, ...]) -> str:
        """Set the call record fields ``names`` (then the call id)."""
        # A call writes the same few sets of fields over and over: each text built once.
        statement = self._update_call.get(names)
        if statement is None:
            statement = self._update_call[names] = (
                f"UPDATE calls SET {', '.join(f'{name} = {self.p}' for name in names)}"
                f" WHERE call_id = {self.p}"
            )
        return statement

    @cached_property
    def _update_call(self) -> dict[tuple[str, ...], str]:
        return {}

    @cached_property
    def select_call(self) -> str:
        return f"SELECT {', '.join(CALL_FIELDS)} FROM calls WHERE call_id = {self.p}"

    def select_trace_counts(self, count: int) -> str:
        """The counts of ``count`` calls' traces, locked on PostgreSQL."""
        return (
            f"SELECT call_id, {', '.join(_TRACE_COUNTS)} FROM call_traces"
            f" WHERE call_id IN ({self._list(count)}) ORDER BY call_id{self.for_update}"
        )

    @cached_property
    def insert_trace_messages(self) -> str:
        return (
            "INSERT INTO call_trace_messages (call_id, first_index, message_count, data)"
            f" VALUES ({self._list(4)})"
        )

    @cached_property
    def insert_trace_counts(self) -> str:
        return (
            f"INSERT INTO call_traces (call_id, {', '.join(_TRACE_COUNTS)})"
            f" VALUES ({self._list(1 + len(_TRACE_COUNTS))})"
        )

    @cached_property
    def update_trace_counts(self) -> str:
        return (
            f"UPDATE call_traces SET {', '.join(f'{c} = {self.p}' for c in _TRACE_COUNTS)}"
            f" WHERE call_id = {self.p}"
        )


_DIALECTS = {
    # The write lock up front (see sql._configure_sqlite); one writer at a time.
    "sqlite": SQLDialect(
        "sqlite",
        begin="BEGIN IMMEDIATE",
        locks_aors=False,
        p="?",
        for_update="",
        cursor_per_statement=False,
    ),
    # psycopg opens the transaction implicitly; rows are locked as they are read.
    "postgresql": SQLDialect(
        "postgresql",
        begin=None,
        locks_aors=True,
        p="%s",
        for_update=" FOR UPDATE",
        cursor_per_statement=True,
    ),
}


class Batch:
    """
    One batch's transaction as its jobs see it: the cursors, the dialect's statements, the
    binding rows and the credentials read for the whole batch, and the binding writes not
    sent yet.

    :param cursor: a DBAPI cursor inside the open transaction.
    :param cursors: the cursor to run each statement text on (``cursors[statement]``: a
        mapping that makes them as they are asked for, without a Python call once made:
        see :attr:`SQLDialect.cursor_per_statement`).
    :param dialect: the statements.
    :param aors: the AORs the batch's jobs change (sorted, distinct): locked (PostgreSQL)
        and read in one statement.
    :param usernames: the users whose credentials the batch's jobs read (distinct): read
        with the AORs' locks (PostgreSQL), or else in one statement when there are two or
        more (no job writes credentials, so the read is what each job would have read).
    """

    def __init__(
        self,
        cursor: Any,
        cursors: Mapping[str, Any],
        dialect: SQLDialect,
        aors: Sequence[str],
        usernames: Sequence[str] = (),
    ) -> None:
        self.cursor = cursor
        self.cursors = cursors
        self.dialect = dialect
        # The binding writes not sent yet (see flush), as parameter rows.
        self._delete: list[tuple[Any, ...]] = []
        self._insert: list[tuple[Any, ...]] = []
        self._update: list[tuple[Any, ...]] = []
        # One statement per CHUNK users instead of one per job: at high load a batch holds
        # hundreds of REGISTERs, and each statement is a GIL release and re-acquisition on
        # the batch thread. A single user's job reads its own, unless the locks' statement
        # reads them (one statement fewer). Loops written out: this runs for every batch.
        locks = bool(aors) and dialect.locks_aors
        read = usernames if locks or len(usernames) > 1 else ()
        #: username -> its credentials row (ha1_md5, ha1_sha256, disabled), None for an
        #: unknown user; read for the batch (see _read_credentials)
        self.credentials: dict[str, Sequence[Any] | None] = dict.fromkeys(read)
        rows: list[Any] = []
        if locks:
            with_locks = read[:CHUNK]
            statement = dialect.lock_aors[len(aors), len(with_locks)]
            cursor = cursors[statement]
            cursor.execute(statement, (*aors, *with_locks))
            if with_locks:
                rows = cursor.fetchall()
            read = read[CHUNK:]
        if read:
            for chunk in chunks(read):
                statement = dialect.credentials_of[len(chunk)]
                cursor = cursors[statement]
                cursor.execute(statement, tuple(chunk))
                rows += cursor.fetchall()
        found = self.credentials
        for row in rows:
            # (Username first; the locks' statement has a row of NULLs for no user.)
            if row[0] is not None:
                found[row[0]] = row[1:]
        # (One AOR is read by its job as it runs.)
        self._prefetched = self._prefetch(aors) if len(aors) > 1 else {}

    def _prefetch(self, aors: Sequence[str]) -> dict[str, dict[str, Binding]]:
        # The stored bindings of the batch's AORs in one statement (locked on PostgreSQL:
        # FOR UPDATE, rows in AOR then key order, as AOR-by-AOR reads in sorted order lock
        # them). An AOR without rows maps to {}.
        prefetched: dict[str, dict[str, Binding]] = {aor: {} for aor in aors}
        for chunk in chunks(aors):
            statement = self.dialect.select_bindings_of[len(chunk)]
            cursor = self.cursors[statement]
            cursor.execute(statement, tuple(chunk))
            for row in cursor.fetchall():
                aor = row[0]
                prefetched[aor][row[1]] = _binding_of_tuple(aor, row[1:])
        return prefetched

    def stored_bindings(self, aor: str) -> dict[str, Binding]:
        """
        The AOR's stored bindings by key: from the batch's read the first time; a second
        REGISTER of the AOR in the batch reads them again, after the first one's writes
        went out.
        """
        stored = self._prefetched.pop(aor, None)
        if stored is None:
            self.flush()
            statement = self.dialect.select_bindings
            cursor = self.cursors[statement]
            cursor.execute(statement, (aor,))
            stored = {}
            for row in cursor.fetchall():
                stored[row[0]] = _binding_of_tuple(aor, row)
        return stored

    def write_bindings(
        self,
        aor: str,
        stored: Mapping[str, Binding],
        delete: Sequence[str],
        write: Mapping[str, Binding],
    ) -> None:
        """Queue the AOR's binding changes (sent by :meth:`flush` or the next read)."""
        if delete:
            self._delete.extend([(aor, key) for key in sorted(delete)])
        for key, b in write.items():
            # _BINDING_COLUMNS, then aor and binding_key (the INSERT's and the UPDATE's
            # order). (Written out here: no Python call per binding.)
            (self._update if key in stored else self._insert).append(
                (
                    b.contact,
                    b.q,
                    b.expires_at,
                    b.call_id,
                    b.cseq,
                    b.instance_id,
                    b.reg_id,
                    json.dumps(list(b.path)) if b.path else "[]",
                    b.received,
                    b.user_agent,
                    aor,
                    key,
                )
            )

    def flush(self) -> None:
        """
        Send the pending writes (before the commit, or another read): one statement per
        kind and :data:`WRITE_ROWS` rows. Rows of one AOR are never pending twice (see
        :meth:`stored_bindings`), so the order of the three kinds does not matter.
        """
        dialect, cursors = self.dialect, self.cursors
        for rows, statements in (
            (self._delete, dialect.delete_bindings),
            (self._insert, dialect.insert_bindings),
            (self._update, dialect.update_bindings),
        ):
            if rows:
                for start in range(0, len(rows), WRITE_ROWS):
                    group = rows[start : start + WRITE_ROWS]
                    statement = statements[len(group) - 1]
                    cursors[statement].execute(statement, list(chain.from_iterable(group)))
                rows.clear()


class SQLJob(ABC):
    """One hot store operation: its arguments, and how it runs in a batch."""

    #: Where this kind of job runs in a batch (lower first); see :meth:`order`.
    rank: int = 0
    #: Whether the job may write: a batch of jobs that only read opens no write
    #: transaction (on SQLite no ``BEGIN IMMEDIATE``: it would take the database's one
    #: write lock, and wait for other daemons' writers, for a read).
    writes: bool = True

    def order(self) -> tuple[int, str]:
        """
        The job's place in its batch (a stable sort): credential reads first, then binding
        updates by AOR (one AOR's REGISTERs keep their order; every node locks AORs in the
        same order, so two nodes' batches cannot deadlock), then call records as submitted
        (a record's creation before its updates), then call traces (they only add rows,
        and hold no lock another job needs first).
        """
        return (self.rank, "")

    def changes_aor(self) -> str | None:
        """The AOR whose bindings the job changes (locked and read for the whole batch)."""
        return None

    def reads_user(self) -> str | None:
        """The user whose credentials the job reads (read for the whole batch)."""
        return None

    @abstractmethod
    def run(self, batch: Batch) -> Any:
        """
        Run inside ``batch``'s transaction (a pool thread); return the operation's result.
        Raise a :class:`clicktodial.store.errors.StoreError` only before writing anything
        (it is then this job's outcome, and the batch goes on); any other error aborts the
        batch.
        """


@frozen
class Credentials(SQLJob):
    """``get_sip_credentials``: the user's HA1s, or ``None`` (unknown or disabled)."""

    username: str
    rank = 0
    writes = False

    def order(self) -> tuple[int, str]:
        return (self.rank, self.username)

    def reads_user(self) -> str:
        return self.username

    def run(self, batch: Batch) -> SipCredentials | None:
        return _read_credentials(batch, self.username)


@frozen
class UpdateBindings(SQLJob):
    """
    ``update_bindings``: read the AOR's bindings (locked), apply RFC 3261 §10.3 in Python
    (:func:`plan_register`, which raises before anything is written), write the difference.

    On PostgreSQL the batch first takes the AOR's advisory lock (it also waits for a binding
    another node is inserting), then reads the rows ``FOR UPDATE`` in key order; a binding
    two nodes insert at once makes the later transaction fail on the primary key, and the
    REGISTER runs again alone, then seeing that row. On SQLite ``BEGIN IMMEDIATE`` already
    serialises writers.
    """

    aor: str
    changes: BindingChanges
    now: float
    rank = 1

    def order(self) -> tuple[int, str]:
        return (self.rank, self.aor)

    def changes_aor(self) -> str:
        return self.aor

    def run(self, batch: Batch) -> list[Binding]:
        return _update_bindings(batch, self.aor, self.changes, self.now)


@frozen
class VerifiedUpdateBindings(SQLJob):
    """
    ``update_bindings_if_verified``: the user's credentials read, handed to ``verify``,
    and only if it accepts them the binding update of :class:`UpdateBindings`, in the same
    transaction (its place in the batch and its AOR lock are an update's). A retried batch
    calls ``verify`` again (the registrar's answers the same).
    """

    username: str
    verify: Callable[[SipCredentials | None], bool]
    aor: str
    changes: BindingChanges
    now: float
    rank = 1

    def order(self) -> tuple[int, str]:
        return (self.rank, self.aor)

    def changes_aor(self) -> str:
        return self.aor

    def reads_user(self) -> str:
        return self.username

    def run(self, batch: Batch) -> VerifiedUpdate:
        credentials = _read_credentials(batch, self.username)
        if not self.verify(credentials):
            return VerifiedUpdate(credentials, None)
        return VerifiedUpdate(
            credentials, _update_bindings(batch, self.aor, self.changes, self.now)
        )


def _read_credentials(batch: Batch, username: str) -> SipCredentials | None:
    # The row (ha1_md5, ha1_sha256, disabled), read for the batch or now; None (unknown),
    # disabled and without a SIP password all read as no credentials.
    prefetched = batch.credentials
    if username in prefetched:
        row = prefetched[username]
    else:
        statement = batch.dialect.credentials
        cursor = batch.cursors[statement]
        cursor.execute(statement, (username,))
        row = cursor.fetchone()
    if row is None or row[2] or row[0] is None or row[1] is None:
        return None
    return SipCredentials(row[0], row[1])


def _update_bindings(batch: Batch, aor: str, changes: BindingChanges, now: float) -> list[Binding]:
    # The AOR's stored bindings (locked), RFC 3261 §10.3 applied in Python (raising before
    # anything is written when it refuses), the difference queued.
    stored = batch.stored_bindings(aor)
    plan = plan_register(aor, stored, changes, now)
    batch.write_bindings(aor, stored, list(plan.delete), plan.write)
    return list(plan.result)


@frozen
class InsertCall(SQLJob):
    """``create_call``: store a new call record; its id (what ``create_call`` fires with)."""

    record: CallRecord
    rank = 2

    def run(self, batch: Batch) -> str:
        record = self.record
        batch.cursor.execute(batch.dialect.insert_call, _call_values(record))
        return record.call_id


@frozen
class UpdateCall(SQLJob):
    """
    ``update_call``: set some fields of a call record; the record as stored after.
    ``write_call`` (``read_back`` False): the same UPDATE, then None (the row count tells
    whether the call exists: no SELECT).
    """

    call_id: str
    fields: dict[str, object]
    read_back: bool = True
    rank = 2

    def run(self, batch: Batch) -> CallRecord | None:
        # NoSuchCall is raised after an UPDATE that matched no row: nothing was written.
        fields = self.fields
        if fields:
            names = tuple(sorted(fields))
            unknown = set(names).difference(CALL_FIELDS)
            if unknown:
                raise ValueError(f"not call record fields: {sorted(unknown)}")
            values = list(map(fields.__getitem__, names))
            values.append(self.call_id)
            batch.cursor.execute(batch.dialect.update_call(names), values)
            if not self.read_back:
                # Rows matched (SQLite's changes(), PostgreSQL's command tag), also when
                # the values were already those.
                if batch.cursor.rowcount == 0:
                    raise NoSuchCall(self.call_id)
                return None
        batch.cursor.execute(batch.dialect.select_call, (self.call_id,))
        row = batch.cursor.fetchone()
        if row is None:
            raise NoSuchCall(self.call_id)
        return CallRecord(**dict(zip(CALL_FIELDS, row, strict=True)))


@frozen
class AppendTraces(SQLJob):
    """
    ``append_traces``: every call's messages in a few statements: the calls' counts in one
    read (locked on PostgreSQL) to apply the bounds, then executemany of the messages and of
    the counts. Group-committed with the call path: no write transaction of its own for the
    REGISTERs and call records to wait for (SQLite has one writer).
    """

    appends: tuple[TraceAppend, ...]
    limits: TraceLimits
    rank = 3

    def run(self, batch: Batch) -> None:
        if not self.appends:
            return
        cursor, dialect = batch.cursor, batch.dialect
        stored: dict[str, list[int]] = {}
        ids = sorted({append.call_id for append in self.appends})
        for chunk in chunks(ids):
            cursor.execute(dialect.select_trace_counts(len(chunk)), tuple(chunk))
            for row in cursor.fetchall():
                stored[row[0]] = [int(value) for value in row[1:]]
        existing = set(stored)
        rows: list[tuple[Any, ...]] = []
        for append in self.appends:
            counts = stored.setdefault(append.call_id, [0, 0, 0, 0])
            count, size, dropped, last = counts
            kept, over = fit_messages(count, size, dropped, append.messages, self.limits)
            if kept:
                rows.append((append.call_id, count, len(kept), pack_messages(kept)))
            counts[:] = [
                count + len(kept),
                size + sum(len(m.data) for m in kept),
                dropped + over + append.dropped,
                max([last, *(m.at_ms for m in append.messages)]),
            ]
        if rows:
            cursor.executemany(dialect.insert_trace_messages, rows)
        new = [(call_id, *counts) for call_id, counts in stored.items() if call_id not in existing]
        if new:
            cursor.executemany(dialect.insert_trace_counts, new)
        changed = [(*counts, call_id) for call_id, counts in stored.items() if call_id in existing]
        if changed:
            cursor.executemany(dialect.update_trace_counts, changed)


def _binding_of_tuple(aor: str, row: Sequence[Any]) -> Binding:
    # row: binding_key, then _BINDING_COLUMNS.
    path = row[8]
    return Binding(
        aor=aor,
        contact=row[1],
        q=row[2],
        expires_at=row[3],
        call_id=row[4],
        cseq=row[5],
        instance_id=row[6],
        reg_id=row[7],
        path=() if path == "[]" else tuple(json.loads(path)),
        received=row[9],
        user_agent=row[10],
    )
