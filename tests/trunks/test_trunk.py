"""
Tests for the trunk's call-facing side (:obj:`clicktodial.trunks.trunk`,
:obj:`clicktodial.trunks.limits`),
its keep-alive (:obj:`clicktodial.trunks.keepalive`) and its configuration
(:obj:`clicktodial.trunks.config`).
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from clicktodial.config import ConfigError, parse_config
from clicktodial.interfaces import ITrunk, ITrunkRegistry
from clicktodial.sip.address import Destination
from clicktodial.testing.sipfakes import run_for
from clicktodial.trunks.config import trunk_configs
from clicktodial.trunks.limits import CallAdmission
from clicktodial.trunks.trunk import TrunkRegistry
from clicktodial.trunks.values import Reachability, RegistrationState, TrunkBusy

from .provider import PASSWORD, USER, Harness, trunk_config

BASE = "[sip]\ndomain = example.com\n[store]\nurl = sqlite://\n"


def test_providers_verify() -> None:
    """Trunk provides ITrunk, TrunkRegistry ITrunkRegistry."""
    h = Harness()
    registry = TrunkRegistry([h.trunk])
    assert verifyObject(ITrunk, h.trunk)
    assert verifyObject(ITrunkRegistry, registry)
    assert registry.get("provider") is h.trunk
    assert registry.get("other") is None
    assert registry.names() == ["provider"]


def test_request_uri_only_for_e164() -> None:
    """E.164 numbers become sip:+NUMBER@domain; anything else is refused."""
    h = Harness(trunk_config(domain="voip.example"))
    assert str(h.trunk.request_uri_for("+4930123456")) == "sip:+4930123456@voip.example"
    for bad in ["4930123456", "+0301", "+49 30", "+4930123456@evil.example", "+1;x=y", ""]:
        with pytest.raises(ValueError):
            h.trunk.request_uri_for(bad)


def test_destinations_resolved() -> None:
    """The trunk's destinations are its proxy resolved (RFC 3263)."""
    h = Harness()
    result: list[object] = []
    h.trunk.destinations().addCallback(result.append)
    assert result == [[Destination("UDP", "198.51.100.1", 5060)]]


def test_credentials_only_for_the_configured_realm() -> None:
    """realm set: only that realm gets credentials; unset: any realm (auth user)."""
    assert Harness(trunk_config(realm="r.example")).trunk.credentials_for("x") is None
    assert Harness(trunk_config(realm="r.example")).trunk.credentials_for("r.example") == (
        USER,
        PASSWORD,
    )
    assert Harness(trunk_config(auth_username="a1")).trunk.credentials_for("any") == (
        "a1",
        PASSWORD,
    )


def test_caller_identity_per_trunk_and_per_user() -> None:
    """caller_id for everyone, user_caller_ids override it; default: the account."""
    trunk = Harness(trunk_config(caller_id="+4930100", user_caller_ids="alice=+4930101")).trunk
    assert trunk.caller_identity("alice").from_uri == "sip:+4930101@provider.example"
    assert trunk.caller_identity("bob").from_uri == "sip:+4930100@provider.example"
    assert trunk.caller_identity(None).asserted_identity == "<sip:+4930100@provider.example>"
    plain = Harness().trunk
    assert plain.caller_identity("bob").from_uri == f"sip:{USER}@provider.example"


def test_admission_max_calls_atomic_and_release_idempotent() -> None:
    """max_calls places, no more; a ticket released twice frees one place."""
    clock = Clock()
    admission = CallAdmission(clock, "t", max_calls=2, max_cps=100)
    first, _second = admission.admit(), admission.admit()
    with pytest.raises(TrunkBusy) as busy:
        admission.admit()
    assert busy.value.limit == "max_calls"
    first.release()
    first.release()
    assert admission.active == 1
    admission.admit()
    with pytest.raises(TrunkBusy):
        admission.admit()
    assert admission.refused == 2


def test_admission_calls_per_second() -> None:
    """max_cps = 2: two calls at once, the third waits for the bucket to refill."""
    clock = Clock()
    admission = CallAdmission(clock, "t", max_calls=100, max_cps=2)
    admission.admit(), admission.admit()
    with pytest.raises(TrunkBusy) as busy:
        admission.admit()
    assert busy.value.limit == "max_cps"
    clock.advance(0.5)
    admission.admit()
    with pytest.raises(TrunkBusy):
        admission.admit()


def test_admission_fractional_rate() -> None:
    """max_cps = 0.5: one call, then the next only two seconds later."""
    clock = Clock()
    admission = CallAdmission(clock, "t", max_calls=100, max_cps=0.5)
    admission.admit()
    clock.advance(1.9)
    with pytest.raises(TrunkBusy):
        admission.admit()
    clock.advance(0.1)
    admission.admit()


