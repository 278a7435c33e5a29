"""
Tests for :obj:`clicktodial.sip.parser`: datagram and stream framing, limits,
and the classes of fault a request is rejected for (status and reason) or a
response is dropped for.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from clicktodial.sip import wirecache
from clicktodial.sip.message import Message, Request, Response
from clicktodial.sip.parser import (
    MAX_HEADERS,
    MAX_LINE,
    MAX_MESSAGE,
    FramingError,
    MessageParseError,
    StreamParser,
    parse_message,
    validate_message,
)
from clicktodial.sip.uri import parse_uri

FIELDS = [
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport",
    b"Max-Forwards: 70",
    b"From: <sip:alice@example.com>;tag=1",
    b"To: <sip:bob@example.com>",
    b"Call-ID: abc@192.0.2.1",
    b"CSeq: 1 INVITE",
]


def request(
    fields: list[bytes] | None = None,
    body: bytes = b"",
    start: bytes = b"INVITE sip:bob@example.com SIP/2.0",
    content_length: bool = True,
) -> bytes:
    lines = [start, *(FIELDS if fields is None else fields)]
    if content_length:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def response(status_line: bytes = b"SIP/2.0 200 OK", fields: list[bytes] | None = None) -> bytes:
    return request(fields, start=status_line)


def replace(name: bytes, new: bytes | None) -> list[bytes]:
    """FIELDS with the field called *name* replaced by *new* (or removed)."""
    out = []
    for f in FIELDS:
        if f.split(b":")[0] == name:
            if new is not None:
                out.append(new)
        else:
            out.append(f)
    return out


def rejected(data: bytes, **kw: bool) -> MessageParseError:
    with pytest.raises(MessageParseError) as info:
        parse_message(data, **kw)
    return info.value


def test_well_formed_request() -> None:
    """A plain INVITE parses to a Request with its fields and body."""
    m = parse_message(request(body=b"v=0\r\n"))
    assert isinstance(m, Request)
    assert m.method == "INVITE" and str(m.uri) == "sip:bob@example.com"
    assert m.body == b"v=0\r\n" and m.call_id == "abc@192.0.2.1"


def test_well_formed_response() -> None:
    """A plain 200 OK parses to a Response."""
    m = parse_message(response(b"SIP/2.0 200 Very OK"))
    assert isinstance(m, Response) and (m.status, m.reason) == (200, "Very OK")


def test_binary_body_is_kept_as_bytes() -> None:
    """Bodies are bytes, never decoded: NUL, CR, LF and high octets survive."""
    body = bytes(range(256)) * 3
    m = parse_message(request(body=body))
    assert m.body == body
    assert parse_message(m.serialize()).body == body


def test_non_utf8_octets_in_headers_survive() -> None:
    """Header octets that are not UTF-8 come back unchanged when serialized."""
    data = request([*FIELDS, b"X-Raw: \xff\xfe\x80 end"])
    m = parse_message(data)
    assert b"\r\nX-Raw: \xff\xfe\x80 end\r\n" in m.serialize()


def test_folded_headers_and_compact_forms() -> None:
    """Folded lines continue the field (RFC 3261 §7.3.1); compact names expand."""
    data = request(
        [
            b"v: SIP/2.0/UDP 192.0.2.1\r\n ;branch=z9hG4bKabc",
            b"f: <sip:alice@example.com>\r\n\t;tag=1",
            b"t: <sip:bob@example.com>",
            b"i: abc",
            b"CSeq:\r\n 1\r\n INVITE",
        ]
    )
    m = parse_message(data)
    assert m.top_via.branch == "z9hG4bKabc" and m.from_.tag == "1"
    assert m.cseq.seq == 1 and m.call_id == "abc"


def test_crlf_before_start_line_is_ignored() -> None:
    """CRLFs before the start line are skipped (RFC 3261 §7.5)."""
    assert isinstance(parse_message(b"\r\n\r\n" + request()), Request)


def test_datagram_bytes_after_content_length_are_ignored() -> None:
    """UDP: octets past Content-Length are noise (RFC 3261 §18.3)."""
    m = parse_message(request(body=b"abc") + b"garbage")
    assert m.body == b"abc"


def test_datagram_without_content_length_takes_the_rest() -> None:
    """UDP: no Content-Length means the body is the rest of the datagram."""
    m = parse_message(request(body=b"rest of it", content_length=False))
    assert m.body == b"rest of it"


def test_request_shorter_than_content_length_is_400() -> None:
    """A request with fewer body octets than declared gets 400."""
    data = request(body=b"abc").replace(b"Content-Length: 3", b"Content-Length: 10")
    err = rejected(data)
    assert err.status == 400 and "Content-Length" in err.reason


@pytest.mark.parametrize(
    "value", [b"-1", b"five", b"1e3", b"99999999999", b"+3", b"", b"3 3", b"0x10"]
)
def test_bad_content_length_is_400(value: bytes) -> None:
    """Negative, non-numeric or overflowing Content-Length is rejected."""
    data = request(content_length=False, fields=[*FIELDS, b"Content-Length: " + value])
    err = rejected(data)
    assert err.status == 400 and "Content-Length" in err.reason


@pytest.mark.parametrize("name", [b"Via", b"From", b"To", b"Call-ID", b"CSeq"])
def test_missing_mandatory_header_is_400_naming_it(name: bytes) -> None:
    """A request without Via, From, To, Call-ID or CSeq gets 400 saying which."""
    err = rejected(request(replace(name, None)))
    assert err.status == 400 and err.reason == f"Bad Request (Missing {name.decode()} header)"


def test_missing_max_forwards_is_accepted() -> None:
    """Max-Forwards may be absent (RFC 2543 peers)."""
    assert parse_message(request(replace(b"Max-Forwards", None))).max_forwards is None


def test_response_missing_mandatory_header_is_dropped() -> None:
    """A response without Call-ID is dropped (status None)."""
    err = rejected(response(fields=replace(b"Call-ID", None)))
    assert err.status is None and not err.is_request


@pytest.mark.parametrize(
    ("cseq", "ok"),
    [
        (b"2147483647 INVITE", True),
        (b"0 INVITE", True),
        (b"2147483648 INVITE", False),
        (b"4294967296 INVITE", False),
        (b"-1 INVITE", False),
        (b"INVITE", False),
        (b"1", False),
        (b"1 INVITE extra", False),
    ],
)
def test_cseq_number_must_be_below_2_31(cseq: bytes, ok: bool) -> None:
    """CSeq numbers are 0..2**31-1 (RFC 3261 §8.1.1.5); others get 400 Invalid CSeq."""
    data = request(replace(b"CSeq", b"CSeq: " + cseq))
    if ok:
        parse_message(data)
    else:
        assert rejected(data).reason == "Bad Request (Invalid CSeq)"


def test_cseq_method_must_match_known_request_method() -> None:
    """An INVITE whose CSeq says OPTIONS gets 400."""
    err = rejected(request(replace(b"CSeq", b"CSeq: 1 OPTIONS")))
    assert err.status == 400 and "CSeq method" in err.reason


def test_unknown_method_with_mismatched_cseq_is_left_to_the_core() -> None:
    """An unknown method is the core's 501 to give (RFC 4475 §3.1.2.18): the parser accepts it."""
    data = request(start=b"NEWMETHOD sip:bob@example.com SIP/2.0")
    m = parse_message(data)
    assert isinstance(m, Request) and m.method == "NEWMETHOD" and m.cseq.method == "INVITE"


