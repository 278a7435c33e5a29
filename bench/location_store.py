"""
The location store alone: ``update_bindings`` (a REGISTER refresh) and ``get_bindings`` (a
call's look-up) per second, on the SQL store (SQLite file, PostgreSQL) and on the Redis store
of ``plugins/clicktodial-redis``. Prints, asserts nothing.

    python3 bench/location_store.py [--ops N] [--threads T] [--pg URL | --no-pg]
                                    [--redis URL] [--no-redis-tcp]

Method (docs/benchmarks.md, "The location store alone"):

- N operations per store and kind, on N/4 AORs of one contact each (so most updates are
  refreshes: the registrar's steady state), first one at a time from one thread (the latency
  of one operation), then, for Redis, from T threads at once on distinct AORs (what the
  store's thread pool does under load). The SQL store is driven from one thread only: its
  group commit queues updates on the reactor thread, which is one thread.
- The stores run on inline thread pools: the benchmark's own threads call into them as the
  pool's workers do in the daemon; a Deferred has fired when the call returns.
- Redis: a ``redis-server`` this script starts on a unix socket in a scratch directory (no
  persistence; killed by PID at the end), and, unless ``--no-redis-tcp``, the server named by
  ``--redis`` (default ``redis://127.0.0.1:6379/15``) over TCP, under a key prefix of its
  own that is deleted afterwards. Nothing else on that server is touched.

Bounded: N is capped at 50,000; the run takes about a minute on this machine.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
from bench_store import sql_store  # bench/ is on sys.path: the store as bench_store.py builds it

from clicktodial.store.sql import upgrade_schema
from clicktodial.store.values import BindingChanges, ContactChange
from clicktodial.testing.fakes import (
    InlineReactor,
    InlineThreadPool,
    success_result_of,
)
from clicktodial.testing.postgres import DEFAULT_URL, scratch_schema

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "clicktodial-redis"))
from clicktodial_redis import RedisLocationStore
from clicktodial_redis.testing import RedisServer, delete_prefix


def update(store: Any, n: int, cseq: int) -> None:
    aor = f"sip:user{n}@example.com"
    changes = BindingChanges(
        f"call-{n}",
        cseq,
        [ContactChange(f"sip:user{n}@127.0.0.1:{5000 + n % 1000}", 3600)],
        user_agent="bench",
        max_bindings=10,
    )
    success_result_of(store.update_bindings(aor, changes, 1000.0 + cseq))


def lookup(store: Any, n: int, cseq: int) -> None:
    success_result_of(store.get_bindings(f"sip:user{n}@example.com", 1000.0 + cseq))


#: Each timed run's CSeqs start above the previous run's, so every update is in order.
_runs = itertools.count()


def rate(op: Callable[[Any, int, int], None], store: Any, count: int, threads: int) -> float:
    aors = max(1, count // 4)
    base = next(_runs) * 100_000
    if threads == 1:
        started = time.perf_counter()
        for i in range(count):
            op(store, i % aors, base + 1 + i // aors)
        return count / (time.perf_counter() - started)
    # Each thread owns distinct AORs, as concurrent REGISTERs of different phones do.
    per_thread = count // threads

    def worker(t: int) -> None:
        for i in range(per_thread):
            op(store, 1_000_000 + t * 10_000 + i % 100, base + 2 + i // 100)

    for t in range(threads):  # the AORs exist before lookups are timed
        for i in range(100):
            update(store, 1_000_000 + t * 10_000 + i, base + 1)
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return per_thread * threads / (time.perf_counter() - started)


def bench(name: str, store: Any, count: int, threads: int) -> None:
    figures = []
    for label, op in (("update", update), ("get", lookup)):
        one = rate(op, store, count, 1)
        if threads > 1:
            many = rate(op, store, count, threads)
            figures.append(f"{label} {one:7.0f}/s, {threads} threads {many:7.0f}/s")
        else:
            figures.append(f"{label} {one:7.0f}/s")
    print(f"{name:14} " + "   ".join(figures), flush=True)


def redis_store(url: str, prefix: str, threads: int) -> RedisLocationStore:
    client = redis.Redis.from_url(url, max_connections=threads + 1)
    store = RedisLocationStore(
        InlineReactor(), client, InlineThreadPool(), key_prefix=prefix, expiry_events="off"
    )
    success_result_of(store.start())
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--pg", default=os.environ.get("CLICKTODIAL_TEST_PG_URL", DEFAULT_URL))
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--no-redis-tcp", action="store_true")
    args = parser.parse_args()
    count = min(args.ops, 50_000)
    threads = args.threads
    print(
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f};"
        f" {threading.active_count()} thread(s); {count} operations per figure",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{scratch}/bench.sqlite"
        upgrade_schema(url)
        # The SQL store's group commit queues updates on the reactor thread: it is driven
        # from one thread only (its own pool's concurrency is bench/bench_store.py's).
        bench("sqlite", sql_store(url, threads), count, 1)
    if not args.no_pg and args.pg:
        from sqlalchemy import make_url

        with scratch_schema(make_url(args.pg)) as pg_url:
            upgrade_schema(pg_url)
            bench("postgresql", sql_store(pg_url.render_as_string(False), threads), count, 1)
    with tempfile.TemporaryDirectory(prefix="ctd-redis-") as scratch:
        server = RedisServer(Path(scratch))
        try:
            bench("redis (unix)", redis_store(server.start(), "bench:", threads), count, threads)
        finally:
            server.stop()
    if not args.no_redis_tcp:
        prefix = f"clicktodial-bench:{uuid.uuid4().hex}:"
        try:
            bench("redis (tcp)", redis_store(args.redis, prefix, threads), count, threads)
        except redis.ConnectionError as e:
            print(f"redis (tcp)    not reachable at {args.redis}: {e}", flush=True)
        finally:
            try:
                delete_prefix(args.redis, prefix)
            except redis.ConnectionError:
                pass


if __name__ == "__main__":
    main()
