"""
What every built-in store shares: the asynchronous interface methods,
written once on top of a small set of synchronous storage operations.

A backend subclasses :class:`StoreBase`, implements the ``_op_*`` methods (plain
blocking functions that take and return plain values) and :func:`StoreBase._run`,
which says where they run: inline for the memory store, on the database
thread pool for the SQL store. Validation, hashing (on the hashing pool),
token generation and the REGISTER rules live here, so every backend behaves
the same.
"""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from attrs import evolve, frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from clicktodial.interfaces import ICallRecordWrites, IUserChangeNotifier
from clicktodial.store.errors import UserExists
from clicktodial.store.passwords import (
    PasswordHashing,
    generate_token,
    sip_credentials,
    token_digest,
)
from clicktodial.store.values import (
    ApiToken,
    Binding,
    BindingChanges,
    CallRecord,
    CallUpdate,
    NewUser,
    SipCredentials,
    User,
    UserChanges,
    validate_username,
)

T = TypeVar("T")

_TOKEN_ID = re.compile(r"[0-9a-f]{16}")

#: The largest page :func:`StoreBase.list_calls` returns.
MAX_PAGE = 1000


@frozen
class UserRecord:
    """A user as stored, secrets included; never leaves the store."""

    username: str
    display_name: str = ""
    password_hash: str | None = None
    ha1_md5: str | None = None
    ha1_sha256: str | None = None
    is_admin: bool = False
    disabled: bool = False
    created_at: float = 0.0

    def public(self) -> User:
        """The :class:`User` value the interfaces return."""
        return User(
            username=self.username,
            display_name=self.display_name,
            is_admin=self.is_admin,
            disabled=self.disabled,
            has_password=self.password_hash is not None,
            has_sip_credentials=(self.ha1_md5 is not None and self.ha1_sha256 is not None),
            created_at=self.created_at,
        )


def sip_credentials_of(record: UserRecord | None) -> SipCredentials | None:
    """A user's SIP credentials as ``get_sip_credentials`` gives them: ``None`` for no
    user, a disabled one, or one without a SIP password."""
    if record is None or record.disabled or record.ha1_md5 is None or record.ha1_sha256 is None:
        return None
    return SipCredentials(record.ha1_md5, record.ha1_sha256)