def test_duplicate_single_valued_header_is_400() -> None:
    """Two From fields (or To, Call-ID, CSeq, Content-Length, Max-Forwards) get 400."""
    err = rejected(request([*FIELDS, b"From: <sip:eve@example.com>;tag=2"]))
    assert err.status == 400 and "Multiple From" in err.reason


@pytest.mark.parametrize(
    ("start", "status", "words"),
    [
        (b"INVITE  sip:bob@example.com SIP/2.0", 400, "whitespace"),
        (b"INVITE sip:bob@example.com SIP/2.0 ", 400, "Trailing whitespace"),
        (b" INVITE sip:bob@example.com SIP/2.0", 400, "whitespace"),
        (b"INVITE sip:bob@example.com", 400, "Request-Line"),
        (b"INVITE sip:bob@example.com SIP/3.0", 505, "SIP/3.0"),
        (b"INVITE sip:bob@example.com HTTP/1.1", 400, "Request-Line"),
        (b"INVITE sip:bob@example.com?Route=%3Csip:x%3E SIP/2.0", 400, "Escaped headers"),
        (b"INVITE sips:bob@example.com?Subject=x SIP/2.0", 400, "Escaped headers"),
        (b"INVITE sip:bob@exa%zzmple.com SIP/2.0", 400, "Request-URI"),
        (b"INVITE sip:%zzbob@example.com SIP/2.0", 400, "Request-URI"),
        (b"INVITE bob@example.com SIP/2.0", 400, "Request-URI"),
        # Hosts the URI reader refuses are refused here too, not when .uri is read later.
        (b"INVITE sip:bob@.biloxi.example.com SIP/2.0", 400, "Request-URI"),
        (b"INVITE sip:bob@-biloxi.example.com SIP/2.0", 400, "Request-URI"),
        (b"INVITE sip:bob@biloxi.example- SIP/2.0", 400, "Request-URI"),
        (b"INV<ITE sip:bob@example.com SIP/2.0", 400, "method"),
    ],
)
def test_bad_request_line(start: bytes, status: int, words: str) -> None:
    """Malformed request lines are rejected with a reason naming the fault."""
    err = rejected(request(start=start))
    assert err.status == status and words in err.reason and err.is_request


