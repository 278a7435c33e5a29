"""
Tests for :obj:`clicktodial.sip.message` and :obj:`clicktodial.sip.headers`: the
header multi-map, requests and responses, the typed accessors and the
structured header values, make_response and the identifier generators.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from clicktodial.sip import wirecache
from clicktodial.sip.headers import (
    CSeq,
    HeaderParseError,
    NameAddr,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_name_addr_list,
    parse_via,
    split_commas,
)
from clicktodial.sip.message import (
    Headers,
    Request,
    Response,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    reason_phrase,
)
from clicktodial.sip.parser import parse_message
from clicktodial.sip.uri import URI, parse_uri


def invite(**extra: str) -> Request:
    fields = [
        ("Via", "SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds"),
        ("Via", "SIP/2.0/TCP proxy.example.com:5061;branch=z9hG4bK77ef4c2312983.1"),
        ("Max-Forwards", "70"),
        ("To", '"Bob" <sip:bob@biloxi.example.com>'),
        ("From", '"Alice" <sip:alice@atlanta.example.com>;tag=1928301774'),
        ("Call-ID", "a84b4c76e66710@pc33.example.com"),
        ("CSeq", "314159 INVITE"),
        ("Contact", "<sip:alice@pc33.example.com>"),
        ("Timestamp", "54"),
    ]
    fields += list(extra.items())
    return Request("INVITE", parse_uri("sip:bob@biloxi.example.com"), fields, b"v=0\r\n")


# --- Headers -------------------------------------------------------------


def test_compact_forms_expand_to_canonical_names() -> None:
    """i, m, f, t, v, l, c, k, s, e, o, r, b, u, x mean their full header names."""
    h = Headers(
        [
            ("i", "1@h"),
            ("m", "<sip:a@h>"),
            ("f", "<sip:a@h>"),
            ("t", "<sip:b@h>"),
            ("v", "SIP/2.0/UDP h"),
            ("l", "0"),
            ("c", "application/sdp"),
            ("k", "timer"),
            ("s", "hi"),
            ("e", "gzip"),
            ("o", "presence"),
            ("r", "<sip:c@h>"),
            ("b", "<sip:d@h>"),
            ("u", "dialog"),
            ("x", "1800"),
        ]
    )
    assert [name for name, _ in h] == [
        "Call-ID",
        "Contact",
        "From",
        "To",
        "Via",
        "Content-Length",
        "Content-Type",
        "Supported",
        "Subject",
        "Content-Encoding",
        "Event",
        "Refer-To",
        "Referred-By",
        "Allow-Events",
        "Session-Expires",
    ]
    assert h.get("call-id") == "1@h" and h.get("I") == "1@h"
    assert h.get("Session-Expires") == "1800"


def test_names_are_case_insensitive_and_spelled_canonically() -> None:
    """cseq, CALL-ID and www-authenticate are written CSeq, Call-ID, WWW-Authenticate."""
    h = Headers([("cseq", "1 INVITE"), ("CALL-ID", "x"), ("www-authenticate", "Digest")])
    assert [name for name, _ in h] == ["CSeq", "Call-ID", "WWW-Authenticate"]
    assert "CSEQ" in h and "Cseq" in h and "Route" not in h


def test_unknown_header_keeps_its_spelling() -> None:
    """An unknown header is written exactly as it was named."""
    h = Headers([("X-fancy-HEADER", "a, b")])
    assert list(h) == [("X-fancy-HEADER", "a, b")]
    assert h.get("x-FANCY-header") == "a, b"


def test_get_all_splits_list_headers_only() -> None:
    """Via/Contact/Allow split on commas outside quotes and <>; Date and unknowns never."""
    h = Headers(
        [
            ("Contact", '"Doe, John" <sip:j@h;x=1,2>, <sip:k@h>'),
            ("Contact", "<sip:l@h>"),
            ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
            ("X-List", "a, b"),
            ("Allow", "INVITE, ACK,BYE"),
        ]
    )
    assert h.get_all("m") == ['"Doe, John" <sip:j@h;x=1,2>', "<sip:k@h>", "<sip:l@h>"]
    assert h.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert h.get_all("X-List") == ["a, b"]
    assert h.get_all("Allow") == ["INVITE", "ACK", "BYE"]
    assert h.get_fields("Contact") == ['"Doe, John" <sip:j@h;x=1,2>, <sip:k@h>', "<sip:l@h>"]
    assert h.get_all("Route") == [] and h.get("Route") is None


def test_add_prepend_set_remove() -> None:
    """add appends, prepend goes before the first of its name, set replaces in place."""
    h = Headers([("Via", "SIP/2.0/UDP a"), ("To", "<sip:b@h>"), ("Via", "SIP/2.0/UDP b")])
    h.prepend("Via", "SIP/2.0/UDP top")
    h.prepend("Route", "<sip:r@h>")
    h.add("X-A", "1")
    assert [n for n, _ in h] == ["Route", "Via", "Via", "To", "Via", "X-A"]
    assert h.get("Via") == "SIP/2.0/UDP top"
    h.set("Via", "SIP/2.0/UDP only")
    assert list(h) == [
        ("Route", "<sip:r@h>"),
        ("Via", "SIP/2.0/UDP only"),
        ("To", "<sip:b@h>"),
        ("X-A", "1"),
    ]
    h.set("Max-Forwards", "70")
    assert list(h)[-1] == ("Max-Forwards", "70")
    h.remove("route")
    assert "Route" not in h and len(h) == 4


def test_remove_first_takes_one_value_of_a_list_field() -> None:
    """remove_first drops the first value, also inside a comma-separated field."""
    h = Headers([("Via", "SIP/2.0/UDP a, SIP/2.0/UDP b"), ("Via", "SIP/2.0/UDP c")])
    h.remove_first("Via")
    assert h.get_all("Via") == ["SIP/2.0/UDP b", "SIP/2.0/UDP c"]
    h.remove_first("Via")
    assert h.get_all("Via") == ["SIP/2.0/UDP c"]
    h.remove_first("Via")
    h.remove_first("Via")
    assert "Via" not in h


def test_header_values_cannot_inject_lines() -> None:
    """A CR or LF in a value is refused: no header injection."""
    h = Headers()
    with pytest.raises(ValueError):
        h.add("Subject", "hi\r\nVia: SIP/2.0/UDP evil")
    with pytest.raises(ValueError):
        h.set("Subject", "hi\nthere")


def test_headers_equality_and_copy() -> None:
    """Equal fields in the same order compare equal; a copy is independent."""
    a = Headers([("To", "<sip:b@h>"), ("From", "<sip:a@h>")])
    b = a.copy()
    assert a == b
    b.add("X", "1")
    assert a != b and "X" not in a
    assert Headers([("From", "<sip:a@h>"), ("To", "<sip:b@h>")]) != a


def test_parsed_values_are_dropped_when_headers_change() -> None:
    """Typed accessors read the current text: a mutation invalidates the cache."""
    req = invite()
    assert req.to.tag is None
    req.headers.set("To", str(req.to.with_tag("abc")))
    assert req.to.tag == "abc"
    req.headers.prepend("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnew;rport")
    assert req.top_via.branch == "z9hG4bKnew" and len(req.vias) == 3


def _accessors(message: Request | Response) -> dict[str, object]:
    """What every typed accessor reads (or the error it raises), as comparable values."""
    got: dict[str, object] = {}
    for name in (
        "vias",
        "from_",
        "to",
        "call_id",
        "cseq",
        "contacts",
        "contact_is_star",
        "max_forwards",
        "expires",
        "content_length",
        "record_routes",
        "routes",
    ):
        try:
            value = getattr(message, name)
        except HeaderParseError as e:
            value = ("error", str(e))
        if isinstance(value, list):
            value = [str(v) for v in value]
        elif isinstance(value, NameAddr | Via | CSeq):
            value = str(value)
        got[name] = value
    return got


_MUTATIONS = [
    lambda h: h.set("To", "<sip:carol@example.com>;tag=9"),
    lambda h: h.add("Contact", "<sip:other@192.0.2.9>;expires=10"),
    lambda h: h.remove("Contact"),
    lambda h: h.prepend("Via", "SIP/2.0/TCP 192.0.2.7;branch=z9hG4bKp"),
    lambda h: h.remove_first("Via"),
    lambda h: h.set("CSeq", "7 INVITE"),
    lambda h: h.add("Expires", "60"),
    lambda h: h.set("Max-Forwards", "x"),
    lambda h: h.replace_top_via(Via("UDP", "192.0.2.3", 5062, {"branch": "z9hG4bKr"})),
    lambda h: h.add("Record-Route", "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"),
    lambda h: h.remove("From"),
]


@pytest.mark.parametrize("mutate", _MUTATIONS)
def test_after_a_change_every_accessor_reads_the_current_text(
    mutate: Callable[[Headers], None],
) -> None:
    """A change to the fields of one name drops what was parsed from them, and only that:
    every accessor of a message read before and after the change reads what a message
    built afresh from the changed fields reads."""
    req = invite()
    _accessors(req)  # (everything parsed and cached first)
    mutate(req.headers)
    fresh = Request("INVITE", req.uri, list(req.headers), req.body)
    assert _accessors(req) == _accessors(fresh)


def test_a_change_keeps_what_was_parsed_of_other_fields() -> None:
    """Stamping the top Via (what the transport does to every request) keeps the CSeq
    and the To parsed before: they are not parsed again."""
    req = invite()
    cseq, to = req.cseq, req.to
    req.headers.replace_top_via(Via("UDP", "192.0.2.3", 5062, {"branch": "z9hG4bKr"}))
    req.headers.add("Expires", "60")
    assert req.cseq is cseq and req.to is to


@pytest.mark.parametrize("to_tag", [None, "xyz", "a.b-c_~9", "needs;quoting", "sp ace", ""])
@pytest.mark.parametrize(
    "to",
    [
        "<sip:bob@biloxi.example.com>",
        "<sip:b@h>;tag=old",
        "<sip:b@h>;tag",
        "sip:b@h ;x=1 ",
        '<sip:b@h>;tag="q"',
    ],
)
@pytest.mark.parametrize("read_first", [True, False])
def test_make_response_reads_as_its_own_text(to_tag: str | None, to: str, read_first: bool) -> None:
    """A response made from a request (whose accessors were read or not) reads, through
    every accessor, what the same response parsed from its own octets reads."""
    req = invite()
    req.headers.set("To", to)
    if read_first:
        _accessors(req)
        req.headers.replace_top_via(
            Via("UDP", "192.0.2.3", 5062, {"branch": "z9hG4bKr", "rport": "5062"})
        )
    for status in (100, 180, 200):
        resp = make_response(req, status, to_tag=to_tag)
        got = _accessors(resp)
        parsed = _accessors(parse_message(resp.serialize(), validate=False))
        # (Content-Length is written by serialize(): the parsed response has one.)
        assert got.pop("content_length") is None and parsed.pop("content_length") == 0
        assert got == parsed
        # Snapshots: changing what one message hands out changes nothing of the other.
        resp.top_via.params["received"] = "x"
        resp.from_.params["x"] = "y"
        assert "received" not in req.top_via.params and "x" not in req.from_.params


# --- Request / Response --------------------------------------------------


def test_request_serializes_with_content_length_from_body() -> None:
    """serialize() writes the request line, the fields, and Content-Length from the body."""
    req = invite()
    req.headers.add("Content-Length", "999")
    data = req.serialize()
    assert data.startswith(b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\nVia: ")
    assert b"\r\nContent-Length: 5\r\n\r\nv=0\r\n" in data
    assert data.count(b"Content-Length") == 1
    assert parse_message(data) == req


def test_several_content_length_fields_are_written_as_one_in_the_first_ones_place() -> None:
    """serialize() writes one Content-Length, from the body, where the first one was; the
    other fields stay in order."""
    req = Request(
        "OPTIONS",
        "sip:a@b",
        [("Content-Length", "5"), ("Call-ID", "x"), ("l", "7"), ("To", "<sip:a@b>")],
        b"abc",
    )
    assert req.serialize() == (
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 3\r\nCall-ID: x\r\nTo: <sip:a@b>\r\n\r\nabc"
    )


def test_request_without_content_length_gets_one() -> None:
    """A message built without Content-Length gets one at the end of its fields."""
    data = invite().serialize()
    assert data.endswith(b"Timestamp: 54\r\nContent-Length: 5\r\n\r\nv=0\r\n")


def test_request_uri_may_be_given_as_text() -> None:
    """Request(method, 'sip:...') parses the URI."""
    assert Request("OPTIONS", "sip:a@example.com").uri == URI("sip", "a", "example.com")


def test_body_must_be_bytes() -> None:
    """A body is bytes, never text."""
    with pytest.raises(TypeError):
        Request("MESSAGE", "sip:a@h", body="text")  # type: ignore[arg-type]


def test_response_reason_defaults_from_status() -> None:
    """Response(486) reads 'Busy Here'; unknown codes get their class phrase."""
    assert Response(486).reason == "Busy Here"
    assert Response(200, "Fine").reason == "Fine"
    assert reason_phrase(499) == "Client Error"
    assert Response(180).serialize().startswith(b"SIP/2.0 180 Ringing\r\n")


@pytest.mark.parametrize("status", [99, 700, 0, 1000])
def test_response_status_must_be_100_to_699(status: int) -> None:
    """Status codes outside 100-699 are refused."""
    with pytest.raises(ValueError):
        Response(status)


def test_make_response_copies_what_rfc3261_8_2_6_says() -> None:
    """Every Via in order, From, To (+tag), Call-ID, CSeq; Timestamp only for 100."""
    req = invite()
    resp = make_response(req, 180, to_tag="xyz")
    assert [n for n, _ in resp.headers] == ["Via", "Via", "To", "From", "Call-ID", "CSeq"]
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert resp.to.tag == "xyz" and resp.to.uri == req.to.uri
    assert resp.from_ == req.from_ and resp.call_id == req.call_id and resp.cseq == req.cseq
    assert resp.status == 180 and resp.reason == "Ringing"
    trying = make_response(req, 100)
    assert trying.headers.get("Timestamp") == "54" and trying.to.tag is None


def test_make_response_tags_every_to_field_of_a_request_with_two() -> None:
    """A request with two To fields (malformed, answered all the same): each copy gets the
    tag when the first has none, and the response's To reads as its first field."""
    req = invite()
    req.headers.add("To", "<sip:other@example.com>")
    resp = make_response(req, 400, to_tag="t1")
    assert resp.headers.get_fields("To") == [
        '"Bob" <sip:bob@biloxi.example.com>;tag=t1',
        "<sip:other@example.com>;tag=t1",
    ]
    assert str(resp.to) == str(parse_message(resp.serialize(), validate=False).to)


