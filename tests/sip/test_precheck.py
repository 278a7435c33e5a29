"""
The RFC 3261 §8.2 checks a UAS makes before processing a request, on their own (the whole
stack answering them, and the torture corpus: tests/test_stack.py).
"""

from __future__ import annotations

from clicktodial.sip.message import Request, Response
from clicktodial.sip.parser import parse_message
from clicktodial.sip.precheck import uas_precheck

#: The methods the checks are run with here (the UA core's own list lives with it).
DAEMON_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER")


def request(
    method: str = "OPTIONS",
    uri: str = "sip:daemon@127.0.0.1",
    *,
    to: str = "<sip:daemon@127.0.0.1>",
    extra: str = "",
    body: bytes = b"",
    cseq_method: str | None = None,
) -> Request:
    data = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-c1\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:alice@example.test>;tag=a1\r\n"
        f"To: {to}\r\n"
        f"Call-ID: core@test\r\n"
        f"CSeq: 1 {cseq_method or method}\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    parsed = parse_message(data)
    assert isinstance(parsed, Request)
    return parsed


def precheck(req: Request) -> Response | None:
    return uas_precheck(req, DAEMON_METHODS, ("timer",), ("application/sdp",))


# -- uas_precheck (RFC 3261 §8.2) -------------------------------------------------------------


def test_a_plain_request_passes_the_checks() -> None:
    """A request with a known method, sip URI, no Require and no body passes."""
    assert precheck(request("INVITE")) is None


def test_unknown_method_gets_501_with_allow() -> None:
    """§8.2.1: an unrecognised method gets 501 Not Implemented listing Allow."""
    response = precheck(request("NEWMETHOD"))
    assert response is not None and response.status == 501
    assert response.headers.get("Allow") == ", ".join(DAEMON_METHODS)
    assert response.to.tag


def test_ack_is_never_answered_even_when_it_fails_the_checks() -> None:
    """§17.1.1.3: no response to an ACK, whatever is wrong with it."""
    assert precheck(request("ACK", "tel:+1", extra="Require: foo\r\n")) is None


def test_unsupported_uri_scheme_gets_416() -> None:
    """§8.2.2.1: a Request-URI scheme other than sip, sips, tel gets 416."""
    response = precheck(request("OPTIONS", "http://example.test/"))
    assert response is not None and response.status == 416
    assert precheck(request("OPTIONS", "tel:+15551234")) is None


def test_unknown_required_extension_gets_420_listing_it() -> None:
    """§8.2.2.3: Require with unknown option-tags gets 420 with Unsupported listing them."""
    response = precheck(request(extra="Require: timer, foo\r\nRequire: bar\r\n"))
    assert response is not None and response.status == 420
    assert response.headers.get_all("Unsupported") == ["foo", "bar"]


def test_require_is_not_checked_for_cancel() -> None:
    """§8.2.2.3: a CANCEL's Require is not checked."""
    assert precheck(request("CANCEL", extra="Require: foo\r\n")) is None


def test_unknown_body_type_gets_415_with_accept() -> None:
    """§8.2.3: a body of a type we do not understand gets 415 with Accept."""
    response = precheck(request("INVITE", extra="Content-Type: text/x-weird\r\n", body=b"x"))
    assert response is not None and response.status == 415
    assert response.headers.get("Accept") == "application/sdp"
    sdp = "Content-Type: Application/SDP; charset=utf-8\r\n"
    assert precheck(request("INVITE", extra=sdp, body=b"v=0\r\n")) is None


def test_unknown_content_encoding_gets_415_with_accept_encoding() -> None:
    """§8.2.3: a Content-Encoding we do not understand gets 415 with Accept-Encoding."""
    extra = "Content-Type: application/sdp\r\nContent-Encoding: gzip\r\n"
    response = precheck(request("INVITE", extra=extra, body=b"x"))
    assert response is not None and response.status == 415
    assert response.headers.get("Accept-Encoding") == "identity"


def test_register_to_a_non_sip_uri_gets_400() -> None:
    """RFC 4475 §3.3.4: a REGISTER whose To is not a SIP or SIPS URI gets 400."""
    response = precheck(request("REGISTER", "sip:127.0.0.1", to="isbn:2983792873"))
    assert response is not None and response.status == 400
    assert precheck(request("REGISTER", "sip:127.0.0.1", to="<sips:bob@example.test>")) is None


def test_checks_run_in_rfc_order() -> None:
    """§8.2: method first, then URI scheme, then Require, then the body."""
    bad_everything = request(
        "OPTIONS",
        "http://x/",
        extra="Require: foo\r\nContent-Type: text/x\r\n",
        body=b"x",
    )
    assert precheck(bad_everything).status == 416  # type: ignore[union-attr]
    bad_rest = request(extra="Require: foo\r\nContent-Type: text/x\r\n", body=b"x")
    assert precheck(bad_rest).status == 420  # type: ignore[union-attr]


def test_precheck_uses_the_given_to_tag() -> None:
    """The rejection carries the To tag the caller chose."""
    response = uas_precheck(request("FOO"), DAEMON_METHODS, (), (), to_tag="abc")
    assert response is not None and response.to.tag == "abc"
