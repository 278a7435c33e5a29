"""
Slowing down and refusing repeated authentication failures (password
guessing), for SIP Digest (the registrar) and web logins.

Guessing a password is cheap for an attacker (one UDP datagram per guess),
so after a few failures from one source address, or for one username, the
answers are delayed (exponentially, up to a cap) and then the source or
username is refused outright for a while. The numbers are settings
(:class:`ThrottleSettings`); time comes from an injected ``IReactorTime``; memory
is bounded (least recently used entries are evicted first, and entries are
forgotten after a quiet period).

Two rules make the limit hold (docs/registrar.md, "Throttling"):

  - **reserve before checking**: :meth:`AuthThrottle.begin` counts an attempt as
    a failure in flight before any credentials are read or hashed, and
    refuses it if that would pass the limit; the attempt's outcome then
    settles the reservation (:meth:`AuthAttempt.failed`, :meth:`AuthAttempt.succeeded`,
    :meth:`AuthAttempt.released`). However many attempts arrive at once, at most
    ``refuse_after`` are ever checked per window for one key;
  - **known sources**: refusals by username could let anyone lock a user out
    by failing on purpose. So a (source, username) pair that authenticated
    within ``trust_seconds`` is *known*: its attempts are counted and
    limited by that pair alone (not by the source's nor the username's
    counts, which others may have filled). A success clears no count (it
    gives back its own slot). An attacker sharing the known address (same
    NAT) thus gets the same ``refuse_after`` guesses per window as anyone,
    however often the user succeeds meanwhile.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from attrs import field, frozen, validators
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["AuthAttempt", "AuthThrottle", "ThrottleRefused", "ThrottleSettings"]

_non_negative = validators.ge(0)
_non_negative_float = validators.ge(0.0)

_K = TypeVar("_K", bound=Hashable)


@frozen
class ThrottleSettings:
    """
    How authentication failures are throttled.

    :ivar free_failures: failures (per source address, per username, per
        known source/username pair) answered without delay.
    :ivar base_delay: seconds of delay for the first failure past
        ``free_failures``; each further failure doubles it.
    :ivar max_delay: cap of the delay; keep it well below a SIP client's
        Timer F (32 s) so a delayed answer still reaches the client.
    :ivar refuse_after: attempts (failed or in flight) after which the
        source, username or known pair is refused outright (0 never
        refuses): at most this many are checked per window.
    :ivar refuse_seconds: how long a refusal lasts.
    :ivar forget_after: seconds without failure after which the count of a
        source or username starts again from zero.
    :ivar max_entries: bound of each table (sources, usernames, known
        source/username pairs).
    :ivar trust_seconds: how long a source that authenticated as a user
        stays known for that user (keep it above the phones' registration
        interval, so a refreshing phone stays known).
    """

    free_failures: int = field(default=3, validator=_non_negative)
    base_delay: float = field(default=0.5, validator=_non_negative_float)
    max_delay: float = field(default=8.0, validator=_non_negative_float)
    refuse_after: int = field(default=20, validator=_non_negative)
    refuse_seconds: float = field(default=300.0, validator=_non_negative_float)
    forget_after: float = field(default=900.0, validator=validators.gt(0.0))
    max_entries: int = field(default=100_000, validator=validators.ge(1))
    trust_seconds: float = field(default=86400.0, validator=validators.gt(0.0))


#: Retry-After of an attempt refused because its count is full of attempts in flight
#: (not of failures): they settle within a store round trip or a delayed answer.
BUSY_RETRY_AFTER = 1.0


#: The reservations of an attempt on a peer's and a username's counts that started no
#: refusal (:meth:`AuthThrottle._reserve` returned ``None`` for both).
_NOT_REFUSING: tuple[float | None, ...] = (None, None)


class ThrottleRefused(Exception):
    """The attempt is refused without checking: too many failures, or the
    count is full of attempts in flight (``busy``)."""

    def __init__(self, retry_after: float, busy: bool = False) -> None:
        super().__init__(retry_after)
        #: seconds until the refusal ends (> 0), or until trying again is
        #: worth it (busy)
        self.retry_after = retry_after
        self.busy = busy


class _Entry:
    """The count of one source, username or known pair."""

    __slots__ = ("failures", "pending", "last_failure", "refused_until", "trusted_at")

    def __init__(self) -> None:
        #: failures settled (within forget_after of each other)
        self.failures = 0
        #: attempts begun and not yet settled (reserved slots)
        self.pending = 0
        self.last_failure = 0.0
        self.refused_until = 0.0
        #: known pairs only: when the pair last authenticated
        self.trusted_at = 0.0


class _Table(Generic[_K]):
    """Counts by key, least recently used first."""

    __slots__ = ("_max_entries", "_entries", "get")

    #: The entry of a key, ``None`` if there is none (the dictionary's own ``get``, bound
    #: once: a look-up on every REGISTER costs no Python call).
    get: Callable[[_K], _Entry | None]

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[_K, _Entry] = OrderedDict()
        self.get = self._entries.get

    def __len__(self) -> int:
        return len(self._entries)

    def get_or_create(self, key: _K) -> _Entry:
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            if len(entries) >= self._max_entries:
                entries.popitem(last=False)
            entry = entries[key] = _Entry()
        else:
            entries.move_to_end(key)
        return entry

    def discard(self, key: _K, entry: _Entry) -> None:
        """Drop ``key`` if it still holds ``entry`` (not a newer one)."""
        if self._entries.get(key) is entry:
            del self._entries[key]

    def expire(self, now: float, forget_after: float) -> None:
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if (
                now - entry.last_failure < forget_after
                or entry.refused_until > now
                or entry.pending
            ):
                break
            del entries[key]


class AuthAttempt:
    """
    One authentication attempt admitted by :meth:`AuthThrottle.begin`: it holds
    a reserved slot (counted as a failure in flight) until it is settled,
    exactly once, by :func:`failed`, :func:`succeeded` or :func:`released`.
    """

    __slots__ = ("_throttle", "peer", "username", "_known", "_entries", "_previous", "_settled")

    def __init__(
        self,
        throttle: AuthThrottle,
        peer: str,
        username: str | None,
        known: bool,
        entries: tuple[_Entry, ...],
        previous: tuple[float | None, ...],
    ) -> None:
        self._throttle = throttle
        self.peer = peer
        self.username = username
        #: whether the (peer, username) pair is known (counted alone)
        self._known = known
        self._entries = entries
        # Per entry: the refused_until this attempt's reservation replaced
        # when it started a refusal, else None.
        self._previous = previous
        self._settled = False

    @property
    def known(self) -> bool:
        """Whether the source authenticated as this user recently."""
        return self._known

    def failed(self, aor: str | None = None) -> float:
        """
        The credentials were wrong: the reserved slot stays counted.

        :return: the seconds to delay the answer by.
        """
        if self._settled:
            return 0.0
        self._settled = True
        return self._throttle._failed(self, aor)

    def succeeded(self) -> None:
        """
        The credentials were right: the slot is given back (no count is
        cleared), and the pair becomes (or stays) known.
        """
        if self._settled:
            return
        self._settled = True
        self._throttle._succeeded(self)

    def released(self) -> None:
        """
        Nothing was learnt about the password after all (a stale nonce, an
        error): the slot is given back, nothing counted. Does nothing once
        settled, so it can end a ``try``/``finally``.
        """
        if self._settled:
            return
        self._settled = True
        self._throttle._release(self)


class AuthThrottle:
    """
    Tracks authentication attempts by source address (host only: a NAT
    may change the port), by username, and by known (source, username)
    pair.

    Use: :func:`begin` before reading or checking any credentials (it raises
    :class:`ThrottleRefused`); then settle the attempt it returns. :func:`refused`
    tells, without reserving, whether a request would be refused (for
    requests without credentials).
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, settings: ThrottleSettings | None = None) -> None:
        self._clock = clock
        self.settings = settings if settings is not None else ThrottleSettings()
        n = self.settings.max_entries
        self._peers: _Table[str] = _Table(n)
        self._users: _Table[str] = _Table(n)
        # Known pairs: trust and their own count, least recently
        # authenticated first.
        self._known: _Table[tuple[str, str]] = _Table(n)

    # -- admission -------------------------------------------------------------

    def refused(self, peer: str, username: str | None = None) -> float:
        """
        Seconds left of a refusal of ``peer`` or of ``username`` (or, if ``peer``
        is known for ``username``, of that pair alone); 0 if not refused.
        Reserves nothing.
        """
        now = self._clock.seconds()
        if username is not None:
            pair = self._known_pair(peer, username, now)
            if pair is not None:
                return max(0.0, pair.refused_until - now)
        left = 0.0
        entry = self._peers.get(peer)
        if entry is not None:
            left = entry.refused_until - now
        if username is not None:
            entry = self._users.get(username)
            if entry is not None:
                left = max(left, entry.refused_until - now)
        return max(0.0, left)

    def is_known(self, peer: str, username: str) -> bool:
        """Whether ``peer`` authenticated as ``username`` within ``trust_seconds``."""
        return self._known_pair(peer, username, self._clock.seconds()) is not None

    def begin(self, peer: str, username: str | None) -> AuthAttempt:
        """
        Admit an attempt of ``peer`` to authenticate as ``username``, taking
        a slot (a failure in flight) from each count it is limited by.

        :raises ThrottleRefused: a count it is limited by is full or
            refused; nothing is reserved.
        """
        now = self._clock.seconds()
        pair = None if username is None else self._known_pair(peer, username, now)
        if pair is not None:
            # Known: limited by its own count only, so others' failures for
            # this user (or from this address) cannot lock it out.
            self._check(pair, now)
            return AuthAttempt(self, peer, username, True, (pair,), (self._reserve(pair, now),))
        peer_entry = self._peers.get(peer)
        user_entry = None if username is None else self._users.get(username)
        if peer_entry is not None:
            self._check(peer_entry, now)
        if user_entry is not None:
            self._check(user_entry, now)
        peer_entry = self._peers.get_or_create(peer)
        if username is None:
            return AuthAttempt(
                self, peer, None, False, (peer_entry,), (self._reserve(peer_entry, now),)
            )
        user_entry = self._users.get_or_create(username)
        # _reserve of both, written out for the usual case (neither count full): this
        # runs for every authenticated REGISTER.
        limit = self.settings.refuse_after
        previous: tuple[float | None, ...]
        if limit and (peer_entry.failures >= limit or user_entry.failures >= limit):
            previous = (self._reserve(peer_entry, now), self._reserve(user_entry, now))
        else:
            peer_entry.pending += 1
            user_entry.pending += 1
            previous = _NOT_REFUSING
        return AuthAttempt(self, peer, username, False, (peer_entry, user_entry), previous)

    @property
    def tracked(self) -> int:
        """How many sources, usernames and known pairs are tracked now."""
        return len(self._peers) + len(self._users) + len(self._known)

    # -- internals ---------------------------------------------------------------

    def _known_pair(self, peer: str, username: str, now: float) -> _Entry | None:
        pair = self._known.get((peer, username))
        if pair is None:
            return None
        if now - pair.trusted_at >= self.settings.trust_seconds:
            self._known.discard((peer, username), pair)
            return None
        return pair

    def _check(self, entry: _Entry, now: float) -> None:
        """
        Raise :class:`ThrottleRefused` unless ``entry`` has a free slot: at most
        ``refuse_after`` attempts, settled failures and attempts in flight
        together, are checked per window, however many arrive at once.
        """
        settings = self.settings
        left = entry.refused_until - now
        if left > 0:
            raise ThrottleRefused(left)
        if entry.failures and now - entry.last_failure >= settings.forget_after:
            entry.failures = 0
        limit = settings.refuse_after
        if limit and entry.failures + entry.pending >= limit:
            if entry.pending or entry.failures < limit:
                # Full of attempts in flight (some may succeed and give their
                # slot back): come back in a moment (RFC 3261 §21.5.4).
                raise ThrottleRefused(BUSY_RETRY_AFTER, busy=True)
            # A refusal has just ended with the count still full: one
            # attempt, which refuses again unless it succeeds (below).

    def _reserve(self, entry: _Entry, now: float) -> float | None:
        """
        Take a slot of ``entry`` (:func:`_check`ed). The only attempt admitted
        while the count is full (after a refusal ended) starts the next
        refusal at once; returns the refusal end it replaced.
        """
        settings = self.settings
        entry.pending += 1
        limit = settings.refuse_after
        if limit and entry.failures >= limit:
            previous = entry.refused_until
            entry.refused_until = now + settings.refuse_seconds
            return previous
        return None

    def _unreserve(self, entry: _Entry, previous: float | None) -> None:
        entry.pending -= 1
        if previous is not None and entry.failures + entry.pending < self.settings.refuse_after:
            # This attempt's slot started the refusal and it did not fail.
            entry.refused_until = previous

    def _failed(self, attempt: AuthAttempt, aor: str | None) -> float:
        settings = self.settings
        now = self._clock.seconds()
        if not attempt._known:
            self._peers.expire(now, settings.forget_after)
            self._users.expire(now, settings.forget_after)
        delay = 0.0
        for entry, previous in zip(attempt._entries, attempt._previous, strict=True):
            entry.pending -= 1
            entry.failures += 1
            entry.last_failure = now
            limit = settings.refuse_after
            if (
                limit
                and entry.failures >= limit
                and (previous is not None or entry.refused_until <= now)
            ):
                # The count is full of failures (none can be in flight: at
                # most limit are admitted): refuse.
                entry.refused_until = now + settings.refuse_seconds
                self.log.warn(
                    "Refusing {kind} {key} for {seconds}s after {failures} authentication attempts",
                    kind=self._kind(attempt, entry),
                    key=self._key(attempt, entry),
                    seconds=settings.refuse_seconds,
                    failures=entry.failures + entry.pending,
                    peer=attempt.peer,
                    aor=aor,
                )
            delay = max(delay, self._delay(entry.failures))
        return delay

    def _succeeded(self, attempt: AuthAttempt) -> None:
        peer = attempt.peer
        username = attempt.username
        now = self._clock.seconds()
        # A success gives its slot back and clears no count, not even its
        # own pair's: an attacker sharing the address would otherwise get
        # refuse_after more guesses after each of the user's successes (a
        # phone refreshing every minute: one window a minute). The user's own
        # failures are forgotten forget_after seconds after the last one.
        self._release(attempt)
        if username is None:
            return
        pair = self._known.get_or_create((peer, username))
        pair.trusted_at = now

    def _release(self, attempt: AuthAttempt) -> None:
        if attempt._known:
            [pair] = attempt._entries
            [previous] = attempt._previous
            self._unreserve(pair, previous)
            return
        now = self._clock.seconds()
        if attempt._previous is _NOT_REFUSING:
            # The usual case, written out (_unreserve, _drop_if_idle): neither slot
            # started a refusal.
            peer_entry, user_entry = attempt._entries
            peer_entry.pending -= 1
            user_entry.pending -= 1
            # Successful attempts leave nothing behind (see _drop_if_idle).
            if not (peer_entry.failures or peer_entry.pending or peer_entry.refused_until > now):
                self._peers.discard(attempt.peer, peer_entry)
            if not (user_entry.failures or user_entry.pending or user_entry.refused_until > now):
                self._users.discard(attempt.username or "", user_entry)
            return
        peer_entry = attempt._entries[0]
        self._unreserve(peer_entry, attempt._previous[0])
        self._drop_if_idle(self._peers, attempt.peer, peer_entry, now)
        if attempt.username is not None:
            user_entry = attempt._entries[1]
            self._unreserve(user_entry, attempt._previous[1])
            self._drop_if_idle(self._users, attempt.username, user_entry, now)

    @staticmethod
    def _drop_if_idle(table: _Table[str], key: str, entry: _Entry, now: float) -> None:
        # Successful attempts leave nothing behind: the tables hold only
        # sources and usernames that failed (and bounded memory is spent on
        # those).
        if not entry.failures and not entry.pending and entry.refused_until <= now:
            table.discard(key, entry)

    def _kind(self, attempt: AuthAttempt, entry: _Entry) -> str:
        if attempt._known:
            return "known pair"
        return "peer" if entry is attempt._entries[0] else "user"

    def _key(self, attempt: AuthAttempt, entry: _Entry) -> str:
        if attempt._known:
            return f"{attempt.username}@{attempt.peer}"
        if entry is attempt._entries[0]:
            return attempt.peer
        return attempt.username or ""

    def _delay(self, failures: int) -> float:
        settings = self.settings
        excess = failures - settings.free_failures
        if excess <= 0:
            return 0.0
        # 2 ** excess overflows float for huge counts: cap the exponent.
        return float(min(settings.max_delay, settings.base_delay * 2.0 ** min(excess - 1, 64)))
