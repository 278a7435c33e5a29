"""
Event buses (:class:`IEventBus`): in memory for a single node, and over PostgreSQL
``LISTEN``/``NOTIFY`` for several nodes sharing a database.

The PostgreSQL bus keeps one dedicated connection in autocommit mode that
``LISTEN``s to every subscribed channel; a thread of its own waits on it
(psycopg 3's ``notifies()`` generator with a timeout, so it notices new
subscriptions and a stop request) and hands each notification to the reactor
thread with ``callFromThread``.  A lost connection is logged and re-made with
an exponential back-off; the channels are LISTENed again and the
``bus_connected`` subscribers told, since notifications sent meanwhile are
gone (PostgreSQL queues them only for connected listeners).  Messages are
published with ``pg_notify(channel, json)`` on a second connection, used from
a one-thread pool, so one node's messages go out in the order published.
"""

from __future__ import annotations

import json
import random
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any, cast

import psycopg
from sqlalchemy.engine import URL, make_url
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from clicktodial.interfaces import IEventBus

__all__ = [
    "CONNECTED",
    "MAX_PAYLOAD",
    "MemoryEventBus",
    "MemoryHub",
    "PostgresEventBus",
    "Subscribers",
    "encode_message",
    "libpq_conninfo",
]

log = Logger(namespace="clicktodial.cluster.bus")

#: The local channel a bus calls each time it (re)connects: messages may have been missed.
CONNECTED = "bus_connected"

#: PostgreSQL refuses a NOTIFY payload of 8000 bytes or more.
MAX_PAYLOAD = 7999

#: Our channels in PostgreSQL are prefixed, so they cannot clash with another application's.
PG_CHANNEL_PREFIX = "clicktodial_"

_CHANNEL = re.compile(r"[a-z][a-z0-9_]{0,39}")

Callback = Callable[[dict[str, object]], None]


def check_channel(channel: str) -> str:
    """
    :raises ValueError: ``channel`` is not ``[a-z][a-z0-9_]*`` of at most 40
        characters (it becomes a PostgreSQL identifier).
    """
    if not isinstance(channel, str) or not _CHANNEL.fullmatch(channel):
        raise ValueError(
            f"invalid channel name {channel!r} (expected [a-z][a-z0-9_]*, at most 40 characters)"
        )
    return channel


def encode_message(node_id: str, payload: Mapping[str, object]) -> str:
    """
    The JSON text of ``payload`` with ``node`` set to ``node_id``.

    :raises ValueError: not JSON-serialisable, or ``MAX_PAYLOAD`` bytes exceeded.
    """
    try:
        text = json.dumps(
            {**payload, "node": node_id}, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"payload is not JSON-serialisable: {e}") from None
    size = len(text.encode("utf-8"))
    if size > MAX_PAYLOAD:
        raise ValueError(f"payload of {size} bytes is over the {MAX_PAYLOAD}-byte NOTIFY limit")
    return text


def decode_message(text: str) -> dict[str, object] | None:
    """The message in ``text``, or :class:`None` if it is not a JSON object naming its node."""
    try:
        message = json.loads(text)
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("node"), str):
        return None
    return message


class Subscribers:
    """The callbacks of each channel; a callback's exception is logged, not raised."""

    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callback]] = {}

    @property
    def channels(self) -> list[str]:
        """The channels with at least one callback."""
        return [channel for channel, callbacks in self._callbacks.items() if callbacks]

    def add(self, channel: str, callback: Callback) -> Callable[[], None]:
        """Add ``callback`` to ``channel``; returns the function that removes it."""
        callbacks = self._callbacks.setdefault(check_channel(channel), [])
        entry = [callback]  # a distinct object per subscription, even for the same callback
        callbacks.append(entry[0])

        def remove() -> None:
            if entry and entry[0] in callbacks:
                callbacks.remove(entry.pop())

        return remove

    def deliver(self, channel: str, message: dict[str, object]) -> None:
        """Call every callback of ``channel`` with ``message``."""
        for callback in list(self._callbacks.get(channel, ())):
            try:
                callback(message)
            except Exception:
                log.failure("event bus subscriber failed on {channel}", channel=channel)


