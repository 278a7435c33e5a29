"""
Users and bindings as the call controller looks them up, kept briefly in memory.

Placing a call needs both users and both users' bindings: four store round trips that
wait on the database thread pool. :class:`CachedDirectory` answers them from memory for
``ttl`` seconds after the store did (``[calls] lookup_cache_seconds``, 2 s by default;
0 turns the cache off), and shares one store query between look-ups of one key made
while it runs.

Correctness:

* The registrar of this daemon writes bindings through the directory (it is the
  daemon's :class:`ILocationStore`): every update or removal of an AOR's bindings drops that
  AOR's entry when it starts and again when it ends, and a look-up that was running
  meanwhile is not kept, so a binding this daemon removed (a de-registration) is never
  called afterwards.
* Bindings expire by their own ``expires_at``: a cached binding past it is never returned.
* What changes elsewhere is seen within ``ttl`` seconds: a REGISTER handled by another
  daemon sharing the database (docs/scaling.md), a user disabled, enabled or removed
  through the web or the CLI (a disabled user may still place calls that long). At
  once when the store says so: the daemon subscribes :meth:`CachedDirectory.bindings_changed`
  to the location store's ``IBindingChangeNotifier`` and :meth:`CachedDirectory.user_changed`
  to the user store's ``IUserChangeNotifier``, when they provide them.
* A user that does not exist is not cached (a new user can call at once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from clicktodial.interfaces import IKnownLookups, ILocationStore
from clicktodial.store.values import Binding, BindingChanges, User

__all__ = ["DEFAULT_TTL", "CachedDirectory", "UserLookup"]

#: Seconds a user or an AOR's bindings are answered from memory by default.
DEFAULT_TTL = 2.0

T = TypeVar("T")


class UserLookup(Protocol):
    """What the controller needs of an :class:`IUserStore`."""

    def get_user(self, username: str) -> Deferred[User | None]:
        """Fires with the user, or None if there is no such user."""


class _Cache:
    """Values by key until a deadline, with one shared load per key and generations."""

    __slots__ = ("_clock", "_ttl", "_entries", "_loading", "_generation", "_next_sweep")

    def __init__(self, clock: IReactorTime, ttl: float) -> None:
        self._clock = clock
        self._ttl = ttl
        self._entries: dict[str, tuple[float, Any]] = {}
        self._loading: dict[str, list[Deferred[Any]]] = {}
        #: Bumped by invalidate(): a load that started under an older one is not kept.
        self._generation: dict[str, int] = {}
        self._next_sweep = 0.0

    def fresh(self, key: str) -> Any:
        """The value kept for ``key`` if it has not expired, else None."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self._clock.seconds():
            return entry[1]
        return None

    def get(
        self, key: str, load: Callable[[], Deferred[T]], keep: Callable[[T], bool] = lambda _: True
    ) -> Deferred[T]:
        now = self._clock.seconds()
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > now:
                return succeed(entry[1])
            del self._entries[key]
        # Each waiter gets its own Deferred (one waiter's callbacks cannot change
        # another's result).
        d: Deferred[T] = Deferred()
        waiters = self._loading.get(key)
        if waiters is not None:
            waiters.append(d)
        else:
            self._load(key, load, keep, d)
        return d

    def _load(
        self,
        key: str,
        load: Callable[[], Deferred[T]],
        keep: Callable[[T], bool],
        first: Deferred[T],
    ) -> None:
        generation = self._generation.get(key, 0)
        waiters = self._loading[key] = [first]

        def loaded(value: T) -> None:
            if self._loading.get(key) is waiters:
                del self._loading[key]
            if self._generation.get(key, 0) == generation and keep(value):
                now = self._clock.seconds()
                self._entries[key] = (now + self._ttl, value)
                self._sweep(now)
            for waiter in waiters:
                waiter.callback(value)

        def failed(failure: Failure) -> None:
            if self._loading.get(key) is waiters:
                del self._loading[key]
            for waiter in waiters:
                waiter.errback(failure)

        load().addCallbacks(loaded, failed)

    def invalidate(self, key: str) -> None:
        self._entries.pop(key, None)
        self._loading.pop(key, None)
        self._generation[key] = self._generation.get(key, 0) + 1

    def _sweep(self, now: float) -> None:
        # Expired entries go at most once per ttl, so the cache holds about the keys
        # looked up in the last two ttl periods.
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._ttl
        for key in [k for k, (until, _) in self._entries.items() if until <= now]:
            del self._entries[key]
        # Generations only matter while a load runs; drop the others.
        for key in [k for k in self._generation if k not in self._loading]:
            del self._generation[key]

    def __len__(self) -> int:
        return len(self._entries)