def test_make_response_keeps_an_existing_to_tag() -> None:
    """A To that already has a tag keeps it (in-dialog request)."""
    req = invite()
    req.headers.set("To", "<sip:bob@biloxi.example.com>;tag=old")
    assert make_response(req, 200, to_tag="new").to.tag == "old"


def test_identifiers_are_fresh_and_well_formed() -> None:
    """Branches carry the magic cookie; tags and Call-IDs are random tokens."""
    branches = {new_branch() for _ in range(100)}
    assert len(branches) == 100 and all(b.startswith("z9hG4bK") for b in branches)
    tags = {new_tag() for _ in range(100)}
    assert len(tags) == 100 and all(t.isalnum() and len(t) >= 8 for t in tags)
    cid = new_call_id("pc33.example.com")
    assert cid.endswith("@pc33.example.com") and new_call_id("h") != new_call_id("h")
    assert "@" not in new_call_id()


# --- typed accessors and header values -----------------------------------


def test_typed_accessors() -> None:
    """vias, top_via, from_, to, call_id, cseq, contacts, max_forwards, expires, routes."""
    req = invite(
        Expires="3600",
        Route="<sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
        **{"Record-Route": "<sip:rr.example.com;lr>"},
    )
    assert [v.host for v in req.vias] == ["pc33.example.com", "proxy.example.com"]
    assert req.top_via.branch == "z9hG4bK776asdhds"
    assert req.from_.tag == "1928301774" and req.from_.display_name == "Alice"
    assert req.to.uri.user == "bob"
    assert req.call_id == "a84b4c76e66710@pc33.example.com"
    assert req.cseq == CSeq(314159, "INVITE")
    assert [c.uri.user for c in req.contacts] == ["alice"]
    assert not req.contact_is_star
    assert req.max_forwards == 70 and req.expires == 3600
    assert [r.uri.host for r in req.routes] == ["p1.example.com", "p2.example.com"]
    assert req.record_routes[0].uri.has_param("lr")