def test_unknown_uri_scheme_is_accepted_for_the_core() -> None:
    """An unknown Request-URI scheme is the core's 416: the parser exposes the scheme."""
    fields = replace(b"CSeq", b"CSeq: 1 OPTIONS")
    m = parse_message(request(fields, start=b"OPTIONS urn:x-foo:bar SIP/2.0"))
    assert isinstance(m, Request)
    assert m.uri.scheme == "urn" and not m.uri.is_sip


@pytest.mark.parametrize(
    "status_line",
    [
        b"SIP/2.0 4294967301 better not break",
        b"SIP/2.0 99 Too low",
        b"SIP/2.0 700 Too high",
        b"SIP/2.0 2000 Four digits",
        b"SIP/2.0 abc Letters",
        b"SIP/2.0 +20 Sign",
        b"SIP/3.0 200 OK",
    ],
)
def test_bad_status_line_is_dropped(status_line: bytes) -> None:
    """Responses with a bad status code or version are dropped silently (status None)."""
    err = rejected(response(status_line))
    assert err.status is None and not err.is_request


def test_response_with_bad_cseq_is_dropped() -> None:
    """RFC 4475 §3.1.2.5 class: an overlarge scalar in a response means drop."""
    err = rejected(response(fields=replace(b"CSeq", b"CSeq: 9292394834772304023312 OPTIONS")))
    assert err.status is None


