"""
The RFC 4475 / RFC 5118 torture corpus in tests/data, byte for byte: every
message gets exactly what its INDEX.md row says a parser owes it.

Valid messages parse (including the ones whose *semantic* fault is the UAS
core's to answer: 416, 420, 415, 501, REGISTER with a non-SIP To); invalid
requests raise MessageParseError with status 400 (505 for a bad version) and a
reason naming the fault; invalid responses raise it with status None (drop).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from clicktodial.sip.message import Request, Response
from clicktodial.sip.parser import (
    MessageParseError,
    StreamParser,
    parse_message,
    validate_message,
)

DATA = Path(__file__).resolve().parent.parent / "data"


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def index_files() -> list[str]:
    """Every message file named in a row of INDEX.md, with its directory."""
    text = (DATA / "INDEX.md").read_text(encoding="utf-8")
    files = []
    directory = ""
    for line in text.splitlines():
        m = re.match(r"## RFC \d+ \(directory `([^`]+)/`", line)
        if m:
            directory = m.group(1)
        m = re.match(r"\| `([^`]+)` \|", line)
        if m:
            files.append(f"{directory}/{m.group(1)}")
    return files


# --- what each valid message must look like once parsed ------------------


def check_wsinv(m: Request | Response) -> None:
    assert isinstance(m, Request) and m.method == "INVITE"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert m.max_forwards == 68
    assert (m.cseq.seq, m.cseq.method) == (9, "INVITE")
    assert m.to.tag == "1918181833n"
    assert m.from_.tag == "98asjd8"
    assert m.from_.display_name == 'J Rosenberg \\"'
    assert [v.transport for v in m.vias] == ["UDP", "TCP", "UDP"]
    assert [v.branch for v in m.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert m.headers.get("Subject") == ""
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.contacts[0].display_name == 'Quoted string ""'
    assert m.contacts[0].params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert m.routes[0].uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    assert len(m.body) == 150 and m.body.startswith(b"v=0\r\n")


def check_intmeth(m: Request | Response) -> None:
    assert isinstance(m, Request)
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.cseq.method == m.method
    assert m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert m.from_.tag == "_token~1'+`*%!-."
    # UTF-8 in an extension header survives untouched.
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.top_via.branch == "z9hG4bK-.!%66*_+`'~"


def check_esc01(m: Request | Response) -> None:
    assert isinstance(m, Request)
    assert m.uri.user == "sips:user@example.com" and m.uri.host == "example.net"
    assert m.to.uri.user == "user"
    assert m.from_.uri.user == "I have spaces"
    contact = m.contacts[0].uri
    assert contact.user == "caller"
    # value%25%41 unescapes once: value%41, never valueA.
    assert contact.params == {"lr": None, "name": "value%41"}


def check_dblreq(m: Request | Response) -> None:
    assert isinstance(m, Request) and m.method == "REGISTER"
    assert m.body == b""  # the trailing INVITE is noise (RFC 3261 §18.3)


def check_unreason(m: Request | Response) -> None:
    assert isinstance(m, Response) and m.status == 200
    assert m.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"


def check_noreason(m: Request | Response) -> None:
    assert isinstance(m, Response) and m.status == 100 and m.reason == ""


def check_badbranch(m: Request | Response) -> None:
    assert m.top_via.branch == "z9hG4bK"


def check_unkscm(m: Request | Response) -> None:
    assert isinstance(m, Request)
    assert m.uri.scheme == "nobodyknowsthisscheme" and not m.uri.is_sip
    assert m.uri.opaque == "totallyopaquecontent"


def check_novelsc(m: Request | Response) -> None:
    assert isinstance(m, Request) and m.uri.scheme == "soap.beep" and not m.uri.is_sip


def check_unksm2(m: Request | Response) -> None:
    assert isinstance(m, Request) and m.method == "REGISTER"
    assert m.to.uri.scheme == "isbn" and not m.to.uri.is_sip
    assert m.from_.uri.scheme == "http"
    assert m.contacts[0].uri.scheme == "name"


def check_bext01(m: Request | Response) -> None:
    assert m.headers.get_all("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]


def check_invut(m: Request | Response) -> None:
    assert m.headers.get("Content-Type") == "application/unknownformat"
    assert len(m.body) == 40


def check_regaut01(m: Request | Response) -> None:
    assert m.headers.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"


def check_bcast(m: Request | Response) -> None:
    assert isinstance(m, Response)
    assert m.vias[1].host == "255.255.255.255"


def check_zeromf(m: Request | Response) -> None:
    assert m.max_forwards == 0


def check_cparam01(m: Request | Response) -> None:
    (contact,) = m.contacts
    assert str(contact.uri) == "sip:+19725552222@gw1.example.net"
    assert contact.params == {"unknownparam": None}


def check_cparam02(m: Request | Response) -> None:
    (contact,) = m.contacts
    assert contact.uri.params == {"unknownparam": None}
    assert contact.params == {}


def check_regescrt(m: Request | Response) -> None:
    (contact,) = m.contacts
    assert contact.uri.headers == [("Route", "<sip:sip.example.com>")]
    assert "Route" not in m.headers


def check_inv2543(m: Request | Response) -> None:
    assert isinstance(m, Request)
    assert m.top_via.branch is None and m.from_.tag is None
    assert m.max_forwards is None
    assert len(m.body) == 105  # no Content-Length: the rest of the datagram


def check_ipv6_good(m: Request | Response) -> None:
    assert isinstance(m, Request)
    assert m.uri.host == "2001:db8::10" and str(m.uri) == "sip:[2001:db8::10]"
    assert m.top_via.sent_by == ("2001:db8::9:1", None)
    assert m.contacts[0].uri.host == "2001:db8::1"


def check_port_unambiguous(m: Request | Response) -> None:
    assert isinstance(m, Request)
    assert (m.uri.host, m.uri.port) == ("2001:db8::10", 5070)


def check_via_received(m: Request | Response) -> None:
    assert m.top_via.received == "2001:db8::9:255"
    assert m.top_via.host == "2001:db8::9:1"


def check_ipv6_in_sdp(m: Request | Response) -> None:
    assert isinstance(m, Request)
    assert m.top_via.host == "2001:db8::20"
    assert b"c=IN IP6 2001:db8::20" in m.body


def check_mult_ip(m: Request | Response) -> None:
    assert [v.sent_by for v in m.vias] == [
        ("2001:db8::9:1", 6050),
        ("192.0.2.1", None),
        ("2001:db8::9:255", None),
    ]
    assert m.vias[2].received == "192.0.2.200"


def check_two_colons(m: Request | Response) -> None:
    assert isinstance(m, Request) and m.uri.host == "2001:db8::192.0.2.1"


def accept(check: Callable[[Request | Response], None] | None = None) -> tuple[str, object]:
    return ("accept", check)


def reject(status: int | None, words: str) -> tuple[str, object]:
    return ("reject", (status, words))


EXPECTED: dict[str, tuple[str, object]] = {
    "rfc4475/wsinv.dat": accept(check_wsinv),
    "rfc4475/intmeth.dat": accept(check_intmeth),  # core: 501
    "rfc4475/esc01.dat": accept(check_esc01),
    "rfc4475/dblreq.dat": accept(check_dblreq),
    "rfc4475/unreason.dat": accept(check_unreason),
    "rfc4475/noreason.dat": accept(check_noreason),
    "rfc4475/badinv01.dat": reject(400, "Via"),
    "rfc4475/clerr.dat": reject(400, "Content-Length"),
    "rfc4475/ncl.dat": reject(400, "Content-Length"),
    "rfc4475/scalarlg.dat": reject(None, "CSeq"),
    "rfc4475/lwsstart.dat": reject(400, "Request-Line"),
    "rfc4475/trws.dat": reject(400, "Request-Line"),
    "rfc4475/escruri.dat": reject(400, "Request-URI"),
    "rfc4475/baddate.dat": accept(),  # we never use Date (documented)
    "rfc4475/baddn.dat": reject(400, "From"),
    "rfc4475/mismatch02.dat": accept(),  # unknown method: core answers 501
    "rfc4475/bigcode.dat": reject(None, "status code"),
    "rfc4475/badbranch.dat": accept(check_badbranch),
    "rfc4475/unkscm.dat": accept(check_unkscm),  # core: 416
    "rfc4475/novelsc.dat": accept(check_novelsc),  # core: 416
    "rfc4475/unksm2.dat": accept(check_unksm2),  # registrar: 400
    "rfc4475/bext01.dat": accept(check_bext01),  # core: 420
    "rfc4475/invut.dat": accept(check_invut),  # core: 415
    "rfc4475/regaut01.dat": accept(check_regaut01),  # registrar: 401
    "rfc4475/bcast.dat": accept(check_bcast),
    "rfc4475/zeromf.dat": accept(check_zeromf),
    "rfc4475/cparam01.dat": accept(check_cparam01),
    "rfc4475/cparam02.dat": accept(check_cparam02),
    "rfc4475/regescrt.dat": accept(check_regescrt),
    "rfc4475/sdp01.dat": accept(),
    "rfc4475/inv2543.dat": accept(check_inv2543),
    "rfc4475/test.dat": reject(400, "Request-Line"),
    "rfc5118/ipv6-good": accept(check_ipv6_good),
    "rfc5118/port-unambiguous": accept(check_port_unambiguous),
    "rfc5118/via-received-param-no-delim": accept(check_via_received),
    "rfc5118/ipv6-in-sdp": accept(check_ipv6_in_sdp),
    "rfc5118/mult-ip-in-header": accept(check_mult_ip),
    "rfc5118/ipv6-correct-abnf-2-colons": accept(check_two_colons),
}


def test_every_index_row_has_an_expectation() -> None:
    """Each message INDEX.md lists has exactly one expectation here, and vice versa."""
    assert sorted(index_files()) == sorted(EXPECTED)


def test_corpus_is_byte_exact() -> None:
    """tests/data holds the published bytes (SHA256SUMS), CRLFs and binary octets intact."""
    for line in (DATA / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256(load(name)).hexdigest() == digest, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_torture_message_gets_what_its_index_row_says(name: str) -> None:
    """Valid messages parse (and pass their checks); invalid ones are rejected as INDEX.md says."""
    data = load(name)
    kind, detail = EXPECTED[name]
    if kind == "accept":
        m = parse_message(data)
        check = cast(Callable[[Request | Response], None] | None, detail)
        if check is not None:
            check(m)
    else:
        status, words = cast(tuple[int | None, str], detail)
        with pytest.raises(MessageParseError) as info:
            parse_message(data)
        err = info.value
        assert err.status == status
        assert words in err.reason
        assert err.is_request == (not data.startswith(b"SIP/"))
        if status is not None:
            assert err.reason.startswith("Bad Request (")


@pytest.mark.parametrize("name", sorted(n for n, (k, _) in EXPECTED.items() if k == "accept"))
def test_valid_torture_message_survives_serialize_and_reparse(name: str) -> None:
    """parse(serialize(m)) == m for every valid torture message."""
    m = parse_message(load(name))
    again = parse_message(m.serialize())
    assert again == m
    assert again.serialize() == m.serialize()


def test_unknown_header_is_forwarded_byte_exact() -> None:
    """An unknown header's value goes back on the wire exactly as it came."""
    m = parse_message(load("rfc4475/wsinv.dat"))
    assert b"\r\nUnknownHeaderWithUnusualValue: ;;,,;;,;\r\n" in m.serialize()
    m = parse_message(load("rfc4475/intmeth.dat"))
    raw = load("rfc4475/intmeth.dat")
    line = next(x for x in raw.split(b"\r\n") if x.startswith(b"extensionHeader"))
    assert b"\r\n" + line + b"\r\n" in m.serialize()


