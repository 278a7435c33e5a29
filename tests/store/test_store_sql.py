"""SQL store specifics: schema checks and migrations, retries, SQLite settings, two nodes."""

from __future__ import annotations

import sqlite3.dbapi2
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError, OperationalError

from clicktodial.store import migrations
from clicktodial.store.errors import (
    OutOfOrderRegistration,
    SchemaOutOfDate,
    StoreConfigError,
    StoreUnavailable,
)
from clicktodial.store.schema import metadata
from clicktodial.store.sql import SQLStore, check_schema, create_sql_engine, upgrade_schema
from clicktodial.store.values import BindingChanges, ContactChange
from clicktodial.testing.contracts import count_at_once
from clicktodial.testing.fakes import (
    InlineReactor,
    InlineThreadPool,
    cheap_password_hasher,
    failure_result_of,
    success_result_of,
)

AOR = "sip:alice@example.com"


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.sqlite'}"


def make_store(url: str, reactor: InlineReactor | None = None, **kwargs: Any) -> SQLStore:
    return SQLStore(
        reactor or InlineReactor(),
        url,
        InlineThreadPool(),
        InlineThreadPool(),
        realm="example.com",
        hasher=cheap_password_hasher(),
        **kwargs,
    )


def started(url: str, reactor: InlineReactor | None = None, **kwargs: Any) -> SQLStore:
    store = make_store(url, reactor, **kwargs)
    success_result_of(store.start())
    return store


def test_check_schema_on_empty_database_says_to_upgrade(url: str) -> None:
    """A database without our schema fails the check with the command that fixes it."""
    with pytest.raises(SchemaOutOfDate, match=r"clicktodial --config FILE db upgrade"):
        check_schema(url)


def test_store_refuses_to_start_without_schema(url: str) -> None:
    """The SQL store does not start on a database whose schema is not at head."""
    store = make_store(url)
    failure = failure_result_of(store.start(), SchemaOutOfDate)
    assert "db upgrade" in str(failure.value)
    success_result_of(store.stop())


def test_upgrade_then_check(url: str) -> None:
    """After db upgrade the schema is at the migrations' head and the check passes."""
    upgrade_schema(url)
    check_schema(url)
    engine = create_engine(url)
    with engine.connect() as connection:
        assert migrations.current_revisions(connection) == migrations.head_revisions()
        assert set(inspect(connection).get_table_names()) >= {
            "users",
            "api_tokens",
            "bindings",
            "calls",
        }
    engine.dispose()


def test_upgrade_is_idempotent(url: str) -> None:
    """Upgrading an up-to-date database changes nothing and does not fail."""
    upgrade_schema(url)
    upgrade_schema(url)
    check_schema(url)


def test_newer_schema_is_reported(url: str) -> None:
    """A database migrated by a newer clicktodial is refused with a message saying so."""
    upgrade_schema(url)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    engine.dispose()
    with pytest.raises(SchemaOutOfDate, match="newer"):
        check_schema(url)


def test_auto_upgrade_creates_schema(url: str) -> None:
    """With auto_upgrade the store migrates the database itself when it starts."""
    store = started(url, auto_upgrade=True)
    check_schema(url)
    assert success_result_of(store.add_user("alice")).username == "alice"
    success_result_of(store.stop())


def test_migrations_match_schema_module(url: str) -> None:
    """Alembic autogenerate finds no difference between the migrations and schema.py."""
    upgrade_schema(url)
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, metadata) == []
    engine.dispose()


def test_downgrade_to_base_and_back(url: str) -> None:
    """Every migration can be undone: downgrading to base leaves only alembic_version."""
    upgrade_schema(url)
    upgrade_schema(url, "head")
    engine = create_sql_engine(url)
    with engine.connect() as connection:
        connection = connection.execution_options(clicktodial_write=True)
        with connection.begin():
            from alembic import command

            command.downgrade(migrations.alembic_config(connection), "base")
        assert set(inspect(connection).get_table_names()) == {"alembic_version"}
    engine.dispose()
    upgrade_schema(url)
    check_schema(url)