def test_accessors_of_absent_headers() -> None:
    """No Contact gives []; no Max-Forwards/Expires gives None; no Via raises."""
    req = Request("OPTIONS", "sip:a@h", [("CSeq", "1 OPTIONS")])
    assert req.contacts == [] and req.max_forwards is None and req.expires is None
    assert req.routes == [] and req.vias == []
    with pytest.raises(HeaderParseError):
        req.top_via  # noqa: B018
    with pytest.raises(HeaderParseError):
        req.from_  # noqa: B018
    with pytest.raises(HeaderParseError):
        req.call_id  # noqa: B018
    assert req.record_routes == [] and req.content_length is None
    with pytest.raises(HeaderParseError, match="missing CSeq header"):
        Request("OPTIONS", "sip:a@h").cseq  # noqa: B018


def test_malformed_header_raises_header_parse_error_on_access() -> None:
    """A malformed value raises HeaderParseError (a ValueError) when read."""
    req = invite(Route="<sip:p1.example.com;lr")
    with pytest.raises(HeaderParseError):
        req.routes  # noqa: B018
    req = invite(Expires="soon")
    with pytest.raises(ValueError):
        req.expires  # noqa: B018


def test_contact_star() -> None:
    """Contact: * is recognised (REGISTER removing all bindings) and has no bindings."""
    req = invite()
    req.headers.set("Contact", "*")
    assert req.contact_is_star and req.contacts == []
    req.headers.add("Contact", "<sip:a@h>")
    with pytest.raises(HeaderParseError):
        req.contacts  # noqa: B018