@pytest.mark.parametrize(
    ("field", "words"),
    [
        (b"Via: SIP/2.0/UDP 192.0.2.15;;,;,,", "Via"),
        (b"Via: SIP/2.0/UDP", "Via"),
        (b"Via: SIP/2.0/UDP .example.com;branch=z9hG4bKabc", "Via"),
        (b"To: <sip:bob@-example.com>", "To"),
        (b"From: Bell, Alexander <sip:a.g.bell@example.com>;tag=43", "From"),
        (b"To: Watson, Thomas <sip:t.watson@example.org>", "To"),
        (b"To: alan@jasomi.com", "To"),
        (b'Contact: "Joe" <sip:joe@example.org>;;;;', "Contact"),
        (b"Max-Forwards: ten", "Max-Forwards"),
        (b"Call-ID: two words", "Call-ID"),
        (b"Bad Name: x", "header"),
        (b"no colon at all", "header line"),
    ],
)
def test_malformed_header_is_400(field: bytes, words: str) -> None:
    """Malformed Via/From/To/Contact/Max-Forwards/Call-ID or header lines get 400."""
    name = field.split(b":")[0]
    fields = [f for f in FIELDS if f.split(b":")[0] != name] + [field]
    err = rejected(request(fields))
    assert err.status == 400 and words in err.reason


def test_date_with_non_gmt_zone_is_accepted() -> None:
    """We never use Date, so a non-GMT zone is not worth a 400 (RFC 4475 §3.1.2.12)."""
    m = parse_message(request([*FIELDS, b"Date: Fri, 01 Jan 2010 16:00:00 EST"]))
    assert m.headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"


def test_bare_lf_in_header_block_is_400() -> None:
    """Line ends are CRLF: a bare LF inside the header block gets 400."""
    data = request([*FIELDS[:2], FIELDS[2] + b"\nX-Injected: 1", *FIELDS[3:]])
    err = rejected(data)
    assert err.status == 400


def test_partial_headers_of_a_rejected_request() -> None:
    """The error carries Via/From/To/Call-ID/CSeq (only those) for a stateless 400."""
    err = rejected(request([*FIELDS, b"Contact: <sip:x"]))
    assert err.partial_headers is not None
    assert [n for n, _ in err.partial_headers] == ["Via", "From", "To", "Call-ID", "CSeq"]


def test_unterminated_header_block() -> None:
    """A datagram that stops inside a header line is rejected."""
    err = rejected(request()[:60])
    assert err.status == 400


# --- limits ---------------------------------------------------------------


def test_message_over_64_kib_is_513() -> None:
    """Messages over 64 KiB get 513 Message Too Large (RFC 3261 §21.5.13)."""
    big = request(body=b"x" * MAX_MESSAGE)
    err = rejected(big)
    assert err.status == 513 and err.reason.startswith("Message Too Large")
    assert err.partial_headers is not None and err.partial_headers.get("CSeq") == "1 INVITE"
    with pytest.raises(FramingError):
        StreamParser().feed(big)


def test_message_of_exactly_64_kib_is_accepted() -> None:
    """The limit is inclusive: a message of 65536 octets parses."""
    body_len = MAX_MESSAGE - len(request(body=b"")) - 4  # Content-Length: 0 -> 5 digits
    data = request(body=b"x" * body_len)
    assert len(data) == MAX_MESSAGE
    assert len(parse_message(data).body) == body_len


def test_header_line_over_8_kib_is_400() -> None:
    """A header line longer than 8 KiB gets 400."""
    err = rejected(request([*FIELDS, b"X-Long: " + b"a" * MAX_LINE]))
    assert err.status == 400 and "too long" in err.reason


def test_more_than_256_headers_is_400() -> None:
    """More than 256 header fields get 400."""
    extra = [b"X-%d: 1" % i for i in range(MAX_HEADERS)]
    err = rejected(request([*FIELDS, *extra]))
    assert err.status == 400 and "Too many header fields" in err.reason
    fields = [*FIELDS, *extra[: MAX_HEADERS - len(FIELDS) - 1]]  # + Content-Length = 256
    assert len(parse_message(request(fields)).headers) == MAX_HEADERS


# --- streams --------------------------------------------------------------


