"""
Tests for :obj:`clicktodial.sip.registrar`: RFC 3261 §10.3 with Digest
authentication, on the memory store and a fake clock; the binding and
torture-message tests run again on the SQL store (SQLite file).

Our domain in these tests is ``example.com``, the domain of the RFC 4475
torture messages, so they are used byte for byte; the RFC 5118 REGISTERs
name ``[2001:db8::10]`` in their Request-URI, which the registrar is told is
one of its own addresses (the ``aliases`` setting).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.logger import ILogObserver, Logger
from zope.interface import implementer

from clicktodial.interfaces import ILocationStore, IUserChangeNotifier
from clicktodial.log import escape_control, format_text_event
from clicktodial.netaddr import NetworkSet
from clicktodial.sip import digest as digest_module
from clicktodial.sip.address import Source
from clicktodial.sip.digest import compute_ha1, compute_response, parse_auth_params
from clicktodial.sip.message import Request, Response
from clicktodial.sip.parser import MessageParseError, parse_message
from clicktodial.sip.registrar import (
    CredentialsCache,
    Registrar,
    RegistrarSettings,
    canonical_aor,
    contact_key,
    phone_host,
)
from clicktodial.sip.uri import parse_uri
from clicktodial.store.errors import StoreUnavailable
from clicktodial.store.memory import MemoryStore
from clicktodial.store.sql import SQLStore
from clicktodial.store.values import Binding, BindingChanges, SipCredentials, UserChanges
from clicktodial.testing.fakes import (
    InlineReactor,
    InlineThreadPool,
    cheap_password_hasher,
    success_result_of,
)
from clicktodial.throttle import AuthThrottle, ThrottleSettings

DOMAIN = "example.com"
DATA = Path(__file__).parent.parent / "data"
PHONE = Source("UDP", "192.0.2.10", 5062, "127.0.0.1", 5060)
ATTACKER = Source("UDP", "198.51.100.66", 40000, "127.0.0.1", 5060)
#: An edge proxy (Kamailio) in front of the registrar.
EDGE = Source("UDP", "203.0.113.5", 5060, "127.0.0.1", 5060)
TRUSTED_PATH = RegistrarSettings(
    aliases=frozenset(["2001:db8::10"]),
    path="trusted",
    trusted_proxies=NetworkSet.parse("203.0.113.0/29"),
)
NOW = 1_700_000_000.0
ALIASES: frozenset[str] = frozenset(["2001:db8::10"])

USERS = {
    "alice": "alice-secret",
    "bob": "bob-secret",
    "watson": "w-secret",
    "user": "u-secret",
    "j.user": "j-secret",
}


class Env:
    """A registrar on a memory store with a few users, at time :data:`NOW`; with
    ``one_operation``, authenticated REGISTERs go to the store as one operation
    (``IVerifiedRegistration``)."""

    def __init__(
        self,
        settings: RegistrarSettings | None = None,
        throttle: ThrottleSettings | None = None,
        location_store: ILocationStore | None = None,
        sqlite_path: Path | None = None,
        domain: str = DOMAIN,
        one_operation: bool = False,
    ) -> None:
        self.domain = domain
        self.clock = InlineReactor()
        self.clock.advance(NOW)
        self.store: MemoryStore | SQLStore
        if sqlite_path is None:
            self.store = MemoryStore(
                self.clock,
                realm=domain,
                hash_pool=InlineThreadPool(),
                hasher=cheap_password_hasher(),
            )
        else:
            self.store = SQLStore(
                self.clock,
                f"sqlite:///{sqlite_path}",
                InlineThreadPool(),
                InlineThreadPool(),
                realm=domain,
                hasher=cheap_password_hasher(),
                auto_upgrade=True,
            )
        success_result_of(self.store.start())
        for name, password in USERS.items():
            success_result_of(self.store.add_user(name, sip_password=password))
        self.events: list[dict[str, Any]] = []
        self.registrar = Registrar(
            self.clock,
            self.store,
            location_store if location_store is not None else self.store,
            domain,
            settings if settings is not None else RegistrarSettings(aliases=ALIASES),
            AuthThrottle(self.clock, throttle),
            registrations=self.store if one_operation else None,
        )
        observer = cast(ILogObserver, self.events.append)
        self.registrar.log = Logger(observer=observer)
        self.registrar.throttle.log = Logger(observer=observer)

    def send(self, request: Request, source: Source = PHONE) -> Response:
        """Hand a request to the registrar; return its (fired) response."""
        return success_result_of(self.registrar.handle_register(request, source))

    def send_authenticated(
        self,
        request: Request,
        source: Source = PHONE,
        username: str | None = None,
        password: str | None = None,
        algorithm: str = "SHA-256",
    ) -> Response:
        """
        Send ``request``; answer a 401 like a phone would (next CSeq, same
        Call-ID) and return the final response.
        """
        response = self.send(request, source)
        if response.status != 401:
            return response
        authorize(request, response, username, password, algorithm)
        return self.send(request, source)

    def bindings(self, aor: str = f"sip:alice@{DOMAIN}") -> list[Binding]:
        return success_result_of(self.store.get_bindings(aor, self.clock.seconds()))


def authorize(
    request: Request,
    challenge_response: Response,
    username: str | None = None,
    password: str | None = None,
    algorithm: str = "SHA-256",
    nc: int = 1,
    challenge_algorithm: str | None = None,
) -> None:
    """
    Add credentials answering ``challenge_response`` and bump the CSeq.
    The response uses ``algorithm``, and the nonce of the challenge for
    ``challenge_algorithm`` (default: the same).
    """
    wanted = challenge_algorithm or algorithm
    challenge = next(
        parse_auth_params(value[len("Digest ") :])
        for value in challenge_response.headers.get_fields("WWW-Authenticate")
        if f"algorithm={wanted}" in value
    )
    if username is None:
        username = request.to.uri.user
    assert username is not None
    if password is None:
        password = USERS.get(username, "no-such-password")
    uri = str(request.uri)
    nc_text = f"{nc:08x}"
    ha1 = compute_ha1(username, challenge["realm"], password, algorithm)
    digest = compute_response(
        ha1, challenge["nonce"], nc_text, "0a4f113b", "auth", request.method, uri, algorithm
    )
    request.headers.set(
        "Authorization",
        (
            f'Digest username="{username}", realm="{challenge["realm"]}", '
            f'nonce="{challenge["nonce"]}", uri="{uri}", response="{digest}", '
            f'algorithm={algorithm}, cnonce="0a4f113b", nc={nc_text}, qop=auth'
        ),
    )
    bump_cseq(request)


def bump_cseq(request: Request) -> None:
    cseq = request.cseq
    request.headers.set("CSeq", f"{cseq.seq + 1} {cseq.method}")


def register(
    contacts: Iterable[str] = ("<sip:alice@192.0.2.10:5062>",),
    user: str = "alice",
    call_id: str = "reg-1@192.0.2.10",
    cseq: int = 1,
    extra: Iterable[str] = (),
    ruri: str = f"sip:{DOMAIN}",
    to: str | None = None,
) -> Request:
    """A REGISTER as a phone sends it, parsed by the real parser."""
    lines = [
        f"REGISTER {ruri} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-reg;rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{DOMAIN}>;tag=from1",
        f"To: {to if to is not None else f'<sip:{user}@{DOMAIN}>'}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
    ]
    lines += [f"Contact: {c}" for c in contacts]
    lines += list(extra)
    lines += ["Content-Length: 0", "", ""]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, Request)
    return message


def torture(name: str) -> Request:
    """A message of the RFC 4475 / RFC 5118 corpus, parsed from its bytes."""
    folder = "rfc4475" if name.endswith(".dat") else "rfc5118"
    message = parse_message((DATA / folder / name).read_bytes())
    assert isinstance(message, Request)
    return message


def challenges(response: Response) -> list[dict[str, str]]:
    return [
        parse_auth_params(v[len("Digest ") :])
        for v in response.headers.get_fields("WWW-Authenticate")
    ]


def contact_params(response: Response) -> dict[str, dict[str, str | None]]:
    """The 200's Contacts: URI text -> header parameters."""
    return {str(c.uri): c.params for c in response.contacts}


# -- authentication -----------------------------------------------------------


