"""The store contract and the multi-node guarantees on a real PostgreSQL server."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import URL, Engine, create_engine, text, update

from clicktodial.interfaces import IStoreBackend
from clicktodial.store import sqljobs
from clicktodial.store.errors import OutOfOrderRegistration, TooManyBindings
from clicktodial.store.plugins import SQLBackendFactory, StoreEnvironment
from clicktodial.store.schema import bindings, calls, metadata
from clicktodial.store.sql import SQLStore, check_schema_connection, upgrade_schema
from clicktodial.store.sqljobs import UpdateBindings, VerifiedUpdateBindings
from clicktodial.store.values import BindingChanges, ContactChange
from clicktodial.testing.contracts import (
    CallTraceStoreContract,
    OutboundQuotaContract,
    StoreContract,
    count_at_once,
)
from clicktodial.testing.fakes import (
    InlineReactor,
    InlineThreadPool,
    cheap_password_hasher,
    success_result_of,
)
from clicktodial.testing.postgres import scratch_schema, test_database_url

pytestmark = pytest.mark.interop

PG_URL = test_database_url()
AOR = "sip:alice@example.com"
CONTACT = "sip:alice@127.0.0.1:5062"
needs_postgresql = pytest.mark.skipif(
    PG_URL is None, reason="CLICKTODIAL_TEST_PG_URL is set to the empty string"
)


def lock_waiters(
    observer: Engine, thread: threading.Thread, attempts: int, table: str | None = None
) -> int:
    """
    Wait (bounded: ``attempts`` × 0.05 s) until ``thread`` is blocked on a row lock of this
    database (in a query naming ``table``, if given), or has ended; return how many
    sessions wait for a lock. The observer is outside any transaction: pg_stat_activity is
    a per-transaction snapshot.
    """
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND datname = current_database()"
    )
    if table is not None:
        query += f" AND query LIKE '%{table}%'"
    waiting = 0
    with observer.connect() as watching:
        for _ in range(attempts):
            waiting = watching.scalar(text(query)) or 0
            if waiting or not thread.is_alive():
                break
            thread.join(0.05)
    return waiting


@needs_postgresql
class TestPostgreSQLStore(StoreContract, CallTraceStoreContract, OutboundQuotaContract):
    """The SQL store on PostgreSQL keeps the contract (and keeps call traces)."""

    def make_store(
        self, environment: StoreEnvironment, request: pytest.FixtureRequest
    ) -> IStoreBackend:
        assert PG_URL is not None
        schema = scratch_schema(PG_URL)
        url = schema.__enter__()
        request.addfinalizer(lambda: schema.__exit__(None, None, None))
        upgrade_schema(url)
        return SQLBackendFactory().create(
            {"url": url.render_as_string(hide_password=False)}, environment
        )


@pytest.fixture
def pg_url() -> Iterator[URL]:
    """A scratch schema at the migrations' head."""
    if PG_URL is None:
        pytest.skip("CLICKTODIAL_TEST_PG_URL is set to the empty string")
    with scratch_schema(PG_URL) as url:
        upgrade_schema(url)
        yield url


def test_migrations_match_schema_module(pg_url: URL) -> None:
    """On PostgreSQL too, autogenerate finds no difference between migrations and schema.py."""
    engine = create_engine(pg_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, metadata) == []
        check_schema_connection(connection)
    engine.dispose()


@pytest.mark.parametrize("binding_existed", [True, False])
def test_register_waits_for_another_node(pg_url: URL, binding_existed: bool) -> None:
    """
    A REGISTER for an AOR whose binding another node is writing waits for that node's
    transaction, then sees its write instead of overwriting it: here the other node stored
    CSeq 10 for the same Call-ID, so ours (CSeq 10) is out of order. This holds whether the
    other node rewrote an existing binding (our read waits on its row lock) or inserted a new
    one (our insert waits on the primary key, fails, and our REGISTER starts over).
    """
    store = SQLStore(
        InlineReactor(),
        pg_url,
        InlineThreadPool(),
        InlineThreadPool(),
        realm="example.com",
        hasher=cheap_password_hasher(),
    )
    success_result_of(store.start())
    if binding_existed:
        success_result_of(
            store.update_bindings(
                AOR, BindingChanges("call-1", 5, [ContactChange(CONTACT, 60)]), 100.0
            )
        )
    other_node = create_engine(pg_url)
    observer = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    outcome: list[object] = []

    def register() -> None:
        try:
            outcome.append(
                store._op_update_bindings(
                    AOR, BindingChanges("call-1", 10, [ContactChange(CONTACT, 60)]), 100.0
                )
            )
        except Exception as e:
            outcome.append(e)

    with other_node.connect() as connection:
        transaction = connection.begin()
        if binding_existed:
            connection.execute(bindings.update().where(bindings.c.aor == AOR).values(cseq=10))
        else:
            connection.execute(
                bindings.insert().values(
                    aor=AOR,
                    binding_key="uri:" + CONTACT,
                    contact=CONTACT,
                    expires_at=160.0,
                    call_id="call-1",
                    cseq=10,
                    path="[]",
                )
            )
        thread = threading.Thread(target=register)
        thread.start()
        # Wait (bounded) until our REGISTER is blocked by the other node's transaction.
        waiting = lock_waiters(observer, thread, 200, "bindings")
        assert waiting == 1 and thread.is_alive() and outcome == []
        transaction.commit()
    thread.join(30)
    assert not thread.is_alive()
    [error] = outcome
    assert isinstance(error, OutOfOrderRegistration)
    assert [b.cseq for b in success_result_of(store.get_bindings(AOR, 100.0))] == [10]
    other_node.dispose()
    observer.dispose()
    success_result_of(store.stop())