def test_partial_headers_allow_a_stateless_400() -> None:
    """A rejected request carries the Via/From/To/Call-ID/CSeq it had, for the 400."""
    err = pytest.raises(MessageParseError, parse_message, load("rfc4475/escruri.dat")).value
    headers = err.partial_headers
    assert headers is not None
    assert headers.get("Call-ID") == "escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5"
    assert headers.get("CSeq") == "149209342 INVITE"
    assert headers.get("Via") == "SIP/2.0/UDP host-of-the-hour.example.com;branch=z9hG4bKkdjuw"
    assert headers.get("From") is not None and headers.get("To") is not None
    assert "Contact" not in headers


def test_bad_version_is_505() -> None:
    """A request with a SIP version other than 2.0 gets 505 Version Not Supported."""
    data = load("rfc4475/zeromf.dat").replace(b" SIP/2.0\r\n", b" SIP/7.0\r\n", 1)
    err = pytest.raises(MessageParseError, parse_message, data).value
    assert err.status == 505 and err.reason.startswith("Version Not Supported")


def with_content_length(data: bytes, length: int) -> bytes:
    return re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % length, data, count=1)


def test_ipv6_in_sdp_with_corrected_content_length() -> None:
    """RFC 5118 §4.6 with its Content-Length fixed: the whole SDP is the body."""
    data = load("rfc5118/ipv6-in-sdp")
    body = data[data.index(b"\r\n\r\n") + 4 :]
    m = parse_message(with_content_length(data, len(body)))
    assert m.body == body
    check_ipv6_in_sdp(m)


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if n.startswith("rfc5118/")))
def test_rfc5118_message_with_content_length_matching_its_body(name: str) -> None:
    """Every RFC 5118 message, its Content-Length set to its real body, passes its IPv6 checks."""
    data = load(name)
    if b"\r\n\r\n" not in data:
        data += b"\r\n"
    body = data[data.index(b"\r\n\r\n") + 4 :]
    m = parse_message(with_content_length(data, len(body)), stream=True)
    assert m.body == body
    check = cast(Callable[[Request | Response], None], EXPECTED[name][1])
    check(m)


