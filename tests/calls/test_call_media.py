"""Where a call's INVITEs go (a binding's target) and what its Reason header says (the
SDP a 3PCC controller relays is tested with the SDP module: tests/sip/test_sdp.py)."""

from __future__ import annotations

import pytest

from clicktodial.calls.call import reason_header, target_for_binding
from clicktodial.netaddr import NetworkSet
from clicktodial.sip.address import Destination
from clicktodial.store.values import Binding


def test_binding_target_drops_uri_headers_and_uses_received_without_path() -> None:
    binding = Binding("sip:a@x", "sip:a@10.0.0.1:5062;transport=udp?Route=%3Csip:x%3E", 1.0,
                      "c", 1, received="sip:127.0.0.5:40000;transport=udp")
    target = target_for_binding(binding, NetworkSet())
    assert str(target.uri) == "sip:a@10.0.0.1:5062;transport=udp"
    assert target.route == ()
    assert target.flow == Destination("UDP", "127.0.0.5", 40000)
    with_path = target_for_binding(Binding("sip:a@x", "sip:a@10.0.0.1", 1.0, "c", 1,
                                           path=("<sip:127.0.0.7;lr>",),
                                           received="sip:127.0.0.5:4;transport=udp"),
                                   NetworkSet.parse("127.0.0.5"))
    # Through a trusted proxy: every request of the dialog goes to the Path's first hop.
    assert with_path.flow == with_path.destination == Destination("UDP", "127.0.0.7", 5060)
    assert str(with_path.route[0].uri) == "sip:127.0.0.7;lr"


def test_binding_target_is_the_registers_source_whatever_the_binding_names() -> None:
    """A Path not registered through a trusted proxy, a Contact's maddr, transport or host:
    none of them is the next hop; the REGISTER's source and transport are."""
    binding = Binding("sip:a@x", "sip:+19005550123@premium.itsp.test;maddr=127.0.0.6"
                      ";transport=tcp", 1.0, "c", 1,
                      path=("<sip:127.0.0.5:5099;lr;transport=tcp>",),
                      received="sip:127.0.0.9:40000;transport=udp")
    for trusted in (NetworkSet(), NetworkSet.parse("127.0.0.5, 127.0.0.6")):
        target = target_for_binding(binding, trusted)
        assert target.route == ()
        assert target.destination == target.flow == Destination("UDP", "127.0.0.9", 40000)
    with pytest.raises(ValueError, match="no source address"):
        target_for_binding(Binding("sip:a@x", "sip:a@127.0.0.6", 1.0, "c", 1), NetworkSet())


def test_reason_header_carries_the_sip_status() -> None:
    assert reason_header(486) == ("Reason", 'SIP ;cause=486 ;text="Busy Here"')
