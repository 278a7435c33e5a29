"""
SIP registrations (RFC 3261 §10.3 bindings) in Redis.

Data model, under the configured ``key_prefix`` P (README.md has the full picture):

- ``P bindings:AOR``: a hash, one field per binding (field = the binding key of
  :meth:`ContactChange.binding_key`, value = the binding's fields as JSON). Its TTL is the
  latest expiry of its bindings, so Redis deletes an AOR whose bindings all expired.
- ``P expiry``: a sorted set, member ``["AOR", "KEY"]`` (JSON), score = the binding's
  ``expires_at``: what :meth:`purge_expired` deletes without looking at every AOR.
- ``P aors``: a sorted set, member = AOR, score = its latest ``expires_at``: the registered
  AORs at ``now`` are one ``ZRANGEBYSCORE`` (no ``KEYS``, no ``SCAN``).
- ``P changes``: a pub/sub channel; every write publishes the AOR it changed.

One REGISTER is applied with optimistic locking: ``WATCH`` the AOR's hash, read it, plan the
update with clicktodial's own :func:`plan_register` (the RFC 3261 §10.3 steps 6–7 rules, the
CSeq/Call-ID check and the ``max_bindings`` limit, exactly as the memory and SQL stores apply
them), then ``MULTI``/``EXEC`` the writes. If another daemon changed the AOR in between,
``EXEC`` applies nothing and the REGISTER is planned again on what is stored now, so the limit
and the CSeq rule hold for concurrent REGISTERs from any number of daemons.

redis-py blocks: every Redis command runs on the store's own thread pool through
``deferToThreadPool``; only :class:`Binding` values come back to the reactor thread.
Notifications are read by one thread of their own and handed to the reactor thread with
``callFromThread``.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import redis
from redis.exceptions import RedisError, ResponseError, WatchError
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from clicktodial.interfaces import IStoreLoad
from clicktodial.store.bindings import plan_register, sort_bindings
from clicktodial.store.errors import StoreUnavailable
from clicktodial.store.values import Binding, BindingChanges
from clicktodial_redis._compat import IBindingChangeNotifier, ILocationBackend

T = TypeVar("T")

#: How many times one REGISTER is planned again after another writer changed its AOR
#: between WATCH and EXEC before the store gives up with StoreUnavailable.
MAX_ATTEMPTS = 64

#: ``expiry_events`` values: set notify-keyspace-events if needed / only check it / neither.
EXPIRY_EVENT_MODES = ("configure", "check", "off")

#: The notify-keyspace-events flags this store needs: keyevent notifications (E) of
#: expirations (x), i.e. the channel ``__keyevent@DB__:expired``.
_NEEDED_FLAGS = "Ex"

#: Seconds the notification thread waits for a message before checking whether to stop,
#: and before reconnecting after an error.
_POLL_SECONDS = 0.2
_RECONNECT_SECONDS = 1.0


def encode_binding(binding: Binding) -> str:
    """A binding's fields (all but the AOR, which names its hash) as JSON text."""
    return json.dumps(
        {
            "contact": binding.contact,
            "expires_at": binding.expires_at,
            "call_id": binding.call_id,
            "cseq": binding.cseq,
            "q": binding.q,
            "instance_id": binding.instance_id,
            "reg_id": binding.reg_id,
            "path": list(binding.path),
            "received": binding.received,
            "user_agent": binding.user_agent,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def decode_binding(aor: str, text: str | bytes) -> Binding:
    """The :class:`Binding` :func:`encode_binding` wrote."""
    fields = json.loads(text)
    return Binding(
        aor=aor,
        contact=fields["contact"],
        expires_at=float(fields["expires_at"]),
        call_id=fields["call_id"],
        cseq=int(fields["cseq"]),
        q=None if fields["q"] is None else float(fields["q"]),
        instance_id=fields["instance_id"],
        reg_id=fields["reg_id"],
        path=tuple(fields["path"]),
        received=fields["received"],
        user_agent=fields["user_agent"],
    )


def _text(value: Any) -> str:
    """A reply's text (redis-py answers bytes: the client does not decode)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@implementer(ILocationBackend, IBindingChangeNotifier, IStoreLoad)
class RedisLocationStore:
    """
    :class:`ILocationStore` in Redis, with :class:`IBindingChangeNotifier`.

    :param reactor: provides ``IReactorTime`` and ``IReactorFromThreads``.
    :param client: a redis-py client; its connection pool should allow one connection per
        thread of ``threadpool`` plus one for notifications.
    :param threadpool: where every Redis command runs; the store starts and stops it.
    :param key_prefix: put before every key and channel name this store uses.
    :param expiry_events: ``configure``: at start, add the ``Ex`` flags to the server's
        ``notify-keyspace-events`` if missing (so bindings expired by Redis are notified);
        ``check``: only warn if they are missing; ``off``: do neither (only writes are
        notified).
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorFromThreads,
        client: redis.Redis,
        threadpool: ThreadPool,
        *,
        key_prefix: str,
        expiry_events: str = "configure",
    ) -> None:
        if expiry_events not in EXPIRY_EVENT_MODES:
            raise ValueError(f"expiry_events must be one of {EXPIRY_EVENT_MODES}")
        self._reactor = reactor
        self._client = client
        self._pool = threadpool
        self._prefix = key_prefix
        self._expiry_events = expiry_events
        self._aors_key = key_prefix + "aors"
        self._expiry_key = key_prefix + "expiry"
        self._bindings_prefix = key_prefix + "bindings:"
        self.changes_channel = key_prefix + "changes"
        db = client.connection_pool.connection_kwargs.get("db", 0)
        self.expired_channel = f"__keyevent@{db}__:expired"
        self._listeners: list[Callable[[str], object]] = []
        self._started = False
        self._notifier: _NotificationThread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Start the thread pool and check Redis answers (and its expiry events)."""
        self._pool.start()
        self._started = True
        d = self._run(self._op_start)

        def started(expiry_status: str) -> None:
            if expiry_status == "configured":
                self.log.info(
                    "redis: set notify-keyspace-events to include {flags}", flags=_NEEDED_FLAGS
                )
            elif expiry_status.startswith("missing"):
                self.log.warn(
                    "redis: notify-keyspace-events lacks {flags} ({detail}): bindings that"
                    " Redis expires are not notified to other daemons",
                    flags=_NEEDED_FLAGS,
                    detail=expiry_status,
                )
            if self._started and self._listeners:
                self._start_notifier()

        return d.addCallback(started)

    def stop(self) -> Deferred[None]:
        """Stop the notification thread and the pool (waiting for running jobs)."""
        self._started = False
        if self._notifier is not None:
            self._notifier.stop()
            self._notifier = None
        self._pool.stop()
        self._client.close()
        return succeed(None)

    def _op_start(self) -> str:
        self._client.ping()
        if self._expiry_events == "off":
            return "off"
        try:
            flags = _text(
                self._client.config_get("notify-keyspace-events").get("notify-keyspace-events")
                or ""
            )
        except ResponseError as e:  # CONFIG refused, as on managed Redis
            return f"missing: CONFIG GET refused: {e}"
        if _has_flags(flags):
            return "ok"
        if self._expiry_events == "check":
            return f"missing: the server has {flags!r}"
        merged = flags + "".join(f for f in _NEEDED_FLAGS if f not in flags)
        try:
            self._client.config_set("notify-keyspace-events", merged)
        except ResponseError as e:
            return f"missing: CONFIG SET refused: {e}"
        return "configured"

    def pending(self) -> int:
        """
        See :meth:`IStoreLoad.pending`: commands waiting for a thread of the pool, so
        admission control answers 503 (``[limits] max_store_pending``) instead of letting
        phones retransmit into a full queue.
        """
        return self._pool.q.qsize()

    def _run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        def guarded() -> T:
            try:
                return f(*args)
            except WatchError as e:  # only raised here once MAX_ATTEMPTS ran out
                raise StoreUnavailable(f"redis: {e}") from e
            except RedisError as e:
                raise StoreUnavailable(f"redis: {type(e).__name__}: {e}") from e

        return deferToThreadPool(self._reactor, self._pool, guarded)

    # -- ILocationStore --------------------------------------------------------------------

    def get_bindings(self, aor: str, now: float) -> Deferred[list[Binding]]:
        return self._run(self._op_get_bindings, aor, now)

    def update_bindings(
        self, aor: str, changes: BindingChanges, now: float
    ) -> Deferred[list[Binding]]:
        return self._run(self._op_update_bindings, aor, changes, now)

    def remove_all(self, aor: str) -> Deferred[int]:
        return self._run(self._op_remove_all, aor)

    def purge_expired(self, now: float) -> Deferred[int]:
        return self._run(self._op_purge_expired, now)

    def registered_aors(self, now: float) -> Deferred[list[str]]:
        return self._run(self._op_registered_aors, now)

    def all_bindings(self, now: float) -> Deferred[list[Binding]]:
        return self._run(self._op_all_bindings, now)

    # -- IBindingChangeNotifier ------------------------------------------------------------

    def subscribe(self, listener: Callable[[str], object]) -> Callable[[], None]:
        """
        Call ``listener(aor)`` on the reactor thread whenever the bindings of ``aor`` change:
        a write by any daemon using this Redis and prefix, or (with expiry events) Redis
        expiring the last bindings of an AOR. Notifications start once the store started.
        """
        self._listeners.append(listener)
        if self._started and self._notifier is None:
            self._start_notifier()

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def wait_subscribed(self, timeout: float) -> bool:
        """
        Block until notifications are being received (for tests and tools, not for the
        reactor thread): whether they are, after at most ``timeout`` seconds.
        """
        notifier = self._notifier
        return notifier is not None and notifier.subscribed.wait(timeout)

    def _start_notifier(self) -> None:
        self._notifier = _NotificationThread(
            self._client, (self.changes_channel, self.expired_channel), self._received
        )
        self._notifier.start()

    def _received(self, channel: str, data: str) -> None:
        """A message on a notification channel (called on the notification thread)."""
        if channel == self.changes_channel:
            aor = data
        elif data.startswith(self._bindings_prefix):
            aor = data[len(self._bindings_prefix) :]
        else:
            return  # another application's key expired
        self._reactor.callFromThread(self._notify, aor)

    def _notify(self, aor: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(aor)
            except Exception:
                self.log.failure("binding change listener failed for {aor}", aor=aor)

    # -- blocking operations (on the pool's threads) -----------------------------------------

    def _key(self, aor: str) -> str:
        return self._bindings_prefix + aor

    def _stored(self, aor: str, raw: Mapping[Any, Any]) -> dict[str, Binding]:
        return {_text(key): decode_binding(aor, value) for key, value in raw.items()}

    def _op_get_bindings(self, aor: str, now: float) -> list[Binding]:
        stored = self._stored(aor, self._client.hgetall(self._key(aor)))
        return sort_bindings([b for b in stored.values() if b.expires_at > now])

    def _op_update_bindings(self, aor: str, changes: BindingChanges, now: float) -> list[Binding]:
        return self._apply(aor, changes, now)[0]

    def _apply(
        self, aor: str, changes: BindingChanges, now: float, expired_members: Iterable[str] = ()
    ) -> tuple[list[Binding], int]:
        """
        Plan and write one REGISTER (or, with no contacts, only delete the expired
        bindings) atomically: WATCH, read, plan, MULTI/EXEC; again if the AOR changed.

        :param expired_members: members of the expiry set naming bindings of ``aor`` that
            :meth:`purge_expired` found expired; those no longer in the hash (Redis expired
            the whole AOR) are removed from the set.
        :return: the AOR's bindings afterwards, and how many stored bindings were deleted.
        """
        key = self._key(aor)
        for _ in range(MAX_ATTEMPTS):
            with self._client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    stored = self._stored(aor, pipe.hgetall(key))
                    # Raises OutOfOrderRegistration / TooManyBindings: nothing written.
                    plan = plan_register(aor, stored, changes, now)
                    stale = [m for m in expired_members if json.loads(m)[1] not in stored]
                    if not plan.delete and not plan.write and not stale:
                        return list(plan.result), 0
                    pipe.multi()
                    self._queue_plan(pipe, aor, key, plan.delete, plan.write, plan.result, now)
                    if stale:
                        pipe.zrem(self._expiry_key, *stale)
                    if plan.delete or plan.write:
                        pipe.publish(self.changes_channel, aor)
                    pipe.execute()
                    return list(plan.result), len(plan.delete)
                except WatchError:
                    continue
        raise WatchError(f"{aor} changed under {MAX_ATTEMPTS} attempts in a row")

    def _queue_plan(
        self,
        pipe: Any,
        aor: str,
        key: str,
        delete: Iterable[str],
        write: Mapping[str, Binding],
        result: Iterable[Binding],
        now: float,
    ) -> None:
        deleted = list(delete)
        if deleted:
            pipe.hdel(key, *deleted)
            pipe.zrem(self._expiry_key, *(_member(aor, k) for k in deleted))
        if write:
            pipe.hset(key, mapping={k: encode_binding(b) for k, b in write.items()})
            pipe.zadd(self._expiry_key, {_member(aor, k): b.expires_at for k, b in write.items()})
        latest = max((b.expires_at for b in result), default=None)
        if latest is None:
            pipe.delete(key)
            pipe.zrem(self._aors_key, aor)
        else:
            # Redis deletes the AOR once its last binding expired. The TTL is relative to
            # the caller's now, whatever clock that is.
            pipe.pexpire(key, max(1, math.ceil((latest - now) * 1000)))
            pipe.zadd(self._aors_key, {aor: latest})

    def _op_remove_all(self, aor: str) -> int:
        key = self._key(aor)
        for _ in range(MAX_ATTEMPTS):
            with self._client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    keys = [_text(k) for k in pipe.hkeys(key)]
                    pipe.multi()
                    if keys:
                        pipe.zrem(self._expiry_key, *(_member(aor, k) for k in keys))
                    pipe.delete(key)
                    pipe.zrem(self._aors_key, aor)
                    if keys:
                        pipe.publish(self.changes_channel, aor)
                    pipe.execute()
                    return len(keys)
                except WatchError:
                    continue
        raise WatchError(f"{aor} changed under {MAX_ATTEMPTS} attempts in a row")

    def _op_purge_expired(self, now: float) -> int:
        members = [_text(m) for m in self._client.zrangebyscore(self._expiry_key, "-inf", now)]
        by_aor: dict[str, list[str]] = {}
        for member in members:
            by_aor.setdefault(json.loads(member)[0], []).append(member)
        purged = 0
        # A REGISTER without contacts deletes exactly the expired bindings (plan_register).
        query = BindingChanges(call_id="", cseq=0)
        for aor, expired in sorted(by_aor.items()):
            purged += self._apply(aor, query, now, expired)[1]
        # AORs Redis deleted when their last binding expired.
        self._client.zremrangebyscore(self._aors_key, "-inf", now)
        return purged

    def _op_registered_aors(self, now: float) -> list[str]:
        return sorted(
            _text(aor) for aor in self._client.zrangebyscore(self._aors_key, f"({now!r}", "+inf")
        )

    def _op_all_bindings(self, now: float) -> list[Binding]:
        aors = self._op_registered_aors(now)
        found: list[Binding] = []
        for start in range(0, len(aors), 500):
            chunk = aors[start : start + 500]
            with self._client.pipeline(transaction=False) as pipe:
                for aor in chunk:
                    pipe.hgetall(self._key(aor))
                for aor, raw in zip(chunk, pipe.execute(), strict=True):
                    found.extend(b for b in self._stored(aor, raw).values() if b.expires_at > now)
        return sort_bindings(found)


def _member(aor: str, key: str) -> str:
    """The expiry set's member naming one binding."""
    return json.dumps([aor, key], ensure_ascii=False, separators=(",", ":"))


def _has_flags(flags: str) -> bool:
    # "A" is the alias of every event class, "x" included.
    return "E" in flags and ("x" in flags or "A" in flags)


class _NotificationThread:
    """
    One thread subscribed to the changes channel and to Redis's expired-key events, handing
    each message to ``deliver(channel, data)``; it reconnects after errors until stopped.
    """

    log = Logger()

    def __init__(
        self, client: redis.Redis, channels: tuple[str, ...], deliver: Callable[[str, str], None]
    ) -> None:
        self._client = client
        self._channels = channels
        self._deliver = deliver
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="clicktodial-redis-notify", daemon=True
        )
        self.subscribed = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        pubsub = None
        while not self._stopping.is_set():
            try:
                if pubsub is None:
                    pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(*self._channels)
                    self.subscribed.set()
                message = pubsub.get_message(timeout=_POLL_SECONDS)
            except RedisError as e:
                self.log.warn(
                    "redis: notifications interrupted, reconnecting: {error}", error=str(e)
                )
                if pubsub is not None:
                    pubsub.close()
                    pubsub = None
                self._stopping.wait(_RECONNECT_SECONDS)
                continue
            if message is not None and message.get("type") == "message":
                self._deliver(_text(message["channel"]), _text(message["data"]))
        if pubsub is not None:
            pubsub.close()