def test_ipv6_in_sdp_as_archived_is_cut_at_content_length() -> None:
    """As archived the declared length is shorter than the body: the rest is ignored (§18.3)."""
    m = parse_message(load("rfc5118/ipv6-in-sdp"))
    assert len(m.body) == 241


def test_stream_needs_content_length() -> None:
    """On a stream, a message without Content-Length is a framing error (RFC 3261 §18.3)."""
    with pytest.raises(MessageParseError, match="Content-Length"):
        parse_message(load("rfc4475/inv2543.dat"), stream=True)
    with pytest.raises(MessageParseError, match="Content-Length"):
        StreamParser().feed(load("rfc4475/inv2543.dat"))


def test_response_shorter_than_content_length_is_dropped() -> None:
    """A response whose body is shorter than its Content-Length is discarded (§18.3)."""
    data = with_content_length(load("rfc4475/unreason.dat"), 9999)
    err = pytest.raises(MessageParseError, parse_message, data).value
    assert err.status is None and not err.is_request


@pytest.mark.parametrize("name", sorted(n for n, (k, _) in EXPECTED.items() if k == "accept"))
def test_valid_torture_message_parses_the_same_fed_byte_by_byte(name: str) -> None:
    """A stream fed one octet at a time yields the message a datagram gives."""
    data = load(name)
    if name == "rfc5118/ipv6-in-sdp":
        body = data[data.index(b"\r\n\r\n") + 4 :]
        data = with_content_length(data, len(body))
    if b"Content-Length" not in data and b"\r\nl:" not in data.lower():
        pytest.skip("no Content-Length: not framable on a stream")
    if not data.endswith(b"\r\n\r\n") and data.find(b"\r\n\r\n") < 0:
        data += b"\r\n"  # archived without the empty line ending the headers
    expected = parse_message(data)
    end = data.index(b"\r\n\r\n") + 4 + len(expected.body)
    parser = StreamParser()
    got = []
    for i in range(end):
        got.extend(parser.feed(data[i : i + 1]))
    assert got == [expected]
    assert parser.buffered == 0


def outcome(parse: Callable[[], Request | Response]) -> tuple[object, ...]:
    try:
        m = parse()
    except MessageParseError as e:
        return ("reject", e.status, e.reason, e.method, list(e.partial_headers or []))
    return ("accept", m)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_framing_then_validate_message_is_parse_message(name: str) -> None:
    """Framing only, then validate_message, accepts and rejects as parse_message does."""
    data = load(name)

    def in_two_steps() -> Request | Response:
        m = parse_message(data, validate=False)
        validate_message(m)
        return m

    whole, split = outcome(lambda: parse_message(data)), outcome(in_two_steps)
    if whole[0] == "reject" and split[0] == "reject":
        # Same status, reason and method; the partial headers are the fields read so far.
        assert whole[:4] == split[:4]
    else:
        assert whole == split


@pytest.mark.parametrize("name", sorted(n for n, (kind, _) in EXPECTED.items() if kind == "accept"))
def test_serialize_of_an_untouched_torture_message_is_its_canonical_form(name: str) -> None:
    """serialize() of an untouched message is what it writes once anything is assigned."""
    m = parse_message(load(name))
    again = parse_message(load(name))
    again.headers = again.headers.copy()  # other fields: serialize() writes anew
    assert m.serialize() == again.serialize()