def record_work(env: Env, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """
    What authenticating costs from now on, in order: ``"lookup"`` for each credentials
    read from ``env``'s store, ``"digest"`` for each digest response computed.
    """
    work: list[str] = []
    # DigestAuthenticator.verify computes the expected response once per call (with a
    # dummy HA1 for an unknown user); the client's own computation is not counted.
    real_verify = digest_module.DigestAuthenticator.verify
    real_lookup = env.store.get_sip_credentials

    def verify(self: Any, *args: Any) -> Any:
        work.append("digest")
        return real_verify(self, *args)

    def lookup(username: str) -> Any:
        work.append("lookup")
        return real_lookup(username)

    monkeypatch.setattr(digest_module.DigestAuthenticator, "verify", verify)
    monkeypatch.setattr(env.store, "get_sip_credentials", lookup)
    return work


class TestAuthentication:
    """RFC 3261 §10.3 step 3 and §22: every REGISTER is authenticated."""

    def test_no_credentials_challenged(self) -> None:
        """Without credentials: 401 with a SHA-256 then an MD5 challenge."""
        env = Env()
        response = env.send(register())
        assert response.status == 401
        params = challenges(response)
        assert [p["algorithm"] for p in params] == ["SHA-256", "MD5"]
        assert all(p["realm"] == DOMAIN and p["qop"] == "auth" for p in params)
        assert response.to.tag is not None
        assert response.call_id == "reg-1@192.0.2.10"
        assert env.bindings() == []

    def test_challenge_order_configurable(self) -> None:
        """digest_algorithms sets the challenges and their order (MD5
        first for clients that answer only the first challenge)."""
        env = Env(RegistrarSettings(digest_algorithms=("MD5", "SHA-256")))
        response = env.send(register())
        assert [c["algorithm"] for c in challenges(response)] == ["MD5", "SHA-256"]
        env = Env(RegistrarSettings(digest_algorithms=["md5"]))
        request = register()
        response = env.send(request)
        assert [c["algorithm"] for c in challenges(response)] == ["MD5"]
        authorize(request, response, algorithm="MD5")
        assert env.send(request).status == 200

    def test_sha256_refused_when_not_offered(self) -> None:
        """A response with an algorithm we did not offer is re-challenged."""
        env = Env(RegistrarSettings(digest_algorithms=["MD5"]))
        request = register()
        authorize(request, env.send(request), algorithm="SHA-256", challenge_algorithm="MD5")
        response = env.send(request)
        assert response.status == 401
        assert "stale" not in challenges(response)[0]

    @pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
    def test_right_credentials_register(self, algorithm: str) -> None:
        """A correct response (either algorithm) gets 200 and a binding."""
        env = Env()
        response = env.send_authenticated(register(), algorithm=algorithm)
        assert response.status == 200
        [binding] = env.bindings()
        assert binding.contact == "sip:alice@192.0.2.10:5062"

    def test_unknown_user_and_wrong_password_look_alike(self) -> None:
        """An unknown user and a wrong password get the same 401 shape."""
        env = Env()
        wrong = env.send_authenticated(register(), password="guess")
        unknown = env.send_authenticated(register(user="mallory"), username="mallory", password="x")
        assert wrong.status == unknown.status == 401
        assert [n for n, _ in wrong.headers] == [n for n, _ in unknown.headers]
        assert [sorted(c) for c in challenges(wrong)] == [sorted(c) for c in challenges(unknown)]
        assert not any("stale" in c for c in challenges(wrong))

    def test_unknown_user_costs_the_same_work(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An unknown user and a wrong password each take one credentials
        look-up and one digest computation: no timing difference to
        enumerate users by."""
        env = Env()
        work = record_work(env, monkeypatch)
        env.send_authenticated(register(), password="guess")
        wrong_password_work = list(work)
        work.clear()
        env.send_authenticated(register(user="mallory"), username="mallory")
        assert work == wrong_password_work == ["lookup", "digest"]

    def test_user_store_failure_is_500(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A failed credentials look-up: 500 with Retry-After, logged."""
        env = Env()
        monkeypatch.setattr(
            env.store, "get_sip_credentials", lambda username: fail(StoreUnavailable("down"))
        )
        response = env.send_authenticated(register())
        assert response.status == 500
        assert response.headers.get("Retry-After") == "5"
        assert any("log_failure" in e for e in env.events)

    def test_disabled_user_refused(self) -> None:
        """A disabled user's right password gets 401 like a wrong one."""
        from clicktodial.store.values import UserChanges

        env = Env()
        success_result_of(env.store.update_user("alice", UserChanges(disabled=True)))
        assert env.send_authenticated(register()).status == 401

    def test_unknown_scheme_rechallenged(self) -> None:
        """RFC 4475 regaut01: unknown scheme -> 401 with a fresh Digest
        challenge (not 400, not 403); then Digest succeeds."""
        env = Env()
        request = torture("regaut01.dat")
        response = env.send(request)
        assert response.status == 401
        assert [c["algorithm"] for c in challenges(response)] == ["SHA-256", "MD5"]
        authorize(request, response)
        assert env.send(request).status == 200

    def test_malformed_digest_rechallenged(self) -> None:
        """Unparseable Digest credentials are no credentials: 401."""
        env = Env()
        response = env.send(register(extra=['Authorization: Digest user="x']))
        assert response.status == 401

    def test_other_realm_rechallenged(self) -> None:
        """Credentials for another realm are ignored: 401."""
        env = Env()
        request = register()
        authorize(request, env.send(request))
        auth = request.headers.get("Authorization")
        assert auth is not None
        request.headers.set("Authorization", auth.replace(f'realm="{DOMAIN}"', 'realm="x"'))
        assert env.send(request).status == 401

    def test_forged_nonce_rejected(self) -> None:
        """A nonce we did not issue gets a fresh challenge; it is no
        password guess, so it does not count towards throttling."""
        env = Env()
        request = register()
        authorize(request, env.send(request))
        auth = request.headers.get("Authorization")
        assert auth is not None
        nonce = auth.split('nonce="')[1].split('"')[0]
        forged = ("A" if nonce[0] != "A" else "B") + nonce[1:]
        request.headers.set("Authorization", auth.replace(nonce, forged))
        response = env.send(request)
        assert response.status == 401
        assert "stale" not in challenges(response)[0]
        assert env.registrar.throttle.tracked == 0
        assert any("Unusable nonce" in e.get("log_format", "") for e in env.events)

    def test_digest_uri_must_name_the_request_uri(self) -> None:
        """The digest-uri must name the Request-URI's user and host
        (RFC 7616 §3.4.6); port and parameters may differ (SIPp adds the
        port)."""
        env = Env(RegistrarSettings(aliases=ALIASES))
        request = register()
        authorize(request, env.send(request))
        other = register(ruri="sip:[2001:db8::10]")
        other.headers.set("Authorization", request.headers.get("Authorization") or "")
        other.headers.set("CSeq", "2 REGISTER")
        assert env.send(other).status == 401
        with_port = register(ruri="sip:example.com:5060;transport=udp")
        challenge = env.send(with_port)
        authorize(with_port, challenge)
        auth = with_port.headers.get("Authorization") or ""
        assert 'uri="sip:example.com:5060;transport=udp"' in auth
        with_port.uri = parse_uri("sip:EXAMPLE.com")
        assert env.send(with_port).status == 200

    def test_stale_nonce_only_for_right_password(self) -> None:
        """An expired nonce: 401 stale=true for a right response, a plain
        401 for a wrong one (RFC 7616 §3.3)."""
        env = Env(RegistrarSettings(nonce_lifetime=30))
        request = register()
        first = env.send(request)
        env.clock.pump([1.0] * 31)
        wrong = register(cseq=1)
        authorize(wrong, first, password="guess")
        response = env.send(wrong)
        assert response.status == 401
        assert "stale" not in challenges(response)[0]
        authorize(request, first)
        response = env.send(request)
        assert response.status == 401
        assert challenges(response)[0]["stale"] == "true"
        authorize(request, response)
        assert env.send(request).status == 200

    def test_replayed_nonce_count_refused(self) -> None:
        """The same nonce and nc twice: the second is answered stale."""
        env = Env()
        request = register()
        authorize(request, env.send(request))
        assert env.send(request).status == 200
        bump_cseq(request)
        response = env.send(request)
        assert response.status == 401
        assert challenges(response)[0]["stale"] == "true"

    def test_increasing_nonce_count_reuses_nonce(self) -> None:
        """A phone may reuse a nonce with a higher nc (RFC 7616 §3.4)."""
        env = Env()
        request = register()
        challenge = env.send(request)
        authorize(request, challenge, nc=1)
        assert env.send(request).status == 200
        authorize(request, challenge, nc=2)
        assert env.send(request).status == 200

    def test_user_may_only_register_own_aor(self) -> None:
        """Step 4: bob's credentials cannot bind alice's AOR: 403."""
        env = Env()
        response = env.send_authenticated(register(user="alice"), username="bob")
        assert response.status == 403
        assert env.bindings() == []


def test_a_hostile_register_is_logged_without_control_characters() -> None:
    """
    The parser lets ESC and BEL through in header values and quoted strings: a REGISTER
    whose From display name, User-Agent, Call-ID and Digest username hold a terminal
    sequence, with a wrong password, is logged; the text format shows it escaped.
    """
    env = Env()
    hostile = "\x1b[2J\x1b]0;owned\x07"
    request = register(call_id=f"c{hostile}@x", extra=[f"User-Agent: ua{hostile}"])
    request.headers.set("From", f'"a{hostile}" <sip:alice@{DOMAIN}>;tag=from1')
    response = env.send_authenticated(request, username=f"alice{hostile}", password="guess")
    assert response.status == 401
    lines = [format_text_event(event) or "" for event in env.events]
    assert any(f"alice{escape_control(hostile)}" in line for line in lines), lines
    assert not any(re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", line) for line in lines)
    assert all(line.count("\n") <= 1 for line in lines)


class TestCredentialsCache:
    """The registrar keeps users' HA1s in memory for ``credentials_cache_seconds``
    (docs/registrar.md, "Credentials cache")."""

    @staticmethod
    def counting(env: Env, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        looked_up: list[str] = []
        real_lookup = env.store.get_sip_credentials

        def lookup(username: str) -> Any:
            looked_up.append(username)
            return real_lookup(username)

        monkeypatch.setattr(env.store, "get_sip_credentials", lookup)
        return looked_up

    def test_second_registration_reads_no_credentials(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Within the lifetime, a refresh authenticates from memory; after it,
        the store is read again."""
        env = Env()
        looked_up = self.counting(env, monkeypatch)
        assert env.send_authenticated(register()).status == 200
        assert env.send_authenticated(register(cseq=3)).status == 200
        assert looked_up == ["alice"]
        env.clock.advance(61)
        assert env.send_authenticated(register(cseq=5)).status == 200
        assert looked_up == ["alice", "alice"]

    def test_off_reads_every_time(self, monkeypatch: pytest.MonkeyPatch) -> None:
        env = Env(RegistrarSettings(credentials_cache_seconds=0))
        looked_up = self.counting(env, monkeypatch)
        assert env.send_authenticated(register()).status == 200
        assert env.send_authenticated(register(cseq=3)).status == 200
        assert looked_up == ["alice", "alice"]
        assert len(env.registrar.credentials) == 0

    def test_new_password_works_at_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A password changed behind the cache's back (another daemon, the CLI):
        the new one works at once (a mismatch is checked against a fresh
        read), and the old one stops working then."""
        env = Env()
        assert env.send_authenticated(register()).status == 200
        # Behind the registrar's back: as another daemon sharing the database would.
        env.store.user_listeners.clear()
        success_result_of(env.store.update_user("alice", UserChanges(sip_password="new")))
        looked_up = self.counting(env, monkeypatch)
        assert env.send_authenticated(register(cseq=3), password="new").status == 200
        assert looked_up == ["alice"]
        assert env.send_authenticated(register(cseq=5)).status == 401
        assert env.send_authenticated(register(cseq=7), password="new").status == 200
        assert looked_up == ["alice", "alice"]

    def test_old_password_accepted_until_lifetime_when_changed_elsewhere(self) -> None:
        """The documented limit: a change made elsewhere is seen within the
        lifetime."""
        env = Env(RegistrarSettings(credentials_cache_seconds=10))
        assert env.send_authenticated(register()).status == 200
        env.store.user_listeners.clear()
        success_result_of(env.store.update_user("alice", UserChanges(disabled=True)))
        assert env.send_authenticated(register(cseq=3)).status == 200
        env.clock.advance(10)
        assert env.send_authenticated(register(cseq=5)).status == 401

    @pytest.mark.parametrize(
        "change", [UserChanges(disabled=True), UserChanges(sip_password="other")]
    )
    def test_changed_here_applies_at_once(self, change: UserChanges) -> None:
        """A user changed through this daemon's store leaves the cache at once."""
        env = Env()
        assert env.send_authenticated(register()).status == 200
        success_result_of(env.store.update_user("alice", change))
        assert env.send_authenticated(register(cseq=3)).status == 401

    def test_removed_here_applies_at_once(self) -> None:
        env = Env()
        assert env.send_authenticated(register()).status == 200
        success_result_of(env.store.remove_user("alice"))
        assert env.send_authenticated(register(cseq=3)).status == 401
        assert len(env.registrar.credentials) == 0

    def test_unknown_users_not_cached(self, monkeypatch: pytest.MonkeyPatch) -> None:
        env = Env()
        looked_up = self.counting(env, monkeypatch)
        for cseq in (1, 3):
            response = env.send_authenticated(
                register(user="carol", cseq=cseq), password="c-secret"
            )
            assert response.status == 401
        assert looked_up == ["carol", "carol"]
        success_result_of(env.store.add_user("carol", sip_password="c-secret"))
        response = env.send_authenticated(register(user="carol", cseq=5), password="c-secret")
        assert response.status == 200

    def test_wrong_password_same_work_when_cached(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A wrong password for a cached user costs one store read and one
        digest, as for an unknown user."""
        env = Env()
        assert env.send_authenticated(register()).status == 200
        work = record_work(env, monkeypatch)
        assert env.send_authenticated(register(cseq=3), password="guess").status == 401
        assert sorted(work) == ["digest", "lookup"]

    def test_read_overlapping_a_change_not_kept(self) -> None:
        """A read that was running when the user changed here is not cached."""
        clock = InlineReactor()
        cache = CredentialsCache(clock, 60)
        generation = cache.generation
        cache.forget("alice")
        cache.put("alice", SipCredentials("a" * 32, "b" * 64), generation)
        assert cache.get("alice") is None
        cache.put("alice", SipCredentials("a" * 32, "b" * 64), cache.generation)
        assert cache.get("alice") is not None

    def test_bounded_least_recently_used_leave(self) -> None:
        clock = InlineReactor()
        cache = CredentialsCache(clock, 60, max_entries=2)
        secrets = SipCredentials("a" * 32, "b" * 64)
        cache.put("a", secrets, cache.generation)
        cache.put("b", secrets, cache.generation)
        assert cache.get("a") == secrets
        cache.put("c", secrets, cache.generation)
        assert len(cache) == 2
        assert cache.get("b") is None
        assert cache.get("a") == secrets and cache.get("c") == secrets


# -- request checks -------------------------------------------------------------


class TestRequestChecks:
    """RFC 3261 §10.3 steps 1, 2 and 5, and syntax."""

    def test_foreign_domain_not_found(self) -> None:
        """Step 1: a Request-URI for another domain: 404 (we are no proxy)."""
        env = Env()
        assert env.send(register(ruri="sip:example.org")).status == 404

    def test_non_sip_request_uri(self) -> None:
        """A REGISTER to a tel: URI: 416."""
        env = Env()
        assert env.send(register(ruri="tel:+15551234")).status == 416

    def test_to_not_sip_bad_request(self) -> None:
        """RFC 4475 unksm2: a To that is not SIP/SIPS: 400, no challenge."""
        env = Env()
        response = env.send(torture("unksm2.dat"))
        assert response.status == 400
        assert "WWW-Authenticate" not in response.headers

    def test_require_unsupported(self) -> None:
        """Step 2: an unknown Require option: 420 + Unsupported."""
        env = Env(TRUSTED_PATH)
        response = env.send(register(extra=["Require: foo, path"]), EDGE)
        assert response.status == 420
        assert response.headers.get("Unsupported") == "foo"

    def test_require_path_accepted_from_a_trusted_proxy(self) -> None:
        """Require: path is supported (RFC 3327) for a REGISTER whose Path is
        stored: path = trusted, from a trusted proxy."""
        env = Env(TRUSTED_PATH)
        response = env.send_authenticated(
            register(extra=["Require: path", "Supported: path", "Path: <sip:edge.example.com;lr>"]),
            EDGE,
        )
        assert response.status == 200

    @pytest.mark.parametrize(
        ("settings", "source"),
        [
            (RegistrarSettings(aliases=ALIASES), EDGE),  # path = off (the default)
            (TRUSTED_PATH, PHONE),  # not from a trusted proxy
        ],
    )
    def test_require_path_refused_when_path_is_not_stored(
        self, settings: RegistrarSettings, source: Source
    ) -> None:
        """RFC 3327 §5.3: when the request's Path would not be stored, a
        Require: path gets 420 + Unsupported: path, before any challenge."""
        env = Env(settings)
        response = env.send(
            register(extra=["Require: path", "Path: <sip:edge.example.com;lr>"]), source
        )
        assert response.status == 420
        assert response.headers.get("Unsupported") == "path"
        assert env.registrar.stateless_challenge(register(extra=["Require: path"]), source) is None

    def test_foreign_aor_not_found(self) -> None:
        """Step 5: an AOR of another domain: 404 after authentication."""
        env = Env()
        request = register(to="<sip:alice@example.org>")
        assert env.send(request).status == 401
        assert env.send_authenticated(request, username="alice").status == 404

    @pytest.mark.parametrize(
        "extra",
        [
            ["Expires: soon"],
            ["Expires: -1"],
        ],
    )
    def test_malformed_expires(self, extra: list[str]) -> None:
        """A malformed Expires header: 400."""
        env = Env()
        assert env.send(register(extra=extra)).status == 400

    @pytest.mark.parametrize(
        "contact",
        [
            "<sip:alice@192.0.2.10>;expires=later",
            "<sip:alice@192.0.2.10>;q=2",
            "<mailto:alice@example.com>",
            '<sip:alice@192.0.2.10>;+sip.instance="<urn:x>";reg-id=0',
        ],
    )
    def test_bad_contacts(self, contact: str) -> None:
        """Malformed expires/q, a non-SIP contact, a bad reg-id: 400."""
        env = Env()
        assert env.send(register([contact])).status == 400

    def test_aliases_name_the_domain(self) -> None:
        """RFC 5118 ipv6-good / port-unambiguous: a Request-URI naming one
        of our addresses is accepted and the IPv6 contact stored as sent."""
        for name in ("ipv6-good", "port-unambiguous"):
            env = Env()
            response = env.send_authenticated(torture(name))
            assert response.status == 200, name
            [binding] = env.bindings("sip:user@example.com")
            assert binding.contact == "sip:caller@[2001:db8::1]"

    def test_aor_alias_host_stored_under_domain(self) -> None:
        """An AOR written with an alias host is the domain's AOR."""
        env = Env()
        request = register(to="<sip:alice@[2001:db8::10]>")
        assert env.send_authenticated(request).status == 200
        assert len(env.bindings()) == 1


# -- bindings --------------------------------------------------------------------


class OnMemoryStore:
    """Runs a test class's registrar on the memory store."""

    sqlite_path: Path | None = None
    envs: list[Env]

    def make_env(
        self,
        settings: RegistrarSettings | None = None,
        location_store: ILocationStore | None = None,
    ) -> Env:
        env = Env(settings, location_store=location_store, sqlite_path=self.sqlite_path)
        self.envs.append(env)
        return env

    @pytest.fixture(autouse=True)
    def _stop_stores(self) -> Iterator[None]:
        self.envs = []
        yield
        for env in self.envs:
            success_result_of(env.store.stop())


class OnSQLiteStore(OnMemoryStore):
    """Runs a test class's registrar on the SQL store, on a SQLite file."""

    @pytest.fixture(autouse=True)
    def _sqlite(self, tmp_path: Path) -> None:
        self.sqlite_path = tmp_path / "store.sqlite"


class TestBindings(OnMemoryStore):
    """RFC 3261 §10.3 steps 6-8: adding, refreshing, removing bindings."""

    def test_ok_lists_bindings_with_expires_and_date(self) -> None:
        """Step 8: the 200 lists each binding's remaining expiry, and Date."""
        env = self.make_env()
        response = env.send_authenticated(register())
        assert response.status == 200
        assert contact_params(response) == {"sip:alice@192.0.2.10:5062": {"expires": "3600"}}
        assert response.headers.get("Date") == "Tue, 14 Nov 2023 22:13:20 GMT"
        assert response.to.tag is not None

    def test_binding_records_request_details(self) -> None:
        """A binding records Call-ID, CSeq, source and User-Agent."""
        env = self.make_env()
        env.send_authenticated(register(extra=["User-Agent: Phone/1.0"]))
        [binding] = env.bindings()
        assert binding.call_id == "reg-1@192.0.2.10"
        assert binding.cseq == 2
        assert binding.received == "sip:192.0.2.10:5062;transport=udp"
        assert binding.user_agent == "Phone/1.0"
        assert binding.expires_at == NOW + 3600

    def test_expires_precedence(self) -> None:
        """Contact expires param > Expires header > default."""
        env = self.make_env()
        response = env.send_authenticated(
            register(
                ["<sip:alice@192.0.2.10:1>;expires=120", "<sip:alice@192.0.2.10:2>"],
                extra=["Expires: 300"],
            )
        )
        assert {k: v["expires"] for k, v in contact_params(response).items()} == {
            "sip:alice@192.0.2.10:1": "120",
            "sip:alice@192.0.2.10:2": "300",
        }

    def test_long_expiry_clamped(self) -> None:
        """A lifetime over max_expires is shortened to it."""
        env = self.make_env(RegistrarSettings(max_expires=7200))
        response = env.send_authenticated(register(["<sip:alice@192.0.2.10>;expires=4294967295"]))
        assert contact_params(response)["sip:alice@192.0.2.10"]["expires"] == "7200"

    def test_too_brief_interval(self) -> None:
        """Below min_expires (and under an hour): 423 + Min-Expires."""
        env = self.make_env(RegistrarSettings(min_expires=60))
        response = env.send_authenticated(register(extra=["Expires: 30"]))
        assert response.status == 423
        assert response.headers.get("Min-Expires") == "60"
        assert env.bindings() == []

    def test_zero_expiry_always_allowed(self) -> None:
        """Expires 0 removes a binding whatever the minimum."""
        env = self.make_env(RegistrarSettings(min_expires=60))
        request = register()
        assert env.send_authenticated(request).status == 200
        request.headers.set("Expires", "0")
        bump_cseq(request)
        response = env.send_authenticated(request)
        assert response.status == 200
        assert response.contacts == []
        assert env.bindings() == []

    def test_several_contacts_with_q(self) -> None:
        """Several contacts per AOR, each with its q."""
        env = self.make_env()
        response = env.send_authenticated(
            register(["<sip:alice@192.0.2.10>;q=0.7, <sip:alice@192.0.2.11>;q=1"])
        )
        params = contact_params(response)
        assert params["sip:alice@192.0.2.10"]["q"] == "0.7"
        assert params["sip:alice@192.0.2.11"]["q"] == "1"
        # A second phone adds, it does not replace.
        other = register(["<sip:alice@192.0.2.12>"], call_id="other")
        response = env.send_authenticated(other)
        assert len(response.contacts) == 3

    def test_refresh_updates_expiry(self) -> None:
        """A refresh with a higher CSeq moves the expiry forward."""
        env = self.make_env()
        request = register()
        env.send_authenticated(request)
        env.clock.pump([100.0] * 10)
        bump_cseq(request)
        response = env.send_authenticated(request)
        assert response.status == 200
        [binding] = env.bindings()
        assert binding.expires_at == NOW + 1000 + 3600

    def test_out_of_order_cseq_fails(self) -> None:
        """Step 7: same Call-ID, CSeq not higher: 500, nothing changes."""
        env = self.make_env()
        request = register(cseq=10)
        env.send_authenticated(request)  # stored with CSeq 11
        late = register(["<sip:alice@192.0.2.10:5062>;expires=0"], cseq=10)
        response = env.send_authenticated(late)  # authenticates with CSeq 11
        assert response.status == 500
        assert len(env.bindings()) == 1
        assert any("Out-of-order" in e.get("log_format", "") for e in env.events)

    def test_other_call_id_may_have_lower_cseq(self) -> None:
        """A binding from another Call-ID is updated whatever the CSeq."""
        env = self.make_env()
        env.send_authenticated(register(cseq=100))
        response = env.send_authenticated(
            register(["<sip:alice@192.0.2.10:5062>;expires=0"], call_id="new", cseq=1)
        )
        assert response.status == 200
        assert env.bindings() == []

    def test_contact_uri_compared_by_rfc_rules(self) -> None:
        """Host and parameter case do not make a new binding (§19.1.4)."""
        env = self.make_env()
        env.send_authenticated(register(["<sip:alice@PHONE.example.net;Transport=TCP>"]))
        response = env.send_authenticated(
            register(["<sip:alice@phone.example.net;transport=tcp>"], call_id="c2")
        )
        assert len(response.contacts) == 1

    def test_wildcard_removes_all(self) -> None:
        """Contact: * with Expires: 0 removes every binding (step 6)."""
        env = self.make_env()
        env.send_authenticated(register(["<sip:alice@192.0.2.10>", "<sip:alice@192.0.2.11>"]))
        response = env.send_authenticated(register(["*"], call_id="wipe", extra=["Expires: 0"]))
        assert response.status == 200
        assert response.contacts == []
        assert env.bindings() == []

    @pytest.mark.parametrize(
        "contacts,extra",
        [
            (["*"], []),
            (["*"], ["Expires: 60"]),
            (["*", "<sip:alice@192.0.2.10>"], ["Expires: 0"]),
            (["*, <sip:alice@192.0.2.10>"], ["Expires: 0"]),
        ],
    )
    def test_wildcard_misuse(self, contacts: list[str], extra: list[str]) -> None:
        """Contact: * needs Expires: 0 and no other contact: else 400
        (from the parser, or from the registrar)."""
        env = self.make_env()
        try:
            request = register(contacts, extra=extra)
        except MessageParseError as e:
            assert e.status == 400
        else:
            assert env.send(request).status == 400

    def test_query_lists_without_changing(self) -> None:
        """A REGISTER without Contact lists the bindings, changes nothing."""
        env = self.make_env()
        env.send_authenticated(register())
        env.clock.pump([10.0] * 6)
        response = env.send_authenticated(register([], call_id="query"))
        assert response.status == 200
        assert contact_params(response) == {"sip:alice@192.0.2.10:5062": {"expires": "3540"}}
        [binding] = env.bindings()
        assert binding.call_id == "reg-1@192.0.2.10"

    def test_bindings_expire_on_the_clock(self) -> None:
        """A binding is gone once its lifetime has passed."""
        env = self.make_env()
        env.send_authenticated(register(extra=["Expires: 120"]))
        env.clock.pump([10.0] * 11)
        assert len(env.bindings()) == 1
        env.clock.pump([10.0] * 1)
        assert env.bindings() == []

    def test_path_stored_and_echoed_when_supported(self) -> None:
        """RFC 3327: with path = trusted, the Path of a REGISTER from a trusted
        proxy is stored, and echoed if the UA supports path."""
        env = self.make_env(TRUSTED_PATH)
        path = ["Path: <sip:p1.example.com;lr>", "Path: <sip:p2.example.com;lr>"]
        response = env.send_authenticated(register(extra=path), EDGE)
        assert "Path" not in response.headers
        [binding] = env.bindings()
        assert binding.path == ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
        assert binding.received == "sip:203.0.113.5:5060;transport=udp"
        response = env.send_authenticated(
            register(call_id="c2", extra=[*path, "Supported: path"]), EDGE
        )
        assert response.headers.get_fields("Path") == [
            "<sip:p1.example.com;lr>",
            "<sip:p2.example.com;lr>",
        ]

    @pytest.mark.parametrize(
        ("settings", "source"),
        [
            (RegistrarSettings(aliases=ALIASES), EDGE),  # path = off (the default)
            (TRUSTED_PATH, PHONE),  # not from a trusted proxy
        ],
    )
    def test_path_of_an_untrusted_register_is_ignored(
        self, settings: RegistrarSettings, source: Source
    ) -> None:
        """A phone cannot choose where the daemon's INVITEs go: unless path =
        trusted and the REGISTER came from a trusted proxy, its Path is not
        stored (nor echoed) and the binding routes to the REGISTER's source."""
        env = self.make_env(settings)
        response = env.send_authenticated(
            register(
                ["<sip:+19005550123@premium.itsp.test;maddr=127.0.0.5;transport=tcp>"],
                extra=["Path: <sip:127.0.0.5:5099;lr;transport=tcp>", "Supported: path"],
            ),
            source,
        )
        assert response.status == 200
        assert "Path" not in response.headers
        [binding] = env.bindings()
        assert binding.path == ()
        assert binding.received == (f"sip:{source.remote_host}:{source.remote_port};transport=udp")
        assert any("Path of REGISTER" in event["log_format"] for event in env.events)

    def test_register_listing_more_contacts_than_max_contacts_is_refused(self) -> None:
        """More Contacts in one REGISTER than max_contacts: 503, before any
        challenge or store work; nothing is bound."""
        env = self.make_env(RegistrarSettings(aliases=ALIASES, max_contacts=3))
        contacts = [f"<sip:alice@192.0.2.{n}:5062>" for n in range(1, 5)]
        response = env.send(register(contacts))
        assert (response.status, response.reason) == (
            503,
            "Service Unavailable (Too Many Registered Contacts)",
        )
        assert "Retry-After" not in response.headers
        assert env.registrar.stateless_challenge(register(contacts), PHONE) is None
        assert env.send_authenticated(register(contacts[:3])).status == 200
        assert len(env.bindings()) == 3

    def test_register_adding_a_binding_beyond_max_contacts_is_refused(self) -> None:
        """An AOR has at most max_contacts bindings, whichever UAs (Call-IDs)
        registered them: the REGISTER that would add one more gets 503 and
        none of its changes; refreshing and removing still work."""
        env = self.make_env(RegistrarSettings(aliases=ALIASES, max_contacts=2))
        for n in (1, 2):
            assert (
                env.send_authenticated(
                    register([f"<sip:alice@192.0.2.{n}:5062>"], call_id=f"ua-{n}")
                ).status
                == 200
            )
        before = env.bindings()
        env.clock.advance(10)
        response = env.send_authenticated(
            register(
                ["<sip:alice@192.0.2.1:5062>", "<sip:alice@192.0.2.3:5062>"], call_id="ua-1", cseq=5
            )
        )
        assert response.status == 503
        assert env.bindings() == before  # not even the refresh of .1
        assert any("refused" in event["log_format"] for event in env.events)
        assert (
            env.send_authenticated(
                register(["<sip:alice@192.0.2.1:5062>"], call_id="ua-1", cseq=7)
            ).status
            == 200
        )
        assert (
            env.send_authenticated(
                register(
                    ["<sip:alice@192.0.2.2:5062>;expires=0", "<sip:alice@192.0.2.3:5062>"],
                    call_id="ua-2",
                    cseq=3,
                )
            ).status
            == 200
        )
        assert sorted(b.contact for b in env.bindings()) == [
            "sip:alice@192.0.2.1:5062",
            "sip:alice@192.0.2.3:5062",
        ]

    def test_outbound_instance_and_reg_id(self) -> None:
        """RFC 5626: +sip.instance and reg-id are kept and echoed, and the
        binding is matched by them, not by the URI."""
        env = self.make_env()
        instance = "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
        first = register([f'<sip:alice@192.0.2.10:5062>;+sip.instance="{instance}";reg-id=1'])
        env.send_authenticated(first)
        # Same instance/reg-id from a new address (NAT rebinding): replaced.
        moved = register(
            [f'<sip:alice@192.0.2.99:6000>;+sip.instance="{instance}";reg-id=1'], call_id="c2"
        )
        response = env.send_authenticated(moved)
        [binding] = env.bindings()
        assert binding.contact == "sip:alice@192.0.2.99:6000"
        assert binding.instance_id == instance
        assert binding.reg_id == 1
        params = contact_params(response)["sip:alice@192.0.2.99:6000"]
        assert params["+sip.instance"] == f'"{instance}"'
        assert params["reg-id"] == "1"

    def test_two_reg_ids_refused(self) -> None:
        """RFC 5626 §6: one reg-id per REGISTER."""
        env = self.make_env()
        response = env.send(
            register(
                [
                    '<sip:a@192.0.2.1>;+sip.instance="<urn:x>";reg-id=1',
                    '<sip:a@192.0.2.2>;+sip.instance="<urn:x>";reg-id=2',
                ]
            )
        )
        assert response.status == 400

    def test_store_failure_is_500(self) -> None:
        """A failed location update: 500 with Retry-After (step 7)."""
        env = self.make_env(location_store=FailingLocationStore())
        response = env.send_authenticated(register())
        assert response.status == 500
        assert response.headers.get("Retry-After") == "5"


@implementer(ILocationStore)
class FailingLocationStore:
    """A location service whose database is down."""

    def get_bindings(self, aor: str, now: float) -> Deferred[list[Binding]]:
        return fail(StoreUnavailable("down"))

    def update_bindings(
        self, aor: str, changes: BindingChanges, now: float
    ) -> Deferred[list[Binding]]:
        return fail(StoreUnavailable("down"))

    def remove_all(self, aor: str) -> Deferred[int]:
        return fail(StoreUnavailable("down"))

    def purge_expired(self, now: float) -> Deferred[int]:
        return fail(StoreUnavailable("down"))

    def registered_aors(self, now: float) -> Deferred[list[str]]:
        return fail(StoreUnavailable("down"))

    def all_bindings(self, now: float) -> Deferred[list[Binding]]:
        return fail(StoreUnavailable("down"))


# -- torture messages ----------------------------------------------------------------


class TestTortureMessages(OnMemoryStore):
    """RFC 4475 registrar cases, after authentication where needed."""

    def test_cparam01_param_outside_brackets_not_in_uri(self) -> None:
        """cparam01: ;unknownparam outside <> is a contact param, not part
        of the binding URI, and the 200 must not show it as a URI param."""
        env = self.make_env()
        response = env.send_authenticated(torture("cparam01.dat"))
        assert response.status == 200
        [binding] = env.bindings("sip:watson@example.com")
        assert binding.contact == "sip:+19725552222@gw1.example.net"
        [contact] = response.contacts
        assert contact.uri.params == {}
        assert "unknownparam" not in (response.headers.get("Contact") or "")

    def test_cparam02_param_inside_brackets_in_uri(self) -> None:
        """cparam02: ;unknownparam inside <> stays in the binding URI."""
        env = self.make_env()
        response = env.send_authenticated(torture("cparam02.dat"))
        assert response.status == 200
        [binding] = env.bindings("sip:watson@example.com")
        assert binding.contact == "sip:+19725552222@gw1.example.net;unknownparam"
        [contact] = response.contacts
        assert contact.uri.has_param("unknownparam")

    def test_regescrt_escaped_header_kept_verbatim(self) -> None:
        """regescrt: the escaped ?Route= stays in the stored URI text and
        never becomes a real Route header."""
        env = self.make_env()
        response = env.send_authenticated(torture("regescrt.dat"))
        assert response.status == 200
        [binding] = env.bindings("sip:user@example.com")
        assert binding.contact == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
        assert "Route" not in response.headers
        assert response.headers.get(
            "Contact",
        ).startswith(  # type: ignore[union-attr]
            "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>"
        )

    def test_dblreq_register_handled_normally(self) -> None:
        """dblreq: the REGISTER before the trailing bytes registers."""
        env = self.make_env()
        response = env.send_authenticated(torture("dblreq.dat"))
        assert response.status == 200
        [binding] = env.bindings("sip:j.user@example.com")
        assert binding.contact == "sip:j.user@host.example.com"


class TestBindingsOnSQLite(OnSQLiteStore, TestBindings):
    """The binding rules hold on the SQL store too."""


class TestTortureMessagesOnSQLite(OnSQLiteStore, TestTortureMessages):
    """Contacts survive the SQL store verbatim."""


# -- throttling --------------------------------------------------------------------------


class TestThrottling:
    """Repeated failures are slowed down, then refused."""

    SETTINGS = ThrottleSettings(
        free_failures=2,
        base_delay=1.0,
        max_delay=4.0,
        refuse_after=5,
        refuse_seconds=60,
        forget_after=600,
    )

    def guess(self, env: Env, source: Source = ATTACKER, user: str = "alice") -> Deferred[Response]:
        request = register(user=user)
        challenge = env.send(request, source)
        authorize(request, challenge, password="guess")
        return env.registrar.handle_register(request, source)

    def test_failures_delayed_then_refused(self) -> None:
        """After free_failures the 401 is delayed, growing; after
        refuse_after failures: 503 with Retry-After, until it ends."""
        env = Env(throttle=self.SETTINGS)
        for _ in range(2):
            assert success_result_of(self.guess(env)).status == 401
        d = self.guess(env)
        assert not d.called
        env.clock.pump([0.1] * 11)
        assert success_result_of(d).status == 401
        d = self.guess(env)
        env.clock.pump([0.1] * 19)
        assert not d.called
        env.clock.pump([0.1] * 2)
        assert success_result_of(d).status == 401
        d = self.guess(env)  # fifth failure: delayed 4 s and refused after
        env.clock.pump([0.5] * 8)
        assert success_result_of(d).status == 401
        response = env.send(register(), ATTACKER)
        assert response.status == 503
        retry_after = int(response.headers.get("Retry-After") or 0)
        assert 50 <= retry_after <= 60
        assert any(
            e.get("peer") == ATTACKER.remote_host and "Refusing" in e.get("log_format", "")
            for e in env.events
        )
        env.clock.pump([1.0] * 61)
        assert env.send(register(), ATTACKER).status == 401

    def test_failures_logged_with_peer_and_aor(self) -> None:
        """Each failure is logged with peer and aor fields."""
        env = Env(throttle=self.SETTINGS)
        success_result_of(self.guess(env))
        [event] = [e for e in env.events if e.get("why")]
        assert event["peer"] == ATTACKER.remote_host
        assert event["aor"] == "sip:alice@example.com"

    def test_challenge_without_credentials_not_a_failure(self) -> None:
        """Plain challenges (no credentials) never count as failures."""
        env = Env(throttle=self.SETTINGS)
        for _ in range(10):
            assert env.send(register(), ATTACKER).status == 401
        assert env.registrar.throttle.tracked == 0

    def test_user_lockout_spares_known_phone(self) -> None:
        """Guessing alice's password from many addresses refuses alice's
        name to new sources, but not her phone that authenticated before."""
        env = Env(throttle=self.SETTINGS)
        assert env.send_authenticated(register()).status == 200
        for i in range(5):
            source = Source("UDP", f"198.51.100.{i}", 5060, "127.0.0.1", 5060)
            d = self.guess(env, source)
            env.clock.pump([0.5] * 10)
            assert success_result_of(d).status == 401
        fresh = Source("UDP", "198.51.100.200", 5060, "127.0.0.1", 5060)
        request = register()
        authorize(request, env.send(request, fresh))
        assert env.send(request, fresh).status == 503
        request = register(call_id="refresh")
        assert env.send_authenticated(request, PHONE).status == 200

    def hold_reads(
        self, env: Env, monkeypatch: pytest.MonkeyPatch
    ) -> list[tuple[str, Deferred[Any]]]:
        """
        Make ``env``'s store hold every credentials read pending: the reads
        started, in order (fire them with :func:`release_reads`).
        """
        reads: list[tuple[str, Deferred[Any]]] = []

        def held(username: str) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            reads.append((username, d))
            return d

        monkeypatch.setattr(env.store, "get_sip_credentials", held)
        return reads

    def release_reads(self, env: Env, reads: list[tuple[str, Deferred[Any]]], real: Any) -> None:
        for username, d in reads:
            d.callback(success_result_of(real(username)))
        env.clock.pump([0.5] * 40)

    def guesses_at_once(
        self, env: Env, source: Source, user: str, n: int, right_at: int | None = None
    ) -> list[Deferred[Response]]:
        """``n`` guesses answering one challenge (nc 1, 2, ...) sent before any
        is answered; the one at ``right_at`` has the right password."""
        request = register(user=user)
        challenge = env.send(request, source)
        pending = []
        for i in range(n):
            guess = register(user=user, call_id=f"guess-{i}")
            authorize(guess, challenge, password=None if i == right_at else f"guess-{i}", nc=i + 1)
            pending.append(env.registrar.handle_register(guess, source))
        return pending

    def test_concurrent_guesses_checked_at_most_refuse_after(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """150 guesses with one nonce, all sent before the store answers the
        first read: at most refuse_after are checked (slots are reserved
        before the read); the rest get 503 at once, the right password
        among them (issue 13 item 3a: all 150 were checked, the right one
        got 200)."""
        env = Env(throttle=self.SETTINGS, settings=RegistrarSettings(credentials_cache_seconds=0))
        real = env.store.get_sip_credentials
        reads = self.hold_reads(env, monkeypatch)
        pending = self.guesses_at_once(env, ATTACKER, "alice", 150, right_at=149)
        assert len(reads) == self.SETTINGS.refuse_after
        self.release_reads(env, reads, real)
        statuses = [success_result_of(d).status for d in pending]
        assert statuses.count(401) == self.SETTINGS.refuse_after
        assert statuses.count(503) == 150 - self.SETTINGS.refuse_after
        assert statuses[149] == 503
        assert env.bindings() == []

    def test_concurrent_guesses_from_many_sources_limited_per_user(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The per-user count holds however many sources guess at once."""
        env = Env(throttle=self.SETTINGS, settings=RegistrarSettings(credentials_cache_seconds=0))
        real = env.store.get_sip_credentials
        reads = self.hold_reads(env, monkeypatch)
        pending = [
            d
            for i in range(50)
            for d in self.guesses_at_once(
                env, Source("UDP", f"198.51.100.{i}", 5060, "127.0.0.1", 5060), "alice", 1
            )
        ]
        assert len(reads) == self.SETTINGS.refuse_after
        self.release_reads(env, reads, real)
        statuses = [success_result_of(d).status for d in pending]
        assert statuses.count(401) == self.SETTINGS.refuse_after

    def test_known_address_guesses_at_once_limited(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """90 guesses for bob at once from the address bob's phone registered
        from: at most refuse_after are checked (issue 13 item 3b)."""
        env = Env(throttle=self.SETTINGS, settings=RegistrarSettings(credentials_cache_seconds=0))
        assert env.send_authenticated(register(user="bob")).status == 200
        real = env.store.get_sip_credentials
        reads = self.hold_reads(env, monkeypatch)
        nat_mate = Source("UDP", PHONE.remote_host, 41000, "127.0.0.1", 5060)
        pending = self.guesses_at_once(env, nat_mate, "bob", 90)
        assert len(reads) == self.SETTINGS.refuse_after
        self.release_reads(env, reads, real)
        statuses = [success_result_of(d).status for d in pending]
        assert statuses.count(401) == self.SETTINGS.refuse_after

    def test_shared_address_successes_do_not_reset_guesses(self) -> None:
        """From the address bob's phone registers from, guesses for bob
        interleaved with successes there (another user's, and bob's phone's
        refreshes) stay limited: no success clears a count (issue 13 item
        3b: the source was exempt from bob's count and any success cleared
        its own)."""
        env = Env(throttle=self.SETTINGS)
        assert env.send_authenticated(register(user="bob")).status == 200
        nat_mate = Source("UDP", PHONE.remote_host, 41000, "127.0.0.1", 5060)
        statuses = []
        for i in range(30):
            for _ in range(3):
                d = self.guess(env, nat_mate, "bob")
                while not d.called:  # the delayed 401s: 1 s, 2 s, 4 s
                    env.clock.advance(0.5)
                statuses.append(success_result_of(d).status)
            watson = register(user="watson", call_id=f"watson-{i}")
            assert env.send_authenticated(watson, nat_mate).status == 200
            # bob's phone refreshes (200, or 503 once that address is
            # refused for bob): no success clears a count.
            refresh = register(user="bob", call_id="bob-phone", cseq=2 * i + 3)
            assert env.send_authenticated(refresh).status in (200, 503)
        assert statuses.count(401) == self.SETTINGS.refuse_after
        assert statuses.count(503) == 90 - self.SETTINGS.refuse_after

    def test_known_phone_registers_behind_a_refused_address(self) -> None:
        """Failures of others behind alice's NAT address refuse that address
        to newcomers (503, even for a first REGISTER without credentials),
        while alice's phone, known there, still gets its challenge and
        registers."""
        env = Env(throttle=self.SETTINGS)
        assert env.send_authenticated(register()).status == 200
        nat_mate = Source("UDP", PHONE.remote_host, 41000, "127.0.0.1", 5060)
        for _ in range(5):
            d = self.guess(env, nat_mate, "watson")
            env.clock.pump([0.5] * 20)
            assert success_result_of(d).status == 401
        assert env.send(register(user="bob"), nat_mate).status == 503
        assert env.registrar.stateless_challenge(register(user="bob"), nat_mate) is None
        request = register(call_id="refresh")
        assert env.registrar.stateless_challenge(request, PHONE) is not None
        assert env.send_authenticated(request, PHONE).status == 200

    def test_store_error_gives_the_slot_back(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A failed credentials read tested no password: nothing counted."""
        env = Env(throttle=self.SETTINGS)
        monkeypatch.setattr(
            env.store, "get_sip_credentials", lambda username: fail(StoreUnavailable("down"))
        )
        for _ in range(10):
            assert success_result_of(self.guess(env)).status == 500
        assert env.registrar.throttle.tracked == 0

    def test_behind_a_trusted_proxy_the_phone_address_is_counted(self) -> None:
        """From a trusted proxy, the throttle counts the phone's address the
        proxy recorded (its Path's received, else the Via below its own):
        one guessing phone does not get the proxy refused for all."""
        proxy = Source("UDP", "203.0.113.5", 5060, "127.0.0.1", 5060)
        env = Env(
            throttle=self.SETTINGS,
            settings=RegistrarSettings(trusted_proxies=NetworkSet.of(["203.0.113.5"])),
        )

        def via_proxy(user: str, phone: str, call_id: str, path: bool = True) -> Request:
            extra = (
                [f"Path: <sip:203.0.113.5;lr;received=sip:{phone}:5062%3Btransport%3Dudp>"]
                if path
                else []
            )
            request = register(user=user, call_id=call_id, extra=extra)
            request.headers.set("Via", "SIP/2.0/UDP 203.0.113.5;branch=z9hG4bK-p")
            request.headers.add(
                "Via", f"SIP/2.0/UDP 10.0.0.9:5062;branch=z9hG4bK-r;received={phone};rport=5062"
            )
            return request

        for i in range(5):
            request = via_proxy("alice", "198.51.100.7", f"g{i}", path=i % 2 == 0)
            authorize(request, env.send(request, proxy), password="guess")
            d = env.registrar.handle_register(request, proxy)
            env.clock.pump([0.5] * 20)
            assert success_result_of(d).status == 401
        assert env.registrar.throttle.refused("198.51.100.7") > 0
        assert env.registrar.throttle.refused("203.0.113.5") == 0
        request = via_proxy("bob", "198.51.100.8", "bob")
        assert env.send_authenticated(request, proxy).status == 200
        request = via_proxy("watson", "198.51.100.7", "watson")
        assert env.send(request, proxy).status == 503

    def test_path_and_via_believed_from_trusted_proxies_only(self) -> None:
        """A phone writing a Path or Via naming another address is counted by
        its own address."""
        env = Env(throttle=self.SETTINGS)
        for i in range(5):
            request = register(
                call_id=f"g{i}",
                extra=[f"Path: <sip:127.0.0.1;lr;received=sip:198.51.100.{i}:5060>"],
            )
            request.headers.add("Via", f"SIP/2.0/UDP 198.51.100.{i};branch=z9hG4bK-x")
            authorize(request, env.send(request, ATTACKER), password="guess")
            d = env.registrar.handle_register(request, ATTACKER)
            env.clock.pump([0.5] * 20)
            assert success_result_of(d).status == 401
        assert env.send(register(), ATTACKER).status == 503

    def test_delayed_answers_bounded(self) -> None:
        """Past max_delayed held answers, failures are refused at once."""
        env = Env(
            RegistrarSettings(max_delayed=1), ThrottleSettings(free_failures=0, refuse_after=0)
        )
        first = self.guess(env)
        second = self.guess(env)
        response = success_result_of(second)
        assert response.status == 503
        env.clock.pump([1.0] * 10)
        assert success_result_of(first).status == 401


# -- purge and helpers -----------------------------------------------------------------


class TestPurge:
    """Expired bindings are purged periodically on the injected clock."""

    def test_purge_runs_every_interval(self) -> None:
        """startService starts purging; stopService stops it."""
        env = Env(RegistrarSettings(purge_interval=30))
        env.send_authenticated(register(extra=["Expires: 60"]))
        env.registrar.startService()
        env.clock.pump([1.0] * 61)
        assert success_result_of(env.store.all_bindings(0.0)) == []
        env.registrar.stopService()
        assert not env.clock.getDelayedCalls()

    def test_purge_failure_logged_and_retried(self) -> None:
        """A failing purge is logged and the timer keeps running."""
        env = Env(RegistrarSettings(purge_interval=10), location_store=FailingLocationStore())
        env.registrar.startService()
        env.clock.pump([1.0] * 21)
        assert len([e for e in env.events if "log_failure" in e]) == 2
        env.registrar.stopService()


@pytest.mark.parametrize(
    "domain,ruri,to,aor",
    [
        ("[::1]", "sip:[::1]", "<sip:alice@[0:0::1]>", "sip:alice@[::1]"),
        (
            "[2001:db8::10]",
            "sip:[2001:DB8:0::10]:5060",
            "<sip:alice@[2001:db8::10]>",
            "sip:alice@[2001:db8::10]",
        ),
        ("127.0.0.1", "sip:127.0.0.1", "<sip:alice@127.0.0.1>", "sip:alice@127.0.0.1"),
    ],
)
def test_ip_address_domain(domain: str, ruri: str, to: str, aor: str) -> None:
    """A domain that is an IP address (IPv6 as the config writes it, in
    brackets) matches however the phone writes the address."""
    env = Env(RegistrarSettings(), domain=domain)
    request = register(ruri=ruri, to=to)
    assert env.send_authenticated(request).status == 200
    assert len(env.bindings(aor)) == 1


def test_phone_host_reads_what_the_trusted_proxy_recorded() -> None:
    """The top Path's received when that Path names a trusted proxy (as
    Kamailio's add_path_received writes it), else the first Via below the
    proxies' (received, else sent-by); None without an address."""
    proxies = NetworkSet.of(["203.0.113.0/29"])

    def request(path: str | None, *vias: str) -> Request:
        message = register(extra=[f"Path: {path}"] if path else [])
        message.headers.set("Via", vias[0])
        for via in vias[1:]:
            message.headers.add("Via", via)
        return message

    front = "SIP/2.0/UDP 203.0.113.1;branch=z9hG4bK-f"
    assert (
        phone_host(
            request(
                "<sip:203.0.113.1;lr;received=sip:198.51.100.7:5062%3btransport%3dudp>",
                front,
                "SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-p;received=198.51.100.8",
            ),
            proxies,
        )
        == "198.51.100.7"
    )
    # A Path naming someone else (the phone's own) is not believed: the Via.
    assert (
        phone_host(
            request(
                "<sip:192.0.2.1;lr;received=sip:198.51.100.7>",
                front,
                "SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-p;received=198.51.100.8",
            ),
            proxies,
        )
        == "198.51.100.8"
    )
    # Two proxies of ours in a row; a sent-by when no received was needed.
    assert (
        phone_host(
            request(
                None,
                front,
                "SIP/2.0/UDP 203.0.113.2;branch=z9hG4bK-e",
                "SIP/2.0/UDP [2001:DB8::7]:5062;branch=z9hG4bK-p",
            ),
            proxies,
        )
        == "2001:db8::7"
    )
    # Garbage or a host name records no address.
    assert (
        phone_host(
            request(
                "<sip:203.0.113.1;lr;received=nonsense>",
                front,
                "SIP/2.0/UDP phone.example.com;branch=z9hG4bK-p",
            ),
            proxies,
        )
        is None
    )
    assert phone_host(request(None, front), proxies) is None


def test_canonical_aor() -> None:
    """The AOR is sip:user@host, host lower-cased, no port or params;
    SIPS maps to SIP and aliases to the domain."""
    assert (
        canonical_aor(parse_uri("sips:Alice@EXAMPLE.com:5061;transport=tls"), DOMAIN)
        == "sip:Alice@example.com"
    )
    assert (
        canonical_aor(parse_uri("sip:alice@[2001:DB8::10]"), DOMAIN, {"2001:db8::10"})
        == "sip:alice@example.com"
    )
    assert canonical_aor(parse_uri("sip:example.com"), DOMAIN) == "sip:example.com"
    assert canonical_aor(parse_uri("sip:bob@[2001:DB8:0::1]"), DOMAIN) == "sip:bob@[2001:db8::1]"


def test_contact_key() -> None:
    """Equal URIs by RFC 3261 §19.1.4 share a key; different ones do not."""

    def key(text: str) -> str:
        return contact_key(parse_uri(text))

    assert key("sip:a@Host.COM;Transport=TCP;lr") == key("sip:a@host.com;lr;transport=tcp")
    assert key("sip:a@host.com") != key("sip:A@host.com")
    assert key("sip:a@host.com") != key("sip:a@host.com:5060")
    assert key("sip:a@host.com") != key("sips:a@host.com")


def test_settings_validated() -> None:
    """Expiry settings must be ordered min <= default <= max; algorithms
    must be known, given once."""
    for algorithms in (["SHA-1"], [], ["MD5", "md5"]):
        with pytest.raises(ValueError):
            RegistrarSettings(digest_algorithms=algorithms)
    with pytest.raises(ValueError):
        RegistrarSettings(min_expires=600, default_expires=300)
    with pytest.raises(ValueError):
        RegistrarSettings(default_expires=90000, max_expires=86400)


@implementer(IUserChangeNotifier)
class NotifyingUsers:
    """A plugin's user store: the memory store's users, with its own change notices."""

    def __init__(self, users: MemoryStore) -> None:
        self.users = users
        self.realm = users.realm
        self.listeners: list[Any] = []
        self.looked_up: list[str] = []

    def get_sip_credentials(self, username: str) -> Deferred[SipCredentials | None]:
        self.looked_up.append(username)
        return self.users.get_sip_credentials(username)

    def subscribe(self, listener: Any) -> Any:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)


def test_a_user_store_declaring_change_notices_drops_cached_credentials_at_once() -> None:
    """The registrar adapts its user store to IUserChangeNotifier (no attribute probing):
    a user that store says changed is read again at the next REGISTER."""
    env = Env()
    users = NotifyingUsers(env.store)
    registrar = Registrar(
        env.clock,
        cast(Any, users),
        env.store,
        DOMAIN,
        RegistrarSettings(aliases=ALIASES),
        AuthThrottle(env.clock),
    )
    env.registrar = registrar
    assert env.send_authenticated(register()).status == 200
    assert env.send_authenticated(register(cseq=3)).status == 200
    assert users.looked_up == ["alice"]
    assert len(users.listeners) == 1
    for listener in users.listeners:
        listener("alice")
    assert env.send_authenticated(register(cseq=5)).status == 200
    assert users.looked_up == ["alice", "alice"]


# -- one store operation per authenticated REGISTER ---------------------------------------


class TestOneOperation:
    """
    With a store providing ``IVerifiedRegistration``, an authenticated REGISTER whose
    credentials are not cached is one store operation: the store reads the credentials,
    the registrar's check runs on them, and only right ones write the bindings. The
    answers are those of the two-step path.
    """

    @pytest.fixture(params=["memory", "sqlite"])
    def env(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
        env = Env(
            sqlite_path=tmp_path / "store.sqlite" if request.param == "sqlite" else None,
            one_operation=True,
        )
        yield env
        success_result_of(env.store.stop())

    @staticmethod
    def store_calls(env: Env, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        """The store operations the registrar uses from now on, by name."""
        calls: list[str] = []
        for name in ("get_sip_credentials", "update_bindings", "update_bindings_if_verified"):
            real = getattr(env.store, name)

            def counted(*args: Any, _name: str = name, _real: Any = real) -> Any:
                calls.append(_name)
                return _real(*args)

            monkeypatch.setattr(env.store, name, counted)
        return calls

    def test_right_password_is_one_store_operation(
        self, env: Env, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The credentials read and the binding written in one operation; the 200 lists
        the binding; the user's credentials are cached for the next refresh."""
        calls = self.store_calls(env, monkeypatch)
        response = env.send_authenticated(register())
        assert response.status == 200
        assert calls == ["update_bindings_if_verified"]
        [binding] = env.bindings()
        assert binding.contact == "sip:alice@192.0.2.10:5062"
        assert [str(c.uri) for c in response.contacts] == [binding.contact]
        assert env.registrar.credentials.get("alice") is not None
        calls.clear()
        assert env.send_authenticated(register(cseq=3)).status == 200
        assert calls == ["update_bindings"]

    def test_sql_store_runs_it_as_one_job(self, tmp_path: Path) -> None:
        """On the SQL store: one group-commit job (one thread hop, one transaction)."""
        env = Env(sqlite_path=tmp_path / "store.sqlite", one_operation=True)
        store = cast(SQLStore, env.store)
        jobs = store.group_commit.jobs
        assert env.send_authenticated(register()).status == 200
        assert store.group_commit.jobs == jobs + 1
        success_result_of(store.stop())

    def test_wrong_password_or_unknown_user_writes_nothing(self, env: Env) -> None:
        """A wrong password and an unknown user get the same 401 and write nothing."""
        wrong = env.send_authenticated(register(), password="guess")
        unknown = env.send_authenticated(register(user="mallory"), username="mallory", password="x")
        assert wrong.status == unknown.status == 401
        assert [n for n, _ in wrong.headers] == [n for n, _ in unknown.headers]
        assert not any("stale" in c for c in challenges(wrong) + challenges(unknown))
        assert env.bindings() == [] and env.bindings(f"sip:mallory@{DOMAIN}") == []
        assert env.registrar.credentials.get("alice") is not None  # read, kept
        assert env.registrar.credentials.get("mallory") is None

    def test_disabled_user_refused(self, env: Env) -> None:
        """A disabled user's right password gets 401 and writes nothing."""
        success_result_of(env.store.update_user("alice", UserChanges(disabled=True)))
        assert env.send_authenticated(register()).status == 401
        assert env.bindings() == []

    def test_stale_nonce_writes_nothing(self, env: Env) -> None:
        """A right response with an expired nonce: 401 stale=true, nothing written."""
        request = register()
        authorize(request, env.send(request))
        env.clock.advance(env.registrar.settings.nonce_lifetime + 1)
        response = env.send(request)
        assert response.status == 401
        assert all(c.get("stale") == "true" for c in challenges(response))
        assert env.bindings() == []

    def test_replayed_nonce_count_is_stale_and_writes_nothing(self, env: Env) -> None:
        """The same nonce and nc again (a replay, another Contact): stale, not written."""
        request = register()
        authorize(request, env.send(request))
        assert env.send(request).status == 200
        env.registrar.credentials.forget("alice")  # the replay reaches the store again
        replay = register(contacts=["<sip:mallory@198.51.100.66>"], cseq=5)
        replay.headers.set("Authorization", request.headers.get("Authorization") or "")
        response = env.send(replay)
        assert response.status == 401
        assert all(c.get("stale") == "true" for c in challenges(response))
        assert [b.contact for b in env.bindings()] == ["sip:alice@192.0.2.10:5062"]

    def test_too_many_bindings_after_right_credentials(self, env: Env) -> None:
        """A right password whose update the store refuses (max_contacts): 503, nothing
        written, and the attempt counted as a success (the source becomes known)."""
        env.registrar.settings = RegistrarSettings(aliases=ALIASES, max_contacts=1)
        assert env.send_authenticated(register()).status == 200
        env.registrar.credentials.forget("alice")
        other = register(contacts=["<sip:alice@192.0.2.99>"], call_id="other-ua")
        response = env.send_authenticated(other, source=ATTACKER)
        assert response.status == 503
        assert [b.contact for b in env.bindings()] == ["sip:alice@192.0.2.10:5062"]
        assert env.registrar.throttle.is_known(ATTACKER.remote_host, "alice")

    def test_out_of_order_cseq_is_500(self, env: Env) -> None:
        """A Call-ID reused with a lower CSeq: 500 (RFC 3261 §10.3 step 7)."""
        assert env.send_authenticated(register(cseq=10)).status == 200
        env.registrar.credentials.forget("alice")
        response = env.send_authenticated(register(cseq=3))
        assert response.status == 500
        assert [b.cseq for b in env.bindings()] == [11]

    def test_other_answers_take_two_steps(self, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
        """A request a right password does not let write (403, 423, a query) reads the
        credentials alone, and gets its usual answer."""
        calls = self.store_calls(env, monkeypatch)
        assert env.send_authenticated(register(user="alice"), username="bob").status == 403
        short = register(contacts=["<sip:alice@192.0.2.10:5062>;expires=5"])
        assert env.send_authenticated(short).status == 423
        assert env.send_authenticated(register(contacts=[], cseq=7)).status == 200
        assert "update_bindings_if_verified" not in calls
        assert env.bindings() == []

    def test_failures_are_throttled(self, env: Env) -> None:
        """Wrong passwords through the one operation count as failures: past
        free_failures the 401 is delayed."""
        env.registrar.throttle.settings = ThrottleSettings(free_failures=1, base_delay=1.0)
        assert env.send_authenticated(register(), ATTACKER, password="guess").status == 401
        request = register()
        authorize(request, env.send(request, ATTACKER), password="guess")
        d = env.registrar.handle_register(request, ATTACKER)
        assert not d.called
        env.clock.pump([0.1] * 11)
        assert success_result_of(d).status == 401
