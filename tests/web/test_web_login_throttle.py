"""
The web login throttle (issue 13 item 4): at most ``login_refuse_after`` password checks per
window, however many logins arrive at once, and for an address a user logged in from;
that address stays able to log in as that user when others' failures refuse the account.
``WebApp.login`` is called directly, on a fake clock, with password checks held pending.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

from clicktodial.testing.webfakes import WebWorld, web_world
from clicktodial.web.http import HTTPError

LIMIT = 10  # [web] login_refuse_after's default, the documented limit


class LoginRequest(DummyRequest):
    """A request from ``host`` with no cookie."""

    def __init__(self, host: str) -> None:
        super().__init__([b"login"])
        self.client = IPv4Address("TCP", host, 40000)

    def getCookie(self, name: bytes) -> bytes | None:
        return None


def login(world: WebWorld, host: str, username: str, password: str) -> Deferred[Any]:
    return Deferred.fromCoroutine(world.app.login(LoginRequest(host), username, password))


def outcome(d: Deferred[Any]) -> int:
    """200 for a session, else the HTTP status of the error."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the login did not complete"
    result = results[0]
    if isinstance(result, Failure):
        result.trap(HTTPError)
        return int(result.value.status)
    return 200


def settle(world: WebWorld, d: Deferred[Any]) -> int:
    """Run the clock through the delay of a failed login; its outcome."""
    for _ in range(100):
        if d.called:
            break
        world.clock.advance(0.5)
    return outcome(d)


def hold_checks(
    world: WebWorld, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[tuple[str, str], Deferred[Any]]]:
    """Hold every password check pending; the checks started."""
    checks: list[tuple[tuple[str, str], Deferred[Any]]] = []

    def held(username: str, password: str) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        checks.append(((username, password), d))
        return d

    monkeypatch.setattr(world.store, "check_password", held)
    return checks


def test_concurrent_logins_checked_at_most_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """60 logins at once, the right password last: 10 are checked, 50 get 429 at once, the
    right one among them (all 60 were checked)."""
    world = web_world()
    real = world.store.check_password
    checks = hold_checks(world, monkeypatch)
    pending = [login(world, "192.0.2.66", "bob", f"guess-{i}") for i in range(59)]
    pending.append(login(world, "192.0.2.66", "bob", "bob-pass"))
    assert len(checks) == LIMIT
    for (username, password), d in checks:
        d.callback(real(username, password).result)
    outcomes = [settle(world, d) for d in pending]
    assert outcomes.count(401) == LIMIT
    assert outcomes.count(429) == 60 - LIMIT
    assert outcomes[-1] == 429


def test_concurrent_logins_from_many_addresses_limited_per_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = web_world()
    checks = hold_checks(world, monkeypatch)
    pending = [login(world, f"198.51.100.{i}", "bob", "guess") for i in range(60)]
    assert len(checks) == LIMIT
    assert [outcome(d) for d in pending[LIMIT:]] == [429] * (60 - LIMIT)


def test_address_bob_logged_in_from_gets_the_same_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """After bob logged in from an address, wrong guesses for bob from it, sent at once or
    interleaved with logins of another user there, get 429 after the limit (they were
    never refused: the address was exempt from bob's count and any login cleared its own)."""
    world = web_world()
    assert outcome(login(world, "192.0.2.10", "bob", "bob-pass")) == 200
    outcomes = []
    for _ in range(10):
        for _ in range(4):
            outcomes.append(settle(world, login(world, "192.0.2.10", "bob", "guess")))
        assert outcome(login(world, "192.0.2.10", "carol", "carol-pass")) == 200
    assert outcomes.count(401) == LIMIT
    assert outcomes.count(429) == 40 - LIMIT

    world = web_world()
    assert outcome(login(world, "192.0.2.10", "bob", "bob-pass")) == 200
    checks = hold_checks(world, monkeypatch)
    pending = [login(world, "192.0.2.10", "bob", "guess") for _ in range(40)]
    assert len(checks) == LIMIT
    assert [outcome(d) for d in pending[LIMIT:]] == [429] * (40 - LIMIT)


def test_others_failures_do_not_lock_a_known_address_out() -> None:
    """Guesses for bob from elsewhere, and failures of others behind bob's address, refuse
    bob's account to new addresses and that address to other accounts, not bob there."""
    world = web_world()
    assert outcome(login(world, "192.0.2.10", "bob", "bob-pass")) == 200
    for i in range(LIMIT):
        assert settle(world, login(world, f"198.51.100.{i}", "bob", "guess")) == 401
    for _ in range(LIMIT):
        assert settle(world, login(world, "192.0.2.10", "mallory", "guess")) == 401
    assert outcome(login(world, "203.0.113.1", "bob", "bob-pass")) == 429
    assert outcome(login(world, "192.0.2.10", "carol", "carol-pass")) == 429
    assert outcome(login(world, "192.0.2.10", "bob", "bob-pass")) == 200


def test_a_failed_check_gives_the_slot_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A store error tests no password: nothing is counted."""
    world = web_world()
    checks = hold_checks(world, monkeypatch)
    for _ in range(3 * LIMIT):
        d = login(world, "192.0.2.66", "bob", "guess")
        checks[-1][1].errback(RuntimeError("store down"))
        d.addErrback(lambda f: f.trap(RuntimeError))
    assert len(checks) == 3 * LIMIT
    assert world.app.login_throttle.tracked == 0
