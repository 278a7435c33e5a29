"""
Dialog state and in-dialog request construction (RFC 3261 §12), and the SDP
helpers and offer/answer bookkeeping (RFC 3264) the dialog layer uses.
"""

from __future__ import annotations

import pytest

from clicktodial.sip.address import Destination
from clicktodial.sip.dialog import (
    Dialog,
    DialogError,
    DialogID,
    DialogState,
    OutOfOrderRequest,
    destination_for_uri,
    request_dialog_id,
    response_dialog_id,
)
from clicktodial.sip.message import Request, Response, make_response
from clicktodial.sip.sdp import (
    OfferAnswer,
    OfferAnswerError,
    OfferCarrier,
    Party,
    SDPParseError,
    SessionDescription,
    is_sdp,
)
from clicktodial.sip.uri import URI, parse_uri

CONTACT = URI("sip", None, "127.0.0.1", 5060)


def invite(
    record_route: tuple[str, ...] = (),
    uri: str = "sip:bob@127.0.0.1:5070",
    via: str = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKinv1",
) -> Request:
    headers = [("Via", via), ("Max-Forwards", "70")]
    headers += [("Record-Route", rr) for rr in record_route]
    headers += [
        ("From", '"Alice" <sip:alice@127.0.0.1>;tag=atag'),
        ("To", "<sip:bob@127.0.0.1>"),
        ("Call-ID", "call-1@127.0.0.1"),
        ("CSeq", "10 INVITE"),
        ("Contact", "<sip:alice@127.0.0.1:5060>"),
        ("Authorization", 'Digest username="alice", realm="x"'),
    ]
    return Request("INVITE", parse_uri(uri), headers)


def answer(
    request: Request,
    status: int = 200,
    contact: str | None = "<sip:bob@127.0.0.1:5070>",
    tag: str = "btag",
    record_route: tuple[str, ...] = (),
) -> Response:
    response = make_response(request, status, to_tag=tag)
    if contact is not None:
        response.headers.add("Contact", contact)
    for rr in record_route:
        response.headers.add("Record-Route", rr)
    return response


RR = ("<sip:p2.example.net;lr>", "<sip:p1.example.net;lr>")


class TestDialogCreation:
    def test_uac_dialog_from_2xx_reverses_record_route_and_takes_contact(self) -> None:
        """§12.1.2: UAC route set = Record-Route reversed; remote target = Contact."""
        request = invite()
        dialog = Dialog.from_uac(request, answer(request, record_route=RR), CONTACT)
        assert dialog.state is DialogState.CONFIRMED
        assert [str(r.uri) for r in dialog.route_set] == [
            "sip:p1.example.net;lr",
            "sip:p2.example.net;lr",
        ]
        assert str(dialog.remote_target) == "sip:bob@127.0.0.1:5070"
        assert dialog.id == DialogID("call-1@127.0.0.1", "atag", "btag")
        assert dialog.local_seq == 10
        assert dialog.remote_seq is None
        assert str(dialog.local_uri) == "sip:alice@127.0.0.1"
        assert str(dialog.remote_uri) == "sip:bob@127.0.0.1"
        assert dialog.is_uac
        assert not dialog.secure

    def test_uac_dialog_from_1xx_with_tag_is_early(self) -> None:
        """§12.1.2: a 101-199 with a To tag creates an early dialog."""
        request = invite()
        dialog = Dialog.from_uac(request, answer(request, 180), CONTACT)
        assert dialog.state is DialogState.EARLY

    def test_early_dialog_without_contact_targets_the_request_uri(self) -> None:
        """A 1xx without Contact keeps the Request-URI as target until a later response."""
        request = invite()
        dialog = Dialog.from_uac(request, answer(request, 180, contact=None), CONTACT)
        assert dialog.remote_target == request.uri

    def test_responses_without_to_tag_or_of_class_100_create_no_dialog(self) -> None:
        """§12.1: only 101-299 responses with a To tag create dialogs."""
        request = invite()
        with pytest.raises(DialogError):
            Dialog.from_uac(request, make_response(request, 180), CONTACT)
        with pytest.raises(DialogError):
            Dialog.from_uac(request, answer(request, 100), CONTACT)
        with pytest.raises(DialogError):
            Dialog.from_uac(request, answer(request, 486), CONTACT)

    def test_uas_dialog_keeps_record_route_order_and_remote_seq(self) -> None:
        """§12.1.1: UAS route set = Record-Route in order; remote seq = request CSeq."""
        dialog = Dialog.from_uas(invite(record_route=RR), "btag", CONTACT)
        assert [str(r.uri) for r in dialog.route_set] == [
            "sip:p2.example.net;lr",
            "sip:p1.example.net;lr",
        ]
        assert dialog.remote_seq == 10
        assert dialog.local_seq is None
        assert dialog.id == DialogID("call-1@127.0.0.1", "btag", "atag")
        assert str(dialog.remote_target) == "sip:alice@127.0.0.1:5060"
        assert not dialog.is_uac

    def test_uas_dialog_needs_a_contact(self) -> None:
        """§12.1.1: the remote target comes from the Contact; without one, no dialog."""
        request = invite()
        request.headers.remove("Contact")
        with pytest.raises(DialogError):
            Dialog.from_uas(request, "btag", CONTACT)

    def test_secure_flag_needs_sips_and_tls(self) -> None:
        """§12.1.1: secure if the request came over TLS with a SIPS Request-URI."""
        tls = "SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKx"
        assert Dialog.from_uas(invite(uri="sips:bob@127.0.0.1", via=tls), "t", CONTACT).secure
        assert not Dialog.from_uas(invite(uri="sip:bob@127.0.0.1", via=tls), "t", CONTACT).secure

    def test_dialog_ids_from_messages(self) -> None:
        """The UAS reads its local tag from To, the UAC from From."""
        request = invite()
        assert request_dialog_id(request) is None
        response = answer(request)
        assert response_dialog_id(response) == DialogID("call-1@127.0.0.1", "atag", "btag")
        request.headers.set("To", "<sip:bob@127.0.0.1>;tag=btag")
        assert request_dialog_id(request) == DialogID("call-1@127.0.0.1", "btag", "atag")