def three_messages() -> tuple[bytes, list[Request | Response]]:
    msgs = [
        request(body=b"v=0\r\nbinary\x00\xff\r\n\r\n"),
        response(b"SIP/2.0 180 Ringing"),
        request(start=b"BYE sip:bob@example.com SIP/2.0", fields=replace(b"CSeq", b"CSeq: 2 BYE")),
    ]
    return b"".join(msgs), [parse_message(m) for m in msgs]


def test_stream_yields_back_to_back_messages() -> None:
    """Several messages in one chunk come out in order."""
    data, expected = three_messages()
    parser = StreamParser()
    assert parser.feed(data) == expected and parser.buffered == 0


def test_stream_fed_one_octet_at_a_time() -> None:
    """Feeding one octet at a time yields the same messages, each exactly once."""
    data, expected = three_messages()
    parser = StreamParser()
    got: list[Request | Response] = []
    for i in range(len(data)):
        got.extend(parser.feed(data[i : i + 1]))
    assert got == expected and parser.buffered == 0


def test_stream_skips_keepalive_crlfs() -> None:
    """CRLF keep-alives between messages are ignored (RFC 5626 §4.4.1)."""
    data, expected = three_messages()
    parser = StreamParser()
    assert parser.feed(b"\r\n\r\n" + data + b"\r\n") == expected
    assert parser.feed(b"\r\n\r\n") == [] and parser.buffered == 0


def test_stream_waits_for_the_body() -> None:
    """A message is returned only once its whole body has arrived."""
    data = request(body=b"0123456789")
    parser = StreamParser()
    assert parser.feed(data[:-1]) == []
    assert parser.buffered == len(data) - 1
    (m,) = parser.feed(data[-1:])
    assert m.body == b"0123456789"


@pytest.mark.parametrize(
    "data",
    [
        request(content_length=False),
        request(content_length=False, fields=[*FIELDS, b"Content-Length: -1"]),
        request(content_length=False, fields=[*FIELDS, b"Content-Length: 1", b"l: 2"]),
    ],
)
def test_stream_framing_errors(data: bytes) -> None:
    """Missing, bad or conflicting Content-Length on a stream loses framing: FramingError."""
    with pytest.raises(FramingError) as info:
        StreamParser().feed(data)
    assert info.value.status == 400


def test_stream_header_block_over_limit_is_framing_error() -> None:
    """A header block that never ends within the limit is a FramingError."""
    parser = StreamParser()
    with pytest.raises(FramingError):
        parser.feed(b"INVITE sip:a@h SIP/2.0\r\nX: " + b"a" * MAX_MESSAGE)


def test_stream_malformed_message_does_not_lose_its_neighbours() -> None:
    """A malformed but framed message raises after the ones before it; feed(b'') goes on."""
    good, expected = three_messages()
    bad = request(replace(b"CSeq", b"CSeq: x INVITE"))
    parser = StreamParser()
    assert parser.feed(good[:10]) == []
    assert parser.feed(good[10:] + bad + good) == expected
    with pytest.raises(MessageParseError) as info:
        parser.feed(b"")
    assert not isinstance(info.value, FramingError)
    assert info.value.status == 400
    assert parser.feed(b"") == expected
    assert parser.buffered == 0


def test_stream_framing_error_carries_partial_headers() -> None:
    """A FramingError still lets the transport answer 400 before closing."""
    with pytest.raises(FramingError) as info:
        StreamParser().feed(request(content_length=False))
    headers = info.value.partial_headers
    assert headers is not None and headers.get("Call-ID") == "abc@192.0.2.1"


def test_reason_phrase_escapes_survive_a_round_trip() -> None:
    """Reason-Phrase %-escapes are undone once when read and redone when written."""
    m = parse_message(response(b"SIP/2.0 200 100%25 fine %41"))
    assert isinstance(m, Response) and m.reason == "100% fine A"
    assert parse_message(m.serialize()) == m