class MemoryHub:
    """
    What several :class:`MemoryEventBus`es share, like the PostgreSQL server:
    a message published on one reaches the subscribers of every one.
    """

    def __init__(self) -> None:
        self.buses: list[MemoryEventBus] = []

    def publish(self, channel: str, message: dict[str, object]) -> None:
        """Deliver ``message`` on every connected bus."""
        for bus in list(self.buses):
            bus._receive(channel, message)


@implementer(IEventBus)
class MemoryEventBus(Service):
    """
    The bus of a single node (the default), or of several nodes in one
    process sharing a :class:`MemoryHub` (tests).  Messages are delivered on the
    next reactor turn (``callLater(0)``), as they are from PostgreSQL, so a
    publisher never re-enters itself.  Starting it tells the
    ``bus_connected`` subscribers; while stopped it neither sends nor receives.
    """

    def __init__(self, clock: IReactorTime, node_id: str, hub: MemoryHub | None = None) -> None:
        self.clock = clock
        self.node_id = node_id
        self.hub = hub if hub is not None else MemoryHub()
        self._subscribers = Subscribers()
        self.published = 0

    def startService(self) -> None:
        super().startService()
        self.hub.buses.append(self)
        self.clock.callLater(0, self._subscribers.deliver, CONNECTED, {"node": self.node_id})

    def stopService(self) -> None:
        super().stopService()
        if self in self.hub.buses:
            self.hub.buses.remove(self)

    def publish(self, channel: str, payload: Mapping[str, object]) -> Deferred[bool]:
        """See :meth:`IEventBus.publish`."""
        message = decode_message(encode_message(self.node_id, payload))
        check_channel(channel)
        if not self.running:
            return succeed(False)
        self.published += 1
        assert message is not None
        self.hub.publish(channel, message)
        return succeed(True)

    def subscribe(self, channel: str, callback: Callback) -> Callable[[], None]:
        """See :meth:`IEventBus.subscribe`."""
        return self._subscribers.add(channel, callback)

    def _receive(self, channel: str, message: dict[str, object]) -> None:
        self.clock.callLater(0, self._subscribers.deliver, channel, message)


