"""
Property tests: parse(serialize(m)) == m for generated requests and responses
(URIs with escapes and IPv6 hosts, Via lists, name-addrs whose display names
need quoting, parameters, unknown headers, binary bodies), and a stream fed
in arbitrary pieces yields the messages a datagram parser gives.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clicktodial.sip.headers import (
    CSeq,
    HeaderParseError,
    NameAddr,
    Via,
    parse_name_addr,
    parse_via,
)
from clicktodial.sip.message import Request, Response
from clicktodial.sip.parser import MessageParseError, StreamParser, parse_message
from clicktodial.sip.uri import URI, parse_uri

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
hostnames = st.lists(labels, min_size=1, max_size=4).map(".".join)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: str(ipaddress.IPv6Address(a)))
hosts = st.one_of(hostnames, ipv4, ipv6)
ports = st.none() | st.integers(1, 65535)
# Any text at all (surrogate-escaped raw octets included) in the parts that
# get %-escaped when written: they must come back unchanged.
free_text = st.text(
    st.characters(blacklist_categories=["Cs"]) | st.sampled_from("\udc80\udcff"),
    min_size=1,
    max_size=12,
)
param_values = st.none() | free_text
uri_params = st.dictionaries(tokens.map(str.lower), param_values, max_size=3)


@st.composite
def sip_uris(draw: st.DrawFn, with_headers: bool = False) -> URI:
    user = draw(st.none() | free_text)
    return URI(
        draw(st.sampled_from(["sip", "sips"])),
        user,
        draw(hosts),
        draw(ports),
        draw(uri_params),
        draw(st.lists(st.tuples(free_text, free_text), max_size=2)) if with_headers else None,
        None if user is None else draw(st.none() | free_text),
    )


tel_uris = st.builds(
    lambda number, params: URI("tel", number, "", None, params),
    st.text("0123456789-.()", min_size=1, max_size=12).map(lambda s: "+" + s),
    st.dictionaries(tokens.map(str.lower), st.none() | tokens, max_size=2),
)
other_uris = st.builds(
    lambda scheme, rest: parse_uri(f"{scheme}:{rest}"),
    st.sampled_from(["urn", "http", "isbn", "soap.beep", "x-my-scheme"]),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789/:.-_~", min_size=1, max_size=20),
)
any_uris = st.one_of(sip_uris(with_headers=True), tel_uris, other_uris)

# Header parameter values: tokens, hosts, or quoted-strings (kept with quotes).
quoted = st.text(
    st.characters(blacklist_categories=["Cs", "Cc"]) | st.sampled_from('"\\\t'), max_size=10
).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
header_params = st.dictionaries(
    tokens.map(str.lower), st.none() | tokens | ipv6 | quoted, max_size=3
)
display_names = st.none() | st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=15
)


@st.composite
def name_addrs(draw: st.DrawFn) -> NameAddr:
    return NameAddr(draw(any_uris), draw(display_names), draw(header_params))


@st.composite
def vias(draw: st.DrawFn) -> Via:
    params = draw(header_params)
    params["branch"] = "z9hG4bK" + draw(tokens)
    if draw(st.booleans()):
        params["rport"] = draw(st.none() | st.integers(1, 65535).map(str))
    if draw(st.booleans()):
        params["received"] = draw(st.one_of(ipv4, ipv6))
    return Via(draw(st.sampled_from(["UDP", "TCP", "TLS", "WS"])), draw(hosts), draw(ports), params)


METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "NOTIFY", "X-" + "ZZ"]
unknown_names = tokens.filter(lambda t: t.lower() not in ("l", "i", "v", "f", "t", "m", "s", "c"))
unknown_values = st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"])
    | st.sampled_from("\udc80\udcfe"),
    max_size=30,
).map(lambda s: s.strip(" \t"))
bodies = st.binary(max_size=300)


@st.composite
def message_parts(draw: st.DrawFn) -> tuple[list[tuple[str, str]], bytes, str]:
    method = draw(st.sampled_from(METHODS))
    via_list = draw(st.lists(vias(), min_size=1, max_size=3))
    fields: list[tuple[str, str]] = [("Via", str(v)) for v in via_list]
    fields.append(("From", str(draw(name_addrs()).with_tag(draw(tokens)))))
    fields.append(("To", str(draw(name_addrs()))))
    fields.append(("Call-ID", draw(tokens) + "@" + draw(hostnames)))
    fields.append(("CSeq", str(CSeq(draw(st.integers(0, 2**31 - 1)), method))))
    if draw(st.booleans()):
        fields.append(("Max-Forwards", str(draw(st.integers(0, 255)))))
    contacts = draw(st.lists(name_addrs(), max_size=2))
    if contacts:
        fields.append(("Contact", ", ".join(str(c) for c in contacts)))
    unknown = st.tuples(unknown_names.map(lambda n: "X-" + n), unknown_values)
    fields.extend(draw(st.lists(unknown, max_size=3)))
    order = draw(st.permutations(range(len(fields))))
    return [fields[i] for i in order], draw(bodies), method


@st.composite
def requests(draw: st.DrawFn) -> Request:
    fields, body, method = draw(message_parts())
    return Request(method, draw(any_uris).without_headers(), fields, body)


reasons = st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs", "Cc"]), max_size=20
)


@st.composite
def responses(draw: st.DrawFn) -> Response:
    fields, body, _ = draw(message_parts())
    return Response(draw(st.integers(100, 699)), draw(st.none() | reasons), fields, body)


messages = st.one_of(requests(), responses())


@SETTINGS
@given(sip_uris(with_headers=True))
def test_sip_uri_round_trips(uri: URI) -> None:
    """parse_uri(str(uri)) == uri, whatever characters the parts hold."""
    assert parse_uri(str(uri)) == uri


@SETTINGS
@given(any_uris)
def test_any_uri_round_trips(uri: URI) -> None:
    """SIP, tel and opaque URIs read back as they were written."""
    again = parse_uri(str(uri))
    assert again == uri and str(again) == str(uri)


@SETTINGS
@given(name_addrs())
def test_name_addr_round_trips(na: NameAddr) -> None:
    """Display names needing quotes, URIs and parameters survive str() and parsing."""
    assert parse_name_addr(str(na)) == na


@SETTINGS
@given(vias())
def test_via_round_trips(via: Via) -> None:
    """A Via with any parameters, IPv6 hosts included, survives str() and parsing."""
    assert parse_via(str(via)) == [via]


@SETTINGS
@given(messages)
def test_message_round_trips(m: Request | Response) -> None:
    """parse(serialize(m)) == m, and the typed values read back the same."""
    data = m.serialize()
    again = parse_message(data)
    assert again == m
    assert again.serialize() == data
    assert again.vias == m.vias and again.from_ == m.from_ and again.to == m.to
    assert again.contacts == m.contacts and again.cseq == m.cseq
    assert again.body == m.body


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=4), st.data())
def test_stream_in_any_pieces_yields_the_same_messages(
    msgs: list[Request | Response], data: st.DataObject
) -> None:
    """Back-to-back messages cut anywhere (down to single octets) come out whole, in order."""
    wire = b"".join(m.serialize() for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=20)))
    parser = StreamParser()
    got: list[Request | Response] = []
    start = 0
    for cut in [*cuts, len(wire)]:
        got.extend(parser.feed(wire[start:cut]))
        start = cut
    assert got == msgs and parser.buffered == 0


def test_stream_one_octet_at_a_time() -> None:
    """Fed one octet at a time, a stream of several messages yields each once, in order."""
    msgs = [
        Request(
            "INVITE",
            "sip:bob@[2001:db8::1]:5070",
            [
                ("Via", "SIP/2.0/TCP [2001:db8::9]:5060;branch=z9hG4bK1;received=2001:db8::9"),
                ("From", '"A \\"B\\"" <sip:a@example.com>;tag=x'),
                ("To", "<sip:bob@example.com>"),
                ("Call-ID", "c@h"),
                ("CSeq", "1 INVITE"),
            ],
            bytes(range(256)),
        ),
        Response(
            200,
            None,
            [
                ("Via", "SIP/2.0/TCP h;branch=z9hG4bK1"),
                ("From", "<sip:a@h>;tag=1"),
                ("To", "<sip:b@h>;tag=2"),
                ("Call-ID", "c@h"),
                ("CSeq", "1 INVITE"),
            ],
        ),
    ]
    wire = b"".join(m.serialize() for m in msgs) * 2
    parser = StreamParser()
    got: list[Request | Response] = []
    for i in range(len(wire)):
        got.extend(parser.feed(wire[i : i + 1]))
    assert got == msgs * 2


CORPUS = sorted(
    p.read_bytes() for p in (Path(__file__).resolve().parent.parent / "data").glob("rfc*/*")
)


def read_everything(m: Request | Response) -> None:
    """Touch every typed accessor: each may only raise HeaderParseError."""
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
        "record_routes",
        "routes",
    ):
        try:
            getattr(m, name)
        except HeaderParseError:
            pass
    if isinstance(m, Request):
        try:
            m.uri  # noqa: B018
        except HeaderParseError:
            pass
    m.serialize()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CORPUS), st.data())
def test_damaged_messages_raise_only_parse_errors(message: bytes, data: st.DataObject) -> None:
    """Any corruption of a real message gives a MessageParseError or a usable message."""
    damaged = bytearray(message)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        at = data.draw(st.integers(0, max(0, len(damaged) - 1)))
        if op == "flip" and damaged:
            damaged[at] = data.draw(st.sampled_from(b'\x00\r\n \t:;,<>"\\%@=?[]/\xff'))
        elif op == "insert":
            damaged[at:at] = data.draw(st.sampled_from([b"\r\n", b" ", b";", b",", b"\r\n "]))
        elif damaged:
            del damaged[at]
    for stream in (False, True):
        try:
            m = parse_message(bytes(damaged), stream=stream)
        except MessageParseError as e:
            assert e.status in (None, 400, 505, 513) and e.reason
            continue
        read_everything(m)
    parser = StreamParser()
    try:
        for m in parser.feed(bytes(damaged)):
            read_everything(m)
    except MessageParseError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_parse_errors(data: bytes) -> None:
    """Random octets never escape as anything but MessageParseError."""
    try:
        read_everything(parse_message(data))
    except MessageParseError:
        pass