def test_via_parameters() -> None:
    """branch, received, rport (absent/flag/valued), maddr, ttl, sent-by."""
    (via,) = parse_via(
        "SIP/2.0/udp [2001:db8::9:1]:5062;branch=z9hG4bKx;received=2001:db8::9:255"
        ";rport=5063;maddr=224.2.0.1;ttl=16;x-unknown"
    )
    assert via.transport == "UDP"
    assert via.sent_by == ("2001:db8::9:1", 5062)
    assert via.branch == "z9hG4bKx" and via.received == "2001:db8::9:255"
    assert via.rport == 5063 and via.maddr == "224.2.0.1" and via.ttl == 16
    assert via.params["x-unknown"] is None
    assert parse_via("SIP/2.0/TCP h;rport")[0].rport is True
    assert parse_via("SIP/2.0/TCP h")[0].rport is None
    assert parse_via(str(via)) == [via]
    assert str(Via("tls", "::1", 5061, {"branch": "z9hG4bKa", "rport": None})) == (
        "SIP/2.0/TLS [::1]:5061;branch=z9hG4bKa;rport"
    )


def test_via_with_odd_whitespace_and_lists() -> None:
    """LWS around / ; = and comma-separated via-parms are read (RFC 4475 §3.1.1.1)."""
    vias = parse_via(
        "SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8  , "
        "SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239"
    )
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]


