"""
Tests for :obj:`clicktodial.trunks.registration`: REGISTER to the provider through a real
transaction layer, digest answered, refreshed before expiry, retried with backoff. Every
timer on a task.Clock stepped in small steps.
"""

from __future__ import annotations

import pytest

from clicktodial.sip.digest import Verdict
from clicktodial.testing.sipfakes import run_for
from clicktodial.trunks.registration import refresh_delay
from clicktodial.trunks.values import RegistrationState

from .fakes import a, srv
from .provider import PASSWORD, USER, Harness, trunk_config


def registration(h: Harness):  # type: ignore[no-untyped-def]
    assert h.trunk.registration is not None
    return h.trunk.registration


def test_registers_through_the_401_round() -> None:
    """The first REGISTER is challenged; the answer carries a digest the provider accepts."""
    h = Harness()
    h.trunk.service.startService()
    first = h.last("REGISTER")
    assert str(first.uri) == "sip:provider.example"
    assert first.headers.get("To") == f"<sip:{USER}@provider.example>"
    assert first.headers.get("Contact") == f"<sip:{USER}@192.0.2.10:5060>"
    assert first.headers.get("Expires") == "600"
    assert "Authorization" not in first.headers
    assert registration(h).state is RegistrationState.REGISTERING
    h.challenge(first)
    second = h.last("REGISTER")
    assert second is not first
    assert second.cseq.seq == first.cseq.seq + 1
    assert second.call_id == first.call_id
    assert h.verdict(second) is Verdict.OK
    h.accept(second)
    status = registration(h).status()
    assert status.state is RegistrationState.REGISTERED
    assert status.expires_at == 600
    assert status.reason is None


def test_auth_user_differs_from_from_user() -> None:
    """auth_username goes in the digest; username stays in From/To."""
    h = Harness(trunk_config(auth_username="auth-7"))
    h.trunk.service.startService()
    h.challenge(h.last("REGISTER"))
    second = h.last("REGISTER")
    assert 'username="auth-7"' in (second.headers.get("Authorization") or "")
    assert USER in (second.headers.get("From") or "")


def test_refreshed_at_half_the_granted_expiry_without_a_new_challenge() -> None:
    """A 300 s grant is refreshed at 150 s, reusing the nonce (nc 2): one transaction."""
    h = Harness()
    h.trunk.service.startService()
    h.serve_register()
    h.accept(h.last("REGISTER"), expires=300)
    before = len(h.requests("REGISTER"))
    run_for(h.clock, 149)
    assert len(h.requests("REGISTER")) == before
    run_for(h.clock, 2)
    assert len(h.requests("REGISTER")) == before + 1
    refresh = h.last("REGISTER")
    authorization = refresh.headers.get("Authorization") or ""
    assert "nc=00000002" in authorization
    assert h.verdict(refresh) is Verdict.OK
    # Still shown as registered while the refresh is under way.
    assert registration(h).state is RegistrationState.REGISTERED


def test_refresh_delay_rule() -> None:
    """Half the grant, never under a second."""
    assert refresh_delay(3600) == 1800
    assert refresh_delay(10) == 5
    assert refresh_delay(1) == 1.0


def test_provider_granting_less_is_respected() -> None:
    """The expiry in our Contact of the 2xx wins over what we asked for."""
    h = Harness()
    h.trunk.service.startService()
    h.challenge(h.last("REGISTER"))
    h.accept(h.last("REGISTER"), expires=120)
    assert registration(h).status().expires_at == 120
    run_for(h.clock, 59)
    count = len(h.requests("REGISTER"))
    run_for(h.clock, 2)
    assert len(h.requests("REGISTER")) == count + 1


def test_wrong_password_fails_once_without_hammering() -> None:
    """A challenge to our own answer (same nonce, not stale) is a failure, not a loop."""
    h = Harness(trunk_config(password="wrong"))
    h.trunk.service.startService()
    first = h.last("REGISTER")
    h.challenge(first)
    second = h.last("REGISTER")
    assert h.verdict(second) is Verdict.INVALID
    h.challenge(second)
    status = registration(h).status()
    assert status.state is RegistrationState.FAILED
    assert "refused our credentials" in (status.reason or "")
    assert len(h.requests("REGISTER")) == 2
    assert PASSWORD not in (status.reason or "")


