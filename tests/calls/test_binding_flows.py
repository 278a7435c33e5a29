"""
Where requests to a phone registered over TCP/TLS go (docs/sip-transport.md): over the
connection it registered over while it is open; once gone, to the host its REGISTER came
from at its Contact's port (RFC 3261 §18.1.1), never a host the Contact names; an RFC 5626
flow (+sip.instance and reg-id) is never re-opened (§5.3).
"""

from __future__ import annotations

from clicktodial.calls.call import target_for_binding
from clicktodial.netaddr import NetworkSet
from clicktodial.sip.address import NO_RECONNECT, Destination
from clicktodial.sip.dialog import flow_destination
from clicktodial.sip.uri import parse_uri
from clicktodial.store.values import Binding


def test_a_tcp_flow_reconnects_to_the_source_host_at_the_contact_port() -> None:
    destination = flow_destination(
        parse_uri("sip:127.0.0.5:40000;transport=tcp"),
        parse_uri("sip:a@10.9.9.9:5072;transport=tcp"),
        outbound=False,
    )
    assert destination == Destination("TCP", "127.0.0.5", 40000, reconnect_port=5072)


def test_a_contact_without_a_port_reconnects_to_the_default_port() -> None:
    tcp = flow_destination(
        parse_uri("sip:127.0.0.5:40000;transport=tcp"),
        parse_uri("sip:a@10.9.9.9;transport=tcp"),
        outbound=False,
    )
    tls = flow_destination(
        parse_uri("sip:127.0.0.5:40000;transport=tls"), parse_uri("sips:a@10.9.9.9"), outbound=False
    )
    assert (tcp.reconnect_port, tls.reconnect_port) == (5060, 5061)


def test_an_outbound_flow_is_never_reopened() -> None:
    destination = flow_destination(
        parse_uri("sip:127.0.0.5:40000;transport=tcp"),
        parse_uri("sip:a@10.9.9.9:5072;transport=tcp"),
        outbound=True,
    )
    assert destination.reconnect_port == NO_RECONNECT


def test_a_udp_flow_is_the_source_address() -> None:
    destination = flow_destination(
        parse_uri("sip:127.0.0.5:40000;transport=udp"),
        parse_uri("sip:a@10.9.9.9:5072"),
        outbound=False,
    )
    assert destination == Destination("UDP", "127.0.0.5", 40000)


def test_a_binding_over_tcp_targets_its_flow_with_the_contact_port() -> None:
    binding = Binding(
        "sip:a@x",
        "sip:a@127.0.0.5:5072;transport=tcp",
        1.0,
        "c",
        1,
        received="sip:127.0.0.5:40000;transport=tcp",
    )
    target = target_for_binding(binding, NetworkSet())
    assert (
        target.flow
        == target.destination
        == Destination("TCP", "127.0.0.5", 40000, reconnect_port=5072)
    )


def test_an_outbound_binding_over_tcp_targets_its_flow_only() -> None:
    binding = Binding(
        "sip:a@x",
        "sip:a@127.0.0.5:5072;transport=tcp",
        1.0,
        "c",
        1,
        instance_id="<urn:uuid:1>",
        reg_id=1,
        received="sip:127.0.0.5:40000;transport=tcp",
    )
    assert target_for_binding(binding, NetworkSet()).flow == Destination(
        "TCP", "127.0.0.5", 40000, reconnect_port=NO_RECONNECT
    )