@pytest.mark.parametrize(
    "text",
    ["SIP/2.0/UDP 192.0.2.15;;,;,,", "SIP/2.0/UDP", "SIP/3.0/UDP h", "SIP/2.0/UDP h;rport=", "x"],
)
def test_malformed_via(text: str) -> None:
    """Malformed Via values raise HeaderParseError."""
    with pytest.raises(HeaderParseError):
        parse_via(text)


def test_name_addr_forms() -> None:
    """Quoted and token display names, <> and bare addr-spec, header parameters."""
    na = parse_name_addr('"J Rosenberg \\\\\\"" <sip:jdrosen@example.com> ; tag = 98asjd8')
    assert na.display_name == 'J Rosenberg \\"' and na.tag == "98asjd8"
    na = parse_name_addr("Bob Smith <sip:bob@example.com>;tag=1")
    assert na.display_name == "Bob Smith" and na.uri.user == "bob"
    na = parse_name_addr("<sip:bob@example.com;transport=tcp>;expires=60;q=0.5")
    assert na.display_name is None and na.uri.param("transport") == "tcp"
    assert (na.expires, na.q) == (60, 0.5)


def test_addr_spec_parameters_belong_to_the_header() -> None:
    """Without <>, ;params after the URI are header parameters (RFC 3261 §20.10)."""
    na = parse_name_addr("sip:+19725552222@gw1.example.net;unknownparam;tag=x")
    assert str(na.uri) == "sip:+19725552222@gw1.example.net"
    assert na.params == {"unknownparam": None, "tag": "x"}


def test_display_name_needing_quotes_is_written_quoted() -> None:
    """Display names with quotes, backslashes, commas or controls survive a round trip."""
    for name in ['Doe, "JD" \\ John', "Ünïcödé", "BEL:\x07 NUL:\x00", ""]:
        na = NameAddr(parse_uri("sip:a@example.com"), name, {"tag": "t"})
        assert parse_name_addr(str(na)) == na
    with pytest.raises(ValueError):
        str(NameAddr(parse_uri("sip:a@h"), "line\r\nbreak"))


def test_a_name_addr_written_without_its_parameters_is_its_uri_and_display_name() -> None:
    """serialize(False) writes what NameAddr(uri, display_name) writes: no header parameter."""
    for text in ['"A \\"B\\"" <sip:a@h;lr>;tag=1;x', "sip:a@h;tag=2", "<sip:b@h>"]:
        na = parse_name_addr(text)
        assert na.serialize(False) == str(NameAddr(na.uri, na.display_name))
        assert parse_name_addr(na.serialize(False)).params == {}
        assert str(na) == na.serialize() == na.serialize(True)


def test_name_addr_with_tag_and_param_unquoting() -> None:
    """with_tag returns a copy; param() removes quotes of a quoted value."""
    na = parse_name_addr('<sip:a@h>;+sip.instance="<urn:uuid:1234>"')
    assert na.param("+sip.instance") == "<urn:uuid:1234>"
    tagged = na.with_tag("t1")
    assert tagged.tag == "t1" and na.tag is None


@pytest.mark.parametrize(
    "text",
    [
        "Bell, Alexander <sip:a.g.bell@example.com>",
        '"unterminated <sip:a@h>',
        "<sip:a@h",
        "sip:a@h;;x",
        '"Joe" sip:a@h',
        "<sip:a@h>;=x",
        "alan@jasomi.com",
    ],
)
def test_malformed_name_addr(text: str) -> None:
    """Malformed name-addrs raise HeaderParseError."""
    with pytest.raises(HeaderParseError):
        parse_name_addr(text)


def test_name_addr_list() -> None:
    """Contact lists split on commas outside quotes and <>."""
    items = parse_name_addr_list('"A, B" <sip:a@h>;q=1, sip:b@h;expires=0')
    assert [str(i.uri) for i in items] == ["sip:a@h", "sip:b@h"]
    assert items[1].expires == 0


