"""
Live presence: :class:`RegistrationMonitor` hears of this daemon's REGISTERs from the
registrar at once, and reads the location store every ``interval`` seconds for the rest
(expiries, other daemons sharing the database). Everything on a fake clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from clicktodial.config import parse_config
from clicktodial.service import SIP_SERVICE_NAME, build_service
from clicktodial.sip.address import Source
from clicktodial.sip.digest import compute_ha1, compute_response, parse_auth_params
from clicktodial.sip.message import Request, Response
from clicktodial.sip.parser import parse_message
from clicktodial.sip.registrar import Registrar, RegistrarSettings
from clicktodial.store.memory import MemoryStore
from clicktodial.store.values import Binding, BindingChanges, ContactChange, user_aor
from clicktodial.testing.fakes import (
    InlineReactor,
    InlineThreadPool,
    cheap_password_hasher,
    success_result_of,
)
from clicktodial.testing.transport import FakeReactor
from clicktodial.web.events import Registration, RegistrationMonitor

DOMAIN = "example.test"
NOW = 1_700_000_000.0
PHONE = Source("UDP", "192.0.2.10", 5062, "127.0.0.1", 5060)


class World:
    """A memory store with users alice and bob, a monitor on it, and what it published."""

    def __init__(self) -> None:
        self.clock = InlineReactor()
        self.clock.advance(NOW)
        self.store = MemoryStore(
            self.clock, realm=DOMAIN, hash_pool=InlineThreadPool(), hasher=cheap_password_hasher()
        )
        success_result_of(self.store.start())
        for name in ("alice", "bob"):
            success_result_of(self.store.add_user(name, sip_password=f"{name}-secret"))
        self.monitor = RegistrationMonitor(self.clock, self.store, DOMAIN, interval=2.0)
        self.seen: list[tuple[str, bool, tuple[str, ...]]] = []

    def listen(self) -> Any:
        return self.monitor.subscribe(
            lambda r: self.seen.append((r.username, r.registered, tuple(c.uri for c in r.contacts)))
        )

    def store_binding(
        self, user: str, contact: str, expires: int = 600, cseq: int = 1
    ) -> list[Binding]:
        """Change a binding in the store only (as another daemon would)."""
        changes = BindingChanges(
            call_id=f"reg-{user}", cseq=cseq, contacts=(ContactChange(contact, expires),)
        )
        return success_result_of(
            self.store.update_bindings(user_aor(user, DOMAIN), changes, self.clock.seconds())
        )

    def register_here(self, user: str, contact: str, expires: int = 600, cseq: int = 1) -> None:
        """Change a binding as this daemon's registrar does: store, then announce."""
        bindings = self.store_binding(user, contact, expires, cseq)
        self.monitor.bindings_changed(user_aor(user, DOMAIN), bindings)


def test_a_registration_handled_here_is_published_before_the_next_read() -> None:
    world = World()
    world.listen()
    world.register_here("alice", "sip:alice@192.0.2.10:5062")
    assert world.seen == [("alice", True, ("sip:alice@192.0.2.10:5062",))]
    # The next read finds the same: nothing more is published.
    world.clock.advance(2.0)
    assert len(world.seen) == 1


def test_unregistering_here_is_published_at_once_and_a_refresh_is_not_news() -> None:
    world = World()
    world.listen()
    world.register_here("alice", "sip:alice@192.0.2.10:5062")
    world.register_here("alice", "sip:alice@192.0.2.10:5062", cseq=2)  # a refresh
    assert len(world.seen) == 1
    world.register_here("alice", "sip:alice@192.0.2.10:5062", expires=0, cseq=3)
    assert world.seen[-1] == ("alice", False, ())
    world.clock.advance(2.0)
    assert len(world.seen) == 2


def test_another_daemons_registration_and_an_expiry_arrive_with_the_next_read() -> None:
    """The poll is the fallback: what no REGISTER here announces is seen within interval."""
    world = World()
    world.listen()
    world.store_binding("bob", "sip:bob@192.0.2.20:5060", expires=5)
    world.clock.advance(1.9)
    assert world.seen == []
    world.clock.advance(0.1)
    assert world.seen == [("bob", True, ("sip:bob@192.0.2.20:5060",))]
    world.clock.pump([0.5] * 8)  # the binding expires at 5 s: the next read sees it gone
    assert world.seen[-1] == ("bob", False, ())


def test_announcements_are_ignored_without_listeners_or_outside_the_domain() -> None:
    world = World()
    world.register_here("alice", "sip:alice@192.0.2.10:5062")
    assert world.clock.getDelayedCalls() == []
    world.listen()
    world.monitor.bindings_changed("sip:alice@elsewhere.test", [])
    assert world.seen == []