@implementer(IUserChangeNotifier, ICallRecordWrites)
class StoreBase(ABC):
    """
    The store interfaces (:class:`clicktodial.interfaces.IStoreBackend`) on top
    of synchronous ``_op_*`` operations. Provides
    :class:`~clicktodial.interfaces.IUserChangeNotifier` for the changes made
    through it.

    :param clock: gives creation times of users and tokens.
    :param realm: the SIP digest realm the HA1s are computed for.
    :param hashing: where web passwords are hashed.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, realm: str, hashing: PasswordHashing) -> None:
        self._clock = clock
        self.realm = realm
        self._hashing = hashing
        #: called with a username after this store changed or removed that user (the
        #: registrar's credentials cache forgets it: docs/registrar.md)
        self.user_listeners: list[Callable[[str], object]] = []

    def subscribe(self, listener: Callable[[str], object]) -> Callable[[], None]:
        """See :meth:`IUserChangeNotifier.subscribe`: users changed through this store."""
        self.user_listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self.user_listeners:
                self.user_listeners.remove(listener)

        return unsubscribe

    @abstractmethod
    def _run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run a storage operation where this backend runs them."""

    # -- lifecycle (backends extend these) -----------------------------------

    def start(self) -> Deferred[None]:
        """Start the hashing pool."""
        self._hashing.start()
        return succeed(None)

    def stop(self) -> Deferred[None]:
        """Stop the hashing pool."""
        self._hashing.stop()
        return succeed(None)

    # -- IUserStore --------------------------------------------------------

    def add_user(
        self,
        username: str,
        *,
        password: str | None = None,
        sip_password: str | None = None,
        display_name: str = "",
        is_admin: bool = False,
    ) -> Deferred[User]:
        new = NewUser(
            username=username,
            password=password,
            sip_password=sip_password,
            display_name=display_name,
            is_admin=is_admin,
        )

        async def add() -> User:
            [record] = await self._add_records([new])
            return record.public()

        return Deferred.fromCoroutine(add())

    def add_users(self, users: Sequence[NewUser]) -> Deferred[int]:
        async def add() -> int:
            return len(await self._add_records(users))

        return Deferred.fromCoroutine(add())

    async def _add_records(self, users: Sequence[NewUser]) -> list[UserRecord]:
        seen: set[str] = set()
        repeated: set[str] = set()
        for new in users:
            validate_username(new.username)
            (repeated if new.username in seen else seen).add(new.username)
        if repeated:
            raise UserExists(repeated)
        # Check before spending seconds of Argon2 on a doomed batch; the
        # insert checks again, atomically.
        existing = await self._run(self._op_existing_usernames, sorted(seen))
        if existing:
            raise UserExists(existing)
        hashes = iter(
            await self._hashing.hash_many(
                [new.password for new in users if new.password is not None]
            )
        )
        now = self._clock.seconds()
        records = []
        for new in users:
            credentials = (
                sip_credentials(new.username, self.realm, new.sip_password)
                if new.sip_password is not None
                else None
            )
            records.append(
                UserRecord(
                    username=new.username,
                    display_name=new.display_name,
                    password_hash=(next(hashes) if new.password is not None else None),
                    ha1_md5=credentials.ha1_md5 if credentials else None,
                    ha1_sha256=credentials.ha1_sha256 if credentials else None,
                    is_admin=new.is_admin,
                    created_at=now,
                )
            )
        await self._run(self._op_insert_users, records)
        self.log.info("added {count} user(s)", count=len(records))
        return records

    def get_user(self, username: str) -> Deferred[User | None]:
        return self._run(self._op_get_user, username).addCallback(
            lambda record: record.public() if record is not None else None
        )

    def list_users(self) -> Deferred[list[User]]:
        return self._run(self._op_list_users).addCallback(
            lambda records: [record.public() for record in records]
        )

    def update_user(self, username: str, changes: UserChanges) -> Deferred[User]:
        async def update() -> User:
            fields: dict[str, object] = {}
            if changes.display_name is not None:
                fields["display_name"] = changes.display_name
            if changes.disabled is not None:
                fields["disabled"] = changes.disabled
            if changes.is_admin is not None:
                fields["is_admin"] = changes.is_admin
            if changes.clear_password:
                fields["password_hash"] = None
            if changes.password is not None:
                fields["password_hash"] = await self._hashing.hash(changes.password)
            if changes.sip_password is not None:
                credentials = sip_credentials(username, self.realm, changes.sip_password)
                fields["ha1_md5"] = credentials.ha1_md5
                fields["ha1_sha256"] = credentials.ha1_sha256
            try:
                record = await self._run(self._op_update_user, username, fields)
            finally:
                self._user_changed(username)
            return record.public()

        return Deferred.fromCoroutine(update())

    def remove_user(self, username: str) -> Deferred[None]:
        d = self._run(self._op_delete_user, username)

        def removed(result: T) -> T:
            self._user_changed(username)
            return result

        return d.addBoth(removed)

    def _user_changed(self, username: str) -> None:
        for listener in self.user_listeners:
            try:
                listener(username)
            except Exception:
                self.log.failure("user listener failed", username=username)

    def check_password(self, username: str, password: str) -> Deferred[User | None]:
        async def check() -> User | None:
            record = await self._run(self._op_get_user, username)
            stored = record.password_hash if record is not None and not record.disabled else None
            if not await self._hashing.verify(stored, password):
                return None
            assert record is not None and stored is not None
            if self._hashing.needs_rehash(stored):
                # Hash parameters were raised since this hash was made:
                # upgrade it now that we know the password.
                new_hash = await self._hashing.hash(password)
                await self._run(self._op_update_user, username, {"password_hash": new_hash})
            return record.public()

        return Deferred.fromCoroutine(check())

    def get_sip_credentials(self, username: str) -> Deferred[SipCredentials | None]:
        return self._run(self._op_get_user, username).addCallback(sip_credentials_of)

    def create_token(self, username: str, label: str = "") -> Deferred[str]:
        token = generate_token()
        return self._run(
            self._op_insert_token, token_digest(token), username, label, self._clock.seconds()
        ).addCallback(lambda _: token)

    def verify_token(self, token: str) -> Deferred[str | None]:
        return self._run(self._op_token_owner, token_digest(token))

    def list_tokens(self, username: str) -> Deferred[list[ApiToken]]:
        return self._run(self._op_list_tokens, username)

    def revoke_token(self, token: str) -> Deferred[bool]:
        if _TOKEN_ID.fullmatch(token):
            return self._run(self._op_delete_token, None, token)
        return self._run(self._op_delete_token, token_digest(token), None)

    # -- ILocationStore ----------------------------------------------------

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

    # -- ICallRecordStore --------------------------------------------------

    def create_call(
        self, caller: str, callee: str, created_at: float, node: str | None = None
    ) -> Deferred[str]:
        record = CallRecord(
            call_id=uuid.uuid4().hex, caller=caller, callee=callee, created_at=created_at, node=node
        )
        return self._run(self._op_insert_call, record).addCallback(lambda _: record.call_id)

    def update_call(self, call_id: str, update: CallUpdate) -> Deferred[CallRecord]:
        return self._run(self._op_update_call, call_id, update.changed_fields())

    def write_call(self, call_id: str, update: CallUpdate) -> Deferred[None]:
        """See :meth:`ICallRecordWrites.write_call` (here: :meth:`update_call`)."""
        return self.update_call(call_id, update).addCallback(_nothing)

    def get_call(self, call_id: str) -> Deferred[CallRecord | None]:
        return self._run(self._op_get_call, call_id)

    def list_calls(
        self, user: str | None = None, limit: int = 50, offset: int = 0, before: float | None = None
    ) -> Deferred[list[CallRecord]]:
        async def page() -> list[CallRecord]:
            if not 0 < limit <= MAX_PAGE:
                raise ValueError(f"limit must be 1 to {MAX_PAGE}, not {limit}")
            if offset < 0:
                raise ValueError(f"offset must not be negative: {offset}")
            return await self._run(self._op_list_calls, user, limit, offset, before)

        return Deferred.fromCoroutine(page())

    def count_active(self, node: str | None = None) -> Deferred[int]:
        return self._run(self._op_count_active, node)

    def end_active_calls(
        self, node: str | None, ended_at: float, reason: str = "lost"
    ) -> Deferred[int]:
        CallUpdate(end_reason=reason)  # validates the reason
        return self._run(self._op_end_active_calls, node, ended_at, reason)

    def claim_active_calls(
        self, node: str | None, ended_at: float, reason: str = "lost"
    ) -> Deferred[list[str]]:
        """See :class:`IActiveCallClaims <clicktodial.interfaces.IActiveCallClaims>`."""
        CallUpdate(end_reason=reason)  # validates the reason
        return self._run(self._op_claim_active_calls, node, ended_at, reason)

    # -- storage operations (blocking; run through _run) -------------------

    @abstractmethod
    def _op_existing_usernames(self, usernames: list[str]) -> set[str]:
        """Which of ``usernames`` exist."""

    @abstractmethod
    def _op_insert_users(self, records: list[UserRecord]) -> None:
        """Insert all or none; raise :class:`UserExists`."""

    @abstractmethod
    def _op_get_user(self, username: str) -> UserRecord | None:
        """The stored user, or None."""

    @abstractmethod
    def _op_list_users(self) -> list[UserRecord]:
        """All users by username."""

    @abstractmethod
    def _op_update_user(self, username: str, fields: dict[str, object]) -> UserRecord:
        """Set UserRecord ``fields``; raise :class:`NoSuchUser`."""

    @abstractmethod
    def _op_delete_user(self, username: str) -> None:
        """Delete the user and their tokens; raise :class:`NoSuchUser`."""

    @abstractmethod
    def _op_insert_token(self, digest: str, username: str, label: str, created_at: float) -> None:
        """Store a token digest; raise :class:`NoSuchUser`."""

    @abstractmethod
    def _op_token_owner(self, digest: str) -> str | None:
        """The (enabled) owner of a token digest."""

    @abstractmethod
    def _op_list_tokens(self, username: str) -> list[ApiToken]:
        """A user's tokens, oldest first."""

    @abstractmethod
    def _op_delete_token(self, digest: str | None, token_id: str | None) -> bool:
        """Delete the token with this digest or id."""

    @abstractmethod
    def _op_get_bindings(self, aor: str, now: float) -> list[Binding]:
        """Unexpired bindings of an AOR, by contact."""

    @abstractmethod
    def _op_update_bindings(self, aor: str, changes: BindingChanges, now: float) -> list[Binding]:
        """Apply :func:`plan_register` atomically."""

    @abstractmethod
    def _op_remove_all(self, aor: str) -> int:
        """Delete an AOR's bindings."""

    @abstractmethod
    def _op_purge_expired(self, now: float) -> int:
        """Delete expired bindings."""

    @abstractmethod
    def _op_registered_aors(self, now: float) -> list[str]:
        """AORs with unexpired bindings, sorted."""

    @abstractmethod
    def _op_all_bindings(self, now: float) -> list[Binding]:
        """All unexpired bindings by AOR and contact."""

    @abstractmethod
    def _op_insert_call(self, record: CallRecord) -> None:
        """Store a new call record."""

    @abstractmethod
    def _op_update_call(self, call_id: str, fields: dict[str, object]) -> CallRecord:
        """Set ``fields``; raise :class:`NoSuchCall`."""

    @abstractmethod
    def _op_get_call(self, call_id: str) -> CallRecord | None:
        """One call record, or None."""

    @abstractmethod
    def _op_list_calls(
        self, user: str | None, limit: int, offset: int, before: float | None
    ) -> list[CallRecord]:
        """A page of calls, newest first."""

    @abstractmethod
    def _op_count_active(self, node: str | None) -> int:
        """Calls without ended_at."""

    @abstractmethod
    def _op_end_active_calls(self, node: str | None, ended_at: float, reason: str) -> int:
        """End active calls of a node."""

    @abstractmethod
    def _op_claim_active_calls(self, node: str | None, ended_at: float, reason: str) -> list[str]:
        """End active calls of a node; their ids, each to one claimer only."""


def apply_call_fields(record: CallRecord, fields: dict[str, object]) -> CallRecord:
    """``record`` with ``fields`` set (for stores that keep records whole)."""
    return evolve(record, **fields)  # type: ignore[arg-type]


def _nothing(_: object) -> None:
    return None