def test_error_names_the_request_method() -> None:
    """The error says which method was rejected, so that a bad ACK goes unanswered."""
    data = request(replace(b"CSeq", b"CSeq: x ACK"), start=b"ACK sip:bob@example.com SIP/2.0")
    assert rejected(data).method == "ACK"
    assert rejected(request(start=b"INVITE  sip:bob@example.com SIP/2.0")).method == "INVITE"
    assert rejected(response(b"SIP/2.0 99 No")).method is None


# --- serialize() of a parsed message, and framing-only parsing -------------


def test_untouched_parsed_message_serializes_to_the_octets_received() -> None:
    """A parsed message written as serialize() would write it is handed back as received."""
    data = request(body=b"v=0\r\n")
    assert parse_message(data).serialize() is data


@pytest.mark.parametrize(
    "data",
    [
        request(fields=[f.replace(b"Via:", b"v:") for f in FIELDS]),  # compact name
        request(fields=[f.replace(b"CSeq:", b"cseq:") for f in FIELDS]),  # spelling
        request(content_length=False),  # serialize() adds Content-Length
        request() + b"garbage after the body",  # ignored octets (RFC 3261 §18.3)
        request(fields=[*FIELDS, b"Content-Length:  0"], content_length=False),  # two spaces
        request(start=b"INVITE sip:bob@example.com sip/2.0"),  # version spelling
        b"\r\n" + request(),  # CRLF before the start line
        request(fields=[b"Subject: folded", b" line", *FIELDS]),
        b"SIP/2.0 200\r\n" + request()[request().index(b"\r\n") + 2 :],  # no reason
        b"SIP/2.0 200 100%41\r\n" + request()[request().index(b"\r\n") + 2 :],  # escape
    ],
)
def test_parsed_message_written_differently_is_serialized_anew(data: bytes) -> None:
    """When serialize() would not write the received octets, it writes its own form."""
    m = parse_message(data)
    again = parse_message(data)
    again.headers = again.headers.copy()  # other fields: serialize() writes anew
    assert m.serialize() != data
    assert m.serialize() == again.serialize()


def _change_header_add(m: Request | Response) -> None:
    m.headers.add("Subject", "new")


def _change_header_set(m: Request | Response) -> None:
    m.headers.set("Max-Forwards", "69")


def _change_header_remove(m: Request | Response) -> None:
    m.headers.remove("Max-Forwards")


def _change_header_remove_first(m: Request | Response) -> None:
    m.headers.remove_first("Via")


def _change_header_prepend(m: Request | Response) -> None:
    m.headers.prepend("Via", "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKx")


def _change_headers(m: Request | Response) -> None:
    m.headers = m.headers.copy()
    m.headers.add("Subject", "new")


def _change_body(m: Request | Response) -> None:
    m.body = b"new body"


def _change_method(m: Request | Response) -> None:
    assert isinstance(m, Request)
    m.method = "OPTIONS"


def _change_uri(m: Request | Response) -> None:
    assert isinstance(m, Request)
    m.uri = parse_uri("sip:carol@example.com")


@pytest.mark.parametrize(
    "change",
    [
        _change_header_add,
        _change_header_set,
        _change_header_remove,
        _change_header_remove_first,
        _change_header_prepend,
        _change_headers,
        _change_body,
        _change_method,
        _change_uri,
    ],
)
def test_any_change_to_a_parsed_request_is_serialized(change: Callable[[Message], None]) -> None:
    """After any assignment or header mutation, serialize() writes the changed message."""
    data = request(fields=[b"Via: SIP/2.0/UDP 192.0.2.8;branch=z9hG4bKa, SIP/2.0/UDP h", *FIELDS])
    m = parse_message(data)
    assert m.serialize() is data
    change(m)
    assert isinstance(m, Request)
    expected = Request(m.method, m.uri, m.headers.copy(), m.body).serialize()
    assert m.serialize() == expected != data