class TestInDialogRequests:
    def uac_dialog(self, record_route: tuple[str, ...] = ()) -> Dialog:
        request = invite()
        return Dialog.from_uac(request, answer(request, record_route=record_route), CONTACT)

    def test_bye_goes_to_remote_target_with_incremented_cseq(self) -> None:
        """§12.2.1.1: no route set: R-URI = remote target; CSeq = local seq + 1."""
        dialog = self.uac_dialog()
        bye = dialog.create_request("BYE")
        assert str(bye.uri) == "sip:bob@127.0.0.1:5070"
        assert bye.cseq.seq == 11 and bye.cseq.method == "BYE"
        assert bye.from_.tag == "atag" and bye.to.tag == "btag"
        assert bye.from_.display_name == "Alice"
        assert bye.call_id == "call-1@127.0.0.1"
        assert "Route" not in bye.headers
        assert "Contact" not in bye.headers
        assert dialog.create_request("INFO").cseq.seq == 12

    def test_loose_route_set_becomes_route_headers(self) -> None:
        """§12.2.1.1: first route has lr: R-URI = remote target, Route = route set."""
        dialog = self.uac_dialog(record_route=RR)
        request = dialog.create_request("INFO")
        assert str(request.uri) == "sip:bob@127.0.0.1:5070"
        assert [str(r.uri) for r in request.routes] == [
            "sip:p1.example.net;lr",
            "sip:p2.example.net;lr",
        ]
        assert dialog.destination() == Destination("UDP", "p1.example.net", 5060)

    def test_strict_router_takes_the_request_uri(self) -> None:
        """§12.2.1.1: first route without lr: it becomes the R-URI, remote target goes last."""
        dialog = self.uac_dialog(record_route=("<sip:p2.example.net;lr>", "<sip:p1.example.net>"))
        request = dialog.create_request("BYE")
        assert str(request.uri) == "sip:p1.example.net"
        assert [str(r.uri) for r in request.routes] == [
            "sip:p2.example.net;lr",
            "sip:bob@127.0.0.1:5070",
        ]
        assert dialog.destination() == Destination("UDP", "p1.example.net", 5060)

    def test_target_refresh_requests_carry_contact(self) -> None:
        """§12.2.1.1/§14.1: a re-INVITE or UPDATE carries our Contact."""
        dialog = self.uac_dialog()
        reinvite = dialog.create_request("INVITE", b"v=0\r\n", "application/sdp")
        assert [str(c.uri) for c in reinvite.contacts] == [str(CONTACT)]
        assert reinvite.headers.get("Content-Type") == "application/sdp"
        assert reinvite.body == b"v=0\r\n"
        assert dialog.create_request("UPDATE").contacts

    def test_ack_reuses_the_invite_cseq_and_authorization(self) -> None:
        """§13.2.2.4: the ACK has the INVITE's CSeq number and its credentials."""
        request = invite()
        dialog = Dialog.from_uac(request, answer(request), CONTACT)
        dialog.create_request("INFO")
        ack = dialog.create_ack(request)
        assert ack.method == "ACK"
        assert ack.cseq.seq == 10 and ack.cseq.method == "ACK"
        assert ack.headers.get("Authorization") == 'Digest username="alice", realm="x"'
        assert dialog.local_seq == 11

    def test_ack_copies_every_authorization_field_in_order_and_nothing_else(self) -> None:
        """§13.2.2.4: Authorization and Proxy-Authorization fields, however spelled, are
        copied in their order, with their canonical names; no other field of the INVITE."""
        request = invite()
        request.headers.add("proxy-authorization", "Digest p1")
        request.headers.add("X-Other", "no")
        request.headers.add("Proxy-Authorization", " Digest p2 ")
        dialog = Dialog.from_uac(request, answer(request), CONTACT)
        copied = [
            (name, value)
            for name, value in dialog.create_ack(request).headers
            if "authorization" in name.lower()
        ]
        assert copied == [
            ("Authorization", 'Digest username="alice", realm="x"'),
            ("Proxy-Authorization", "Digest p1"),
            ("Proxy-Authorization", "Digest p2"),
        ]
        assert "X-Other" not in dialog.create_ack(request).headers
        plain = invite()
        plain.headers.remove("Authorization")
        ack = Dialog.from_uac(plain, answer(plain), CONTACT).create_ack(plain)
        assert "Authorization" not in ack.headers and "Proxy-Authorization" not in ack.headers

    def test_ack_and_cancel_are_not_built_as_new_requests(self) -> None:
        """ACK and CANCEL reuse an earlier CSeq: create_request refuses them."""
        dialog = self.uac_dialog()
        for method in ("ACK", "CANCEL"):
            with pytest.raises(ValueError):
                dialog.create_request(method)

    def test_terminated_dialog_builds_only_bye(self) -> None:
        """A terminated dialog sends nothing new but the BYE that ended it."""
        dialog = self.uac_dialog()
        dialog.terminate()
        assert dialog.create_request("BYE").method == "BYE"
        with pytest.raises(DialogError):
            dialog.create_request("INFO")

    def test_uas_picks_an_initial_local_seq(self) -> None:
        """§12.2.1.1: a UAS with an empty local sequence number picks one."""
        dialog = Dialog.from_uas(invite(), "btag", CONTACT)
        first = dialog.create_request("BYE").cseq.seq
        assert 0 < first < 2**31
        assert dialog.create_request("INFO").cseq.seq == first + 1
        bye = Dialog.from_uas(invite(), "btag", CONTACT).create_request("BYE")
        assert bye.to.tag == "atag" and bye.from_.tag == "btag"
        assert str(bye.uri) == "sip:alice@127.0.0.1:5060"