def test_two_nodes_share_one_database(pg_url: URL) -> None:
    """Users and bindings written through one node are seen by another."""
    node1, node2 = (
        SQLStore(
            InlineReactor(),
            pg_url,
            InlineThreadPool(),
            InlineThreadPool(),
            realm="example.com",
            hasher=cheap_password_hasher(),
        )
        for _ in range(2)
    )
    for node in (node1, node2):
        success_result_of(node.start())
    success_result_of(node1.add_user("alice", password="pw", sip_password="s"))
    assert success_result_of(node2.check_password("alice", "pw")) is not None
    success_result_of(
        node2.update_bindings(AOR, BindingChanges("c", 1, [ContactChange(CONTACT, 60)]), 100.0)
    )
    assert [b.contact for b in success_result_of(node1.get_bindings(AOR, 100.0))] == [CONTACT]
    for node in (node1, node2):
        success_result_of(node.stop())


@pytest.mark.parametrize("node_b_runs", ["alone", "in a batch", "verified in a batch"])
def test_two_nodes_registering_at_once_never_exceed_max_bindings(
    pg_url: URL, monkeypatch: pytest.MonkeyPatch, node_b_runs: str
) -> None:
    """
    [registrar] max_contacts holds across nodes: node A adds 2 bindings to an AOR that has
    none and is held inside its transaction; node B, from another Call-ID, adds a third
    with the limit 2. B waits for A's transaction (there is no row yet that FOR UPDATE could
    lock: the AOR's lock does it), then sees A's bindings and is refused; the AOR ends with
    A's 2 bindings. Node B runs its REGISTER alone or as the group commit's batch, or as a
    verified REGISTER in a batch (its lock taken by the statement that reads the
    credentials, also of a user who does not exist).
    """
    node_a, node_b = (
        SQLStore(
            InlineReactor(),
            pg_url,
            InlineThreadPool(),
            InlineThreadPool(),
            realm="example.com",
            hasher=cheap_password_hasher(),
        )
        for _ in range(2)
    )
    for node in (node_a, node_b):
        success_result_of(node.start())
    planning, release = threading.Event(), threading.Event()
    real_plan = sqljobs.plan_register

    def plan_held_on_node_a(*args: object, **kwargs: object) -> object:
        if threading.current_thread().name == "node-a":
            planning.set()
            release.wait(30)
        return real_plan(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sqljobs, "plan_register", plan_held_on_node_a)
    outcomes: dict[str, object] = {}

    def register_a() -> None:
        outcomes["a"] = node_a._op_update_bindings(
            AOR,
            BindingChanges(
                "phone-a",
                1,
                [ContactChange(CONTACT, 60), ContactChange(CONTACT + ";x=1", 60)],
                max_bindings=2,
            ),
            100.0,
        )

    def register_b() -> None:
        changes = BindingChanges(
            "phone-b", 1, [ContactChange("sip:b@127.0.0.1:5070", 60)], max_bindings=2
        )
        try:
            if node_b_runs == "alone":
                outcomes["b"] = node_b._op_update_bindings(AOR, changes, 100.0)
            elif node_b_runs == "verified in a batch":
                job = VerifiedUpdateBindings("nobody", lambda c: c is None, AOR, changes, 100.0)
                [(_, outcomes["b"])] = node_b._batches.execute([job])
            else:
                [(_, outcomes["b"])] = node_b._batches.execute(
                    [UpdateBindings(AOR, changes, 100.0)]
                )
        except Exception as e:
            outcomes["b"] = e

    thread_a = threading.Thread(target=register_a, name="node-a")
    thread_b = threading.Thread(target=register_b, name="node-b")
    observer = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    thread_a.start()
    assert planning.wait(30)
    thread_b.start()
    waiting = lock_waiters(observer, thread_b, 100)
    release.set()
    thread_a.join(30)
    thread_b.join(30)
    assert not thread_a.is_alive() and not thread_b.is_alive()
    assert isinstance(outcomes["b"], TooManyBindings), outcomes
    assert waiting == 1
    assert [b.call_id for b in success_result_of(node_a.get_bindings(AOR, 100.0))] == [
        "phone-a",
        "phone-a",
    ]
    observer.dispose()
    for node in (node_a, node_b):
        success_result_of(node.stop())