@pytest.mark.parametrize(
    "change", [lambda m: setattr(m, "status", 180), lambda m: setattr(m, "reason", "Fine")]
)
def test_any_change_to_a_parsed_response_is_serialized(change: Callable[[Message], None]) -> None:
    """Assigning the status or the reason of a parsed response is serialized."""
    data = b"SIP/2.0 200 OK\r\n" + request()[request().index(b"\r\n") + 2 :]
    m = parse_message(data)
    assert m.serialize() is data
    change(m)
    assert isinstance(m, Response)
    expected = Response(m.status, m.reason, m.headers.copy(), m.body).serialize()
    assert m.serialize() == expected != data


def test_framing_only_parse_leaves_header_contents_unchecked() -> None:
    """validate=False accepts bad header contents; validate_message rejects them as parse does."""
    data = request(fields=[f.replace(b"<sip:alice@example.com>", b"<alice>") for f in FIELDS])
    with pytest.raises(MessageParseError) as whole:
        parse_message(data)
    m = parse_message(data, validate=False)
    assert m.headers.get("From") == "<alice>;tag=1"
    with pytest.raises(MessageParseError) as split:
        validate_message(m)
    assert (split.value.status, split.value.reason) == (400, "Bad Request (Invalid From header)")
    assert (whole.value.status, whole.value.reason) == (split.value.status, split.value.reason)
    assert split.value.partial_headers is not None and split.value.partial_headers.get("Via")


def test_framing_only_parse_still_checks_the_framing() -> None:
    """validate=False still rejects a body shorter than Content-Length."""
    with pytest.raises(MessageParseError, match="Content-Length larger than message"):
        parse_message(
            request(fields=[*FIELDS, b"Content-Length: 10"], content_length=False), validate=False
        )


def test_framing_fault_is_reported_after_header_faults() -> None:
    """A request with a bad From and a short body is rejected for the From (the order kept)."""
    fields = [f.replace(b"<sip:alice@example.com>", b"<alice>") for f in FIELDS]
    data = request(fields=[*fields, b"Content-Length: 10"], content_length=False)
    with pytest.raises(MessageParseError, match="Invalid From header"):
        parse_message(data)
    with pytest.raises(MessageParseError, match="Content-Length larger than message"):
        parse_message(data, validate=False)


# --- the checks' memory of well-formed texts changes no verdict -------------

_PIECES = [
    "SIP/2.0/UDP h.example.com:5060",
    " SIP/2.0/TCP [2001:db8::1]",
    '"A b" <sip:a@b.c>',
    "<sip:a@b;tag=1>",
    "sip:a@b",
    "<tel:+1>",
    ";branch=",
    ";tag=",
    ";rport",
    ";expires=",
    "=z9hG4bK1",
    "=x",
    '="q,;"',
    ",",
    " ",
    "\t",
    ";",
    "=",
    "<",
    ">",
    '"',
    "@",
    ":",
    "a",
    "%41",
    "\\",
    "*",
    "-x.",
    "~_",
    ";branch=a-1.b;rport",
    ";tag=7~z",
]


@settings(max_examples=600, deadline=None)
@given(
    st.lists(st.sampled_from(_PIECES), max_size=8), st.lists(st.sampled_from(_PIECES), max_size=8)
)
@example([" *"], [";expires=", "a"])
@example(["SIP/2.0/UDP h.example.com:5060"], [";branch=", "a", ",", " SIP/2.0/TCP [2001:db8::1]"])
def test_memory_of_well_formed_texts_gives_the_grammar_verdict(a: list[str], b: list[str]) -> None:
    """A Via, name-addr or Contact is accepted exactly when its grammar matches it, whatever
    texts were checked before."""
    from clicktodial.sip import parser

    texts = ("".join(a), "".join(b), "".join(a + b), "".join(b + a), "".join(a))
    wirecache.reset_all()
    for regex, memory, split in [
        (parser._VIA_RE, parser._VIAS_KNOWN, ";branch="),
        (parser._NAME_ADDR_RE, parser._NAME_ADDRS_KNOWN, ";tag="),
    ]:
        for text in texts:
            verdict = parser._well_formed(text, regex, memory, split)
            assert verdict == (regex.fullmatch(text) is not None), (text, memory.entries)
    for text in texts:
        verdict = parser._contact_well_formed(text)
        assert verdict == (parser._CONTACT_RE.fullmatch(text) is not None), text


