"""Group commit: REGISTER-path store operations batched into one transaction and one hop."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from attrs import frozen
from sqlalchemy import URL
from sqlalchemy.exc import DBAPIError
from twisted.internet.defer import Deferred, succeed

from clicktodial.store import sqlbatch
from clicktodial.store.errors import NoSuchCall, OutOfOrderRegistration, TooManyBindings
from clicktodial.store.groupcommit import BUSY_INTERVAL, BatchThread, GroupCommit, Outcome
from clicktodial.store.sql import SQLStore
from clicktodial.store.sqlbatch import BatchExecutor
from clicktodial.store.sqljobs import (
    WRITE_ROWS,
    Batch,
    Credentials,
    SQLDialect,
    SQLJob,
    UpdateBindings,
)
from clicktodial.store.values import (
    BindingChanges,
    CallUpdate,
    ContactChange,
    SipCredentials,
    UserChanges,
    VerifiedUpdate,
)
from clicktodial.testing.fakes import (
    InlineReactor,
    InlineThreadPool,
    cheap_password_hasher,
    failure_result_of,
    success_result_of,
)
from clicktodial.testing.postgres import scratch_schema, test_database_url


class HeldThreadPool(InlineThreadPool):
    """Runs jobs inline, except while ``held``: then they wait for :meth:`release`."""

    def __init__(self) -> None:
        super().__init__()
        self.held = False
        self.waiting: list[Callable[[], None]] = []

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, Any], object] | None,
        func: Callable[..., Any],
        *args: Any,
        **kw: Any,
    ) -> None:
        def run() -> None:
            super(HeldThreadPool, self).callInThreadWithCallback(onResult, func, *args, **kw)

        if self.held:
            self.waiting.append(run)
        else:
            run()

    def release(self) -> None:
        """Run what waits, and anything it queues, until nothing waits."""
        self.held = False
        while self.waiting:
            self.waiting.pop(0)()


def test_operations_submitted_while_a_batch_runs_form_the_next_batch() -> None:
    """One batch is in flight; what arrives meanwhile runs as one batch, results in order."""
    pool = HeldThreadPool()
    batches: list[list[int]] = []

    def execute(batch: Sequence[int]) -> list[Outcome]:
        batches.append(list(batch))
        return [(True, n * 2) for n in batch]

    group: GroupCommit[int] = GroupCommit(InlineReactor(), pool, execute, lambda n: succeed(None))
    pool.held = True
    first = group.submit(1)
    rest = [group.submit(n) for n in (2, 3, 4)]
    assert batches == []
    pool.release()
    assert batches == [[1], [2, 3, 4]]
    assert success_result_of(first) == 2
    assert [success_result_of(d) for d in rest] == [4, 6, 8]
    assert (group.batches, group.jobs) == (2, 4)


def test_an_operations_own_error_fails_only_that_operation() -> None:
    """An outcome that is an error fails its Deferred; the batch's others succeed."""
    pool = HeldThreadPool()

    def execute(batch: Sequence[str]) -> list[Outcome]:
        return [(False, ValueError(arg)) if arg == "bad" else (True, "ok") for arg in batch]

    group: GroupCommit[str] = GroupCommit(InlineReactor(), pool, execute, lambda arg: succeed(None))
    pool.held = True
    group.submit("first")
    ds = [group.submit(arg) for arg in ("a", "bad", "b")]
    pool.release()
    assert success_result_of(ds[0]) == "ok"
    failure_result_of(ds[1], ValueError)
    assert success_result_of(ds[2]) == "ok"


def test_an_aborted_batch_runs_each_operation_alone() -> None:
    """When the batch's transaction fails, every job goes through the fallback, once."""
    fallbacks: list[Any] = []

    def execute(batch: Sequence[int]) -> list[Outcome]:
        raise RuntimeError("deadlock detected")

    def fallback(n: int) -> Deferred[Any]:
        fallbacks.append(n)
        return succeed(f"alone {n}")

    pool = HeldThreadPool()
    group: GroupCommit[int] = GroupCommit(InlineReactor(), pool, execute, fallback)
    pool.held = True
    ds = [group.submit(n) for n in range(3)]
    pool.release()
    assert fallbacks == [0, 1, 2]
    assert [success_result_of(d) for d in ds] == ["alone 0", "alone 1", "alone 2"]


def test_batches_are_bounded() -> None:
    """No batch has more than max_batch jobs."""
    pool = HeldThreadPool()
    sizes: list[int] = []

    def execute(batch: Sequence[int]) -> list[Outcome]:
        sizes.append(len(batch))
        return [(True, None)] * len(batch)

    group: GroupCommit[int] = GroupCommit(
        InlineReactor(), pool, execute, lambda n: succeed(None), max_batch=2
    )
    pool.held = True
    for n in range(5):
        group.submit(n)
    assert group.waiting == 4  # (the first is the batch in flight)
    pool.release()
    assert sizes == [1, 2, 2]
    assert group.waiting == 0