def test_two_nodes_claiming_lost_calls_at_once_claim_each_call_once(pg_url: URL) -> None:
    """
    IActiveCallClaims across nodes: node A claims a dead node's active calls and is held
    inside its transaction; node B's claim of the same node waits on A's row locks, then
    finds those calls ended and claims none of them (so each call's media relay session is
    deleted by one node), but does claim the call A's claim did not lock.
    """
    store = SQLStore(
        InlineReactor(),
        pg_url,
        InlineThreadPool(),
        InlineThreadPool(),
        realm="example.com",
        hasher=cheap_password_hasher(),
    )
    success_result_of(store.start())
    lost = {
        success_result_of(store.create_call("alice", "bob", 1.0, node="dead")) for _ in range(3)
    }
    node_a = create_engine(pg_url)
    observer = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    outcome: list[object] = []

    def claim_b() -> None:
        try:
            outcome.append(store._op_claim_active_calls("dead", 60.0, "lost"))
        except Exception as e:
            outcome.append(e)

    with node_a.connect() as connection:
        transaction = connection.begin()
        claimed_a = {
            row[0]
            for row in connection.execute(
                update(calls)
                .where(calls.c.ended_at.is_(None), calls.c.node == "dead")
                .values(ended_at=50.0, end_reason="lost", who_hung_up="system")
                .returning(calls.c.call_id)
            )
        }
        # Created after A's claim locked its rows: only B can claim it.
        late = success_result_of(store.create_call("alice", "bob", 2.0, node="dead"))
        thread = threading.Thread(target=claim_b)
        thread.start()
        waiting = lock_waiters(observer, thread, 200, "calls")
        assert waiting == 1 and thread.is_alive() and outcome == []
        transaction.commit()
    thread.join(30)
    assert not thread.is_alive()
    assert claimed_a == lost
    assert outcome == [[late]]
    assert {success_result_of(store.get_call(c)).ended_at for c in lost} == {50.0}  # type: ignore[union-attr]
    node_a.dispose()
    observer.dispose()
    success_result_of(store.stop())


@pytest.mark.parametrize("a_commits", [True, False])
def test_two_nodes_counting_outbound_calls_at_once_never_pass_the_daily_limit(
    pg_url: URL, a_commits: bool
) -> None:
    """
    IOutboundQuota across nodes: node A counts alice's last allowed call of the day and is
    held inside its transaction; node B's count waits on A's row lock, then is refused if A
    committed (the limit is reached) or counted if A rolled back.
    """
    store = SQLStore(
        InlineReactor(),
        pg_url,
        InlineThreadPool(),
        InlineThreadPool(),
        realm="example.com",
        hasher=cheap_password_hasher(),
    )
    success_result_of(store.start())
    assert success_result_of(store.count_outbound_call("alice", "2026-12-06", 2))
    node_a = create_engine(pg_url)
    observer = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    outcome: list[object] = []

    def count_b() -> None:
        try:
            outcome.append(success_result_of(store.count_outbound_call("alice", "2026-12-06", 2)))
        except Exception as e:
            outcome.append(e)

    with node_a.connect() as connection:
        transaction = connection.begin()
        connection.execute(
            text(
                "UPDATE outbound_counts SET count = count + 1"
                " WHERE username = 'alice' AND day = '2026-12-06'"
            )
        )
        thread = threading.Thread(target=count_b)
        thread.start()
        waiting = lock_waiters(observer, thread, 200, "outbound_counts")
        assert waiting == 1 and thread.is_alive() and outcome == []
        if a_commits:
            transaction.commit()
        else:
            transaction.rollback()
    thread.join(30)
    assert not thread.is_alive()
    assert outcome == [not a_commits]
    assert success_result_of(store.outbound_calls("alice", "2026-12-06")) == 2
    node_a.dispose()
    observer.dispose()
    success_result_of(store.stop())


def test_many_clicks_at_once_count_exactly_the_daily_limit(pg_url: URL) -> None:
    """Eight stores (as eight daemons) counting 40 calls against a limit of 10: 10 counted."""
    stores = [
        SQLStore(
            InlineReactor(),
            pg_url,
            InlineThreadPool(),
            InlineThreadPool(),
            realm="example.com",
            hasher=cheap_password_hasher(),
        )
        for _ in range(8)
    ]
    for store in stores:
        success_result_of(store.start())
    counted = count_at_once(stores, 5, 10)
    assert (counted.count(True), counted.count(False)) == (10, 30)
    assert success_result_of(stores[0].outbound_calls("bob", "2026-12-06")) == 10
    for store in stores:
        success_result_of(store.stop())
