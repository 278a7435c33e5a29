"""SDP as a 3PCC controller relays it (RFC 3725, RFC 3264 §8)."""

from __future__ import annotations

import pytest

from clicktodial.calls.call import reason_header, target_for_binding
from clicktodial.calls.media import LegOrigin, held_answer, pad_media, truncate_media
from clicktodial.netaddr import NetworkSet
from clicktodial.sip.address import Destination
from clicktodial.sip.sdp import SessionDescription
from clicktodial.store.values import Binding
from clicktodial.testing.uafakes import sdp

TWO_STREAMS = (
    b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    b"m=video 0 RTP/AVP 31\r\n"
)


def test_held_answer_accepts_each_stream_on_hold_with_its_first_format() -> None:
    answer = SessionDescription.parse(held_answer(TWO_STREAMS))
    media = [m for m, _ in answer.media]
    assert [(m.media, m.port, m.formats) for m in media] == [
        ("audio", 9, ("8",)), ("video", 0, ("31",))]
    assert answer.connection.address == "0.0.0.0"  # type: ignore[union-attr]
    assert ("a", "inactive") in answer.lines and ("a", "rtpmap:8 PCMA/8000") in answer.lines
    assert ("a", "rtpmap:0 PCMU/8000") not in answer.lines


def test_leg_keeps_the_first_origin_and_bumps_the_version_only_on_change() -> None:
    leg = LegOrigin()
    first = leg.outgoing(sdp("alice"))
    assert first == sdp("alice")
    same = SessionDescription.parse(leg.outgoing(sdp("bob")))
    assert (same.origin.username, same.origin.session_version) == ("alice", 1)
    changed = SessionDescription.parse(leg.outgoing(sdp("bob", port=5000)))
    assert (changed.origin.username, changed.origin.session_version) == ("alice", 2)


def test_offers_keep_the_sessions_m_lines_and_answers_match_their_offer() -> None:
    previous = [m for m, _ in SessionDescription.parse(TWO_STREAMS).media]
    padded = SessionDescription.parse(pad_media(sdp("bob"), previous))
    assert [(m.media, m.port) for m, _ in padded.media] == [("audio", 40000), ("video", 0)]
    assert len(SessionDescription.parse(truncate_media(TWO_STREAMS, 1)).media) == 1


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
