"""
Tests for :obj:`clicktodial.trunks.inbound`: requests from a trunk's addresses are refused with
403 before any transaction user sees them (no open relay); responses and in-dialog
requests pass.
"""

from __future__ import annotations

from clicktodial.sip.address import Source
from clicktodial.sip.message import make_response, new_branch, new_tag
from clicktodial.testing.sipfakes import RecordingUser, sip_request
from clicktodial.trunks.inbound import TrunkInboundGuard
from clicktodial.trunks.trunk import TrunkRegistry

from .provider import Harness, trunk_config

OUR = ("192.0.2.10", 5060)


def setup(**changes: object) -> tuple[Harness, TrunkInboundGuard, RecordingUser]:
    h = Harness(trunk_config(**changes))
    user = RecordingUser()
    h.layer.user = user
    registry = TrunkRegistry([h.trunk])
    guard = TrunkInboundGuard(h.layer, registry, h.layer, server="clicktodial")
    # The registration resolved the proxy: its address is known as the trunk's.
    h.trunk.service.startService()
    return h, guard, user


def source(host: str) -> Source:
    return Source("UDP", host, 5060, *OUR)


def request(method: str, to_tag: str | None = None):  # type: ignore[no-untyped-def]
    return sip_request(
        method,
        "sip:+4930999@192.0.2.10",
        to_tag=to_tag,
        via=f"SIP/2.0/UDP 198.51.100.1:5060;branch={new_branch()}",
    )


def test_invite_from_the_trunk_refused_403_reaching_no_one() -> None:
    """An INVITE from the provider's proxy address: 403, and no transaction user sees it."""
    h, guard, user = setup()
    h.transport.clear()
    guard.request_received(request("INVITE"), source("198.51.100.1"))
    assert user.requests == []
    [sent] = h.transport.responses()
    assert sent.status == 403
    assert sent.message.headers.get("Server") == "clicktodial"
    assert h.layer.active_count == 1  # only our own REGISTER: no server transaction
    assert h.trunk.status().refused_inbound == 1


def test_register_and_options_from_the_trunk_refused() -> None:
    """Every new request from the trunk is refused (REGISTER: never a binding)."""
    h, guard, user = setup()
    h.transport.clear()
    for method in ("REGISTER", "OPTIONS", "MESSAGE", "SUBSCRIBE"):
        guard.request_received(request(method), source("198.51.100.1"))
    assert user.requests == []
    assert [s.status for s in h.transport.responses()] == [403] * 4


def test_inbound_sources_refused_too() -> None:
    """inbound_sources: the provider's other addresses are treated the same."""
    h, guard, user = setup(inbound_sources="203.0.113.0/24")
    h.transport.clear()
    guard.request_received(request("INVITE"), source("203.0.113.77"))
    assert [s.status for s in h.transport.responses()] == [403]
    assert user.requests == []


def test_other_sources_pass() -> None:
    """A phone's request is not the guard's business."""
    h, guard, user = setup()
    guard.request_received(request("INVITE"), source("192.0.2.50"))
    assert [r.method for _, r in user.requests] == ["INVITE"]
    assert h.trunk.status().refused_inbound == 0


def test_in_dialog_requests_and_responses_pass() -> None:
    """A BYE inside a dialog (To tag) and responses go on to the transaction layer."""
    h, guard, user = setup()
    guard.request_received(request("BYE", to_tag="abc"), source("198.51.100.1"))
    assert [r.method for _, r in user.requests] == ["BYE"]
    register = h.last("REGISTER")
    challenge = make_response(register, 401, to_tag=new_tag())
    for value in h.server.challenges():
        challenge.headers.add("WWW-Authenticate", value)
    guard.response_received(challenge, source("198.51.100.1"))
    answered = h.last("REGISTER")
    assert answered is not register and "Authorization" in answered.headers


def test_proxy_resolved_at_start_even_without_registration_or_keepalive() -> None:
    """The registry resolves every proxy as it starts: the guard knows its addresses."""
    h = Harness(
        trunk_config(register="no", keepalive_interval="0", proxy="sip:provider.example:5060")
    )
    registry = TrunkRegistry([h.trunk])
    guard = TrunkInboundGuard(h.layer, registry, h.layer)
    guard.request_received(request("INVITE"), source("198.51.100.1"))
    assert h.transport.responses() == []  # not known yet: not the guard's to refuse
    registry.startService()
    guard.request_received(request("INVITE"), source("198.51.100.1"))
    assert [s.status for s in h.transport.responses()] == [403]