def test_status_shows_registration_and_calls() -> None:
    """status(): registration state, reachability off without keep-alive, counts."""
    h = Harness()
    h.trunk.service.startService()
    h.serve_register()
    h.serve_register()
    ticket = h.trunk.admit()
    status = h.trunk.status()
    assert status.registration.state is RegistrationState.REGISTERED
    assert status.reachability is Reachability.OFF
    assert status.active_calls == 1 and status.max_calls == 10
    ticket.release()
    no_register = Harness(trunk_config(register="no")).trunk.status()
    assert no_register.registration.state is RegistrationState.OFF


def test_keepalive_marks_up_and_down() -> None:
    """An answer marks the trunk up; Timer F's 408 (no answer) marks it down."""
    h = Harness(trunk_config(register="no", keepalive_interval="30"))
    h.trunk.service.startService()
    assert h.trunk.status().reachability is Reachability.UNKNOWN
    options = h.last("OPTIONS")
    assert str(options.uri) == "sip:provider.example"
    h.respond(options, 404)  # any answer proves it reachable
    assert h.trunk.status().reachability is Reachability.UP
    run_for(h.clock, 30)
    assert len(h.requests("OPTIONS")) == 2
    run_for(h.clock, 33)  # unanswered: the transaction times out
    assert h.trunk.status().reachability is Reachability.DOWN
    assert h.trunk.keepalive is not None and "408" in (h.trunk.keepalive.reason or "")


def test_keepalive_one_at_a_time() -> None:
    """No OPTIONS while the last is unanswered."""
    h = Harness(trunk_config(register="no", keepalive_interval="5"))
    h.trunk.service.startService()
    run_for(h.clock, 12)
    assert len(h.requests("OPTIONS")) == 1


# -- configuration ------------------------------------------------------------------------


def configs(text: str):  # type: ignore[no-untyped-def]
    return trunk_configs(parse_config(BASE + text, "/etc/c.ini"))


def test_config_defaults_and_keys() -> None:
    """A minimal section: refuse inbound, no registration, 10 calls, 1 per second."""
    config = configs("[trunk:p]\nproxy = sip:p.example\nusername = u\npassword = pw\n")["p"]
    assert config.inbound == "refuse"
    assert not config.register
    assert (config.max_calls, config.max_cps, config.keepalive_interval) == (10, 1.0, 30.0)
    assert config.host == "p.example" and config.auth_user == "u"


@pytest.mark.parametrize(
    ("line", "key", "words"),
    [
        ("proxy = http://p.example", "proxy", "not a sip: or sips: URI"),
        ("proxy = sip:p.example;transport=sctp", "proxy", "unknown transport"),
        ("proxy = sips:p.example;transport=udp", "proxy", "cannot use UDP"),
        ("proxy = sip:user@p.example", "proxy", "without a user part"),
        ("caller_id = 030123", "caller_id", "not an E.164"),
        ("user_caller_ids = alice", "user_caller_ids", "expected user=+NUMBER"),
        ("max_cps = nan", "max_cps", "0.01 to 10000"),
        ("max_calls = 0", "max_calls", "1 to 100000"),
        ("inbound = accept", "inbound", "refuse"),
        ("register_expires = 10", "register_expires", "60 to 86400"),
        ("keepalive_interval = 1", "keepalive_interval", "at least 5"),
        ("colour = red", "colour", "unknown key"),
        ("domain = p.example:5070", "domain", "without port"),
        ("username = u;lr", "username", "not a SIP user name"),
    ],
)
def test_config_errors_name_file_section_key(line: str, key: str, words: str) -> None:
    """Every bad value is one line: file, [trunk:NAME], key, what is wrong."""
    text = "[trunk:p]\nproxy = sip:p.example\nusername = u\npassword = pw\n"
    lines = [x for x in text.splitlines() if not x.startswith(line.split(" =")[0] + " ")]
    with pytest.raises(ConfigError) as error:
        configs("\n".join([*lines, line]) + "\n")
    message = str(error.value)
    assert message.startswith(f"/etc/c.ini: [trunk:p] {key}: ")
    assert words in message


def test_config_password_required_and_never_echoed() -> None:
    """A missing password is named; a bad one is not repeated in the message."""
    with pytest.raises(ConfigError, match=r"\[trunk:p\] password: required"):
        configs("[trunk:p]\nproxy = sip:p.example\nusername = u\n")
    with pytest.raises(ConfigError) as error:
        configs("[trunk:p]\nproxy = sip:p.example\nusername = u\npassword = se\x01cret\n")
    assert "cret" not in str(error.value)