class TestDialogUpdates:
    def test_lower_cseq_is_out_of_order(self) -> None:
        """§12.2.2: a request with a CSeq lower than the remote seq is rejected."""
        dialog = Dialog.from_uas(invite(), "btag", CONTACT)
        request = invite()
        request.headers.set("CSeq", "9 INFO")
        with pytest.raises(OutOfOrderRequest):
            dialog.receive_request(Request("INFO", request.uri, request.headers))
        request.headers.set("CSeq", "11 INFO")
        dialog.receive_request(Request("INFO", request.uri, request.headers))
        assert dialog.remote_seq == 11

    def test_remote_seq_set_by_first_request_to_uac(self) -> None:
        """§12.2.2: an empty remote sequence number takes the first request's."""
        request = invite()
        dialog = Dialog.from_uac(request, answer(request), CONTACT)
        bye = Request("BYE", request.uri, request.headers.copy())
        bye.headers.set("CSeq", "3 BYE")
        dialog.receive_request(bye)
        assert dialog.remote_seq == 3

    def test_reinvite_refreshes_the_remote_target(self) -> None:
        """§12.2.2: a target-refresh request replaces the remote target."""
        dialog = Dialog.from_uas(invite(), "btag", CONTACT)
        request = Request("INVITE", parse_uri("sip:bob@127.0.0.1"), invite().headers.copy())
        request.headers.set("CSeq", "11 INVITE")
        request.headers.set("Contact", "<sip:alice@127.0.0.9:7000>")
        dialog.receive_request(request)
        assert str(dialog.remote_target) == "sip:alice@127.0.0.9:7000"
        info = Request("INFO", request.uri, request.headers.copy())
        info.headers.set("CSeq", "12 INFO")
        info.headers.set("Contact", "<sip:alice@127.0.0.10>")
        dialog.receive_request(info)
        assert str(dialog.remote_target) == "sip:alice@127.0.0.9:7000"

    def test_2xx_to_reinvite_refreshes_the_remote_target(self) -> None:
        """§12.2.1.2: a 2xx to a target-refresh request replaces the remote target."""
        request = invite()
        dialog = Dialog.from_uac(request, answer(request), CONTACT)
        reinvite = dialog.create_request("INVITE")
        reinvite.headers.prepend("Via", "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK2")
        dialog.receive_response("INVITE", answer(reinvite, contact="<sip:bob@127.0.0.7:6000>"))
        assert str(dialog.remote_target) == "sip:bob@127.0.0.7:6000"
        dialog.receive_response("INFO", answer(reinvite, contact="<sip:bob@127.0.0.8>"))
        assert str(dialog.remote_target) == "sip:bob@127.0.0.7:6000"

    def test_2xx_confirms_early_dialog_and_recomputes_route_set(self) -> None:
        """§13.2.2.4: the 2xx confirms an early dialog; the route set comes from it."""
        request = invite()
        dialog = Dialog.from_uac(request, answer(request, 180, record_route=RR[:1]), CONTACT)
        dialog.confirm(answer(request, 200, contact="<sip:bob@127.0.0.3>", record_route=RR))
        assert dialog.state is DialogState.CONFIRMED
        assert len(dialog.route_set) == 2
        assert str(dialog.remote_target) == "sip:bob@127.0.0.3"