def test_contact_q_and_expires_are_checked() -> None:
    """q outside 0-1 and non-numeric expires raise."""
    with pytest.raises(HeaderParseError):
        parse_name_addr("<sip:a@h>;q=1.5").q  # noqa: B018
    with pytest.raises(HeaderParseError):
        parse_name_addr("<sip:a@h>;expires=-1").expires  # noqa: B018


def test_cseq() -> None:
    """CSeq reads number and method; numbers must be below 2**31 (RFC 3261 §8.1.1.5)."""
    assert parse_cseq("0009 INVITE") == CSeq(9, "INVITE")
    assert parse_cseq(f"{2**31 - 1} ACK").seq == 2**31 - 1
    for bad in [f"{2**31} INVITE", "INVITE", "1", "-1 INVITE", "1 INV ITE"]:
        with pytest.raises(HeaderParseError):
            parse_cseq(bad)
    assert str(CSeq(7, "BYE")) == "7 BYE"


def test_split_commas() -> None:
    """Commas inside quotes (with escaped quotes) and <> do not split."""
    assert split_commas('a, "b,\\" c", <d,e>, f') == ["a", '"b,\\" c"', "<d,e>", "f"]


_PARAM_PIECES = [
    ";",
    "branch",
    "tag",
    "RPort",
    "=",
    "z9hG4bK1",
    "x",
    "",
    " ",
    "\t",
    '"a;b"',
    '"q\\"r"',
    "[2001:db8::1]",
    "1.2.3.4",
    "%41",
    "a=b",
]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(_PARAM_PIECES), max_size=10))
def test_parameters_read_without_the_regex_as_with_it(pieces: list[str]) -> None:
    """Parameters without quotes or whitespace are read by splitting: the same as the regex."""
    from clicktodial.sip import headers

    text = "".join(pieces)
    if headers._PARAMS_RE.fullmatch(text) is None or not text.startswith(";"):
        return
    expected = {name.lower(): value or None for name, value in headers._PARAM_ITEM_RE.findall(text)}
    assert headers._params_of(text) == expected
    assert list(headers._params_of(text)) == list(expected)


_SHAPE_PIECES = [
    "SIP/2.0/UDP h.example.com:5060",
    " SIP/2.0/TCP [2001:db8::1]",
    '"A b" <sip:a@b.c>',
    "<sip:a@b;lr>",
    "sip:a@b",
    "<tel:+1>",
    ";branch=",
    ";tag=",
    ";TAG=",
    "; tag=",
    ";rport",
    ";received=192.0.2.1",
    "=x",
    '="q;tag=z"',
    '"',
    ";",
    "=",
    "<",
    ">",
    "@",
    ":",
    " ",
    "a",
    "tag",
    "branch",
    ",",
]


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(st.sampled_from(_SHAPE_PIECES), max_size=6),
    st.sampled_from([";branch=", ";tag="]),
    st.lists(
        st.text(st.sampled_from("abzAZ09-._~"), min_size=1, max_size=5), min_size=2, max_size=3
    ),
    st.lists(st.lists(st.sampled_from(_SHAPE_PIECES), max_size=5), min_size=1, max_size=3),
)
@example(["SIP/2.0/UDP h.example.com:5060"], ";branch=", ["z9hG4bK1", "z9"], [[";rport"]])
@example(['"A b" <sip:a@b.c>'], ";tag=", ["x", "y"], [[], [";lr"]])
@example(['"A b" <sip:a@b.c>'], ";tag=", ["x", "y"], [[";tag=x"]])
@example(['<sip:a@b>;TAG=x;y="'], ";tag=", ["x", "y"], [[';q"']])
@example(['"a'], ";tag=", ["x", "y"], [[';b" <sip:a@b>']])
@example(["<sip:a@b>;TAG=x"], ";tag=", ["x", "y"], [[]])
def test_parse_by_shape_gives_what_a_fresh_parse_gives(
    before: list[str], split: str, values: list[str], afters: list[list[str]]
) -> None:
    """Vias and name-addrs of one shape (different branch/tag values, and what follows),
    parsed with the memory warm, read exactly as parsed afresh: fields, parameters, order."""
    from clicktodial.sip import headers

    wirecache.reset_all()
    for text in [
        "".join(before) + split + value + "".join(after) for after in afters for value in values
    ]:
        for parse, fresh in [
            (headers.parse_via, headers._parse_via),
            (headers.parse_name_addr, headers._parse_name_addr),
        ]:
            try:
                expected = fresh(text)
            except HeaderParseError:
                with pytest.raises(HeaderParseError):
                    parse(text)
                continue
            got = parse(text)
            if isinstance(got, list):
                assert isinstance(expected, list)
                assert [(v.transport, v.host, v.port, list(v.params.items())) for v in got] == [
                    (v.transport, v.host, v.port, list(v.params.items())) for v in expected
                ], text
            else:
                assert isinstance(got, NameAddr) and isinstance(expected, NameAddr)
                assert (got.uri, got.display_name, list(got.params.items())) == (
                    expected.uri,
                    expected.display_name,
                    list(expected.params.items()),
                ), text


