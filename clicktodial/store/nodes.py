"""
The cluster's nodes table in the SQL store's database (``[cluster] bus = postgres``): the
SQL of :class:`INodeRegistry <clicktodial.interfaces.INodeRegistry>`, which the sql backend provides
through :class:`~clicktodial.interfaces.IClusterStorage`. What the rows mean and how
dead nodes are claimed: :obj:`clicktodial.cluster.nodes`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from sqlalchemy import URL, Connection, delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from clicktodial.interfaces import INodeRegistry
from clicktodial.store.schema import calls, nodes
from clicktodial.store.sql import create_sql_engine

__all__ = ["SQLNodeRegistry"]

T = TypeVar("T")


@implementer(INodeRegistry)
class SQLNodeRegistry:
    """
    The ``nodes`` table through its own small engine and one-thread pool, so
    heartbeats never queue behind REGISTER traffic on the store's pool.
    """

    def __init__(
        self, reactor: IReactorTime, url: str | URL, threadpool: ThreadPool | None = None
    ) -> None:
        self._from_threads = cast(IReactorFromThreads, reactor)
        self._engine = create_sql_engine(url, pool_size=1)
        self._pool = (
            threadpool
            if threadpool is not None
            else ThreadPool(minthreads=0, maxthreads=1, name="clicktodial-nodes")
        )

    def start(self) -> None:
        """Start the thread pool."""
        self._pool.start()

    def stop(self) -> None:
        """Stop the thread pool and close the connection."""
        self._pool.stop()
        self._engine.dispose()

    def _run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self._from_threads, self._pool, f, *args)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._engine.connect() as connection:
            connection = connection.execution_options(clicktodial_write=True)
            with connection.begin():
                yield connection

    def heartbeat(self, node: str, at: float) -> Deferred[bool]:
        return self._run(self._heartbeat, node, at)

    def _heartbeat(self, node: str, at: float) -> bool:
        with self._write() as connection:
            updated = connection.execute(
                update(nodes).where(nodes.c.node == node).values(last_seen=at)
            ).rowcount
        if updated:
            return True
        try:
            with self._write() as connection:
                connection.execute(insert(nodes).values(node=node, started_at=at, last_seen=at))
        except IntegrityError:
            # Another process inserted it meanwhile: same node id twice (a misconfiguration).
            return self._heartbeat(node, at)
        return False

    def stale_nodes(self, cutoff: float) -> Deferred[list[str]]:
        return self._run(self._stale_nodes, cutoff)

    def _stale_nodes(self, cutoff: float) -> list[str]:
        orphans = (
            select(calls.c.node)
            .distinct()
            .where(
                calls.c.ended_at.is_(None),
                calls.c.node.is_not(None),
                ~exists().where(nodes.c.node == calls.c.node),
            )
        )
        with self._engine.connect() as connection:
            stale = set(connection.scalars(select(nodes.c.node).where(nodes.c.last_seen < cutoff)))
            stale.update(n for n in connection.scalars(orphans) if n is not None)
        return sorted(stale)

    def claim(self, node: str, cutoff: float) -> Deferred[bool]:
        return self._run(self._claim, node, cutoff)

    def _claim(self, node: str, cutoff: float) -> bool:
        with self._write() as connection:
            deleted = connection.execute(
                delete(nodes).where(nodes.c.node == node, nodes.c.last_seen < cutoff)
            ).rowcount
            if deleted:
                return True
            alive = connection.scalar(select(nodes.c.node).where(nodes.c.node == node))
        return alive is None

    def remove(self, node: str) -> Deferred[None]:
        return self._run(self._remove, node)

    def _remove(self, node: str) -> None:
        with self._write() as connection:
            connection.execute(delete(nodes).where(nodes.c.node == node))
