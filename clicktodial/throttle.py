"""
Slowing down and refusing repeated authentication failures.

Guessing SIP passwords is cheap for an attacker (one UDP datagram per
guess), so after a few failures from one source address, or for one
username, the registrar delays its 401/403 answers (exponentially, up to a
cap) and then refuses that source or username outright for a while. The
numbers are settings (L{ThrottleSettings}); time comes from an injected
C{IReactorTime}; memory is bounded (least recently failed entries are
evicted first, and entries are forgotten after a quiet period).

Refusals by username could let anyone lock a user's phone out by failing
on purpose. So a source address that has authenticated as a user recently
stays exempt from that user's delays and refusal (only its own failures
count against it).
"""

from __future__ import annotations

from collections import OrderedDict

from attrs import field, frozen, validators
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["AuthThrottle", "ThrottleSettings"]

_non_negative = validators.ge(0)
_non_negative_float = validators.ge(0.0)


@frozen
class ThrottleSettings:
    """
    How authentication failures are throttled.

    @ivar free_failures: failures (per source address and per username)
        answered without delay.
    @ivar base_delay: seconds of delay for the first failure past
        C{free_failures}; each further failure doubles it.
    @ivar max_delay: cap of the delay; keep it well below a SIP client's
        Timer F (32 s) so a delayed answer still reaches the client.
    @ivar refuse_after: failures after which the source or username is
        refused outright (0 never refuses).
    @ivar refuse_seconds: how long a refusal lasts.
    @ivar forget_after: seconds without failure after which the count of a
        source or username starts again from zero.
    @ivar max_entries: bound of each table (sources, usernames, trusted
        source/username pairs).
    """

    free_failures: int = field(default=3, validator=_non_negative)
    base_delay: float = field(default=0.5, validator=_non_negative_float)
    max_delay: float = field(default=8.0, validator=_non_negative_float)
    refuse_after: int = field(default=20, validator=_non_negative)
    refuse_seconds: float = field(default=300.0, validator=_non_negative_float)
    forget_after: float = field(default=900.0, validator=validators.gt(0.0))
    max_entries: int = field(default=100_000, validator=validators.ge(1))


class _Entry:
    __slots__ = ("failures", "last_failure", "refused_until")

    def __init__(self) -> None:
        self.failures = 0
        self.last_failure = 0.0
        self.refused_until = 0.0


class _Table:
    """Failure counts by key, least recently failed first."""

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> _Entry | None:
        return self._entries.get(key)

    def get_or_create(self, key: str) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self._max_entries:
                self._entries.popitem(last=False)
            entry = self._entries[key] = _Entry()
        else:
            self._entries.move_to_end(key)
        return entry

    def discard(self, key: str) -> None:
        self._entries.pop(key, None)

    def expire(self, now: float, forget_after: float) -> None:
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if (now - entry.last_failure < forget_after
                    or entry.refused_until > now):
                break
            del entries[key]


class AuthThrottle:
    """
    Tracks authentication failures by source address (host only: a NAT
    may change the port) and by username.

    Use: L{refused} before doing any work for a request; L{failure} when
    authentication fails (delay the answer by what it returns); L{success}
    when it succeeds.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime,
                 settings: ThrottleSettings | None = None) -> None:
        self._clock = clock
        self.settings = settings if settings is not None else ThrottleSettings()
        n = self.settings.max_entries
        self._peers = _Table(n)
        self._users = _Table(n)
        # (peer, username) pairs that authenticated recently -> time.
        self._trusted: OrderedDict[tuple[str, str], float] = OrderedDict()

    def refused(self, peer: str, username: str | None = None) -> float:
        """
        Seconds left of a refusal of C{peer} (or of C{username}, unless
        C{peer} authenticated as that user recently); 0 if not refused.
        """
        now = self._clock.seconds()
        left = 0.0
        entry = self._peers.get(peer)
        if entry is not None:
            left = entry.refused_until - now
        if username is not None and not self._is_trusted(peer, username, now):
            entry = self._users.get(username)
            if entry is not None:
                left = max(left, entry.refused_until - now)
        return max(0.0, left)

    def failure(self, peer: str, username: str | None, aor: str | None = None
                ) -> float:
        """
        Record a failure of C{peer} (and of C{username} if given).

        @return: the seconds to delay the answer to this request.
        """
        settings = self.settings
        now = self._clock.seconds()
        self._peers.expire(now, settings.forget_after)
        self._users.expire(now, settings.forget_after)
        delay = self._count(self._peers.get_or_create(peer), now, "peer",
                            peer, peer, aor)
        if username is not None and not self._is_trusted(peer, username, now):
            delay = max(delay, self._count(self._users.get_or_create(username),
                                           now, "user", username, peer, aor))
        return delay

    def success(self, peer: str, username: str) -> None:
        """
        Record that C{peer} authenticated as C{username}: its own failure
        count is cleared and it becomes exempt from C{username}'s.
        """
        self._peers.discard(peer)
        key = (peer, username)
        trusted = self._trusted
        trusted[key] = self._clock.seconds()
        trusted.move_to_end(key)
        while len(trusted) > self.settings.max_entries:
            trusted.popitem(last=False)

    @property
    def tracked(self) -> int:
        """How many sources and usernames are tracked now."""
        return len(self._peers) + len(self._users)

    def _is_trusted(self, peer: str, username: str, now: float) -> bool:
        when = self._trusted.get((peer, username))
        if when is None:
            return False
        if now - when >= self.settings.forget_after:
            del self._trusted[(peer, username)]
            return False
        return True

    def _count(self, entry: _Entry, now: float, kind: str, key: str,
               peer: str, aor: str | None) -> float:
        settings = self.settings
        if now - entry.last_failure >= settings.forget_after:
            entry.failures = 0
        entry.failures += 1
        entry.last_failure = now
        n = entry.failures
        if settings.refuse_after and n >= settings.refuse_after \
                and entry.refused_until <= now:
            entry.refused_until = now + settings.refuse_seconds
            self.log.warn(
                "Refusing {kind} {key} for {seconds}s after {failures}"
                " authentication failures",
                kind=kind, key=key, seconds=settings.refuse_seconds,
                failures=n, peer=peer, aor=aor)
        excess = n - settings.free_failures
        if excess <= 0:
            return 0.0
        # 2 ** excess overflows float for huge counts: cap the exponent.
        return float(min(settings.max_delay,
                         settings.base_delay * 2.0 ** min(excess - 1, 64)))