def test_failure_retried_with_growing_backoff() -> None:
    """403: failed with the reason; retried after ~30 s, then ~60 s (±20 %)."""
    h = Harness()
    h.trunk.service.startService()
    times = []
    for _ in range(3):
        times.append(h.clock.seconds())
        h.respond(h.last("REGISTER"), 403)
        assert registration(h).status().state is RegistrationState.FAILED
        assert registration(h).status().reason == "403 Forbidden"
        count = len(h.requests("REGISTER"))
        while len(h.requests("REGISTER")) == count:
            run_for(h.clock, 1)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert 24 <= gaps[0] <= 37 and 48 <= gaps[1] <= 73
    assert registration(h).status().failures == 3


def test_timeout_tries_next_target_then_fails() -> None:
    """No answer (Timer F's 408) from the first SRV target: the second is tried at once."""
    h = Harness(
        trunk_config(proxy="sip:provider.example;transport=udp"),
        srv("_sip._udp.provider.example", 1, 0, 5060, "a.provider.example"),
        srv("_sip._udp.provider.example", 2, 0, 5060, "b.provider.example"),
        a("a.provider.example", "198.51.100.1"),
        a("b.provider.example", "198.51.100.2"),
    )
    h.trunk.service.startService()
    assert h.transport.requests("REGISTER")[-1].where.host == "198.51.100.1"  # type: ignore[attr-defined]
    run_for(h.clock, 33)  # 64*T1
    assert h.transport.requests("REGISTER")[-1].where.host == "198.51.100.2"  # type: ignore[attr-defined]
    run_for(h.clock, 33)
    status = registration(h).status()
    assert status.state is RegistrationState.FAILED
    assert status.reason is not None and status.reason.startswith("408")


def test_interval_too_brief_asks_for_min_expires() -> None:
    """423 with Min-Expires: asked again with that expiry."""
    h = Harness()
    h.trunk.service.startService()
    h.respond(h.last("REGISTER"), 423, [("Min-Expires", "1800")])
    assert h.last("REGISTER").headers.get("Expires") == "1800"


def test_dns_failure_is_a_failure_with_reason() -> None:
    """A proxy name that does not resolve: failed, saying so, and retried later."""
    h = Harness(trunk_config(proxy="sip:nowhere.example:5060"))
    h.trunk.service.startService()
    status = registration(h).status()
    assert status.state is RegistrationState.FAILED
    assert "nowhere.example" in (status.reason or "")
    assert h.requests("REGISTER") == []


def test_stop_unregisters_and_ignores_late_answers() -> None:
    """Stopping sends Expires: 0 (with the last nonce) and leaves nothing scheduled."""
    h = Harness()
    h.trunk.service.startService()
    h.serve_register()
    h.serve_register()
    h.trunk.service.stopService()
    last = h.last("REGISTER")
    assert last.headers.get("Expires") == "0"
    assert "Authorization" in last.headers
    assert registration(h).state is RegistrationState.OFF
    h.accept(last)
    assert registration(h).state is RegistrationState.OFF
    run_for(h.clock, 40)  # the unregister transaction ends; no timer of ours left
    assert [c for c in h.clock.getDelayedCalls() if c.active()] == []


@pytest.mark.parametrize("realm", ["other.example"])
def test_no_credentials_for_a_foreign_realm(realm: str) -> None:
    """With realm set, a challenge for another realm is not answered."""
    h = Harness(trunk_config(realm=realm))
    h.trunk.service.startService()
    h.challenge(h.last("REGISTER"))
    status = registration(h).status()
    assert status.state is RegistrationState.FAILED
    assert "no credentials for realm" in (status.reason or "")
    assert len(h.requests("REGISTER")) == 1


def test_transition_table_complete_for_the_states_that_send() -> None:
    """While a round runs (registering, or registered and refreshing) every input but
    start and timer-less ones has a transition; stop has one in every state."""
    from clicktodial.trunks.registration import Input, TrunkRegistration

    table = TrunkRegistration._TABLE
    for state in (RegistrationState.REGISTERING, RegistrationState.REGISTERED):
        for input_ in Input:
            if input_ in (Input.START,) or (
                input_ is Input.TIMER and state is RegistrationState.REGISTERING
            ):
                continue
            assert (state, input_) in table, (state, input_)
    for state in RegistrationState:
        assert (state, Input.STOP) in table


def test_input_without_transition_is_counted_not_acted_on() -> None:
    """An input the state has no transition for changes nothing and is counted."""
    from clicktodial.trunks.registration import Event, Input

    h = Harness()
    machine = registration(h)
    machine.react(Event(Input.OK))  # off: nothing registered
    assert machine.state is RegistrationState.OFF
    assert machine.unexpected == 1