@implementer(ILocationStore, IKnownLookups)
class CachedDirectory:
    """
    An :class:`ILocationStore` (and user look-up) in front of the store, caching users and
    bindings for ``ttl`` seconds (see the module docstring); ``ttl`` 0 passes every call
    through.
    """

    def __init__(
        self,
        clock: IReactorTime,
        users: UserLookup,
        locations: ILocationStore,
        ttl: float = DEFAULT_TTL,
    ) -> None:
        self.clock = clock
        self.ttl = ttl
        self._users = users
        self._locations = locations
        self._user_cache = _Cache(clock, ttl)
        self._binding_cache = _Cache(clock, ttl)

    @property
    def cached(self) -> int:
        """Entries (users and AORs) held (for tests)."""
        return len(self._user_cache) + len(self._binding_cache)

    # -- users -------------------------------------------------------------------

    def get_user(self, username: str) -> Deferred[User | None]:
        """The user (from memory if looked up within ``ttl``), or None."""
        if not self.ttl:
            return self._users.get_user(username)
        return self._user_cache.get(
            username, lambda: self._users.get_user(username), keep=lambda user: user is not None
        )

    # -- IKnownLookups ----------------------------------------------------------

    def known_user(self, username: str) -> User | None:
        """The user if looked up within ``ttl`` (what :meth:`get_user` answers), else None."""
        user: User | None = self._user_cache.fresh(username) if self.ttl else None
        return user

    def known_bindings(self, aor: str, now: float) -> list[Binding] | None:
        """``aor``'s bindings unexpired at ``now`` if kept (see :meth:`get_bindings`), else
        None."""
        if not self.ttl:
            return None
        # Loaded with every binding unexpired at load time; each answer drops those
        # expired since.
        bindings: list[Binding] | None = self._binding_cache.fresh(aor)
        if bindings is None:
            return None
        return [b for b in bindings if b.expires_at > now]

    # -- ILocationStore ----------------------------------------------------------

    def get_bindings(self, aor: str, now: float) -> Deferred[list[Binding]]:
        if not self.ttl:
            return self._locations.get_bindings(aor, now)
        known = self.known_bindings(aor, now)
        if known is not None:
            # Kept (the usual case): no callback on a fired Deferred.
            return succeed(known)
        d = self._binding_cache.get(aor, lambda: self._locations.get_bindings(aor, now))
        return d.addCallback(lambda bindings: [b for b in bindings if b.expires_at > now])

    def update_bindings(
        self, aor: str, changes: BindingChanges, now: float
    ) -> Deferred[list[Binding]]:
        return self._changing(aor, self._locations.update_bindings(aor, changes, now))

    def remove_all(self, aor: str) -> Deferred[int]:
        return self._changing(aor, self._locations.remove_all(aor))

    def bindings_changed(self, aor: str) -> None:
        """
        ``aor``'s bindings changed elsewhere (the location store's
        ``IBindingChangeNotifier``: another daemon sharing it): drop the cached ones.
        """
        self._binding_cache.invalidate(aor)

    def user_changed(self, username: str) -> None:
        """``username`` changed (the user store's ``IUserChangeNotifier``): drop it."""
        self._user_cache.invalidate(username)

    def _changing(self, aor: str, d: Deferred[T]) -> Deferred[T]:
        # Dropped before (a look-up from now on goes to the store) and after (a look-up
        # that ran meanwhile may have read the old rows).
        self._binding_cache.invalidate(aor)

        def changed(result: T) -> T:
            self._binding_cache.invalidate(aor)
            return result

        return d.addBoth(changed)

    def purge_expired(self, now: float) -> Deferred[int]:
        # Cached bindings are filtered by their expiry on every answer.
        return self._locations.purge_expired(now)

    def registered_aors(self, now: float) -> Deferred[list[str]]:
        return self._locations.registered_aors(now)

    def all_bindings(self, now: float) -> Deferred[list[Binding]]:
        return self._locations.all_bindings(now)