def test_sqlite_connection_settings(url: str) -> None:
    """SQLite connections use WAL, enforce foreign keys and wait for locks."""
    upgrade_schema(url)
    engine = create_sql_engine(url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert (connection.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 1000
    with engine.connect() as connection:
        with pytest.raises(IntegrityError), connection.begin():
            connection.execute(
                text(
                    "INSERT INTO api_tokens (digest, token_id, username, label, created_at)"
                    " VALUES ('d', 'i', 'nobody', '', 0)"
                )
            )
    engine.dispose()


@pytest.mark.parametrize("bad_url", ["sqlite://", "sqlite:///:memory:", "mysql://u@h/db"])
def test_unsupported_urls(bad_url: str) -> None:
    """In-memory SQLite and databases other than SQLite and PostgreSQL are refused."""
    with pytest.raises(StoreConfigError) as error:
        create_sql_engine(bad_url)
    assert error.value.key == "url"


class FlakyOperation:
    """Raises ``failures`` transient errors, then returns ``result``."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.calls = 0
        self.error = error or OperationalError("SELECT 1", {}, Exception("database is locked"))

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


def test_sqlite_older_than_update_from_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store needs SQLite 3.33 (UPDATE ... FROM): an older library stops start-up with
    its version in the message."""
    monkeypatch.setattr(sqlite3.dbapi2, "sqlite_version_info", (3, 32, 3))
    with pytest.raises(StoreConfigError, match=r"SQLite 3\.32\.3 is too old.*3\.33\.0 or later"):
        create_sql_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")


def test_transient_errors_are_retried_with_backoff(url: str) -> None:
    """A transient OperationalError is retried after 0.1s, 0.2s, ... until it succeeds."""
    reactor = InlineReactor()
    store = started(url, reactor, auto_upgrade=True)
    operation = FlakyOperation(2)
    d = store._run(operation)
    assert operation.calls == 1
    reactor.pump([0.1])
    assert operation.calls == 2
    reactor.pump([0.1])
    assert operation.calls == 2
    reactor.pump([0.1])
    assert operation.calls == 3
    assert success_result_of(d) == "done"


def test_persistent_errors_make_store_unavailable(url: str) -> None:
    """After the last attempt a transient error becomes StoreUnavailable."""
    reactor = InlineReactor()
    store = started(url, reactor, auto_upgrade=True, attempts=3)
    operation = FlakyOperation(10)
    d = store._run(operation)
    reactor.pump([0.1] * 10)
    failure_result_of(d, StoreUnavailable)
    assert operation.calls == 3


def test_missing_table_is_not_retried(url: str) -> None:
    """SQLite's 'no such table' is a schema problem: it fails at once, without retries."""
    store = started(url, auto_upgrade=True)
    operation = FlakyOperation(1, OperationalError("SELECT", {}, Exception("no such table: x")))
    failure_result_of(store._run(operation), OperationalError)
    assert operation.calls == 1


def test_store_uses_its_thread_pools(url: str) -> None:
    """Database work runs on the database pool and password hashing on the hashing pool."""
    db_pool, hash_pool = InlineThreadPool(), InlineThreadPool()
    store = SQLStore(
        InlineReactor(),
        url,
        db_pool,
        hash_pool,
        realm="example.com",
        hasher=cheap_password_hasher(),
        auto_upgrade=True,
    )
    success_result_of(store.start())
    assert (db_pool.started, hash_pool.started) == (True, True)
    db_jobs = db_pool.jobs
    success_result_of(store.add_user("alice", password="pw"))
    assert hash_pool.jobs == 1
    assert db_pool.jobs > db_jobs
    success_result_of(store.check_password("alice", "pw"))
    assert hash_pool.jobs == 2
    success_result_of(store.stop())
    assert (db_pool.started, hash_pool.started) == (False, False)


def test_two_nodes_share_bindings_and_cseq_rule(url: str) -> None:
    """Two stores on one SQLite file see each other's registrations and CSeq values."""
    upgrade_schema(url)
    node1, node2 = started(url), started(url)
    changes = BindingChanges("call-1", 5, [ContactChange("sip:alice@192.0.2.1", 60)])
    success_result_of(node1.update_bindings(AOR, changes, 100.0))
    assert [b.cseq for b in success_result_of(node2.get_bindings(AOR, 100.0))] == [5]
    failure_result_of(node2.update_bindings(AOR, changes, 100.0), OutOfOrderRegistration)
    success_result_of(
        node2.update_bindings(
            AOR, BindingChanges("call-1", 6, [ContactChange("sip:alice@192.0.2.1", 0)]), 100.0
        )
    )
    assert success_result_of(node1.get_bindings(AOR, 100.0)) == []


def test_large_batch_import(url: str) -> None:
    """10,000 users with SIP passwords only go in as one batch."""
    from clicktodial.store.values import NewUser

    store = started(url, auto_upgrade=True)
    users = [NewUser(f"user{i:05d}", sip_password=f"s{i}") for i in range(10_000)]
    assert success_result_of(store.add_users(users)) == 10_000
    assert len(success_result_of(store.list_users())) == 10_000
    assert success_result_of(store.get_sip_credentials("user09999")) is not None


def test_weaker_password_hash_upgraded_at_login(url: str) -> None:
    """A hash made with other Argon2 parameters is replaced at the next successful login."""
    from argon2 import PasswordHasher

    old = started(url, auto_upgrade=True)
    success_result_of(old.add_user("alice", password="pw"))
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    new = SQLStore(
        InlineReactor(),
        url,
        InlineThreadPool(),
        InlineThreadPool(),
        realm="example.com",
        hasher=stronger,
    )
    success_result_of(new.start())
    record = new._op_get_user("alice")
    assert record is not None and record.password_hash is not None
    assert stronger.check_needs_rehash(record.password_hash)
    assert success_result_of(new.check_password("alice", "pw")) is not None
    record = new._op_get_user("alice")
    assert record is not None and record.password_hash is not None
    assert not stronger.check_needs_rehash(record.password_hash)
    assert success_result_of(new.check_password("alice", "pw")) is not None
    assert success_result_of(new.check_password("alice", "wrong")) is None


def test_claim_active_calls_without_update_returning(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database without UPDATE ... RETURNING: the rows are selected FOR UPDATE, then ended."""
    store = started(url, auto_upgrade=True)
    monkeypatch.setattr(store._engine.dialect, "update_returning", False)
    mine = {success_result_of(store.create_call("a", "b", 1.0, node="n1")) for _ in range(2)}
    other = success_result_of(store.create_call("a", "b", 1.0, node="n2"))
    assert set(success_result_of(store.claim_active_calls("n1", 5.0))) == mine
    assert success_result_of(store.claim_active_calls("n1", 6.0)) == []
    assert success_result_of(store.get_call(other)).active  # type: ignore[union-attr]
    assert {success_result_of(store.get_call(c)).end_reason for c in mine} == {"lost"}  # type: ignore[union-attr]
    success_result_of(store.stop())


def test_many_clicks_at_once_on_sqlite_count_exactly_the_daily_limit(url: str) -> None:
    """Four stores on one SQLite file (as four daemons), 20 counts, a limit of 7: 7 counted."""
    upgrade_schema(url)
    stores = [started(url) for _ in range(4)]
    counted = count_at_once(stores, 5, 7)
    assert (counted.count(True), counted.count(False)) == (7, 13)
    assert success_result_of(stores[0].outbound_calls("bob", "2026-12-06")) == 7
    for store in stores:
        success_result_of(store.stop())
