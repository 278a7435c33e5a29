"""
The interim UAS core (RFC 3261 §8.2 checks, OPTIONS, 501 for the rest) on its own and
behind the transport layer, including the whole torture corpus sent as datagrams.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from clicktodial.config import HostPort, SipConfig
from clicktodial.sip.address import Destination, Source
from clicktodial.sip.core import (
    DAEMON_METHODS,
    StatelessUAS,
    options_response,
    uas_precheck,
)
from clicktodial.sip.interfaces import IMessageHandler, ISIPTransport
from clicktodial.sip.message import Request, Response
from clicktodial.sip.parser import parse_message
from clicktodial.sip.transport import SIPTransportLayer, TransportError
from clicktodial.testing.transport import (
    INTERIM_TORTURE_ANSWERS,
    FakeReactor,
    LogCapture,
    loopback_via,
    no_failures_logged,
)

DATA = Path(__file__).resolve().parent.parent / "data"
SOURCE = Source("UDP", "127.0.0.1", 5070, "127.0.0.1", 5060)


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


@implementer(ISIPTransport)
class SentResponses:
    """An ISIPTransport keeping the responses sent; can be told to fail."""

    def __init__(self, fail: bool = False) -> None:
        self.responses: list[tuple[Response, object]] = []
        self.fail = fail

    def send_request(self, request: Request, destination: Destination) -> None:
        raise AssertionError("the interim core sends no requests")

    def send_response(self, response: Response, source: object = None) -> None:
        if self.fail:
            raise TransportError("unreachable")
        self.responses.append((response, source))

    def local_address(self, transport: str) -> tuple[str, int]:
        return ("127.0.0.1", 5060)


@pytest.fixture
def log() -> Iterator[LogCapture]:
    """Captures log events; a test fails if anything logged a failure (a traceback)."""
    yield from no_failures_logged()


@pytest.fixture
def sent(log: LogCapture) -> SentResponses:
    return SentResponses()


@pytest.fixture
def core(sent: SentResponses) -> StatelessUAS:
    return StatelessUAS(sent, "clicktodial-test")


def answer(core: StatelessUAS, sent: SentResponses, req: Request) -> Response | None:
    core.request_received(req, SOURCE)
    if not sent.responses:
        return None
    [(response, source)] = sent.responses
    sent.responses.clear()
    assert source is SOURCE
    return response


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


def test_options_response_lists_allow_accept_supported() -> None:
    """§11.2: 200 to OPTIONS lists Allow, Accept and Supported."""
    response = options_response(request(), ("OPTIONS", "INVITE"), ("timer",), ("application/sdp",))
    assert response.status == 200
    assert response.headers.get("Allow") == "OPTIONS, INVITE"
    assert response.headers.get("Accept") == "application/sdp"
    assert response.headers.get("Supported") == "timer"


# -- StatelessUAS -----------------------------------------------------------------------------


def test_core_provides_the_message_handler_interface(core: StatelessUAS) -> None:
    """StatelessUAS provides IMessageHandler."""
    assert verifyObject(IMessageHandler, core)


def test_options_gets_200_with_server_header(core: StatelessUAS, sent: SentResponses) -> None:
    """OPTIONS gets 200 with Allow, Accept, a To tag and our Server header."""
    response = answer(core, sent, request())
    assert response is not None and response.status == 200
    assert response.headers.get("Allow") == "OPTIONS"
    assert response.headers.get("Accept") == "application/sdp"
    assert response.headers.get("Server") == "clicktodial-test"
    assert response.to.tag


def test_requests_not_served_yet_get_501_with_allow(
    core: StatelessUAS, sent: SentResponses
) -> None:
    """INVITE, REGISTER, BYE, CANCEL get 501 with Allow until their layers land."""
    for method in ("INVITE", "REGISTER", "BYE", "CANCEL"):
        response = answer(core, sent, request(method))
        assert response is not None and response.status == 501, method
        assert response.headers.get("Allow") == "OPTIONS"


def test_ack_gets_nothing(core: StatelessUAS, sent: SentResponses) -> None:
    """ACK is never answered."""
    assert answer(core, sent, request("ACK")) is None


def test_retransmission_gets_the_same_to_tag(core: StatelessUAS, sent: SentResponses) -> None:
    """§8.2.7: a stateless UAS gives a retransmitted request the same To tag."""
    first = answer(core, sent, request())
    again = answer(core, sent, request())
    assert first is not None and again is not None
    assert first.to.tag == again.to.tag


def test_transport_error_is_logged(log: LogCapture) -> None:
    """A response that cannot be sent is logged with the peer, not raised."""
    core = StatelessUAS(SentResponses(fail=True), "ua")
    core.request_received(request(), SOURCE)
    assert any(
        e.get("peer") == str(SOURCE) and "unreachable" in e.get("error", "") for e in log.events
    )


def test_responses_are_dropped(core: StatelessUAS, sent: SentResponses, log: LogCapture) -> None:
    """The interim core sends no requests: every response is stray and dropped."""
    response = Response(200, headers=[("Call-ID", "x")])
    core.response_received(response, SOURCE)
    assert sent.responses == []
    assert any(e.get("status") == 200 for e in log.events)


# -- the torture corpus through transport and core --------------------------------------------


def index_files() -> list[str]:
    """Every message file INDEX.md has a row for."""
    files, directory = [], ""
    for line in (DATA / "INDEX.md").read_text(encoding="utf-8").splitlines():
        heading = re.match(r"## RFC \d+ \(directory `([^`]+)/`", line)
        if heading:
            directory = heading.group(1)
        row = re.match(r"\| `([^`]+)` \|", line)
        if row:
            files.append(f"{directory}/{row.group(1)}")
    return files


def test_every_index_row_has_an_expected_answer() -> None:
    """The table above covers exactly the files INDEX.md lists."""
    assert sorted(INTERIM_TORTURE_ANSWERS) == sorted(index_files())


def sip_config() -> SipConfig:
    return SipConfig(
        domain="example.test",
        listen=HostPort("127.0.0.1", 5060),
        transports=("udp", "tcp"),
        t1=0.5,
        t2=4.0,
        t4=5.0,
        user_agent="clicktodial-test",
    )


def status_of(datagram: bytes) -> int:
    """The status code of a response we sent (read from its status line only: a 400 echoes
    the malformed headers it complains about)."""
    assert datagram.startswith(b"SIP/2.0 ")
    return int(datagram[8:11])


def answers_to(datagram: bytes) -> tuple[list[tuple[bytes, tuple[str, int]]], FakeReactor]:
    """What transport + core send for ``datagram`` from 127.0.0.1:5070 (and the reactor,
    for the TCP connections they opened); fails if anything logged a traceback."""
    reactor = FakeReactor()
    layer = SIPTransportLayer(reactor, sip_config())
    layer.handler = StatelessUAS(layer, "clicktodial-test")
    with LogCapture() as log:
        layer.startService()
        [udp] = reactor.udp_ports
        udp.receive(datagram, "127.0.0.1", 5070)
    assert log.failures() == []
    return udp.take(), reactor


@pytest.mark.parametrize("name", sorted(INTERIM_TORTURE_ANSWERS))
def test_torture_message_over_udp_gets_its_index_answer(name: str) -> None:
    """Each corpus datagram, given a loopback top Via, gets one response with the expected
    status (or none), and nothing logs a traceback."""
    sent, reactor = answers_to(loopback_via((DATA / name).read_bytes(), 5070))
    expected = INTERIM_TORTURE_ANSWERS[name]
    assert [status_of(data) for data, _ in sent] == ([] if expected is None else [expected])
    assert all(addr == ("127.0.0.1", 5070) for _, addr in sent)
    assert reactor.tcpClients == []


@pytest.mark.parametrize("name", sorted(INTERIM_TORTURE_ANSWERS))
def test_torture_message_as_is_gets_the_same_answer(name: str) -> None:
    """Sent as archived (Vias naming TCP, TLS, example.com), each message still gets its
    answer; one naming a transport we do not run is answered where it came from."""
    sent, reactor = answers_to((DATA / name).read_bytes())
    statuses = [status_of(data) for data, _ in sent]
    # A Via saying TCP is answered over a new TCP connection (RFC 3261 §18.2.2).
    statuses += [0 for _ in reactor.tcpClients]
    expected = None if name == "rfc4475/test.dat" else INTERIM_TORTURE_ANSWERS[name]  # no Via
    assert len(statuses) == (0 if expected is None else 1)
    if statuses and statuses[0]:
        assert statuses == [expected]
