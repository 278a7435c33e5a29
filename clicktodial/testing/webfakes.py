"""
Fakes for testing the web interface: :class:`FakeCallController`, an in-memory
:class:`~clicktodial.interfaces.ICallController` whose calls move only when the test says, and
:func:`web_world`, a :class:`~clicktodial.web.app.WebApp` on a memory store and a fake clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import attrs
import treq
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from clicktodial.calls.events import CallEvents, CallInfo
from clicktodial.calls.policy import CallRefused
from clicktodial.calls.trace import CallTracer
from clicktodial.dialplan.plan import DialDecision
from clicktodial.interfaces import ICallController, ICallEventListener, IOutboundCalls
from clicktodial.store.memory import MemoryStore
from clicktodial.store.traces import TraceLimits
from clicktodial.store.values import (
    BindingChanges,
    CallUpdate,
    ContactChange,
    final_state,
    user_aor,
)
from clicktodial.testing.fakes import InlineReactor, InlineThreadPool
from clicktodial.web.app import SoftphoneSettings, WebApp
from clicktodial.web.events import RegistrationMonitor

__all__ = ["DOMAIN", "FakeCallController", "Reply", "WebClient", "WebWorld", "web_world"]

DOMAIN = "example.test"


@implementer(ICallController, IOutboundCalls)
class FakeCallController:
    """
    Calls that start in ``calling-caller`` and change state when :meth:`advance` is called;
    records are kept in the store as the real controller does.

    :ivar refuse: when set, :meth:`place_call` fails with ``CallRefused(refuse, ...)``.
    """

    def __init__(self, store: MemoryStore, clock: InlineReactor) -> None:
        self.store = store
        self.clock = clock
        self.events = CallEvents()
        self.calls: dict[str, CallInfo] = {}
        self.refuse: str | None = None
        self.hung_up: list[tuple[str, str | None]] = []
        #: the dial plan decisions :meth:`place_outbound` was given, with their caller
        self.outbound: list[tuple[str, DialDecision]] = []
        self.refunds: list[Callable[[], object] | None] = []

    def place_call(self, caller_username: str, callee_username: str) -> Deferred[CallInfo]:
        return Deferred.fromCoroutine(self._place(caller_username, callee_username))

    async def _place(self, caller: str, callee: str) -> CallInfo:
        if self.refuse is not None:
            raise CallRefused(self.refuse, f"refused: {self.refuse}")
        for name in (caller, callee):
            user = await self.store.get_user(name)
            if user is None:
                raise CallRefused("unknown-user", f"no user {name!r}")
        now = self.clock.seconds()
        call_id = await self.store.create_call(caller, callee, now)
        info = CallInfo(call_id, caller, callee, "calling-caller", now)
        self.calls[call_id] = info
        await self.store.update_call(call_id, CallUpdate(state="calling-caller"))
        self.events.publish(info)
        return info

    def place_outbound(
        self,
        caller_username: str,
        decision: DialDecision,
        refund_untried: Callable[[], object] | None = None,
    ) -> Deferred[CallInfo]:
        """A call to a number that goes out through the decision's first trunk
        (``refund_untried`` kept in :attr:`refunds`: a test calls it to end it untried)."""
        self.outbound.append((caller_username, decision))
        self.refunds.append(refund_untried)
        return Deferred.fromCoroutine(self._place_outbound(caller_username, decision))

    async def _place_outbound(self, caller: str, decision: DialDecision) -> CallInfo:
        if self.refuse is not None:
            raise CallRefused(self.refuse, f"refused: {self.refuse}")
        now = self.clock.seconds()
        number = str(decision.number)
        call_id = await self.store.create_call(caller, number, now)
        info = CallInfo(call_id, caller, number, "calling-caller", now)
        self.calls[call_id] = info
        await self.store.update_call(
            call_id,
            CallUpdate(
                state="calling-caller",
                number=number,
                destination_class=decision.destination_class,
                trunk=decision.trunks[0],
            ),
        )
        self.events.publish(info)
        return info

    def advance(
        self, call_id: str, state: str, reason: str | None = None, sip_status: int | None = None
    ) -> CallInfo:
        """Move a call to ``state`` (ending it for ``ended``/``failed``) and publish it."""
        info = self.calls[call_id]
        now = self.clock.seconds()
        changes: dict[str, object] = {"state": state}
        update: dict[str, object] = {"state": state}
        if state == "calling-callee":
            changes["caller_answered_at"] = now
            update.update(caller_answered_at=now, callee_rung_at=now)
        elif state == "connected":
            changes.update(callee_answered_at=now, connected_at=now)
            update.update(callee_answered_at=now, connected_at=now)
        elif state in ("ended", "failed"):
            changes.update(
                ended_at=now, end_reason=reason, sip_status=sip_status, who_hung_up="caller"
            )
            update.update(
                ended_at=now, end_reason=reason, sip_status=sip_status, who_hung_up="caller"
            )
            del self.calls[call_id]
        info = attrs.evolve(info, **changes)  # type: ignore[arg-type]
        if info.active:
            self.calls[call_id] = info
        self.store.update_call(call_id, CallUpdate(**update))  # type: ignore[arg-type]
        self.events.publish(info)
        return info

    def hang_up(self, call_id: str, by_username: str | None = None) -> bool:
        if call_id not in self.calls:
            return False
        self.hung_up.append((call_id, by_username))
        was_connected = self.calls[call_id].state == "connected"
        self.advance(
            call_id,
            final_state(self.calls[call_id].connected_at),
            "caller-hangup" if was_connected else "cancelled",
        )
        return True

    def get_call(self, call_id: str) -> CallInfo | None:
        return self.calls.get(call_id)

    def active_calls(self) -> list[CallInfo]:
        return list(self.calls.values())

    def subscribe(self, listener: ICallEventListener) -> Callable[[], None]:
        return self.events.subscribe(listener)


@attrs.define
class WebWorld:
    """A web app on a memory store with users alice (admin), bob and carol, and a fake clock."""

    clock: InlineReactor
    store: MemoryStore
    controller: FakeCallController
    app: WebApp

    def register(self, username: str, contact: str | None = None, expires: int = 3600) -> None:
        """Give ``username`` a binding (``expires`` 0 removes it)."""
        contact = contact or f"sip:{username}@127.0.0.1:5070"
        changes = BindingChanges(
            call_id=f"reg-{username}",
            cseq=int(self.clock.seconds() * 10) + 1,
            contacts=(ContactChange(contact, expires),),
        )
        self.store.update_bindings(user_aor(username, DOMAIN), changes, self.clock.seconds())


def web_world(trace: TraceLimits | None = None, **options: object) -> WebWorld:
    """A :class:`WebWorld`; ``options`` go to :class:`WebApp`. Passwords are ``NAME-pass``.
    With ``trace``, the app has a :class:`CallTracer` (``app.tracer``) on the store."""
    clock = InlineReactor()
    clock.advance(1_700_000_000)
    store = MemoryStore(
        clock,
        realm=DOMAIN,
        hash_pool=InlineThreadPool(),
        hasher=PasswordHasher.from_parameters(CHEAPEST),
    )
    store.start()
    for name, admin in (("alice", True), ("bob", False), ("carol", False)):
        store.add_user(
            name,
            password=f"{name}-pass",
            sip_password=name,
            display_name=name.title(),
            is_admin=admin,
        )
    controller = FakeCallController(store, clock)
    monitor = RegistrationMonitor(clock, store, DOMAIN, interval=2.0)
    softphone = SoftphoneSettings("127.0.0.1", 5060, ("udp", "tcp"), DOMAIN)
    if trace is not None:
        options["tracer"] = CallTracer(clock, store, trace)
    app = WebApp(clock, store, controller, monitor, softphone, **options)  # type: ignore[arg-type]
    return WebWorld(clock, store, controller, app)


@attrs.frozen
class Reply:
    """A response seen by :class:`WebClient`."""

    code: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class WebClient:
    """
    A browser-like client of a resource through ``treq.testing.StubTreq``: keeps cookies,
    finds CSRF tokens in forms, and runs requests to completion on the fake clock.
    """

    def __init__(
        self, world: WebWorld, resource: Any = None, base: str = "http://clicktodial.test"
    ) -> None:
        """``base``: the scheme and host requests go to (``https://...``: over "TLS")."""
        from clicktodial.web.resource import make_root_resource

        self.world = world
        self.base = base
        self.stub = StubTreq(resource if resource is not None else make_root_resource(world.app))
        self.cookies: dict[str, str] = {}
        self.chunks: list[bytes] = []

    def _wait(self, d: Deferred[Any], steps: int = 200) -> Any:
        results: list[Any] = []
        d.addBoth(results.append)
        self.stub.flush()
        for _ in range(steps):
            if results:
                break
            self.world.clock.advance(0.1)
            self.stub.flush()
        assert results, "the request did not complete"
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: object = None,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        stream: bool = False,
    ) -> Reply:
        """Send a request; with ``stream``, return once the headers are in (body so far)."""
        sent = {k: [v] for k, v in (headers or {}).items()}
        if self.cookies:
            sent["Cookie"] = ["; ".join(f"{k}={v}" for k, v in self.cookies.items())]
        body: bytes | None = data
        if json_body is not None:
            body = json.dumps(json_body).encode()
            sent.setdefault("Content-Type", ["application/json"])
        if form is not None:
            body = urlencode(form).encode()
            sent["Content-Type"] = ["application/x-www-form-urlencoded"]
        d = self.stub.request(  # type: ignore[attr-defined]
            method, self.base + path, headers=sent, data=body, allow_redirects=False
        )
        response = self._wait(d)
        for raw in response.headers.getRawHeaders(b"set-cookie", []):
            name, _, rest = raw.decode().partition("=")
            value = rest.split(";", 1)[0]
            if "max-age=0" in rest.lower():
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        headers_out = {
            k.decode().lower(): b", ".join(v).decode()
            for k, v in response.headers.getAllRawHeaders()
        }
        if stream:
            self.chunks = []
            treq.collect(response, self.chunks.append)
            self.stub.flush()
            return Reply(response.code, headers_out, b"".join(self.chunks))
        content = self._wait(response.content())
        return Reply(response.code, headers_out, content)

    def streamed(self) -> bytes:
        """Everything a streaming response sent so far."""
        self.stub.flush()
        return b"".join(self.chunks)

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def csrf(self, path: str) -> str:
        """The CSRF token in the first form of the page at ``path``."""
        match = re.search(r'name="csrf" value="([^"]*)"', self.get(path).text)
        assert match, f"no CSRF field on {path}"
        return match.group(1)

    def post_form(self, path: str, fields: dict[str, str], csrf_from: str = "/directory") -> Reply:
        """POST a form with the CSRF token of the page ``csrf_from``."""
        return self.request("POST", path, form={"csrf": self.csrf(csrf_from), **fields})

    def login(self, username: str, password: str | None = None) -> Reply:
        """Log in through the login form."""
        token = self.csrf("/login")
        return self.request(
            "POST",
            "/login",
            form={
                "csrf": token,
                "username": username,
                "password": password if password is not None else f"{username}-pass",
            },
        )

    def api_csrf(self) -> str:
        """The session's CSRF token, from ``/api/v1/me``."""
        return str(self.get("/api/v1/me").json()["csrf_token"])
