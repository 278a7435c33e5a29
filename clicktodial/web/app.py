"""
The web application's logic, shared by the HTML pages and the JSON API: who is asking
(session cookie or API token), logging in with throttling, the directory, placing, viewing
and ending calls, and the live event streams.

It talks to the rest of the daemon only through interfaces: the stores
(:class:`~clicktodial.interfaces.IUserStore`, ``ILocationStore``, ``ICallRecordStore``), the
:class:`~clicktodial.interfaces.ICallController` and a :class:`RegistrationMonitor`.
"""

from __future__ import annotations

import datetime
import secrets
from collections import deque
from collections.abc import Callable

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from clicktodial.calls.events import CallInfo
from clicktodial.calls.policy import CallRefused
from clicktodial.calls.trace import CallTracer
from clicktodial.config import Config, WebConfig
from clicktodial.dialplan.dialler import Dialler
from clicktodial.dialplan.numbers import InvalidNumber, LocalName
from clicktodial.dialplan.plan import DialDecision, DialRefused
from clicktodial.interfaces import (
    ICallController,
    ICallEventListener,
    ICallRecordStore,
    ICallTraceStore,
    ILocationStore,
    IOutboundCalls,
    IOutboundQuota,
    IStoreBackend,
    ITrunkRegistry,
    IUserStore,
)
from clicktodial.store.traces import CallTrace, TracedMessage
from clicktodial.store.values import (
    User,
    is_valid_username,
    user_aor,
)
from clicktodial.throttle import AuthThrottle, ThrottleRefused, ThrottleSettings
from clicktodial.web.edge import RequestOrigin
from clicktodial.web.events import Registration, RegistrationMonitor
from clicktodial.web.http import HTTPError
from clicktodial.web.sessions import SESSION_COOKIE, Session, SessionStore, constant_time_equal
from clicktodial.web.sse import EventStream
from clicktodial.web.trace import CallWording, message_json, plain_reason

__all__ = [
    "DEFAULT_LIMITS",
    "Principal",
    "RateLimit",
    "SoftphoneSettings",
    "WebApp",
    "call_json",
    "new_secret",
    "registration_json",
    "iso_time",
    "login_throttle_settings",
    "make_web_app",
]

log = Logger(namespace="clicktodial.web.app")

#: The ``[web]`` settings a :class:`WebApp` built without any uses: the defaults of
#: ``conf/example.ini`` (login throttling, sessions, rate limits, event streams, body size).
DEFAULT_LIMITS = WebConfig(listen="tcp:8080:interface=127.0.0.1")


def login_throttle_settings(limits: WebConfig) -> ThrottleSettings:
    """How failed web logins are throttled, from ``[web] login_*``."""
    return ThrottleSettings(
        free_failures=limits.login_free_failures,
        base_delay=limits.login_base_delay,
        max_delay=limits.login_max_delay,
        refuse_after=limits.login_refuse_after,
        refuse_seconds=limits.login_refuse_seconds,
        forget_after=limits.login_forget_after,
        max_entries=limits.login_max_tracked,
        trust_seconds=limits.login_trust_seconds,
    )


#: Methods that change state: with a session cookie they need the CSRF token.
UNSAFE_METHODS = frozenset({b"POST", b"PUT", b"PATCH", b"DELETE"})
CSRF_HEADER = b"x-csrf-token"

#: SIP statuses and end reasons that mean "the caller has no phone to ring".
_CALLER_UNREACHABLE = "caller-unreachable"