def test_waiting_counts_the_operations_queued_behind_the_batch_in_flight() -> None:
    """``waiting`` (what the admission control reads) is the queue behind the batch in
    flight: 0 while idle or with one batch running, then shrinking batch by batch."""
    pool = HeldThreadPool()
    seen: list[int] = []
    group: GroupCommit[int] = GroupCommit(
        InlineReactor(),
        pool,
        lambda batch: seen.append(group.waiting) or [(True, None)] * len(batch),  # type: ignore[func-returns-value]
        lambda n: succeed(None),
        max_batch=2,
    )
    assert group.waiting == 0
    group.submit(0)  # runs at once: nothing waits
    assert group.waiting == 0
    pool.held = True
    group.submit(1)
    assert group.waiting == 0
    for n in range(2, 7):
        group.submit(n)
    assert group.waiting == 5
    pool.release()
    # As each batch ran: [1] with 5 behind it, then [2, 3] with 3, [4, 5] with 1, [6] with 0.
    assert seen == [0, 5, 3, 1, 0]
    assert group.waiting == 0


def _recording(batches: list[list[int]]) -> Callable[[Sequence[int]], list[Outcome]]:
    def execute(batch: Sequence[int]) -> list[Outcome]:
        batches.append(list(batch))
        return [(True, n * 2) for n in batch]

    return execute


def _busy_group(clock: InlineReactor, pool: Any, batches: list[list[int]]) -> GroupCommit[int]:
    """A group commit on ``clock`` with a 5 ms busy interval, recording its batches."""
    return GroupCommit(
        clock, pool, _recording(batches), lambda n: succeed(None), clock=clock, busy_interval=0.005
    )


def test_an_operation_arriving_while_no_batch_runs_starts_at_once() -> None:
    """With a busy interval, an operation submitted while no batch is in flight starts its
    batch at once, even right after another batch: an idle store adds no latency."""
    clock = InlineReactor()
    batches: list[list[int]] = []
    group = _busy_group(clock, InlineThreadPool(), batches)
    ds = [group.submit(1), group.submit(2)]
    assert batches == [[1], [2]]
    assert [success_result_of(d) for d in ds] == [2, 4]
    assert clock.getDelayedCalls() == []


def test_operations_arriving_while_a_batch_runs_start_a_busy_interval_after_it() -> None:
    """Operations that arrived while a batch was in flight (a busy store) form the next
    batch busy_interval after the previous batch started, not at its delivery; what
    arrives in between joins them, and counts as waiting."""
    clock = InlineReactor()
    pool = HeldThreadPool()
    batches: list[list[int]] = []
    group = _busy_group(clock, pool, batches)
    pool.held = True
    first = group.submit(1)  # starts at 0
    clock.advance(0.001)
    second = group.submit(2)
    pool.release()  # the first is delivered at 0.001; the second is held
    assert success_result_of(first) == 2
    assert batches == [[1]]
    assert group.waiting == 1
    third = group.submit(3)
    assert group.waiting == 2
    clock.advance(0.0039)
    assert batches == [[1]]
    clock.advance(0.0002)
    assert batches == [[1], [2, 3]]
    assert [success_result_of(d) for d in (second, third)] == [4, 6]
    assert group.waiting == 0


def test_after_a_batch_longer_than_the_busy_interval_the_next_starts_at_its_delivery() -> None:
    """A busy interval already over when the batch in flight is delivered holds nothing."""
    clock = InlineReactor()
    pool = HeldThreadPool()
    batches: list[list[int]] = []
    group = _busy_group(clock, pool, batches)
    pool.held = True
    group.submit(1)
    group.submit(2)
    clock.advance(0.006)
    pool.release()
    assert batches == [[1], [2]]
    assert clock.getDelayedCalls() == []


def test_the_sql_store_holds_batches_back_while_busy(tmp_path: Path) -> None:
    """The SQL store's group commit uses the busy interval (BUSY_INTERVAL by default), timed
    with the store's reactor."""
    clock = InlineReactor()
    pool = HeldThreadPool()
    store = SQLStore(
        clock,
        f"sqlite:///{tmp_path / 'store.sqlite'}",
        pool,
        InlineThreadPool(),
        realm="example.com",
        hasher=cheap_password_hasher(),
        auto_upgrade=True,
    )
    success_result_of(store.start())
    try:
        success_result_of(store.add_user("alice", sip_password="secret"))
        pool.held = True
        first = store.get_sip_credentials("alice")
        second = store.get_sip_credentials("nobody")
        batches = store.group_commit.batches
        pool.release()
        assert success_result_of(first) is not None
        assert store.group_commit.batches == batches
        assert not second.called
        clock.advance(BUSY_INTERVAL)
        assert store.group_commit.batches == batches + 1
        assert success_result_of(second) is None
    finally:
        success_result_of(store.stop())


def test_a_batch_thread_runs_calls_in_order_on_its_own_thread() -> None:
    """BatchThread runs each queued call on its one thread, in order, and reports each
    outcome there: the result, or the error as a Failure; stop runs what was queued."""
    thread = BatchThread("test-batches")
    outcomes: list[tuple[bool, Any, str]] = []
    names: list[str] = []

    def record(ok: bool, result: Any) -> None:
        value = result if ok else result.value
        outcomes.append((ok, value, threading.current_thread().name))

    def double(n: int) -> int:
        names.append(threading.current_thread().name)
        return n * 2

    def fail() -> None:
        raise ValueError("refused")

    thread.start()
    thread.callInThreadWithCallback(record, double, 1)
    thread.callInThreadWithCallback(record, fail)
    thread.callInThreadWithCallback(record, double, 3)
    thread.stop()
    assert names == ["test-batches", "test-batches"]
    assert [(ok, value if ok else repr(value)) for ok, value, _ in outcomes] == [
        (True, 2),
        (False, repr(ValueError("refused"))),
        (True, 6),
    ]
    assert {name for _, _, name in outcomes} == {"test-batches"}


