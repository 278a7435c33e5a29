"""
Store throughput: REGISTER updates per second and user import rates. Prints, asserts nothing.

    python3 bench/bench_store.py [--registers N] [--threads T] [--pg URL | --no-pg]

- REGISTER: ``update_bindings`` refreshing one contact per AOR, as a registrar does, on the
  memory store and the SQL store (SQLite file, PostgreSQL), first one at a time (the latency of
  one transaction), then from T threads at once on distinct AORs (what the database thread
  pool does under load).
- Import: 10,000 users with SIP passwords only (one batched transaction), and a few with web
  passwords (Argon2id on the hashing pool, one thread per core, versus one thread).

Bounded: every loop has a fixed count; the whole run takes well under a minute.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher

from clicktodial.store.memory import MemoryStore
from clicktodial.store.sql import SQLStore, upgrade_schema
from clicktodial.store.values import BindingChanges, ContactChange, NewUser
from clicktodial.testing.fakes import (
    InlineReactor,
    InlineThreadPool,
    cheap_password_hasher,
    success_result_of,
)
from clicktodial.testing.postgres import DEFAULT_URL, scratch_schema


def register_op(store: MemoryStore | SQLStore) -> Callable[[int, int], None]:
    """One REGISTER of AOR number ``n`` with CSeq ``cseq``, run synchronously."""

    def register(n: int, cseq: int) -> None:
        aor = f"sip:user{n}@example.com"
        changes = BindingChanges(
            f"call-{n}",
            cseq,
            [ContactChange(f"sip:user{n}@127.0.0.1:{5000 + n % 1000}", 3600)],
            user_agent="bench",
        )
        success_result_of(store.update_bindings(aor, changes, 1000.0 + cseq))

    return register


def bench_registers(name: str, store: MemoryStore | SQLStore, count: int, threads: int) -> None:
    register = register_op(store)
    aors = max(1, count // 4)
    started = time.perf_counter()
    for i in range(count):
        register(i % aors, 1 + i // aors)
    serial = count / (time.perf_counter() - started)
    line = f"{name:10} REGISTER one at a time: {serial:8.0f}/s"
    if threads > 1 and not isinstance(store, MemoryStore):
        # Each thread owns distinct AORs, as concurrent REGISTERs of different phones do.
        per_thread = count // threads

        def worker(t: int) -> None:
            for i in range(per_thread):
                register(1_000_000 + t * 10_000 + i % 100, 1 + i // 100)

        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(worker, range(threads)))
        concurrent = per_thread * threads / (time.perf_counter() - started)
        line += f"   {threads} threads: {concurrent:8.0f}/s"
    print(line, flush=True)


def sql_store(url: str, threads: int) -> SQLStore:
    # Inline pools: the benchmark's own threads call into the store, like the database
    # thread pool's workers do in the daemon.
    store = SQLStore(
        InlineReactor(),
        url,
        InlineThreadPool(),
        InlineThreadPool(),
        realm="example.com",
        hasher=cheap_password_hasher(),
        pool_size=max(threads, 1),
    )
    success_result_of(store.start())
    return store


def bench_import(url: str) -> None:
    store = sql_store(url, 1)
    users = [NewUser(f"imp{i:05d}", sip_password=f"s{i}") for i in range(10_000)]
    started = time.perf_counter()
    success_result_of(store.add_users(users))
    elapsed = time.perf_counter() - started
    print(
        f"import 10,000 users, SIP passwords only (SQLite): {elapsed:.2f}s"
        f" ({10_000 / elapsed:.0f} users/s)",
        flush=True,
    )


def bench_argon2(count: int) -> None:
    cores = os.cpu_count() or 2
    passwords = [f"password-{i}" for i in range(count)]
    for threads in sorted({1, cores}):
        hasher = PasswordHasher()
        with ThreadPoolExecutor(threads) as pool:
            started = time.perf_counter()
            list(pool.map(hasher.hash, passwords))
            elapsed = time.perf_counter() - started
        print(
            f"Argon2id (argon2-cffi defaults) on {threads} thread(s): "
            f"{count / elapsed:.1f} hashes/s",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registers", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--pg", default=os.environ.get("CLICKTODIAL_TEST_PG_URL", DEFAULT_URL))
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--hashes", type=int, default=8)
    args = parser.parse_args()
    count = min(args.registers, 50_000)
    print(
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f};"
        f" {threading.active_count()} thread(s)",
        flush=True,
    )

    memory = MemoryStore(InlineReactor(), realm="example.com", hash_pool=InlineThreadPool())
    bench_registers("memory", memory, count, 1)
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{scratch}/bench.sqlite"
        upgrade_schema(url)
        bench_registers("sqlite", sql_store(url, args.threads), count, args.threads)
        bench_import(url)
    if not args.no_pg and args.pg:
        from sqlalchemy import make_url

        with scratch_schema(make_url(args.pg)) as pg_url:
            upgrade_schema(pg_url)
            bench_registers(
                "postgresql",
                sql_store(pg_url.render_as_string(False), args.threads),
                count,
                args.threads,
            )
    bench_argon2(min(args.hashes, 32))


if __name__ == "__main__":
    main()