def iso_time(when: float | None) -> str | None:
    """POSIX seconds as an RFC 3339 UTC timestamp (``2026-11-23T20:30:00.000Z``)."""
    if when is None:
        return None
    moment = datetime.datetime.fromtimestamp(when, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@attrs.frozen
class SoftphoneSettings:
    """
    What a user types into a softphone to register with this daemon.

    :ivar port: the UDP and TCP port; ``tls_port`` is SIP over TLS's (None without TLS).
    :ivar digest_algorithms: the Digest algorithms the registrar offers, in its order (a
        phone must know one of them; baresip 1.0 and SIPp 3.6 know only MD5).
    """

    server: str
    port: int
    transports: tuple[str, ...]
    domain: str
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    tls_port: int | None = None

    @property
    def realm(self) -> str:
        """The Digest realm of the registrar's challenges: the domain (the store's realm)."""
        return self.domain

    @classmethod
    def from_config(cls, config: Config) -> SoftphoneSettings:
        """From ``[sip]`` and ``[registrar]``: the server is the listen address (the domain
        when listening on every address)."""
        sip = config.sip
        host = sip.listen.host
        server = sip.domain if host in ("0.0.0.0", "::", "") else host
        if ":" in server and not server.startswith("["):
            server = f"[{server}]"
        tls_port = sip.tls_listen.port if "tls" in sip.transports else None
        return cls(
            server,
            sip.listen.port,
            tuple(sip.transports),
            sip.domain,
            tuple(config.registrar.digest_algorithms),
            tls_port,
        )


@attrs.frozen
class Principal:
    """
    Who makes a request: a user, through a browser session or an API token.

    :ivar session: the browser session, or None for a token.
    """

    user: User
    session: Session | None = None

    @property
    def username(self) -> str:
        return self.user.username

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin

    def may_see_contacts(self, username: str) -> bool:
        """
        Admins see every user's contact URIs (a phone's IP address and port); others see
        only their own, and everyone else's presence (registered, how many phones).
        """
        return self.is_admin or self.username == username

    def may_see(self, call: CallInfo) -> bool:
        """Users see their own calls (as caller or callee); admins see every call."""
        return self.is_admin or self.username in (call.caller, call.callee)


def call_json(call: CallInfo) -> dict[str, object]:
    """
    A call in the API's form (docs/web.md, ``Call`` in web/openapi.json): ``id``,
    ``state``, ``caller``, ``callee``, ``created``, then those of ``answered`` (when it
    was connected), ``ended_at``, ``duration``, ``reason`` (its end reason), ``sip_status``,
    ``who_hung_up``, ``media_relay`` (not for a call rebuilt from its record), ``number``,
    ``destination_class``, ``trunk`` and ``refusal`` that it has.
    """
    value: dict[str, object] = {
        "id": call.call_id,
        "state": call.state,
        "caller": call.caller,
        "callee": call.callee,
        "created": iso_time(call.created_at),
    }
    # Only what the call has (a just placed call has none of the times: no call made
    # for them).
    connected_at, ended_at = call.connected_at, call.ended_at
    if connected_at is not None:
        value["answered"] = iso_time(connected_at)
    if ended_at is not None:
        value["ended_at"] = iso_time(ended_at)
        if connected_at is not None:
            value["duration"] = call.duration
    optional = (
        ("reason", call.end_reason),
        ("sip_status", call.sip_status),
        ("who_hung_up", call.who_hung_up),
        ("media_relay", call.media_relay),
        ("number", call.number),
        ("destination_class", call.destination_class),
        ("trunk", call.trunk),
        ("refusal", call.refusal),
    )
    for name, field in optional:
        if field is not None:
            value[name] = field
    return value


class RateLimit:
    """At most ``count`` events per ``per`` seconds for each key (a sliding window)."""

    def __init__(self, clock: IReactorTime, count: int, per: float, max_keys: int = 100_000):
        self.clock = clock
        self.count = count
        self.per = per
        self.max_keys = max_keys
        self._events: dict[str, deque[float]] = {}

    def allow(self, key: str) -> float:
        """Record an event for ``key``: 0 if allowed, else the seconds until one would be."""
        now = self.clock.seconds()
        events = self._events.get(key)
        if events is None:
            if len(self._events) >= self.max_keys:
                self._events.pop(next(iter(self._events)))
            events = self._events[key] = deque()
        while events and now - events[0] >= self.per:
            events.popleft()
        if len(events) >= self.count:
            return self.per - (now - events[0])
        events.append(now)
        return 0.0


def _retry_after(seconds: float) -> dict[bytes, bytes]:
    return {b"retry-after": str(max(1, int(seconds + 0.999))).encode()}


@implementer(ICallEventListener)
class _Subscriber:
    """One event stream's interest: its user's calls and everyone's registrations."""

    def __init__(
        self, principal: Principal, stream: EventStream, trace_call: str | None = None
    ) -> None:
        self.principal = principal
        self.stream = stream
        #: the call whose trace this stream follows (``?trace=ID``), which it may see
        self.trace_call = trace_call

    def call_state_changed(self, info: CallInfo) -> None:
        if self.principal.username in (info.caller, info.callee) or (
            info.call_id == self.trace_call
        ):
            self.stream.send("call", call_json(info))

    def trace_message(self, call_id: str, message: TracedMessage) -> None:
        value = message_json(message, -1, 0)
        value["at_ms"] = message.at_ms
        value["call_id"] = call_id
        del value["time_ms"], value["index"]
        self.stream.send("trace", value)

    def registration_changed(self, registration: Registration) -> None:
        now = self.stream.clock.seconds()
        contacts = self.principal.may_see_contacts(registration.username)
        self.stream.send("registration", registration_json(registration, now, contacts=contacts))


def registration_json(
    registration: Registration, now: float, *, contacts: bool
) -> dict[str, object]:
    """
    ``{"username", "registered", "phones"}`` (phones: how many contacts are registered) and,
    with ``contacts``, ``"contacts": [{"uri", "expires"}]`` (seconds left at ``now``).
    """
    value: dict[str, object] = {
        "username": registration.username,
        "registered": registration.registered,
        "phones": len(registration.contacts),
    }
    if contacts:
        value["contacts"] = [
            {"uri": c.uri, "expires": max(0, int(c.expires_at - now + 0.5))}
            for c in registration.contacts
        ]
    return value


class WebApp:
    """
    The web interface's state and operations.

    :param store: the user, location and call record stores (one backend provides all three).
    :param controller: the call controller; None while the daemon has none (calls then get 503).
    :param registrations: where registration changes come from.
    :param limits: ``[web]``: login throttling, session lifetimes, calls a user may place a
        minute and event streams a user may hold (more get 429), keepalive and retry of the
        event streams, the largest request body.
    :param sessions: the session store (by default one with ``limits``' lifetimes).
    :param tracer: keeps the calls' SIP messages (``[calls] trace``), or None.
    :param wording: the ``[calls]`` timers quoted by the failure reasons.
    :param trunks: the SIP trunks whose status the admin page shows (None: no trunks).
    """

    def __init__(
        self,
        clock: IReactorTime,
        store: IStoreBackend,
        controller: ICallController | None,
        registrations: RegistrationMonitor,
        softphone: SoftphoneSettings,
        *,
        limits: WebConfig = DEFAULT_LIMITS,
        sessions: SessionStore | None = None,
        locations: ILocationStore | None = None,
        tracer: CallTracer | None = None,
        wording: CallWording | None = None,
        dialler: Dialler | None = None,
        trunks: ITrunkRegistry | None = None,
    ) -> None:
        self.clock = clock
        #: reads what users dial: directory names, and numbers by [dialplan]
        self.dialler = (
            dialler
            if dialler is not None
            else Dialler(clock, None, store, store, IOutboundQuota(store, None), softphone.domain)
        )
        #: the SIP trunks (``[trunk:NAME]``) the admin page shows, or None
        self.trunks = trunks
        #: the calls' traces: live (buffered here) through the tracer, else the store's
        self.tracer = tracer
        self.traces: ICallTraceStore | None = ICallTraceStore(store, None)
        #: the timers the failure reasons quote
        self.wording = wording if wording is not None else CallWording()
        self.users: IUserStore = store
        self.locations: ILocationStore = locations if locations is not None else store
        self.records: ICallRecordStore = store
        self.store = store
        self.controller = controller
        self.registrations = registrations
        self.softphone = softphone
        self.domain = softphone.domain
        self.limits = limits
        #: what is believed of X-Forwarded-* (trusted proxies), Secure cookies, HSTS
        self.origin = RequestOrigin.from_config(limits)
        self.sessions = (
            sessions
            if sessions is not None
            else SessionStore(
                clock, limits.session_idle_timeout, limits.session_lifetime, limits.max_sessions
            )
        )
        self.login_throttle = AuthThrottle(clock, login_throttle_settings(limits))
        self.call_rate = RateLimit(clock, limits.calls_per_minute, 60.0)
        self.max_streams_per_user = limits.event_streams_per_user
        self._streams: dict[str, int] = {}
        self._subscribers: list[_Subscriber] = []
        self._unsubscribe_calls: Callable[[], None] | None = None

    # -- who is asking -------------------------------------------------------------------

    def client_address(self, request: Request) -> str:
        """The client's IP address (through ``[web] trusted_proxies``: X-Forwarded-For)."""
        return self.origin.client_address(request)

    def cookie_secure(self, request: Request) -> bool:
        """Whether the cookies of the answer to ``request`` get ``Secure``."""
        return self.origin.cookie_secure(request)

    def session_of(self, request: Request) -> Session | None:
        """The live session named by the request's cookie, if any."""
        cookie = request.getCookie(SESSION_COOKIE)
        if not cookie:
            return None
        return self.sessions.get(cookie.decode("ascii", "replace"))

    async def authenticate(self, request: Request, *, allow_token: bool = True) -> Principal | None:
        """
        The user making ``request``: by ``Authorization: Bearer`` token, or by session cookie
        (state-changing methods then need the session's CSRF token in ``X-CSRF-Token``).

        :raises HTTPError: 401 for a bad token, 403 for a missing or wrong CSRF token.
        """
        authorization = _header(request, b"authorization")
        if allow_token and authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise HTTPError(401, "use Authorization: Bearer <token>", _bearer_challenge())
            username = await self.users.verify_token(token.strip())
            user = await self.users.get_user(username) if username else None
            if user is None or user.disabled:
                raise HTTPError(401, "invalid API token", _bearer_challenge())
            return Principal(user)
        session = self.session_of(request)
        if session is None:
            return None
        user = await self.users.get_user(session.username)
        if user is None or user.disabled:
            self.sessions.remove(session.session_id)
            return None
        if allow_token and request.method in UNSAFE_METHODS:
            self.check_csrf(session, _header(request, CSRF_HEADER))
        return Principal(user, session)

    def check_csrf(self, session: Session, token: str) -> None:
        """:raises HTTPError: 403 unless ``token`` is the session's CSRF token."""
        if not token or not constant_time_equal(token, session.csrf_token):
            raise HTTPError(403, "missing or wrong CSRF token")

    async def login(self, request: Request, username: str, password: str) -> Session:
        """
        Check a web login and start a new session (a fresh id: never one the browser had).

        Unknown user, wrong password and disabled user get the same answer, after the same
        Argon2id work (the store's ``check_password``). Repeated failures per account and per
        client address are delayed, then refused for a while.

        :raises HTTPError: 401 wrong credentials, 429 too many failures.
        """
        peer = self.client_address(request)
        username = username.strip().lower()
        key = username if is_valid_username(username) else "?"
        # Reserve before checking (docs/web.md, "Security"): the attempt counts as a failure
        # in flight before the password is hashed, so however many guesses arrive at once,
        # at most login_refuse_after are checked per window.
        try:
            attempt = self.login_throttle.begin(peer, key)
        except ThrottleRefused as refused:
            raise HTTPError(
                429, "too many failed logins: try again later", _retry_after(refused.retry_after)
            ) from None
        try:
            user = await self.users.check_password(username, password) if key != "?" else None
            if key == "?":
                # Spend the same time as a real check, so a malformed name looks like a wrong one.
                await self.users.check_password("", password)
            if user is None:
                delay = attempt.failed()
                log.info("web login failed for {username} from {peer}", username=key, peer=peer)
                if delay:
                    await deferLater(self.clock, delay, lambda: None)
                raise HTTPError(401, "wrong username or password")
            attempt.succeeded()
        finally:
            # A store error tested no password: the slot is given back.
            attempt.released()
        old = self.session_of(request)
        if old is not None:
            self.sessions.remove(old.session_id)
        log.info("web login by {username} from {peer}", username=user.username, peer=peer)
        return self.sessions.create(user.username)

    # -- directory -----------------------------------------------------------------------

    async def directory(self) -> list[tuple[User, Registration]]:
        """Every user, with their registration state, ordered by user name."""
        users = await self.users.list_users()
        registrations = await self.registrations.current()
        return [(u, registrations.get(u.username, Registration(u.username))) for u in users]

    async def registration(self, username: str) -> Registration:
        """One user's registration state."""
        bindings = await self.locations.get_bindings(
            user_aor(username, self.domain), self.clock.seconds()
        )
        return Registration.from_bindings(username, bindings)

    # -- calls ---------------------------------------------------------------------------

    def _controller(self) -> ICallController:
        if self.controller is None:
            raise HTTPError(503, "call control is not available")
        return self.controller

    async def place_call(self, principal: Principal, callee: str) -> CallInfo:
        """
        Ring ``principal``'s own phone, then ``callee``'s.

        :raises HTTPError: 400 malformed callee, 404 unknown or disabled callee, 409 the
            caller has no registered phone, 403 the policy refuses, 429 too many calls.
        """
        controller = self._controller()
        if not isinstance(callee, str) or not is_valid_username(callee):
            raise HTTPError(400, "callee must be a user name")
        wait = self.call_rate.allow(principal.username)
        if wait:
            raise HTTPError(429, "too many calls: try again later", _retry_after(wait))
        return await self._place_local(controller, principal, callee)

    async def _place_local(
        self, controller: ICallController, principal: Principal, callee: str
    ) -> CallInfo:
        target = await self.users.get_user(callee)
        if target is None or target.disabled:
            raise HTTPError(404, f"no user {callee}")
        mine = await self.registration(principal.username)
        if not mine.registered:
            raise HTTPError(409, "your phone is not registered")
        return await _placed(controller, principal.username, callee)

    async def place_calls(
        self, principal: Principal, calls: list[tuple[str, str]]
    ) -> list[CallInfo | HTTPError]:
        """
        An administrator places ``calls`` (caller, callee) at once, for any users: load
        tests and operator tools. Each is refused or placed as :meth:`place_call` would,
        but from the controller's own look-ups (no store read per call) and outside
        ``calls_per_minute`` (an administrator is the operator, not a clicking user).

        :returns: per call, in order, its call or why it was refused (404, 409, 403).
        :raises HTTPError: 403 not an administrator, 400 more than ``max_batch_calls``.
        """
        if not principal.is_admin:
            raise HTTPError(403, "only administrators may place calls for other users")
        if len(calls) > self.limits.max_batch_calls:
            raise HTTPError(
                400,
                f"at most {self.limits.max_batch_calls} calls per request ([web] max_batch_calls)",
            )
        controller = self._controller()
        # Started together (the controller places each at once), then collected in order;
        # plain callbacks, not a coroutine per call.
        pending: list[Deferred[CallInfo | HTTPError]] = [
            controller.place_call(caller, callee).addCallbacks(
                _batch_placed, _batch_refused, callbackArgs=(caller,)
            )
            for caller, callee in calls
        ]
        # Collected last first: the records are written in the order the calls were
        # placed (the store's group commit), so once the last call has its answer the
        # others have theirs: one wait per batch, not one per call.
        results = [await placing for placing in reversed(pending)]
        results.reverse()
        return results

    def calls_in_progress(self, principal: Principal) -> list[CallInfo]:
        """The calls in progress that ``principal`` may see, as the controller knows them
        (with the cluster bus: every node's)."""
        if self.controller is None:
            return []
        return [call for call in self.controller.active_calls() if principal.may_see(call)]

    async def preview_dial(self, principal: Principal, text: str) -> LocalName | DialDecision:
        """
        What dialling ``text`` would call (``GET /dial``: nothing is placed or recorded).

        :raises HTTPError: 400 not a number or user name, 403 the dial plan refuses it.
        """
        return await self._resolve(principal, text, record=False)

    async def _resolve(
        self, principal: Principal, text: str, record: bool
    ) -> LocalName | DialDecision:
        if not isinstance(text, str):
            raise HTTPError(400, "number must be a string")
        try:
            return await self.dialler.resolve(principal.username, text, record=record)
        except InvalidNumber as e:
            raise HTTPError(400, str(e)) from None
        except DialRefused as e:
            raise HTTPError(403, e.message) from None

    async def dial(self, principal: Principal, text: str) -> CallInfo:
        """
        Call what ``text`` names: a directory user as :meth:`place_call`, or a telephone
        number through the dial plan and the controller's :class:`IOutboundCalls`.
        A refused number is recorded in the history (docs/dialplan.md).

        :raises HTTPError: as :meth:`place_call`; 400 not a number or user name, 403 the
            dial plan refuses the number (its class, no route, the daily limit).
        """
        controller = self._controller()
        wait = self.call_rate.allow(principal.username)
        if wait:
            raise HTTPError(429, "too many calls: try again later", _retry_after(wait))
        target = await self._resolve(principal, text, record=True)
        if isinstance(target, LocalName):
            return await self._place_local(controller, principal, target.name)
        outbound = IOutboundCalls(controller, None)
        if outbound is None:
            raise HTTPError(503, "this daemon cannot call telephone numbers")
        mine = await self.registration(principal.username)
        if not mine.registered:
            raise HTTPError(409, "your phone is not registered")
        try:
            charge = await self.dialler.admit(principal.username, target)
        except CallRefused as e:  # a DialRefused (the daily limit)
            raise HTTPError(403, e.message) from None
        try:
            info = await outbound.place_outbound(
                principal.username, target, charge.refund if charge is not None else None
            )
        except BaseException as e:
            # No call: not counted in the daily limit (docs/dialplan.md).
            if charge is not None:
                charge.refund()
            if isinstance(e, CallRefused):
                raise HTTPError(403, e.message) from None
            raise
        return attrs.evolve(
            info,
            number=str(target.number),
            destination_class=target.destination_class,
        )

    async def find_call(self, principal: Principal, call_id: str) -> CallInfo:
        """
        A call ``principal`` may see.

        :raises HTTPError: 404 unknown call, 403 someone else's call.
        """
        call: CallInfo | None = None
        if self.controller is not None:
            info = self.controller.get_call(call_id)
            if info is not None:
                call = await self._with_number(info)
        if call is None and _is_call_id(call_id):
            record = await self.records.get_call(call_id)
            if record is not None:
                call = CallInfo.from_record(record)
        if call is None:
            raise HTTPError(404, "no such call")
        if not principal.may_see(call):
            raise HTTPError(403, "not your call")
        return call

    async def _with_number(self, call: CallInfo) -> CallInfo:
        """A call in progress to a number (a callee no user name can be) with its number,
        class and trunk from its record (the controller's CallInfo has none of them)."""
        if not call.callee.startswith("+"):
            return call
        record = await self.records.get_call(call.call_id)
        if record is None:
            return call
        return attrs.evolve(
            call,
            number=record.number,
            trunk=record.trunk,
            destination_class=record.destination_class,
        )

    async def hang_up(self, principal: Principal, call_id: str) -> CallInfo:
        """
        Cancel or hang up a call ``principal`` may see.

        :raises HTTPError: 404, 403 as :meth:`find_call`; 409 the call is already over.
        """
        call = await self.find_call(principal, call_id)
        if not call.active or self.controller is None:
            raise HTTPError(409, "the call is already over")
        if not self.controller.hang_up(call_id, principal.username):
            raise HTTPError(409, "the call is already over")
        info = self.controller.get_call(call_id)
        if info is not None:
            return info
        record = await self.records.get_call(call_id)
        return CallInfo.from_record(record) if record is not None else call

    async def call_trace(
        self, principal: Principal, call_id: str
    ) -> tuple[CallInfo, CallTrace | None]:
        """
        A call ``principal`` may see, and its trace (None: nothing kept).

        :raises HTTPError: 404, 403 as :meth:`find_call`; 404 when no trace is kept.
        """
        call = await self.find_call(principal, call_id)
        if not self.keeps_traces:
            raise HTTPError(404, "this daemon keeps no call traces ([calls] trace)")
        return call, await self.trace_of(call)

    @property
    def keeps_traces(self) -> bool:
        """Whether call traces can be shown (being kept, or kept by the store)."""
        return self.tracer is not None or self.traces is not None

    async def trace_of(self, call: CallInfo) -> CallTrace | None:
        """The trace of a call already authorised: live through the tracer, else stored."""
        if self.tracer is not None:
            return await self.tracer.trace(call.call_id)
        if self.traces is not None:
            return await self.traces.get_trace(call.call_id)
        return None

    def failure_words(self, call: CallInfo, principal: Principal) -> str | None:
        """Why ``call`` ended, in plain words as ``principal`` reads it (None: in progress)."""
        if call.refusal is not None:
            return f"Refused by the dial plan: {call.refusal}"
        return plain_reason(
            caller=call.caller,
            callee=call.callee,
            state=call.state,
            end_reason=call.end_reason,
            sip_status=call.sip_status,
            who_hung_up=call.who_hung_up,
            viewer=principal.username,
            wording=self.wording,
        )

    async def history(self, username: str, limit: int, offset: int) -> tuple[list[CallInfo], bool]:
        """A user's calls newest first, and whether there are more after these."""
        records = await self.records.list_calls(user=username, limit=limit + 1, offset=offset)
        calls = []
        for record in records[:limit]:
            info = self.controller.get_call(record.call_id) if self.controller else None
            if info is None:
                calls.append(CallInfo.from_record(record))
            else:
                calls.append(
                    attrs.evolve(
                        info,
                        number=record.number,
                        destination_class=record.destination_class,
                        trunk=record.trunk,
                    )
                )
        return calls, len(records) > limit

    # -- live events ---------------------------------------------------------------------

    def open_stream(
        self, principal: Principal, request: Request, trace_call: str | None = None
    ) -> EventStream:
        """
        Stream ``principal``'s call events and everyone's registration changes on ``request``;
        with ``trace_call`` (a call ``principal`` may see: the caller checks), that call's
        events and each new message of its trace (``trace`` events).

        :raises HTTPError: 429 when the user has too many streams open.
        """
        username = principal.username
        if self._streams.get(username, 0) >= self.max_streams_per_user:
            raise HTTPError(429, "too many open event streams")
        self._streams[username] = self._streams.get(username, 0) + 1
        subscriber: _Subscriber

        def closed() -> None:
            self._streams[username] -= 1
            if not self._streams[username]:
                del self._streams[username]
            self._subscribers.remove(subscriber)
            unsubscribe_registrations()
            stop_trace()
            if not self._subscribers and self._unsubscribe_calls is not None:
                self._unsubscribe_calls()
                self._unsubscribe_calls = None

        stream = EventStream(
            self.clock,
            request,
            closed,
            keepalive=self.limits.event_keepalive,
            retry=round(self.limits.event_retry * 1000),
        )
        subscriber = _Subscriber(principal, stream, trace_call)
        stop_trace: Callable[[], None] = _nothing
        if trace_call is not None and self.tracer is not None:
            stop_trace = self.tracer.listen(trace_call, subscriber.trace_message)
        self._subscribers.append(subscriber)
        unsubscribe_registrations = self.registrations.subscribe(subscriber.registration_changed)
        if self._unsubscribe_calls is None and self.controller is not None:
            self._unsubscribe_calls = self.controller.subscribe(_Fanout(self._subscribers))
        return stream

    @property
    def open_streams(self) -> int:
        """How many event streams are open."""
        return len(self._subscribers)


@implementer(ICallEventListener)
class _Fanout:
    def __init__(self, subscribers: list[_Subscriber]) -> None:
        self.subscribers = subscribers

    def call_state_changed(self, info: CallInfo) -> None:
        for subscriber in list(self.subscribers):
            subscriber.call_state_changed(info)


async def _placed(
    controller: ICallController,
    caller: str,
    callee: str,
    unregistered: str = "your phone is not registered",
) -> CallInfo:
    """
    Place one call; the controller's refusals as the API answers them.

    :raises HTTPError: 404 unknown or disabled user, 403 the policy refuses, 409 the
        caller has no registered phone.
    """
    try:
        info = await controller.place_call(caller, callee)
    except CallRefused as e:
        raise _refusal(e) from None
    if _unregistered(info):
        raise HTTPError(409, unregistered)
    return info


def _refusal(refused: CallRefused) -> HTTPError:
    """How the API answers the controller's refusal: 404 for the users, else 403."""
    if refused.reason in ("unknown-user", "disabled-user"):
        return HTTPError(404, refused.message)
    return HTTPError(403, refused.message)


def _unregistered(info: CallInfo) -> bool:
    """Whether the call failed at once because the caller has no registered phone."""
    return info.state == "failed" and info.end_reason == _CALLER_UNREACHABLE


def _batch_placed(info: CallInfo, caller: str) -> CallInfo | HTTPError:
    """One call of a batch placed: its call, or 409 (:func:`_placed`'s answers)."""
    if _unregistered(info):
        return HTTPError(409, f"{caller}'s phone is not registered")
    return info


def _batch_refused(failure: Failure) -> HTTPError:
    """One call of a batch refused by the controller: its answer (other errors go on)."""
    failure.trap(CallRefused)
    refused = failure.value
    assert isinstance(refused, CallRefused)
    return _refusal(refused)


def _nothing() -> None:
    pass


def _header(request: Request, name: bytes) -> str:
    value = request.getHeader(name)
    return value.decode("latin-1") if value else ""


def _bearer_challenge() -> dict[bytes, bytes]:
    return {b"www-authenticate": b'Bearer realm="clicktodial"'}


def _is_call_id(text: str) -> bool:
    return 0 < len(text) <= 64 and all(c in "0123456789abcdef" for c in text)


def new_secret() -> str:
    """A SIP secret for a phone: 20 random URL-safe characters."""
    return secrets.token_urlsafe(15)


def make_web_app(
    config: Config,
    clock: IReactorTime,
    store: IStoreBackend,
    controller: ICallController | None,
    locations: ILocationStore | None = None,
    tracer: CallTracer | None = None,
    trunks: ITrunkRegistry | None = None,
) -> WebApp:
    """The daemon's web application on ``store`` and ``controller``, for ``[sip]`` and
    ``[web]``; registrations from ``locations`` (default: ``store``), call traces from
    ``tracer`` (and the store), the SIP trunks' status from ``trunks``."""
    if locations is None:
        locations = store
    monitor = RegistrationMonitor(
        clock, locations, config.sip.domain, interval=config.web.presence_poll_interval
    )
    calls = config.calls
    dialler = Dialler(
        clock, config.dialplan.plan(), store, store, IOutboundQuota(store, None), config.sip.domain
    )
    return WebApp(
        clock,
        store,
        controller,
        monitor,
        SoftphoneSettings.from_config(config),
        limits=config.web,
        locations=locations,
        tracer=tracer,
        trunks=trunks,
        wording=CallWording(calls.ring_timeout, calls.callee_ring_timeout, calls.max_duration),
        dialler=dialler,
    )