def test_a_group_commit_on_a_batch_thread_delivers_through_call_from_thread() -> None:
    """With a real BatchThread, each batch's results come back through the reactor's
    callFromThread, once per batch."""
    delivered: list[Any] = []
    done = threading.Event()

    class Reactor(InlineReactor):
        def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
            delivered.append(args[0])
            f(*args, **kwargs)

    thread = BatchThread("test-batches")
    group: GroupCommit[int] = GroupCommit(
        Reactor(), thread, lambda batch: [(True, n + 1) for n in batch], lambda n: succeed(None)
    )
    thread.start()
    try:
        d = group.submit(41)
        d.addCallback(lambda result: done.set() or result)
        assert done.wait(30)
    finally:
        thread.stop()
    assert success_result_of(d) == 42
    assert len(delivered) == 1


# -- the SQL store's group commit ----------------------------------------------------------


def contact(n: int, expires: int = 3600) -> ContactChange:
    return ContactChange(f"sip:phone{n}@192.0.2.{n}", expires=expires)


def changes(call_id: str, cseq: int, *contacts: ContactChange) -> BindingChanges:
    return BindingChanges(call_id=call_id, cseq=cseq, contacts=contacts)


@pytest.fixture(params=["sqlite", "postgresql"])
def held(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[SQLStore, HeldThreadPool]]:
    """A started SQL store whose database pool runs jobs only when released; users alice
    and bob (disabled). On SQLite, and on PostgreSQL when the tests have one."""
    with ExitStack() as stack:
        url: str | URL
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'store.sqlite'}"
        else:
            pg_url = test_database_url()
            if pg_url is None:
                pytest.skip("CLICKTODIAL_TEST_PG_URL is set to the empty string")
            url = stack.enter_context(scratch_schema(pg_url))
        yield from _held_store(url)


def _held_store(url: str | URL) -> Iterator[tuple[SQLStore, HeldThreadPool]]:
    pool = HeldThreadPool()
    store = SQLStore(
        InlineReactor(),
        url,
        pool,
        InlineThreadPool(),
        realm="example.com",
        hasher=cheap_password_hasher(),
        auto_upgrade=True,
        # What forms each batch, not when it starts: nothing is held back for the clock.
        busy_interval=0.0,
    )
    success_result_of(store.start())
    success_result_of(store.add_user("alice", sip_password="secret"))
    success_result_of(store.add_user("bob", sip_password="secret", display_name="Bob"))
    success_result_of(store.update_user("bob", UserChanges(disabled=True)))
    yield store, pool
    success_result_of(store.stop())


def test_sql_batch_applies_registers_and_reads_credentials_in_one_transaction(
    held: tuple[SQLStore, HeldThreadPool],
) -> None:
    """Credentials and binding updates of several REGISTERs share one batch; each gets its
    own result, and REGISTERs of one AOR apply in order."""
    store, pool = held
    pool.held = True
    warm = store.get_sip_credentials("nobody")
    alice = store.get_sip_credentials("alice")
    bob = store.get_sip_credentials("bob")
    first = store.update_bindings("sip:alice@example.com", changes("c1", 1, contact(1)), 100.0)
    second = store.update_bindings("sip:alice@example.com", changes("c1", 2, contact(2)), 100.0)
    carol = store.update_bindings("sip:carol@example.com", changes("c9", 7, contact(3)), 100.0)
    batches = store.group_commit.batches
    pool.release()
    assert store.group_commit.batches == batches + 1
    assert success_result_of(warm) is None
    credentials = success_result_of(alice)
    assert isinstance(credentials, SipCredentials) and len(credentials.ha1_md5) == 32
    assert success_result_of(bob) is None  # disabled
    assert [b.contact for b in success_result_of(first)] == ["sip:phone1@192.0.2.1"]
    assert [b.contact for b in success_result_of(second)] == [
        "sip:phone1@192.0.2.1",
        "sip:phone2@192.0.2.2",
    ]
    assert [(b.contact, b.cseq) for b in success_result_of(carol)] == [("sip:phone3@192.0.2.3", 7)]
    stored = success_result_of(store.get_bindings("sip:alice@example.com", 100.0))
    assert [(b.contact, b.cseq, b.expires_at) for b in stored] == [
        ("sip:phone1@192.0.2.1", 1, 3700.0),
        ("sip:phone2@192.0.2.2", 2, 3700.0),
    ]


