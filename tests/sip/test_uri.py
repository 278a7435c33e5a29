"""
Tests for :obj:`clicktodial.sip.uri`: SIP/SIPS/tel URIs, opaque URIs of other
schemes, %-escaping (unescaped exactly once, re-escaped when written).
"""

from __future__ import annotations

import pytest

from clicktodial.sip.uri import URI, HeaderParseError, URIParseError, parse_uri


def test_user_is_unescaped() -> None:
    """sip:%61lice@example.com names the user alice (RFC 3261 §19.1.4)."""
    uri = parse_uri("sip:%61lice@example.com")
    assert uri.user == "alice" and uri.host == "example.com"
    assert uri == parse_uri("sip:alice@example.com")


def test_escapes_are_undone_once_never_recursively() -> None:
    """v%61lue%25%34%31 (RFC 4475 §3.1.1.3) becomes value%41, never valueA."""
    uri = parse_uri("sip:host.example.com;n%61me=v%61lue%25%34%31")
    assert uri.param("name") == "value%41"
    # Each escape is undone once, left to right: %25 gives "%", %41 gives "A".
    assert parse_uri("sip:host.example.com;name=value%25%41").param("name") == "value%A"
    # ...and written back escaped, so the value survives a round trip.
    assert parse_uri(str(uri.replace())).param("name") == "value%41"


def test_escaped_param_name_is_unescaped() -> None:
    """Parameter names may be escaped too: %6C%72 is lr."""
    assert parse_uri("sip:host.example.com;%6C%72").has_param("lr")


def test_escaped_characters_are_escaped_again_when_written() -> None:
    """A user with a space or an @ is written with %-escapes and reads back the same."""
    uri = URI("sip", "I have spaces@home", "example.net")
    text = str(uri)
    assert text == "sip:I%20have%20spaces%40home@example.net"
    assert parse_uri(text) == uri


def test_parsed_uri_writes_its_original_text() -> None:
    """A parsed URI serializes as it arrived (forwarded unchanged)."""
    text = "sip:%61lice@EXAMPLE.com;Transport=TCP;lr"
    assert str(parse_uri(text)) == text


def test_full_sip_uri() -> None:
    """user, password, host, port, params and headers are all read."""
    uri = parse_uri(
        "sips:bob:secret@biloxi.example.com:5061;transport=tcp;lr?Subject=hi%20there&X=1"
    )
    assert uri.scheme == "sips" and uri.is_sip
    assert (uri.user, uri.password) == ("bob", "secret")
    assert (uri.host, uri.port) == ("biloxi.example.com", 5061)
    assert uri.params == {"transport": "tcp", "lr": None}
    assert uri.headers == [("Subject", "hi there"), ("X", "1")]
    assert uri.host_port == "biloxi.example.com:5061"


def test_param_names_are_case_insensitive() -> None:
    """;Transport=TCP is found as transport (RFC 3261 §19.1.4)."""
    uri = parse_uri("sip:a@b.example.com;Transport=TCP")
    assert uri.param("TRANSPORT") == "TCP" and uri.param("transport") == "TCP"


def test_scheme_is_case_insensitive() -> None:
    """SIP: and sip: are the same scheme."""
    assert parse_uri("SIP:alice@example.com").scheme == "sip"


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:[2001:db8::10]", "2001:db8::10", None),
        ("sip:user@[2001:db8::10]:5070", "2001:db8::10", 5070),
        ("sip:user@[2001:db8::192.0.2.1]", "2001:db8::192.0.2.1", None),
        ("sip:192.0.2.1:5060", "192.0.2.1", 5060),
    ],
)
def test_ipv6_references(text: str, host: str, port: int | None) -> None:
    """IPv6 hosts are stored without brackets and written with them (RFC 5118)."""
    uri = parse_uri(text)
    assert (uri.host, uri.port) == (host, port)
    assert str(URI("sip", uri.user, host, port)) == text


def test_ipv6_host_given_with_brackets_is_normalised() -> None:
    """URI(host='[::1]') stores ::1."""
    assert URI("sip", None, "[::1]", 5060).host == "::1"
    assert str(URI("sip", None, "[::1]", 5060)) == "sip:[::1]:5060"


def test_tel_uri() -> None:
    """A tel URI keeps its number in user and reads its parameters (RFC 3966)."""
    uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert uri.scheme == "tel" and not uri.is_sip
    assert uri.user == "+1-201-555-0123"
    assert uri.param("phone-context") == "example.com"
    assert str(uri) == "tel:+1-201-555-0123;phone-context=example.com"


def test_unknown_scheme_is_opaque() -> None:
    """Other schemes parse (the UAS core answers 416), keeping their text."""
    uri = parse_uri("nobodyknowsthisscheme:totallyopaquecontent")
    assert uri.scheme == "nobodyknowsthisscheme" and not uri.is_sip
    assert uri.opaque == "totallyopaquecontent"
    assert str(uri) == "nobodyknowsthisscheme:totallyopaquecontent"
    assert parse_uri("soap.beep://192.0.2.103:3002").scheme == "soap.beep"