class SlowLocations:
    """The memory store, but ``all_bindings`` answers only when the test says so."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.reads: list[tuple[Deferred[list[Binding]], float]] = []

    def all_bindings(self, now: float) -> Deferred[list[Binding]]:
        d: Deferred[list[Binding]] = Deferred()
        self.reads.append((d, now))
        return d

    def answer(self, bindings: list[Binding]) -> None:
        d, _ = self.reads.pop(0)
        d.callback(bindings)


def test_a_read_that_started_before_a_registration_does_not_undo_it() -> None:
    """A REGISTER announced while a read is in progress wins over what that read returns
    (it may be older): no registered/unregistered flicker."""
    world = World()
    slow = SlowLocations(world.store)
    monitor = RegistrationMonitor(world.clock, slow, DOMAIN, interval=2.0)  # type: ignore[arg-type]
    seen: list[Registration] = []
    monitor.subscribe(seen.append)
    slow.answer([])  # the first read: nobody is registered
    world.clock.advance(2.0)  # the second read starts...
    before = success_result_of(world.store.all_bindings(world.clock.seconds()))
    bindings = world.store_binding("alice", "sip:alice@192.0.2.10:5062")
    monitor.bindings_changed(user_aor("alice", DOMAIN), bindings)  # ...alice registers...
    slow.answer(before)  # ...and the read returns what it saw before
    assert [(r.username, r.registered) for r in seen] == [("alice", True)]
    world.clock.advance(2.0)
    slow.answer(success_result_of(world.store.all_bindings(world.clock.seconds())))
    assert len(seen) == 1


def test_a_registration_announced_while_a_read_fails_is_still_published() -> None:
    world = World()
    slow = SlowLocations(world.store)
    monitor = RegistrationMonitor(world.clock, slow, DOMAIN, interval=2.0)  # type: ignore[arg-type]
    seen: list[Registration] = []
    monitor.subscribe(seen.append)
    slow.answer([])
    world.clock.advance(2.0)
    bindings = world.store_binding("alice", "sip:alice@192.0.2.10:5062")
    monitor.bindings_changed(user_aor("alice", DOMAIN), bindings)
    d, _ = slow.reads.pop(0)
    d.errback(RuntimeError("database gone"))
    assert [(r.username, r.registered) for r in seen] == [("alice", True)]
    # Polling goes on after the failure.
    assert world.clock.getDelayedCalls() != []


def _register(user: str, cseq: int, expires: int = 600) -> Request:
    text = (
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-reg;rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{DOMAIN}>;tag=from1\r\n"
        f"To: <sip:{user}@{DOMAIN}>\r\n"
        "Call-ID: reg-1@192.0.2.10\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{user}@192.0.2.10:5062>\r\n"
        f"Expires: {expires}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def _authenticated(
    registrar: Registrar, user: str, password: str, cseq: int, expires: int = 600
) -> Response:
    """A REGISTER, its 401, and the REGISTER again with MD5 Digest credentials."""
    challenge = success_result_of(registrar.handle_register(_register(user, cseq, expires), PHONE))
    assert challenge.status == 401
    params = parse_auth_params(
        challenge.headers.get_fields("WWW-Authenticate")[0][len("Digest ") :]
    )
    request = _register(user, cseq + 1, expires)
    uri = f"sip:{DOMAIN}"
    ha1 = compute_ha1(user, params["realm"], password, "MD5")
    digest = compute_response(
        ha1, params["nonce"], "00000001", "0a4f113b", "auth", "REGISTER", uri, "MD5"
    )
    request.headers.set(
        "Authorization",
        (
            f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
            f'uri="{uri}", response="{digest}", algorithm=MD5, cnonce="0a4f113b", '
            "nc=00000001, qop=auth"
        ),
    )
    return success_result_of(registrar.handle_register(request, PHONE))


def test_the_registrar_announces_each_register_it_handles_to_the_monitor() -> None:
    world = World()
    registrar = Registrar(
        world.clock, world.store, world.store, DOMAIN, RegistrarSettings(digest_algorithms=("MD5",))
    )
    registrar.binding_listeners.append(world.monitor.bindings_changed)
    world.listen()
    assert _authenticated(registrar, "alice", "alice-secret", 1).status == 200
    assert world.seen == [("alice", True, ("sip:alice@192.0.2.10:5062",))]
    assert _authenticated(registrar, "alice", "alice-secret", 3, expires=0).status == 200
    assert world.seen[-1] == ("alice", False, ())


def test_a_failing_binding_listener_does_not_fail_the_register() -> None:
    world = World()
    registrar = Registrar(
        world.clock, world.store, world.store, DOMAIN, RegistrarSettings(digest_algorithms=("MD5",))
    )

    def broken(aor: str, bindings: object) -> None:
        raise RuntimeError("boom")

    registrar.binding_listeners.append(broken)
    assert _authenticated(registrar, "alice", "alice-secret", 1).status == 200


def test_the_daemon_wires_its_registrar_to_the_web_presence() -> None:
    config = parse_config(
        "[sip]\ndomain = 127.0.0.1\n[web]\nlisten = tcp:8181:interface=127.0.0.1\n"
        "[store]\nbackend = memory\n",
        "x.ini",
    )
    root = build_service(config, FakeReactor())
    registrar = root.getServiceNamed(SIP_SERVICE_NAME).registrar  # type: ignore[attr-defined]
    [listener] = registrar.binding_listeners
    assert isinstance(listener.__self__, RegistrationMonitor)
    assert listener.__func__ is RegistrationMonitor.bindings_changed


def test_clock_type_is_enough_for_the_monitor() -> None:
    """The monitor needs only IReactorTime: a plain Clock will do."""
    clock = Clock()
    store = MemoryStore(
        clock, realm=DOMAIN, hash_pool=InlineThreadPool(), hasher=cheap_password_hasher()
    )
    success_result_of(store.start())
    monitor = RegistrationMonitor(clock, store, DOMAIN, interval=2.0)
    seen: list[Registration] = []
    unsubscribe = monitor.subscribe(seen.append)
    assert len(clock.getDelayedCalls()) == 1
    unsubscribe()
    assert clock.getDelayedCalls() == []