def test_sql_batch_reads_every_aor_at_once_and_writes_together(
    held: tuple[SQLStore, HeldThreadPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of REGISTERs of several AORs reads their bindings in one statement and sends
    its writes together: refreshes update the stored rows, new contacts are inserted,
    expiries delete, a second REGISTER of an AOR sees the first; no job falls back."""
    store, pool = held
    for n, user in enumerate(("alice", "carol", "dave"), start=1):
        success_result_of(
            store.update_bindings(f"sip:{user}@example.com", changes(f"c{n}", 1, contact(n)), 100.0)
        )
    monkeypatch.setattr(store, "_run_alone", lambda job: pytest.fail(f"fell back: {job}"))
    reads: list[str] = []
    real_prefetch = Batch._prefetch

    def prefetch(batch: Batch, aors: Any) -> Any:
        reads.append(",".join(sorted(set(aors))))
        return real_prefetch(batch, aors)

    monkeypatch.setattr(Batch, "_prefetch", prefetch)
    pool.held = True
    store.get_sip_credentials("alice")
    refresh = store.update_bindings("sip:alice@example.com", changes("c1", 2, contact(1)), 200.0)
    add = store.update_bindings(
        "sip:carol@example.com", changes("c2", 2, contact(2), contact(4)), 200.0
    )
    remove = store.update_bindings("sip:dave@example.com", changes("c3", 2, contact(3, 0)), 200.0)
    again = store.update_bindings("sip:alice@example.com", changes("c1", 3, contact(5)), 200.0)
    new = store.update_bindings("sip:erin@example.com", changes("c5", 1, contact(6)), 200.0)
    pool.release()
    # The first batch is the credentials read alone (the one submitted while idle): it
    # changes no AOR and reads none ahead.
    assert reads == [
        "sip:alice@example.com,sip:carol@example.com,sip:dave@example.com,sip:erin@example.com",
    ]
    assert [(b.contact, b.cseq, b.expires_at) for b in success_result_of(refresh)] == [
        ("sip:phone1@192.0.2.1", 2, 3800.0)
    ]
    assert [b.contact for b in success_result_of(add)] == [
        "sip:phone2@192.0.2.2",
        "sip:phone4@192.0.2.4",
    ]
    assert success_result_of(remove) == []
    assert [b.contact for b in success_result_of(again)] == [
        "sip:phone1@192.0.2.1",
        "sip:phone5@192.0.2.5",
    ]
    assert len(success_result_of(new)) == 1

    def stored(user: str) -> list[tuple[str, int]]:
        return [
            (b.contact, b.cseq)
            for b in success_result_of(store.get_bindings(f"sip:{user}@example.com", 200.0))
        ]

    assert stored("alice") == [("sip:phone1@192.0.2.1", 2), ("sip:phone5@192.0.2.5", 3)]
    assert stored("carol") == [("sip:phone2@192.0.2.2", 2), ("sip:phone4@192.0.2.4", 2)]
    assert stored("dave") == []
    assert stored("erin") == [("sip:phone6@192.0.2.6", 1)]


def test_sql_batch_reads_every_users_credentials_at_once(
    held: tuple[SQLStore, HeldThreadPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of credential reads and verified REGISTERs reads the credentials of all its
    users in one statement, each user once; each job gets what it would have read alone:
    an unknown and a disabled user read as None; a batch of one reads its own."""
    store, pool = held
    dialect = SQLDialect.named(store._engine.dialect.name)
    statements = record_statements(monkeypatch)
    monkeypatch.setattr(store, "_run_alone", lambda job: pytest.fail(f"fell back: {job}"))
    seen: list[object] = []

    def accept(credentials: SipCredentials | None) -> bool:
        seen.append(credentials)
        return credentials is not None

    pool.held = True
    alone = store.get_sip_credentials("alice")  # the batch in flight, alone
    alice = store.get_sip_credentials("alice")
    nobody = store.get_sip_credentials("nobody")
    bob = store.get_sip_credentials("bob")
    verified = store.update_bindings_if_verified(
        "alice", accept, "sip:alice@example.com", changes("c1", 1, contact(1)), 100.0
    )
    batches = store.group_commit.batches
    pool.release()
    assert store.group_commit.batches == batches + 1
    # The batch of one reads its user's; the next all three, in one statement (on
    # PostgreSQL the one that takes the AORs' locks).
    assert [s for s in statements if "FROM users" in s or "JOIN users" in s] == [
        dialect.credentials,
        dialect.lock_aors[1, 3] if dialect.locks_aors else dialect.credentials_of[3],
    ]
    credentials = success_result_of(alone)
    assert isinstance(credentials, SipCredentials)
    assert success_result_of(alice) == credentials
    assert success_result_of(nobody) is None
    assert success_result_of(bob) is None  # disabled
    assert seen == [credentials]
    result = success_result_of(verified)
    assert result.credentials == credentials and result.bindings is not None


class RecordingCursor:
    """A DBAPI cursor that records the statements run through it (``many:`` marks an
    executemany)."""

    def __init__(self, cursor: Any, statements: list[str]) -> None:
        self._cursor = cursor
        self._statements = statements

    def execute(self, statement: str, parameters: Any = ()) -> Any:
        self._statements.append(statement)
        return self._cursor.execute(statement, parameters)

    def executemany(self, statement: str, parameters: Any) -> Any:
        self._statements.append(f"many:{statement}")
        return self._cursor.executemany(statement, parameters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class RecordingCursors(dict[str, Any]):
    """A batch's cursors by statement text, each recording into ``statements``."""

    def __init__(self, cursors: Mapping[str, Any], statements: list[str]) -> None:
        super().__init__()
        self._cursors = cursors
        self._statements = statements

    def __missing__(self, statement: str) -> RecordingCursor:
        return RecordingCursor(self._cursors[statement], self._statements)


def record_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements every batch (and job alone) runs from now on, in order."""
    statements: list[str] = []
    real_init = Batch.__init__

    def init(batch: Batch, cursor: Any, cursors: Any, *args: Any, **kwargs: Any) -> None:
        real_init(
            batch,
            RecordingCursor(cursor, statements),
            RecordingCursors(cursors, statements),
            *args,
            **kwargs,
        )

    monkeypatch.setattr(Batch, "__init__", init)
    return statements


def test_sql_batch_writes_many_bindings_in_one_statement_per_kind_and_write_rows(
    held: tuple[SQLStore, HeldThreadPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's new bindings go in multi-row INSERTs and its refreshes in multi-row
    UPDATE ... FROM (VALUES ...), WRITE_ROWS rows a statement (never executemany): every
    binding is stored as each REGISTER's result says, with removals of other AORs in the
    same batch."""
    store, pool = held
    assert WRITE_ROWS == 32
    dialect = SQLDialect.named(store._engine.dialect.name)
    success_result_of(
        store.update_bindings("sip:old@example.com", changes("o", 1, contact(1)), 10.0)
    )
    monkeypatch.setattr(store, "_run_alone", lambda job: pytest.fail(f"fell back: {job}"))
    statements = record_statements(monkeypatch)
    pool.held = True
    store.get_sip_credentials("alice")
    new = [
        store.update_bindings(
            f"sip:u{n}@example.com", changes(f"c{n}", 1, contact(n), contact(n + 100)), 20.0
        )
        for n in range(1, 21)  # 40 new bindings: 32 in one statement, then 8
    ]
    gone = store.update_bindings("sip:old@example.com", changes("o", 2, contact(1, 0)), 20.0)
    pool.release()
    writes = [s for s in statements if not s.startswith("SELECT")]
    assert writes == [
        dialect.delete_bindings[0],
        dialect.insert_bindings[31],
        dialect.insert_bindings[7],
    ]
    for n, d in enumerate(new, start=1):
        expected = sorted([f"sip:phone{n}@192.0.2.{n}", f"sip:phone{n + 100}@192.0.2.{n + 100}"])
        assert [b.contact for b in success_result_of(d)] == expected
        stored = success_result_of(store.get_bindings(f"sip:u{n}@example.com", 20.0))
        assert [(b.contact, b.call_id, b.cseq, b.expires_at) for b in stored] == [
            (contact, f"c{n}", 1, 3620.0) for contact in expected
        ]
    assert success_result_of(gone) == []
    assert success_result_of(store.get_bindings("sip:old@example.com", 20.0)) == []

    # Refreshes of all 40, with values a NULL or a number in any row (the first row's
    # casts type the VALUES columns on PostgreSQL).
    del statements[:]
    pool.held = True
    store.get_sip_credentials("alice")
    refreshed = [
        store.update_bindings(
            f"sip:u{n}@example.com",
            BindingChanges(
                f"c{n}",
                2,
                [
                    ContactChange(f"sip:phone{n}@192.0.2.{n}", 60, q=0.5 if n % 2 else None),
                    ContactChange(f"sip:phone{n + 100}@192.0.2.{n + 100}", 120),
                ],
                path=("<sip:edge.example.com;lr>",) if n == 2 else (),
                received=None if n == 1 else f"sip:192.0.2.{n}:5060",
                user_agent="phone/1",
            ),
            30.0,
        )
        for n in range(1, 21)
    ]
    pool.release()
    writes = [s for s in statements if not s.startswith("SELECT")]
    assert writes == [dialect.update_bindings[31], dialect.update_bindings[7]]
    for n, d in enumerate(refreshed, start=1):
        stored = success_result_of(store.get_bindings(f"sip:u{n}@example.com", 30.0))
        assert success_result_of(d) == stored
        assert [
            (b.contact, b.cseq, b.expires_at, b.q, b.path, b.received, b.user_agent) for b in stored
        ] == sorted(
            [
                (
                    f"sip:phone{n}@192.0.2.{n}",
                    2,
                    90.0,
                    0.5 if n % 2 else None,
                    ("<sip:edge.example.com;lr>",) if n == 2 else (),
                    None if n == 1 else f"sip:192.0.2.{n}:5060",
                    "phone/1",
                ),
                (
                    f"sip:phone{n + 100}@192.0.2.{n + 100}",
                    2,
                    150.0,
                    None,
                    ("<sip:edge.example.com;lr>",) if n == 2 else (),
                    None if n == 1 else f"sip:192.0.2.{n}:5060",
                    "phone/1",
                ),
            ]
        )


def test_sql_verified_register_alone_in_its_batch_is_three_statements(
    held: tuple[SQLStore, HeldThreadPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A REGISTER with credentials alone in its batch reads the credentials (PostgreSQL:
    with the AOR's lock, one statement), reads the AOR's bindings, and writes its one
    change with one statement: three in all, whatever the change (a refresh, a new
    contact, a removal)."""
    store, _ = held
    dialect = SQLDialect.named(store._engine.dialect.name)
    aor = "sip:alice@example.com"
    success_result_of(store.update_bindings(aor, changes("c1", 1, contact(1)), 100.0))
    statements = record_statements(monkeypatch)
    first = dialect.lock_aors[1, 1] if dialect.locks_aors else dialect.credentials

    def register(cseq: int, change: ContactChange, write: str) -> VerifiedUpdate:
        del statements[:]
        result = success_result_of(
            store.update_bindings_if_verified(
                "alice", lambda c: c is not None, aor, changes("c1", cseq, change), 200.0
            )
        )
        assert statements == [first, dialect.select_bindings, write]
        assert isinstance(result.credentials, SipCredentials)
        assert result.bindings == success_result_of(store.get_bindings(aor, 200.0))
        return result

    refreshed = register(2, contact(1, 60), dialect.update_bindings[0])
    assert [(b.contact, b.cseq, b.expires_at) for b in refreshed.bindings or ()] == [
        ("sip:phone1@192.0.2.1", 2, 260.0)
    ]
    added = register(3, contact(2, 60), dialect.insert_bindings[0])
    assert [b.contact for b in added.bindings or ()] == [
        "sip:phone1@192.0.2.1",
        "sip:phone2@192.0.2.2",
    ]
    removed = register(4, contact(1, 0), dialect.delete_bindings[0])
    assert [b.contact for b in removed.bindings or ()] == ["sip:phone2@192.0.2.2"]


def test_sql_batch_out_of_order_register_fails_alone(held: tuple[SQLStore, HeldThreadPool]) -> None:
    """An out-of-order REGISTER in a batch fails with OutOfOrderRegistration and changes
    nothing; the batch's other REGISTERs are applied."""
    store, pool = held
    success_result_of(
        store.update_bindings("sip:alice@example.com", changes("c1", 5, contact(1)), 100.0)
    )
    pool.held = True
    store.get_sip_credentials("alice")
    stale = store.update_bindings(
        "sip:alice@example.com", changes("c1", 5, contact(1, 0), contact(2)), 101.0
    )
    other = store.update_bindings("sip:carol@example.com", changes("c9", 1, contact(3)), 101.0)
    pool.release()
    failure_result_of(stale, OutOfOrderRegistration)
    assert len(success_result_of(other)) == 1
    stored = success_result_of(store.get_bindings("sip:alice@example.com", 101.0))
    assert [(b.contact, b.cseq) for b in stored] == [("sip:phone1@192.0.2.1", 5)]


def test_sql_batch_failing_in_the_database_is_retried_one_by_one(
    held: tuple[SQLStore, HeldThreadPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database error in one REGISTER of a batch rolls the batch back; then each REGISTER
    runs alone, so the others are applied once and the failing one alone reports."""
    store, pool = held
    real = UpdateBindings.run

    def failing(job: UpdateBindings, batch: Batch) -> Any:
        # In the batch and alone: the job has one implementation.
        if job.aor == "sip:bad@example.com":
            raise RuntimeError("simulated database failure")
        return real(job, batch)

    monkeypatch.setattr(UpdateBindings, "run", failing)
    pool.held = True
    store.get_sip_credentials("alice")
    good = store.update_bindings("sip:alice@example.com", changes("c1", 1, contact(1)), 100.0)
    bad = store.update_bindings("sip:bad@example.com", changes("c2", 1, contact(2)), 100.0)
    also = store.update_bindings("sip:alice@example.com", changes("c1", 2, contact(3)), 100.0)
    pool.release()
    assert [b.cseq for b in success_result_of(good)] == [1]
    failure_result_of(bad, RuntimeError)
    assert [b.contact for b in success_result_of(also)] == [
        "sip:phone1@192.0.2.1",
        "sip:phone3@192.0.2.3",
    ]
    assert success_result_of(store.get_bindings("sip:bad@example.com", 100.0)) == []


def test_sql_batch_verified_registers_keep_the_binding_limit_and_write_only_if_verified(
    held: tuple[SQLStore, HeldThreadPool],
) -> None:
    """Verified REGISTERs of one AOR in one batch (as many phones at once): each reads the
    credentials and checks them in the transaction; the refused one writes nothing, and
    together the accepted ones never pass max_bindings; one batch, nothing falls back."""
    store, pool = held
    aor = "sip:alice@example.com"
    seen: list[object] = []

    def accept(credentials: SipCredentials | None) -> bool:
        seen.append(credentials)
        return credentials is not None

    def limited(call_id: str, n: int) -> BindingChanges:
        return BindingChanges(call_id=call_id, cseq=1, contacts=(contact(n),), max_bindings=2)

    pool.held = True
    store.get_sip_credentials("alice")  # the batch in flight: the next ones share one
    accepted = [
        store.update_bindings_if_verified("alice", accept, aor, limited(f"ua-{n}", n), 100.0)
        for n in range(1, 5)
    ]
    refused = store.update_bindings_if_verified(
        "alice", lambda c: False, aor, limited("mallory", 9), 100.0
    )
    disabled = store.update_bindings_if_verified(
        "bob", accept, "sip:bob@example.com", limited("bob", 8), 100.0
    )
    batches = store.group_commit.batches
    pool.release()
    assert store.group_commit.batches == batches + 1  # all six together
    credentials = success_result_of(store.get_sip_credentials("alice"))
    assert seen == [credentials] * 4 + [None]
    first, second = (success_result_of(d) for d in accepted[:2])
    assert first.credentials == credentials and first.bindings is not None
    assert second.bindings is not None and len(second.bindings) == 2
    for beyond in accepted[2:]:
        failure_result_of(beyond, TooManyBindings)
    assert success_result_of(refused).bindings is None
    assert success_result_of(disabled) == VerifiedUpdate(None, None)
    stored = success_result_of(store.get_bindings(aor, 100.0))
    assert [b.call_id for b in stored] == ["ua-1", "ua-2"]
    assert success_result_of(store.get_bindings("sip:bob@example.com", 100.0)) == []


def test_sql_verified_register_after_an_aborted_batch_verifies_again_alone(
    held: tuple[SQLStore, HeldThreadPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A verified REGISTER in a batch that fails in the database runs again alone: its check
    is called again on the credentials, and the binding is written once."""
    store, pool = held
    real = UpdateBindings.run

    def failing(job: UpdateBindings, batch: Batch) -> Any:
        if job.aor == "sip:bad@example.com":
            raise RuntimeError("simulated database failure")
        return real(job, batch)

    monkeypatch.setattr(UpdateBindings, "run", failing)
    checks: list[object] = []

    def accept(credentials: SipCredentials | None) -> bool:
        checks.append(credentials)
        return True

    pool.held = True
    store.get_sip_credentials("alice")  # the batch in flight: the next two share one
    d = store.update_bindings_if_verified(
        "alice", accept, "sip:alice@example.com", changes("c1", 1, contact(1)), 100.0
    )
    bad = store.update_bindings("sip:bad@example.com", changes("c2", 1, contact(2)), 100.0)
    pool.release()
    failure_result_of(bad, RuntimeError)
    assert [b.contact for b in success_result_of(d).bindings or []] == ["sip:phone1@192.0.2.1"]
    assert len(checks) == 2 and checks[0] == checks[1] is not None
    stored = success_result_of(store.get_bindings("sip:alice@example.com", 100.0))
    assert [(b.contact, b.cseq) for b in stored] == [("sip:phone1@192.0.2.1", 1)]


def test_sql_batch_writes_call_records_in_order_with_registers(
    held: tuple[SQLStore, HeldThreadPool],
) -> None:
    """Call record creations and updates share a batch with REGISTERs; a record is created
    before its updates apply, and an update of an unknown call fails alone (NoSuchCall)."""
    store, pool = held
    pool.held = True
    created = store.create_call("alice", "bob", 100.0, node="n1")
    register = store.update_bindings("sip:alice@example.com", changes("c1", 1, contact(1)), 100.0)
    unknown = store.update_call("0" * 32, CallUpdate(state="connected"))
    batches = store.group_commit.batches
    pool.release()
    assert store.group_commit.batches == batches + 1
    call_id = success_result_of(created)
    assert len(success_result_of(register)) == 1
    failure_result_of(unknown, NoSuchCall)
    pool.held = True
    connected = store.update_call(
        call_id, CallUpdate(state="connected", caller_answered_at=101.0, callee_answered_at=102.5)
    )
    ended = store.update_call(
        call_id,
        CallUpdate(state="ended", ended_at=110.0, end_reason="caller-hangup", who_hung_up="caller"),
    )
    pool.release()
    assert success_result_of(connected).callee_answered_at == 102.5
    record = success_result_of(ended)
    assert (
        record.state,
        record.caller_answered_at,
        record.ended_at,
        record.end_reason,
        record.who_hung_up,
        record.node,
    ) == ("ended", 101.0, 110.0, "caller-hangup", "caller", "n1")
    assert success_result_of(store.get_call(call_id)) == record


def test_sql_batch_writes_call_traces_with_the_call_path(
    held: tuple[SQLStore, HeldThreadPool],
) -> None:
    """Call traces share the call path's batch (one transaction: no write transaction of
    their own for the REGISTERs and call records to wait for)."""
    from clicktodial.store.traces import TraceAppend, TraceLimits
    from clicktodial.testing.contracts import traced

    store, pool = held
    pool.held = True
    created = store.create_call("alice", "bob", 100.0)
    register = store.update_bindings("sip:alice@example.com", changes("c1", 1, contact(1)), 100.0)
    appended = store.append_traces(
        [TraceAppend("a" * 32, (traced(0), traced(1))), TraceAppend("b" * 32, (traced(2),))],
        TraceLimits(max_messages=1),
    )
    batches = store.group_commit.batches
    pool.release()
    assert store.group_commit.batches == batches + 1
    success_result_of(created)
    success_result_of(register)
    assert success_result_of(appended) is None
    trace = success_result_of(store.get_trace("a" * 32))
    assert (trace.messages, trace.dropped) == ((traced(0),), 1)
    assert success_result_of(store.get_trace("b" * 32)).messages == (traced(2),)


def test_sql_call_traces_run_alone_after_an_aborted_batch(
    held: tuple[SQLStore, HeldThreadPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the batch fails in the database, the traces are written in a transaction of
    their own, with the same bounds."""
    from clicktodial.store.traces import TraceAppend, TraceLimits
    from clicktodial.testing.contracts import traced

    store, pool = held
    real = UpdateBindings.run
    failures: list[str] = []

    def failing_in_batches(job: UpdateBindings, batch: Batch) -> Any:
        if not failures:
            failures.append(job.aor)
            raise RuntimeError("simulated database failure")
        return real(job, batch)

    monkeypatch.setattr(UpdateBindings, "run", failing_in_batches)
    pool.held = True
    store.update_bindings("sip:alice@example.com", changes("c1", 1, contact(1)), 100.0)
    appended = store.append_traces(
        [TraceAppend("a" * 32, (traced(0), traced(1), traced(2)))], TraceLimits(max_messages=2)
    )
    batches = store.group_commit.batches
    pool.release()
    assert failures and store.group_commit.batches == batches + 1
    assert success_result_of(appended) is None
    trace = success_result_of(store.get_trace("a" * 32))
    assert (trace.messages, trace.dropped) == ((traced(0), traced(1)), 1)


@frozen
class _BrokenJob(SQLJob):
    """A job whose statement the database refuses."""

    def run(self, batch: Batch) -> None:
        batch.cursor.execute("SELECT missing FROM no_such_table")


def test_sql_database_errors_of_a_job_are_sqlalchemy_errors_and_roll_back(
    held: tuple[SQLStore, HeldThreadPool],
) -> None:
    """A job's DBAPI error leaves the executor as SQLAlchemy's DBAPIError (so the store's
    transient-error rules apply to it) after rolling back what the transaction wrote; the
    store works on afterwards."""
    store, _ = held
    executor = BatchExecutor(store._engine)
    with pytest.raises(DBAPIError) as raised:
        executor.execute(
            [
                UpdateBindings("sip:alice@example.com", changes("c1", 1, contact(1)), 100.0),
                _BrokenJob(),
            ]
        )
    assert "no_such_table" in str(raised.value.orig)
    with pytest.raises(DBAPIError):
        executor.run_alone(_BrokenJob())
    assert success_result_of(store.get_bindings("sip:alice@example.com", 100.0)) == []
    assert (
        len(
            success_result_of(
                store.update_bindings("sip:alice@example.com", changes("c1", 1, contact(1)), 100.0)
            )
        )
        == 1
    )


def test_sql_batches_keep_their_connection_and_open_a_new_one_after_an_error(
    held: tuple[SQLStore, HeldThreadPool],
) -> None:
    """Batches run on one connection the executor keeps (no pool checkout per batch); a
    batch whose connection broke fails (its jobs then run alone and succeed), and the next
    batch opens a new connection."""
    store, _ = held
    executor = BatchExecutor(store._engine)
    alice = "sip:alice@example.com"
    for cseq in (1, 2, 3):
        executor.execute([UpdateBindings(alice, changes("c1", cseq, contact(1)), 100.0)])
    assert executor.connections_opened == 1
    kept = executor._kept
    assert kept is not None
    kept.dbapi_connection.close()  # type: ignore[union-attr]
    with pytest.raises(DBAPIError):
        executor.execute([UpdateBindings(alice, changes("c1", 4, contact(1)), 100.0)])
    (cseq,) = [
        b.cseq
        for b in executor.run_alone(UpdateBindings(alice, changes("c1", 4, contact(1)), 100.0))
    ]
    assert cseq == 4
    [(ok, result)] = executor.execute([UpdateBindings(alice, changes("c1", 5, contact(1)), 100.0)])
    assert ok and [b.cseq for b in result] == [5]
    assert executor.connections_opened == 2
    executor.close()


def test_sql_batch_cursors_per_statement_are_kept_with_the_connection_where_the_dialect_wants(
    held: tuple[SQLStore, HeldThreadPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL each statement text runs on a cursor of its own, kept with the
    batches' connection (the same cursor in the next batch), until more than KEPT_CURSORS
    are kept or a batch fails: then new ones. On SQLite a batch's one cursor serves every
    statement and is closed with its transaction."""
    store, _ = held
    monkeypatch.setattr(sqlbatch, "KEPT_CURSORS", 4)
    executor = BatchExecutor(store._engine)
    dialect = SQLDialect.named(store._engine.dialect.name)
    batches: list[Mapping[str, Any]] = []
    real_init = Batch.__init__

    def init(batch: Batch, cursor: Any, cursors: Mapping[str, Any], *args: Any) -> None:
        batches.append(cursors)
        real_init(batch, cursor, cursors, *args)

    monkeypatch.setattr(Batch, "__init__", init)
    alice = "sip:alice@example.com"

    def register(cseq: int) -> Any:
        [(ok, result)] = executor.execute(
            [UpdateBindings(alice, changes("c1", cseq, contact(1)), 100.0)]
        )
        assert ok, result
        return batches[-1][dialect.select_bindings]

    first, second = register(1), register(2)
    if dialect.cursor_per_statement:
        assert batches[0] is batches[1] and first is second
        # The lock, the read, the insert of the first batch, the update of the second.
        assert len({id(c) for c in batches[1].values()}) == len(batches[1]) == 4
        # Two other statements (a removal, two AORs read at once): past 4, new cursors.
        executor.execute(
            [
                UpdateBindings(alice, changes("c1", 3, contact(1, 0)), 100.0),
                UpdateBindings("sip:bob@example.com", changes("c2", 1, contact(2)), 100.0),
            ]
        )
        assert register(4) is not second
        # After a failed batch, new ones.
        kept = executor._kept
        assert kept is not None
        kept.dbapi_connection.close()  # type: ignore[union-attr]
        with pytest.raises(DBAPIError):
            register(5)
        assert register(6) is not batches[-3][dialect.select_bindings]
    else:
        assert batches[0] is not batches[1] and first is not second
        assert set(batches[1].values()) == {second}
        with pytest.raises(sqlite3.ProgrammingError, match="closed cursor"):
            second.execute("SELECT 1")
    executor.close()


def test_sqlite_batches_of_reads_take_no_write_lock(tmp_path: Path) -> None:
    """A batch of credential reads opens no write transaction: it runs while another
    connection (another daemon, the CLI) holds SQLite's write lock; a batch that writes
    still takes that lock."""
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    for store, _ in _held_store(url):
        executor = BatchExecutor(store._engine)
        other = sqlite3.connect(tmp_path / "store.sqlite", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            [(ok, credentials)] = executor.execute([Credentials("alice")])
            assert ok and isinstance(credentials, SipCredentials)
            other.execute("COMMIT")
        finally:
            other.close()
        [(ok, result)] = executor.execute(
            [UpdateBindings("sip:alice@example.com", changes("c1", 1, contact(1)), 100.0)]
        )
        assert ok and len(result) == 1
        executor.close()