def libpq_conninfo(url: str | URL) -> str:
    """
    The libpq connection string for a SQLAlchemy PostgreSQL URL
    (``postgresql+psycopg://user@/db?host=/var/run/postgresql`` →
    ``postgresql://user@/db?host=/var/run/postgresql``).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError("the postgres event bus needs a PostgreSQL [store] url")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


@implementer(IEventBus)
class PostgresEventBus(Service):
    """
    The bus over PostgreSQL ``LISTEN``/``NOTIFY`` (see the module).

    :param reactor: provides ``IReactorTime`` and ``IReactorFromThreads``.
    :param conninfo: a libpq connection string (:func:`libpq_conninfo`).
    :param poll_interval: seconds the listening thread waits for a
        notification before it checks for new channels and for stop.
    :param min_backoff: seconds before the first reconnection attempt;
        doubled for each failed one up to ``max_backoff``.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        conninfo: str,
        node_id: str,
        *,
        poll_interval: float = 0.5,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        connect_timeout: int = 5,
    ) -> None:
        self.reactor = reactor
        self._from_threads = cast(IReactorFromThreads, reactor)
        self.conninfo = conninfo
        self.node_id = node_id
        self.poll_interval = poll_interval
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self._subscribers = Subscribers()
        self._lock = threading.Lock()
        self._wanted: set[str] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._publish_pool = ThreadPool(minthreads=0, maxthreads=1, name="clicktodial-bus")
        self._publish_connection: psycopg.Connection[Any] | None = None
        #: Whether the listening connection is up (read on the reactor thread).
        self.connected = False

    # -- service -----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopping.clear()
        self._publish_pool.start()
        self._thread = threading.Thread(
            target=self._listen_loop, name="clicktodial-bus-listen", daemon=True
        )
        self._thread.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._stopping.set()
        thread, self._thread = self._thread, None

        def stop_threads() -> None:
            if thread is not None:
                thread.join(self.poll_interval + self.connect_timeout + 1)
            if self._publish_connection is not None:
                self._publish_connection.close()
                self._publish_connection = None

        stopped = deferToThreadPool(self._from_threads, self._publish_pool, stop_threads)
        return stopped.addBoth(lambda _: self._publish_pool.stop())

    # -- IEventBus ---------------------------------------------------------------

    def publish(self, channel: str, payload: Mapping[str, object]) -> Deferred[bool]:
        """See :meth:`IEventBus.publish`."""
        text = encode_message(self.node_id, payload)
        check_channel(channel)
        if not self.running:
            return succeed(False)
        sent = deferToThreadPool(
            self._from_threads, self._publish_pool, self._notify, channel, text
        )

        def failed(failure: Any) -> bool:
            log.warn(
                "event bus: cannot publish on {channel}: {error}",
                channel=channel,
                error=failure.getErrorMessage(),
            )
            return False

        return sent.addErrback(failed)

    def subscribe(self, channel: str, callback: Callback) -> Callable[[], None]:
        """See :meth:`IEventBus.subscribe`."""
        remove = self._subscribers.add(channel, callback)
        if channel != CONNECTED:
            with self._lock:
                self._wanted.add(channel)
        return remove

    def application_name(self, role: str) -> str:
        """What ``pg_stat_activity`` shows for the bus's connection doing ``role``."""
        return f"clicktodial-bus-{role} {self.node_id}"[:63]

    # -- publishing (on the publish thread) -----------------------------------------

    def _notify(self, channel: str, text: str) -> bool:
        # One reconnection attempt: the connection may have died since the last message.
        for attempt in (1, 2):
            try:
                if self._publish_connection is None or self._publish_connection.closed:
                    self._publish_connection = psycopg.connect(
                        self.conninfo,
                        autocommit=True,
                        connect_timeout=self.connect_timeout,
                        application_name=self.application_name("notify"),
                    )
                self._publish_connection.execute(
                    "SELECT pg_notify(%s, %s)", (PG_CHANNEL_PREFIX + channel, text)
                )
                return True
            except psycopg.OperationalError:
                if self._publish_connection is not None:
                    self._publish_connection.close()
                self._publish_connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # -- listening (on the listening thread) -------------------------------------------

    def _call(self, f: Callable[..., object], *args: object, **kwargs: object) -> None:
        self._from_threads.callFromThread(f, *args, **kwargs)

    def _listen_loop(self) -> None:
        delay = self.min_backoff
        while not self._stopping.is_set():
            try:
                with psycopg.connect(
                    self.conninfo,
                    autocommit=True,
                    connect_timeout=self.connect_timeout,
                    application_name=self.application_name("listen"),
                ) as connection:
                    listening: set[str] = set()
                    self._listen_new(connection, listening)
                    self._call(self._connected, sorted(listening))
                    delay = self.min_backoff
                    while not self._stopping.is_set():
                        for notify in connection.notifies(timeout=self.poll_interval):
                            self._call(self._received, notify.channel, notify.payload)
                        self._listen_new(connection, listening)
            except psycopg.Error as e:
                if self._stopping.is_set():
                    break
                self._call(self._disconnected, str(e).strip() or type(e).__name__, delay)
                # Jitter: nodes that lost the server together do not come back in lockstep.
                self._stopping.wait(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.max_backoff)
        self._call(self._set_connected, False)

    def _listen_new(self, connection: psycopg.Connection[Any], listening: set[str]) -> None:
        with self._lock:
            new = self._wanted - listening
        for channel in sorted(new):
            # The channel name was checked ([a-z][a-z0-9_]*): safe as an identifier.
            connection.execute(f"LISTEN {PG_CHANNEL_PREFIX}{channel}")
            listening.add(channel)

    # -- on the reactor thread -------------------------------------------------------

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected

    def _connected(self, channels: list[str]) -> None:
        self.connected = True
        log.info(
            "event bus connected to PostgreSQL, listening on {channels}",
            channels=", ".join(channels) or "nothing yet",
        )
        self._subscribers.deliver(CONNECTED, {"node": self.node_id})

    def _disconnected(self, error: str, delay: float) -> None:
        self.connected = False
        log.warn(
            "event bus: PostgreSQL connection failed or lost ({error}); reconnecting in"
            " about {delay}s",
            error=error,
            delay=round(delay, 1),
        )

    def _received(self, pg_channel: str, text: str) -> None:
        channel = pg_channel.removeprefix(PG_CHANNEL_PREFIX)
        message = decode_message(text)
        if message is None:
            log.warn("event bus: dropped a malformed message on {channel}", channel=channel)
            return
        self._subscribers.deliver(channel, message)