@pytest.mark.parametrize(
    "text",
    [
        "<sip:bob@biloxi.example.com>",
        '"A b" <sip:a@b;lr>;expires=60',
        "sip:a@b;x=1",
        "<sip:a@b>; tag=x",
        "<sip:a@b>;TAG=x",
        '<sip:a@b>;q="a b"',
        "<sip:a@b>;tag=a!b",
    ],
)
def test_a_name_addr_without_a_plain_tag_read_again_is_what_a_fresh_parse_gives(
    text: str,
) -> None:
    """A name-addr with no ";tag=" (a To outside a dialog, a Contact) is remembered by its
    whole text: read again, it is what a fresh parse gives, and a copy."""
    from clicktodial.sip import headers

    wirecache.reset_all()
    expected = headers._parse_name_addr(text)
    first = parse_name_addr(text)
    first.params["x"] = "changed"
    again = parse_name_addr(text)
    assert (again.uri, again.display_name, list(again.params.items())) == (
        expected.uri,
        expected.display_name,
        list(expected.params.items()),
    )


def test_a_text_with_a_line_feed_never_reads_as_a_remembered_shape() -> None:
    """A shape is a text with its tag left out and a LF in its place: a text written that
    way is parsed (and refused), not taken for the shape."""
    parse_name_addr("<sip:a@b>;tag=1;lr")
    with pytest.raises(HeaderParseError):
        parse_name_addr("<sip:a@b>\n;lr")


def test_changing_a_parsed_via_or_name_addr_changes_no_later_parse() -> None:
    """What is remembered by shape is a copy: a caller changing the objects it was given
    (a transport adding received/rport) does not change the next parse of that shape."""
    via = parse_via("SIP/2.0/UDP 10.0.0.9:5070;rport;branch=z9hG4bK-1")[0]
    via.params["rport"] = "5099"
    via.params["received"] = "192.0.2.1"
    again = parse_via("SIP/2.0/UDP 10.0.0.9:5070;rport;branch=z9hG4bK-2")[0]
    assert again.params == {"rport": None, "branch": "z9hG4bK-2"}
    na = parse_name_addr("<sip:a@b>;tag=1")
    na.params["expires"] = "0"
    assert parse_name_addr("<sip:a@b>;tag=2").params == {"tag": "2"}


def test_a_message_built_from_wire_parts_hands_back_its_octets_until_changed() -> None:
    """Request/Response.from_wire (what the parser calls) make messages that read their
    fields, serve the given octets from serialize() until a change, and take the parsed
    values given as the accessors' cache."""
    wire = (
        b"OPTIONS sip:bob@example.com SIP/2.0\r\nCall-ID: x\r\nCSeq: 7 OPTIONS\r\n"
        b"Content-Length: 2\r\n\r\nhi"
    )
    cseq = CSeq(7, "OPTIONS")
    req = Request.from_wire(
        "OPTIONS",
        "sip:bob@example.com",
        ["call-id", "cseq", "content-length"],
        ["Call-ID", "CSeq", "Content-Length"],
        [" x", " 7 OPTIONS", " 2"],
        b"hi",
        wire,
        {"cseq": cseq},
    )
    assert req.serialize() is wire
    assert req.cseq is cseq
    assert (req.method, req.uri_text, req.uri, req.call_id, req.body) == (
        "OPTIONS",
        "sip:bob@example.com",
        parse_uri("sip:bob@example.com"),
        "x",
        b"hi",
    )
    req.headers.add("Subject", "s")
    assert req.serialize() == wire.replace(b"\r\n\r\n", b"\r\nSubject: s\r\n\r\n")
    resp = Response.from_wire(404, "Not Here", ["call-id"], ["Call-ID"], [" y"], b"")
    assert (resp.status, resp.reason, resp.call_id) == (404, "Not Here", "y")
    # Without octets given, it is written anew (with its Content-Length).
    assert resp.serialize() == b"SIP/2.0 404 Not Here\r\nCall-ID: y\r\nContent-Length: 0\r\n\r\n"


