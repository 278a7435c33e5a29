"""
Browser sessions: in memory, with an idle and an absolute lifetime on the injected clock.

A session id is a fresh 256-bit random value at every login (never the id a visitor had
before: no session fixation), sent in an ``HttpOnly``, ``SameSite=Strict`` cookie, ``Secure``
when the request came over TLS (directly or through a trusted proxy), or always (``[web]
secure_cookies``). Each session has its own CSRF token, required on every
state-changing request made with the cookie.

Sessions live in this process only: a restart logs everyone out, and daemons sharing a
database do not share sessions (the scale-out work may move them to the database).
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Request

__all__ = [
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "Session",
    "SessionStore",
    "clear_cookie",
    "constant_time_equal",
    "set_cookie",
]

#: The cookie carrying the session id.
SESSION_COOKIE = b"clicktodial_session"
#: The cookie carrying the login form's CSRF token (double-submit, before any session).
LOGIN_COOKIE = b"clicktodial_login"


def constant_time_equal(a: str, b: str) -> bool:
    """Compare two secrets without leaking where they differ."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def set_cookie(
    request: Request, name: bytes, value: str, *, secure: bool, max_age: int | None = None
) -> None:
    """
    Set a cookie the way all of ours are: HttpOnly, SameSite=Strict, and ``secure`` (the
    request came over TLS, directly or through a trusted proxy: ``WebApp.cookie_secure``).
    """
    request.addCookie(
        name,
        value.encode("ascii"),
        path=b"/",
        max_age=str(max_age).encode() if max_age is not None else None,
        httpOnly=True,
        secure=secure,
        sameSite="strict",
    )


def clear_cookie(request: Request, name: bytes, *, secure: bool) -> None:
    """Tell the browser to drop a cookie."""
    request.addCookie(
        name,
        b"",
        path=b"/",
        max_age=b"0",
        expires=b"Thu, 01 Jan 1970 00:00:00 GMT",
        httpOnly=True,
        secure=secure,
        sameSite="strict",
    )


@attrs.define
class Session:
    """
    One logged-in browser.

    :ivar csrf_token: required with every state-changing request of this session.
    :ivar created: when the user logged in.
    :ivar last_seen: when the session was last used (the idle timeout counts from here).
    """

    session_id: str = attrs.field(repr=False)
    username: str
    csrf_token: str = attrs.field(repr=False)
    created: float
    last_seen: float


class SessionStore:
    """
    The sessions of this process (the limits are ``[web] session_*`` and ``max_sessions``).

    :param idle_timeout: seconds of inactivity after which a session ends.
    :param lifetime: seconds after login after which a session ends regardless.
    :param max_sessions: bound of the table (the least recently used session goes first).
    """

    def __init__(
        self,
        clock: IReactorTime,
        idle_timeout: float,
        lifetime: float,
        max_sessions: int,
    ) -> None:
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.lifetime = lifetime
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, username: str) -> Session:
        """A new session (fresh id and CSRF token) for ``username``."""
        self.purge()
        now = self.clock.seconds()
        session = Session(
            session_id=secrets.token_urlsafe(32),
            username=username,
            csrf_token=secrets.token_urlsafe(32),
            created=now,
            last_seen=now,
        )
        self._sessions[session.session_id] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session ``session_id`` (its idle timer restarted), or None."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self.clock.seconds()
        if self._expired(session, now):
            del self._sessions[session_id]
            return None
        session.last_seen = now
        self._sessions.move_to_end(session_id)
        return session

    def remove(self, session_id: str) -> None:
        """End a session (logout)."""
        self._sessions.pop(session_id, None)

    def remove_user(self, username: str) -> int:
        """End every session of ``username`` (password changed, user disabled or removed)."""
        doomed = [k for k, s in self._sessions.items() if s.username == username]
        for key in doomed:
            del self._sessions[key]
        return len(doomed)

    def purge(self) -> int:
        """Forget the sessions that have expired; returns how many."""
        now = self.clock.seconds()
        doomed = [k for k, s in self._sessions.items() if self._expired(s, now)]
        for key in doomed:
            del self._sessions[key]
        return len(doomed)

    def _expired(self, session: Session, now: float) -> bool:
        return (
            now - session.last_seen >= self.idle_timeout or now - session.created >= self.lifetime
        )