class TestDestination:
    @pytest.mark.parametrize(
        ("uri", "expected"),
        [
            ("sip:bob@127.0.0.1", Destination("UDP", "127.0.0.1", 5060)),
            ("sip:bob@127.0.0.1:5070", Destination("UDP", "127.0.0.1", 5070)),
            ("sip:bob@127.0.0.1;transport=tcp", Destination("TCP", "127.0.0.1", 5060)),
            ("sips:bob@127.0.0.1", Destination("TLS", "127.0.0.1", 5061)),
            ("sip:[::1]:5080", Destination("UDP", "::1", 5080)),
            ("sip:bob@example.net;maddr=127.0.0.5", Destination("UDP", "127.0.0.5", 5060)),
        ],
    )
    def test_destination_from_uri(self, uri: str, expected: Destination) -> None:
        """Host (or maddr), port or the transport's default, transport param or UDP."""
        assert destination_for_uri(parse_uri(uri)) == expected


SDP = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 127.0.0.1\r\ns=-\r\n"
    b"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8\r\n"
    b"a=rtpmap:0 PCMU/8000\r\nm=video 51372 RTP/AVP 31\r\nc=IN IP4 127.0.0.2\r\n"
)


class TestSessionDescription:
    def test_round_trip_is_byte_exact(self) -> None:
        """Lines the module does not interpret survive unchanged."""
        assert SessionDescription.parse(SDP).serialize() == SDP

    def test_reads_origin_connection_media(self) -> None:
        """o=, session c=, and m= lines with their media-level c= are parsed."""
        sdp = SessionDescription.parse(SDP)
        assert sdp.origin.session_version == 2890844526
        assert sdp.origin.address == "127.0.0.1"
        assert sdp.connection is not None and sdp.connection.address == "127.0.0.1"
        (audio, audio_c), (video, video_c) = sdp.media
        assert (audio.media, audio.port, audio.formats) == ("audio", 49170, ("0", "8"))
        assert audio_c is None
        assert video_c is not None and video_c.address == "127.0.0.2"

    def test_bump_version_increments_only_the_version(self) -> None:
        """RFC 3264 §8: a changed description has its o= version incremented by one."""
        bumped = SessionDescription.parse(SDP).with_bumped_version()
        assert bumped.origin.session_version == 2890844527
        assert bumped.serialize() == SDP.replace(b"2890844526 2890844526", b"2890844526 2890844527")

    def test_rewrite_connection_and_media_port(self) -> None:
        """c= lines take a new address; an m= port can be changed (0 = rejected)."""
        sdp = SessionDescription.parse(SDP).with_connection_address("::1")
        assert all(c is None or c.address == "::1" for _, c in sdp.media)
        assert sdp.connection is not None and sdp.connection.addrtype == "IP6"
        assert sdp.with_media_port(1, 0).media[1][0].port == 0
        with pytest.raises(IndexError):
            sdp.with_media_port(2, 0)

    def test_bare_lf_is_accepted(self) -> None:
        """Descriptions with LF line ends parse too (written back with CRLF)."""
        assert SessionDescription.parse(SDP.replace(b"\r\n", b"\n")).serialize() == SDP

    @pytest.mark.parametrize(
        "body",
        [
            b"",
            b"o=x 1 1 IN IP4 127.0.0.1\r\n",
            b"v=0\r\ns=-\r\n",
            b"v=0\r\no=x 1\r\n",
            b"v=0\r\nbad\r\n",
        ],
    )
    def test_malformed_descriptions_raise(self, body: bytes) -> None:
        """Missing v=0, missing or short o=, lines without type= raise SDPParseError."""
        with pytest.raises(SDPParseError):
            SessionDescription.parse(body)

    def test_is_sdp(self) -> None:
        """A body is SDP when it is non-empty and typed application/sdp (any case, params)."""
        assert is_sdp("Application/SDP; charset=x", b"v=0")
        assert not is_sdp("application/sdp", b"")
        assert not is_sdp("text/plain", b"hi")


