"""
A store that keeps everything in dictionaries: for tests, development and
single-node deployments that do not need anything to survive a restart.

Storage operations are dictionary look-ups, so they run inline on the
reactor thread; only password hashing goes to a thread pool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from argon2 import PasswordHasher
from attrs import evolve
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from clicktodial.interfaces import (
    IActiveCallClaims,
    ICallTraceStore,
    IOutboundQuota,
    IStoreBackend,
    IVerifiedRegistration,
)
from clicktodial.store.base import StoreBase, UserRecord, apply_call_fields, sip_credentials_of
from clicktodial.store.bindings import plan_register, sort_bindings
from clicktodial.store.errors import NoSuchCall, NoSuchUser, UserExists
from clicktodial.store.passwords import (
    PasswordHashing,
    default_hash_pool,
    token_id_of_digest,
)
from clicktodial.store.traces import MemoryTraces
from clicktodial.store.values import (
    ApiToken,
    Binding,
    BindingChanges,
    CallRecord,
    CallTrace,
    SipCredentials,
    TraceAppend,
    TraceLimits,
    VerifiedUpdate,
)

T = TypeVar("T")


@implementer(
    IStoreBackend, IActiveCallClaims, ICallTraceStore, IOutboundQuota, IVerifiedRegistration
)
class MemoryStore(StoreBase):
    """
    All three stores in memory, and the calls' traces (:class:`ICallTraceStore`); a
    REGISTER's credentials and bindings in one step (:class:`IVerifiedRegistration`).

    :param reactor: an :class:`IReactorTime` that also provides
        :class:`IReactorFromThreads` (any real reactor;
        :class:`clicktodial.testing.fakes.InlineReactor` in tests).
    :param realm: the SIP digest realm.
    :param hash_pool: thread pool for password hashing (started and stopped
        with the store); one thread per core if not given.
    :param hasher: the Argon2 hasher (tests pass a cheap one).
    """

    def __init__(
        self,
        reactor: IReactorTime,
        *,
        realm: str,
        hash_pool: ThreadPool | None = None,
        hasher: PasswordHasher | None = None,
    ) -> None:
        hashing = PasswordHashing(
            cast(IReactorFromThreads, reactor),
            hash_pool if hash_pool is not None else default_hash_pool(),
            hasher,
        )
        super().__init__(reactor, realm, hashing)
        self._users: dict[str, UserRecord] = {}
        self._tokens: dict[str, ApiToken] = {}
        self._token_digests: dict[str, str] = {}  # token_id -> digest
        self._bindings: dict[str, dict[str, Binding]] = {}
        self._outbound: dict[tuple[str, str], int] = {}
        self._calls: dict[str, CallRecord] = {}
        self._traces = MemoryTraces()

    def _run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        return defer.maybeDeferred(f, *args)

    # -- users ---------------------------------------------------------------

    def _op_existing_usernames(self, usernames: list[str]) -> set[str]:
        return {name for name in usernames if name in self._users}

    def _op_insert_users(self, records: list[UserRecord]) -> None:
        existing = self._op_existing_usernames([r.username for r in records])
        if existing:
            raise UserExists(existing)
        for record in records:
            self._users[record.username] = record

    def _op_get_user(self, username: str) -> UserRecord | None:
        return self._users.get(username)

    def _op_list_users(self) -> list[UserRecord]:
        return [self._users[name] for name in sorted(self._users)]

    def _op_update_user(self, username: str, fields: dict[str, object]) -> UserRecord:
        try:
            record = self._users[username]
        except KeyError:
            raise NoSuchUser(username) from None
        record = evolve(record, **fields)  # type: ignore[arg-type]
        self._users[username] = record
        return record

    def _op_delete_user(self, username: str) -> None:
        if self._users.pop(username, None) is None:
            raise NoSuchUser(username)
        for digest, token in list(self._tokens.items()):
            if token.username == username:
                self._forget_token(digest)

    def _op_insert_token(self, digest: str, username: str, label: str, created_at: float) -> None:
        if username not in self._users:
            raise NoSuchUser(username)
        token_id = token_id_of_digest(digest)
        self._tokens[digest] = ApiToken(token_id, username, label, created_at)
        self._token_digests[token_id] = digest

    def _op_token_owner(self, digest: str) -> str | None:
        token = self._tokens.get(digest)
        if token is None or self._users[token.username].disabled:
            return None
        return token.username

    def _op_list_tokens(self, username: str) -> list[ApiToken]:
        return sorted(
            (t for t in self._tokens.values() if t.username == username),
            key=lambda t: (t.created_at, t.token_id),
        )

    def _op_delete_token(self, digest: str | None, token_id: str | None) -> bool:
        if digest is None and token_id is not None:
            digest = self._token_digests.get(token_id)
        if digest is None or digest not in self._tokens:
            return False
        self._forget_token(digest)
        return True

    def _forget_token(self, digest: str) -> None:
        token = self._tokens.pop(digest)
        self._token_digests.pop(token.token_id, None)

    # -- bindings -----------------------------------------------------------

    def _op_get_bindings(self, aor: str, now: float) -> list[Binding]:
        return sort_bindings(
            [b for b in self._bindings.get(aor, {}).values() if b.expires_at > now]
        )

    def _op_update_bindings(self, aor: str, changes: BindingChanges, now: float) -> list[Binding]:
        stored = self._bindings.get(aor, {})
        plan = plan_register(aor, stored, changes, now)
        # plan_register raised before anything changed if it refused.
        updated = {k: b for k, b in stored.items() if k not in plan.delete}
        updated.update(plan.write)
        if updated:
            self._bindings[aor] = updated
        else:
            self._bindings.pop(aor, None)
        return list(plan.result)

    def update_bindings_if_verified(
        self,
        username: str,
        verify: Callable[[SipCredentials | None], bool],
        aor: str,
        changes: BindingChanges,
        now: float,
    ) -> Deferred[VerifiedUpdate]:
        """See :meth:`IVerifiedRegistration.update_bindings_if_verified`: one step on the
        reactor thread, so nothing runs between the read and the write."""
        try:
            credentials = sip_credentials_of(self._users.get(username))
            if not verify(credentials):
                return defer.succeed(VerifiedUpdate(credentials, None))
            return defer.succeed(
                VerifiedUpdate(credentials, self._op_update_bindings(aor, changes, now))
            )
        except Exception:
            return defer.fail()

    def _op_remove_all(self, aor: str) -> int:
        return len(self._bindings.pop(aor, {}))

    def _op_purge_expired(self, now: float) -> int:
        purged = 0
        for aor, bindings in list(self._bindings.items()):
            live = {k: b for k, b in bindings.items() if b.expires_at > now}
            purged += len(bindings) - len(live)
            if live:
                self._bindings[aor] = live
            else:
                del self._bindings[aor]
        return purged

    def _op_registered_aors(self, now: float) -> list[str]:
        return sorted(
            aor
            for aor, bindings in self._bindings.items()
            if any(b.expires_at > now for b in bindings.values())
        )

    def _op_all_bindings(self, now: float) -> list[Binding]:
        return sort_bindings(
            [
                b
                for bindings in self._bindings.values()
                for b in bindings.values()
                if b.expires_at > now
            ]
        )

    # -- call records ---------------------------------------------------------

    def _op_insert_call(self, record: CallRecord) -> None:
        self._calls[record.call_id] = record

    def _op_update_call(self, call_id: str, fields: dict[str, object]) -> CallRecord:
        try:
            record = self._calls[call_id]
        except KeyError:
            raise NoSuchCall(call_id) from None
        record = apply_call_fields(record, fields)
        self._calls[call_id] = record
        return record

    def _op_get_call(self, call_id: str) -> CallRecord | None:
        return self._calls.get(call_id)

    def _op_list_calls(
        self, user: str | None, limit: int, offset: int, before: float | None
    ) -> list[CallRecord]:
        calls = [
            c
            for c in self._calls.values()
            if (user is None or user in (c.caller, c.callee))
            and (before is None or c.created_at < before)
        ]
        calls.sort(key=lambda c: (c.created_at, c.call_id), reverse=True)
        return calls[offset : offset + limit]

    def _op_count_active(self, node: str | None) -> int:
        return sum(1 for c in self._calls.values() if c.active and (node is None or c.node == node))

    def _op_end_active_calls(self, node: str | None, ended_at: float, reason: str) -> int:
        return len(self._op_claim_active_calls(node, ended_at, reason))

    def _op_claim_active_calls(self, node: str | None, ended_at: float, reason: str) -> list[str]:
        ended = [c for c in self._calls.values() if c.active and (node is None or c.node == node)]
        for call in ended:
            self._calls[call.call_id] = evolve(
                call, ended_at=ended_at, end_reason=reason, who_hung_up="system"
            )
        return [call.call_id for call in ended]

    # -- outbound call counts (IOutboundQuota) --------------------------------------

    def _op_count_outbound_call(self, username: str, day: str, limit: int) -> bool:
        # Runs on the reactor thread (or one store thread): check and count are one step.
        count = self._outbound.get((username, day), 0)
        if count >= limit:
            return False
        self._outbound[(username, day)] = count + 1
        return True

    def count_outbound_call(self, username: str, day: str, limit: int) -> Deferred[bool]:
        return self._run(self._op_count_outbound_call, username, day, limit)

    def _op_uncount_outbound_call(self, username: str, day: str) -> None:
        count = self._outbound.get((username, day), 0)
        if count > 0:
            self._outbound[(username, day)] = count - 1

    def uncount_outbound_call(self, username: str, day: str) -> Deferred[None]:
        return self._run(self._op_uncount_outbound_call, username, day)

    def outbound_calls(self, username: str, day: str) -> Deferred[int]:
        return self._run(self._outbound.get, (username, day), 0)

    # -- call traces (ICallTraceStore) ---------------------------------------------

    def append_traces(self, appends: Sequence[TraceAppend], limits: TraceLimits) -> Deferred[None]:
        return self._run(self._traces.append, appends, limits)

    def get_trace(self, call_id: str) -> Deferred[CallTrace | None]:
        return self._run(self._traces.get, call_id)

    def purge_traces(self, before: float) -> Deferred[int]:
        return self._run(self._traces.purge, before)
