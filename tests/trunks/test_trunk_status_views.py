"""
The trunks' status on the admin page (/admin/trunks, through StubTreq) and in /metrics
(TrunkCollector), from a registry of real trunks driven on a task.Clock.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from zope.interface import implementer

from clicktodial.interfaces import ITrunk, ITrunkRegistry
from clicktodial.metrics import TrunkCollector
from clicktodial.testing.webfakes import WebClient, web_world
from clicktodial.trunks.trunk import TrunkRegistry
from clicktodial.trunks.values import TrunkStatus

from .provider import Harness, trunk_config


def registered_and_failed() -> TrunkRegistry:
    good = Harness()
    good.trunk.service.startService()
    good.serve_register()
    good.serve_register()
    bad = Harness(trunk_config(password="wrong", keepalive_interval="30"), name="backup")
    bad.trunk.service.startService()
    bad.respond(bad.last("REGISTER"), 403)
    bad.respond(bad.last("OPTIONS"), 200)
    return TrunkRegistry([good.trunk, bad.trunk])


def test_admin_page_shows_each_trunk_state() -> None:
    """Registered with its expiry; failed with the reason; keep-alive state; admins only."""
    world = web_world(trunks=registered_and_failed())
    admin = WebClient(world)
    admin.login("alice")
    reply = admin.get("/admin/trunks")
    assert reply.code == 200
    text = reply.text
    assert 'data-trunk="provider"' in text and 'data-trunk="backup"' in text
    assert "registered" in text
    assert "failed: 403 Forbidden" in text
    assert "reachability up" in text
    user = WebClient(world)
    user.login("bob")
    assert user.get("/admin/trunks").code == 403


def test_admin_page_without_trunks() -> None:
    """No [trunk:NAME]: the page says so."""
    admin = WebClient(web_world())
    admin.login("alice")
    assert "No SIP trunks are configured" in admin.get("/admin/trunks").text


def test_metrics_show_registration_reachability_and_counts() -> None:
    """/metrics: registered 1/0, the state, up, calls and refusals, per trunk."""
    registry = CollectorRegistry()
    registry.register(TrunkCollector(registered_and_failed()))
    text = generate_latest(registry).decode()
    assert 'clicktodial_trunk_registered{trunk="provider"} 1.0' in text
    assert 'clicktodial_trunk_registered{trunk="backup"} 0.0' in text
    assert 'clicktodial_trunk_registration_state{state="failed",trunk="backup"} 1.0' in text
    assert 'clicktodial_trunk_up{trunk="backup"} 1.0' in text
    assert 'clicktodial_trunk_up{trunk="provider"}' not in text  # no keep-alive there
    assert (
        'clicktodial_trunk_registration_expires_timestamp_seconds{trunk="provider"} 600.0' in text
    )
    assert 'clicktodial_trunk_calls_refused_total{trunk="provider"} 0.0' in text


@implementer(ITrunkRegistry)
class BrokenRegistry:
    def get(self, name: str) -> ITrunk | None:
        return None

    def names(self) -> list[str]:
        return []

    def statuses(self) -> list[TrunkStatus]:
        raise RuntimeError("boom")

    def screen_inbound(self, host: str) -> str | None:
        return None


def test_metrics_survive_a_failing_registry() -> None:
    """A registry that raises costs the trunk metrics, not the scrape."""
    registry = CollectorRegistry()
    registry.register(TrunkCollector(BrokenRegistry()))
    assert "clicktodial_trunk" not in generate_latest(registry).decode()