class TestOfferAnswer:
    def test_offer_then_answer_records_both_descriptions(self) -> None:
        """RFC 3264 §4: an answer completes the exchange; both sides' SDP are kept."""
        oa = OfferAnswer()
        oa.offer(Party.LOCAL, OfferCarrier.INVITE, b"offer")
        assert oa.offer_outstanding
        assert oa.expects_answer_from(Party.REMOTE)
        assert not oa.expects_answer_from(Party.LOCAL)
        oa.answer(Party.REMOTE, b"answer")
        assert not oa.offer_outstanding
        assert (oa.local_sdp, oa.remote_sdp) == (b"offer", b"answer")
        assert oa.completed_exchanges == 1

    def test_second_offer_while_one_is_outstanding_is_refused(self) -> None:
        """RFC 3264 §4: one offer at a time (the core answers 491)."""
        oa = OfferAnswer()
        oa.offer(Party.REMOTE, OfferCarrier.RESPONSE_2XX, b"offer")
        with pytest.raises(OfferAnswerError):
            oa.offer(Party.LOCAL, OfferCarrier.INVITE, b"other")
        with pytest.raises(OfferAnswerError):
            oa.answer(Party.REMOTE, b"own answer")
        oa.answer(Party.LOCAL, b"answer")
        assert (oa.local_sdp, oa.remote_sdp) == (b"answer", b"offer")

    def test_answer_without_offer_and_withdraw(self) -> None:
        """No answer without an offer; a withdrawn offer leaves the last exchange intact."""
        oa = OfferAnswer()
        with pytest.raises(OfferAnswerError):
            oa.answer(Party.LOCAL, b"x")
        oa.offer(Party.LOCAL, OfferCarrier.INVITE, b"1")
        oa.answer(Party.REMOTE, b"2")
        oa.offer(Party.LOCAL, OfferCarrier.INVITE, b"3")
        oa.withdraw()
        assert not oa.offer_outstanding
        assert (oa.local_sdp, oa.remote_sdp) == (b"1", b"2")