@pytest.mark.parametrize(
    "text",
    [
        "alice@example.com",  # no scheme
        "sip:",  # no host
        "sip:alice@",  # no host
        "sip:alice@exa mple.com",  # space
        "sip:alice@example.com:5x",  # port
        "sip:alice@example.com:99999",  # port range
        "sip:alice@example.com:",  # empty port
        "sip:%zzalice@example.com",  # bad escape
        "sip:alice@example.com;;lr",  # empty parameter
        "sip:alice@[2001:db8::1",  # unterminated IPv6 reference
        "sip:alice@[example.com]",  # not an IPv6 address
        "sip:alice@example.com?Subject",  # header without =
        "sip:alice@example.com;a=b c",
        "1sip:alice@example.com",  # scheme must start with a letter
        "http:",  # empty opaque part
    ],
)
def test_malformed_uri_is_rejected(text: str) -> None:
    """Malformed URIs raise URIParseError, a HeaderParseError and ValueError."""
    with pytest.raises(URIParseError):
        parse_uri(text)
    assert issubclass(URIParseError, HeaderParseError)
    assert issubclass(URIParseError, ValueError)


def test_uri_is_immutable_and_derived_with_helpers() -> None:
    """URIs are values: fields cannot be assigned; with_params/replace make new ones."""
    uri = parse_uri("sip:alice@example.com;transport=udp")
    with pytest.raises(AttributeError):
        uri.port = 5070  # type: ignore[misc]
    with pytest.raises(TypeError):
        uri.params["lr"] = None  # type: ignore[index]
    uri.headers.append(("X", "1"))  # a copy: the URI does not change
    assert uri.headers == []
    routed = uri.with_params(lr=None)
    assert str(routed) == "sip:alice@example.com;transport=udp;lr"
    assert str(routed.without_params("TRANSPORT")) == "sip:alice@example.com;lr"
    assert str(uri.replace(port=5070)) == "sip:alice@example.com:5070;transport=udp"
    assert str(uri) == "sip:alice@example.com;transport=udp"


def test_uri_headers_can_be_dropped() -> None:
    """without_headers() removes ?headers (not allowed in a Request-URI, RFC 3261 §19.1.5)."""
    uri = parse_uri("sip:user@example.com?Route=%3Csip:sip.example.com%3E")
    assert uri.headers == [("Route", "<sip:sip.example.com>")]
    assert str(uri.without_headers()) == "sip:user@example.com"


def test_deriving_nothing_gives_the_same_value() -> None:
    """without_headers() of a URI without headers, and without_params() of parameters it
    does not have, give the URI itself (an immutable value)."""
    uri = parse_uri("sip:user@example.com;lr")
    assert uri.without_headers() is uri
    assert uri.without_params("maddr", "ttl") is uri
    assert str(uri.without_params("LR")) == "sip:user@example.com"


@pytest.mark.parametrize(
    "uri",
    [
        URI("sip", "a b", "::1", 5060, {"Transport": "tcp", "lr": None}, {"X": "1 2"}, "p w"),
        URI("sips", None, "[2001:db8::1]"),
        URI("tel", "+1-555", params={"phone-context": "example.com"}),
        URI("urn", opaque="service:sos"),
        parse_uri("SIP:%61lice@Example.COM;Transport=UDP"),
        parse_uri("sips:bob@h:5061"),
        parse_uri("tel:+1-555;ext=1"),
        parse_uri("mailto:a@b"),
    ],
)
def test_text_and_is_sip_are_kept_with_the_uri(uri: URI) -> None:
    """uri.text is str(uri): the text as received, or as written when the URI was built
    (read back, the same URI); is_sip is whether the scheme is sip or sips."""
    assert uri.text == str(uri) == uri.serialize()
    assert parse_uri(uri.text) == uri
    assert uri.is_sip == (uri.scheme in ("sip", "sips"))
    derived = uri.replace(port=5070) if uri.is_sip else uri.replace()
    assert derived.text == str(derived) and parse_uri(derived.text) == derived


def test_equal_uris_hash_alike() -> None:
    """Equal URIs hash alike, so they can key a dict; host case does not matter."""
    a = parse_uri("sip:alice@Example.COM")
    b = URI("sip", "alice", "example.com")
    assert a == b and hash(a) == hash(b)
    assert a != parse_uri("sip:alice@example.com:5060")
    assert a != parse_uri("sips:alice@example.com")


def test_user_with_unusual_but_legal_characters() -> None:
    """RFC 4475 §3.1.1.2: the user part may carry many unreserved characters."""
    text = (
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
        ":&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com"
    )
    uri = parse_uri(text)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert parse_uri(str(URI("sip", uri.user, "example.com", password=uri.password))) == uri