_PARAM_VALUES = st.text(st.sampled_from("abzAZ09-._~"), min_size=1, max_size=6) | st.text(
    st.sampled_from('a-",;@<>= :'), min_size=1, max_size=4
)


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(st.sampled_from(_PIECES), max_size=6),
    st.sampled_from([";branch=", ";tag=", ";expires="]),
    st.lists(_PARAM_VALUES, min_size=1, max_size=3),
    st.lists(st.lists(st.sampled_from(_PIECES), max_size=5), min_size=1, max_size=3),
)
@example(["SIP/2.0/UDP h.example.com:5060"], ";branch=", ["z9hG4bK1", "9"], [[";rport"]])
@example(['"A b" <sip:a@b.c>'], ";tag=", ["x", "-"], [[]])
@example(["<sip:a"], ";tag=", ["x", "y"], [[";q@b>"], [";q"]])
@example(["<sip:a@b>"], ";tag=", ["x", "y"], [[";q"], [";q", "<"]])
@example(["<sip:a@b>"], ";tag=", ["x", "<"], [[]])
@example(["SIP/2.0/UDP h"], ";branch=", ["x", '"'], [[";rport"]])
def test_memory_of_a_shape_gives_the_grammar_verdict_for_every_value(
    before: list[str], split: str, values: list[str], afters: list[list[str]]
) -> None:
    """Texts that differ in the value after ``;branch=``/``;tag=`` and in what follows it
    get the verdict of their own match, with the memory warmed by the others."""
    from clicktodial.sip import parser

    wirecache.reset_all()
    for regex, memory in [
        (parser._VIA_RE, parser._VIAS_KNOWN),
        (parser._NAME_ADDR_RE, parser._NAME_ADDRS_KNOWN),
        (parser._NAME_ADDR_LIST_RE, parser._CONTACTS_KNOWN),
    ]:
        for after in afters:
            for value in values:
                text = "".join(before) + split + value + "".join(after)
                verdict = parser._well_formed(text, regex, memory, split)
                assert verdict == (regex.fullmatch(text) is not None), (text, memory.entries)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=12))
def test_possessive_parameter_lists_accept_what_the_plain_grammar_accepts(
    pieces: list[str],
) -> None:
    """The parameter lists written possessive (for speed) match what the plain repeat matches."""
    from clicktodial.sip import parser

    text = "".join(pieces)
    for regex in (parser._VIA_RE, parser._NAME_ADDR_RE, parser._CONTACT_RE, parser._PARAMS_RE):
        assert ")*+" in regex.pattern
        plain = re.compile(regex.pattern.replace(")*+", ")*"))
        assert (regex.fullmatch(text) is None) == (plain.fullmatch(text) is None), text


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from([" ", "\t", "1", "0", "12345678901", "INVITE", "ACK", "FOO", "x-y", "é"]),
        max_size=6,
    )
)
@example(["", " ", "1", " ", "INVITE"])
@example([" ", "12345678901", " ", "INVITE"])
def test_cseq_reading_gives_what_the_cseq_grammar_gives(pieces: list[str]) -> None:
    """The CSeq fast path reads exactly what the CSeq regex accepts, the same number and method."""
    from clicktodial.sip import parser

    text = "".join(pieces)
    m = parser._CSEQ_RE.fullmatch(text)
    expected = None if m is None else (int(m.group(1)), m.group(2))
    assert parser._cseq_parts(text) == expected
