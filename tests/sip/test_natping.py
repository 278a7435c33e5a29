"""
Server-side NAT keep-alive: OPTIONS every interval to each UDP binding registered from
behind NAT, to its source address; a phone that answers stays; one that leaves
``failures`` pings in a row unanswered loses its binding (offline, not rung).
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from clicktodial.sip.address import Destination
from clicktodial.sip.message import Request, Response
from clicktodial.sip.natping import NatKeepAlive, behind_nat
from clicktodial.sip.registrar import contact_key
from clicktodial.sip.uri import parse_uri
from clicktodial.store.memory import MemoryStore
from clicktodial.store.values import Binding, BindingChanges, ContactChange
from clicktodial.testing.fakes import InlineThreadPool

AOR = "sip:alice@example.com"


def binding(contact: str, received: str | None, **kwargs: Any) -> Binding:
    return Binding(AOR, contact, 1e9, "reg-1", 1, received=received, **kwargs)


@pytest.mark.parametrize(
    ("contact", "received", "expected"),
    [
        # a private Contact, the REGISTER from the NAT: ping the NAT's address and port
        (
            "sip:alice@192.168.1.10:5060",
            "sip:198.51.100.7:40000;transport=udp",
            Destination("UDP", "198.51.100.7", 40000),
        ),
        # the same address, another port: a port-changing NAT
        (
            "sip:alice@198.51.100.7:5060",
            "sip:198.51.100.7:1024;transport=udp",
            Destination("UDP", "198.51.100.7", 1024),
        ),
        # the Contact is where it came from: no NAT
        ("sip:alice@198.51.100.7:5060", "sip:198.51.100.7:5060;transport=udp", None),
        # over TCP or TLS the phone's connection is the flow (CRLF keep-alives): not ours
        ("sip:alice@192.168.1.10", "sip:198.51.100.7:40000;transport=tcp", None),
        # no source recorded
        ("sip:alice@192.168.1.10", None, None),
    ],
)
def test_behind_nat_rules(contact: str, received: str | None, expected: Destination | None) -> None:
    assert behind_nat(binding(contact, received)) == expected


def test_outbound_and_path_bindings_keep_their_own_flows() -> None:
    nat = "sip:198.51.100.7:40000;transport=udp"
    assert behind_nat(binding("sip:a@10.0.0.1", nat, instance_id="<urn:x>", reg_id=1)) is None
    assert behind_nat(binding("sip:a@10.0.0.1", nat, path=("<sip:p;lr>",))) is None


class FakeTransactions:
    def __init__(self) -> None:
        self.sent: list[tuple[Request, Destination, Any]] = []

    def send_request(self, request: Request, destination: Destination, on_response: Any) -> Any:
        self.sent.append((request, destination, on_response))
        return None


def make(failures: int = 3) -> tuple[Clock, MemoryStore, FakeTransactions, NatKeepAlive]:
    clock = Clock()
    store = MemoryStore(clock, realm="example.com", hash_pool=InlineThreadPool())
    for contact, received in [
        ("sip:alice@192.168.1.10:5060", "sip:198.51.100.7:40000;transport=udp"),
        ("sip:alice@198.51.100.8:5060", "sip:198.51.100.8:5060;transport=udp"),
    ]:
        store.update_bindings(
            AOR,
            BindingChanges(
                call_id=f"reg-{contact}",
                cseq=1,
                # keyed as the registrar keys them
                contacts=(ContactChange(contact, 3600, key=contact_key(parse_uri(contact))),),
                received=received,
            ),
            clock.seconds(),
        )
    transactions = FakeTransactions()
    keepalive = NatKeepAlive(
        clock, transactions, store, domain="example.com", interval=20, max_failures=failures
    )
    keepalive.startService()
    return clock, store, transactions, keepalive


def contacts(store: MemoryStore, clock: Clock) -> list[str]:
    found: list[list[Any]] = []
    store.get_bindings(AOR, clock.seconds()).addCallback(found.append)
    return sorted(b.contact for b in found[0])


def test_pings_each_nated_binding_every_interval_at_its_source() -> None:
    clock, store, transactions, keepalive = make()
    clock.advance(19)
    assert transactions.sent == []
    clock.advance(1)
    [(request, destination, on_response)] = transactions.sent
    assert request.method == "OPTIONS" and str(request.uri) == "sip:alice@192.168.1.10:5060"
    assert destination == Destination("UDP", "198.51.100.7", 40000)
    assert request.headers.get("To") == f"<{AOR}>"
    # Not again while that ping is outstanding.
    clock.advance(20)
    assert len(transactions.sent) == 1
    on_response(Response(200))
    clock.advance(20)
    assert len(transactions.sent) == 2
    keepalive.stopService()
    assert clock.getDelayedCalls() == []


def test_any_answer_is_alive_and_unanswered_pings_remove_the_binding() -> None:
    clock, store, transactions, keepalive = make(failures=3)
    for status in (408, 405, 408, 503):  # an error answer from the phone still counts as alive
        clock.advance(20)
        transactions.sent[-1][2](Response(status))
    assert contacts(store, clock) == ["sip:alice@192.168.1.10:5060", "sip:alice@198.51.100.8:5060"]
    clock.advance(20)
    transactions.sent[-1][2](Response(408))
    assert contacts(store, clock) == ["sip:alice@198.51.100.8:5060"]
    assert keepalive.removed == 1 and keepalive.failures == {}
    clock.advance(20)  # nothing left to ping
    assert len(transactions.sent) == 5
    keepalive.stopService()


def test_the_daemon_runs_the_keepalive_only_when_configured() -> None:
    from clicktodial.config import parse_config
    from clicktodial.service import build_service
    from clicktodial.testing.transport import FakeReactor

    base = "[sip]\ndomain = 127.0.0.1\n[store]\nbackend = memory\n"
    for extra, expected in (("", 0), ("[registrar]\nnat_keepalive_interval = 20\n", 1)):
        root = build_service(parse_config(base + extra, "x.ini"), FakeReactor())
        assert sum(isinstance(s, NatKeepAlive) for s in root) == expected