def test_uri_text_is_the_request_uri_as_received_until_a_uri_is_assigned() -> None:
    req = parse_message(
        b"OPTIONS sip:%62ob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:b@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(req, Request)
    assert req.uri_text == "sip:%62ob@example.com"
    req.uri = parse_uri("sip:carol@example.com")
    assert req.uri_text == "sip:carol@example.com"


@pytest.mark.parametrize(
    "vias",
    [
        ["SIP/2.0/UDP a;branch=z9hG4bK1"],
        ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/TCP b;branch=z9hG4bK2"],
        ["SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b;branch=z9hG4bK2"],
        ["SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b", "SIP/2.0/UDP c"],
    ],
)
@pytest.mark.parametrize("via_first", [True, False])
def test_replace_top_via_leaves_the_fields_as_remove_first_then_prepend(
    vias: list[str], via_first: bool
) -> None:
    """Headers.replace_top_via writes what remove_first("Via") + prepend("Via", ...) write,
    and the top Via read next is the one put in."""
    others = [("From", "<sip:a@b>;tag=1"), ("Call-ID", "x")]
    fields = [("Via", v) for v in vias]
    fields = fields + others if via_first else others[:1] + fields + others[1:]
    new = Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bK1", "received": "192.0.2.2"})
    expected = Headers(fields)
    expected.remove_first("Via")
    expected.prepend("Via", new.serialize())
    got = Headers(fields)
    got.replace_top_via(new)
    assert list(got) == list(expected)
    message = Request("OPTIONS", "sip:b", got)
    assert message.top_via.serialize() == new.serialize()
    assert [v.serialize() for v in message.vias] == [
        v.serialize() for v in Request("OPTIONS", "sip:b", expected).vias
    ]


@pytest.mark.parametrize(
    "vias",
    [
        [],
        ["SIP/2.0/UDP a;branch=z9hG4bK1"],
        ["SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b;branch=z9hG4bK2", "SIP/2.0/UDP c"],
    ],
)
@pytest.mark.parametrize("via_first", [True, False])
def test_push_via_leaves_the_fields_as_prepend(vias: list[str], via_first: bool) -> None:
    """Headers.push_via writes what prepend("Via", ...) writes, and the Vias read next are
    the one put in, then the others; a Via with CR or LF is refused and changes nothing."""
    others = [("From", "<sip:a@b>;tag=1"), ("Call-ID", "x")]
    fields = [("Via", v) for v in vias]
    fields = fields + others if via_first else others[:1] + fields + others[1:]
    new = Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bKnew", "rport": None})
    expected = Headers(fields)
    expected.prepend("Via", new.serialize())
    got = Headers(fields)
    got.push_via(new)
    assert list(got) == list(expected)
    message = Request("OPTIONS", "sip:b", got)
    assert message.top_via.serialize() == new.serialize()
    assert [v.serialize() for v in message.vias] == [
        v.serialize() for v in Request("OPTIONS", "sip:b", expected).vias
    ]
    with pytest.raises(ValueError):
        got.push_via(Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bK\r\nX: y"}))
    assert list(got) == list(expected)


def test_parsed_headers_put_on_another_parsed_message_are_written_anew() -> None:
    """serialize() hands back the received octets only with the fields parsed from them."""
    one = parse_message(
        b"OPTIONS sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: one\r\n"
        b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    two = parse_message(one.serialize().replace(b"Call-ID: one", b"Call-ID: two"))
    two.headers = one.headers
    assert b"Call-ID: one" in two.serialize()


def test_a_serialized_message_is_written_again_only_once_changed() -> None:
    """serialize() hands back the octets it last wrote while nothing changed (the same
    object), and writes anew after any change: a header field, the start line, the body,
    or other fields put in."""
    request = Request(
        "INVITE",
        "sip:b@example.com",
        [("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("CSeq", "1 INVITE")],
    )
    first = request.serialize()
    assert request.serialize() is first
    request.headers.add("Max-Forwards", "70")
    second = request.serialize()
    assert second == first.replace(b"Content-Length", b"Max-Forwards: 70\r\nContent-Length")
    assert request.serialize() is second
    request.body = b"v=0\r\n"
    assert request.serialize().endswith(b"Content-Length: 5\r\n\r\nv=0\r\n")
    request.uri = parse_uri("sip:c@example.com")
    assert request.serialize().startswith(b"INVITE sip:c@example.com SIP/2.0\r\n")
    request.headers.replace_top_via(Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bK2"}))
    assert b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK2\r\n" in request.serialize()
    other = Request("INVITE", "sip:c@example.com", request.headers, b"v=0\r\n")
    assert other.serialize() == request.serialize()
    assert other.serialize() == request.serialize()
    other.headers.set("CSeq", "2 INVITE")
    assert b"CSeq: 2 INVITE" in request.serialize()
    response = Response(200, headers=[("CSeq", "1 INVITE")])
    written = response.serialize()
    assert response.serialize() is written
    response.status = 486
    assert response.serialize().startswith(b"SIP/2.0 486 ")
