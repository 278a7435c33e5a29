"""
The SIP transport layer (RFC 3261 §18, RFC 3581, RFC 5626 §4.4.1) on fake sockets:
UDP through a recording datagram port, TCP through ``StringTransport``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import ISystemHandle
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from clicktodial.config import HostPort, SipConfig
from clicktodial.connlimit import ConnectionLimit
from clicktodial.netaddr import NetworkSet
from clicktodial.sip.address import NO_RECONNECT, Destination, Source
from clicktodial.sip.headers import parse_via
from clicktodial.sip.interfaces import (
    IFlowKeeper,
    IMessageHandler,
    ISendFailureHandler,
    ISIPTransport,
)
from clicktodial.sip.message import Headers, Request, Response, make_response
from clicktodial.sip.parser import parse_message
from clicktodial.sip.transport import (
    UDP_MAX_REQUEST,
    SIPTransportLayer,
    TransportError,
    response_destination,
    stamp_received,
    stateless_to_tag,
)
from clicktodial.testing.transport import (
    FakeDatagramPort,
    FakeReactor,
    LogCapture,
    accept_tcp,
    complete_connect,
    ip_address,
    no_failures_logged,
)

STEP = 0.125


def sip_config(
    host: str = "127.0.0.1", port: int = 5060, transports: str = "udp, tcp"
) -> SipConfig:
    return SipConfig(
        domain="example.test",
        listen=HostPort(host, port),
        transports=tuple(t.strip() for t in transports.split(",")),
        t1=0.5,
        t2=4.0,
        t4=5.0,
        user_agent="clicktodial-test",
    )


@implementer(IMessageHandler)
class RecordingHandler:
    """Keeps what the transport hands over."""

    def __init__(self) -> None:
        self.requests: list[tuple[Request, Source]] = []
        self.responses: list[tuple[Response, Source]] = []

    def request_received(self, request: Request, source: object) -> None:
        assert isinstance(source, Source)
        self.requests.append((request, source))

    def response_received(self, response: Response, source: object) -> None:
        assert isinstance(source, Source)
        self.responses.append((response, source))


def options(
    via: str = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1",
    call_id: str = "c1@test",
    extra: str = "",
    body: bytes = b"",
    content_length: str | None = None,
) -> bytes:
    length = str(len(body)) if content_length is None else content_length
    return (
        f"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: {via}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:alice@example.test>;tag=a1\r\n"
        f"To: <sip:127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"{extra}"
        f"Content-Length: {length}\r\n\r\n"
    ).encode() + body


def response_bytes(via: str = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-2;rport=5060") -> bytes:
    return (
        f"SIP/2.0 200 OK\r\n"
        f"Via: {via}\r\n"
        f"From: <sip:alice@example.test>;tag=a1\r\n"
        f"To: <sip:bob@example.test>;tag=b1\r\n"
        f"Call-ID: r1@test\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def bad_header(message: bytes) -> bytes:
    """``message`` with a second Max-Forwards, which the parser rejects with 400."""
    return message.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nMax-Forwards: 69\r\n")


class Layer:
    """A started transport layer on a fake reactor, with a recording handler."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5060,
        transports: str = "udp, tcp",
        handler: RecordingHandler | None = None,
    ):
        self.reactor = FakeReactor()
        self.handler = RecordingHandler() if handler is None else handler
        self.layer = SIPTransportLayer(
            self.reactor, sip_config(host, port, transports), self.handler, tcp_idle_timeout=30.0
        )
        self.layer.startService()

    @property
    def udp(self) -> FakeDatagramPort:
        return self.reactor.udp_ports[0]


@pytest.fixture
def log() -> Iterator[LogCapture]:
    """Captures log events; a test fails if anything logged a failure (a traceback)."""
    yield from no_failures_logged()


@pytest.fixture
def net(log: LogCapture) -> Layer:
    return Layer()


def sent_messages(port: FakeDatagramPort) -> list[tuple[Request | Response, tuple[str, int]]]:
    return [(parse_message(data), addr) for data, addr in port.take()]


# -- the service --------------------------------------------------------------------------


def test_layer_provides_the_transport_interface(net: Layer) -> None:
    """SIPTransportLayer provides ISIPTransport."""
    assert verifyObject(ISIPTransport, net.layer)


def test_starting_listens_on_udp_and_tcp_at_the_configured_address(net: Layer) -> None:
    """Starting the service listens on UDP and TCP on [sip] listen."""
    assert [(p.host, p.port) for p in net.reactor.udp_ports] == [("127.0.0.1", 5060)]
    assert [(s[0], s[3]) for s in net.reactor.tcpServers] == [(5060, "127.0.0.1")]


def test_port_zero_gives_tcp_the_port_udp_got(log: LogCapture) -> None:
    """With port 0, TCP listens on the port UDP was given, so one sent-by fits both."""
    net = Layer(port=0)
    udp_port = net.udp.port
    assert net.reactor.tcpServers[0][0] == udp_port
    assert net.layer.local_address("udp") == ("127.0.0.1", udp_port)


def test_only_configured_transports_listen(log: LogCapture) -> None:
    """transports = udp listens on UDP only; local_address('TCP') is then an error."""
    net = Layer(transports="udp")
    assert net.reactor.tcpServers == []
    with pytest.raises(TransportError):
        net.layer.local_address("TCP")


def test_ipv6_listen_address(log: LogCapture) -> None:
    """An IPv6 listen address is used as is and advertised in Vias."""
    net = Layer(host="::1")
    assert net.udp.host == "::1"
    assert net.layer.local_address("UDP") == ("::1", 5060)
    net.udp.receive(options(via="SIP/2.0/UDP [::1]:5070;branch=z9hG4bK-6"), "::1", 5070)
    [(request, source)] = net.handler.requests
    assert source.remote_host == "::1"
    assert request.top_via.received is None


def test_wildcard_listen_address_advertises_the_domain(log: LogCapture) -> None:
    """Listening on 0.0.0.0, the Via sent-by is the SIP domain (a wildcard is no address)."""
    net = Layer(host="0.0.0.0")
    assert net.layer.local_address("UDP") == ("example.test", 5060)


def test_stopping_stops_listening_and_closes_connections(net: Layer) -> None:
    """stopService stops the UDP port and closes TCP connections."""
    _, transport = accept_tcp(net.reactor)
    net.layer.stopService()
    assert not net.udp.listening
    assert transport.disconnecting


# -- Via stamping on receipt (RFC 3261 §18.2.1, RFC 3581 §4) --------------------------------


def stamped(via: str, host: str = "192.0.2.1", port: int = 5070) -> str:
    headers = Headers([("Via", via)])
    stamp_received(headers, Source("UDP", host, port, "127.0.0.1", 5060))
    return headers.get_fields("Via")[0]


def test_received_is_added_when_the_sent_by_address_differs() -> None:
    """§18.2.1: a sent-by address other than the source address gets received=."""
    assert stamped("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-1") == (
        "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-1;received=192.0.2.1"
    )


def test_received_is_added_when_the_sent_by_is_a_name() -> None:
    """§18.2.1: a host name in the sent-by always gets received=."""
    assert stamped("SIP/2.0/UDP pc.example.com;branch=z9hG4bK-1").endswith(";received=192.0.2.1")


def test_no_received_when_the_sent_by_is_the_source_address() -> None:
    """§18.2.1: the Via is left alone when the sent-by is the packet's source address."""
    via = "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-1"
    assert stamped(via) == via


def test_empty_rport_is_filled_with_the_source_port_and_received_added() -> None:
    """RFC 3581 §4: an empty rport gets the source port, and received= even if unchanged."""
    assert stamped("SIP/2.0/UDP 192.0.2.1:5070;rport;branch=z9hG4bK-1", port=6000) == (
        "SIP/2.0/UDP 192.0.2.1:5070;rport=6000;branch=z9hG4bK-1;received=192.0.2.1"
    )


def test_ipv6_sent_by_is_compared_as_an_address() -> None:
    """An IPv6 sent-by equal to the source (other spelling) gets no received=."""
    via = "SIP/2.0/UDP [2001:DB8:0::1]:5070;branch=z9hG4bK-1"
    assert stamped(via, host="2001:db8::1") == via


def test_only_the_top_via_is_stamped() -> None:
    """Only the top Via value is changed; the others keep their text and order."""
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-1, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK-2"),
            ("Via", "SIP/2.0/TCP 10.0.0.3;branch=z9hG4bK-3"),
        ]
    )
    stamp_received(headers, Source("UDP", "192.0.2.1", 5060, "127.0.0.1", 5060))
    assert headers.get_fields("Via") == [
        "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-1;received=192.0.2.1",
        "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK-2",
        "SIP/2.0/TCP 10.0.0.3;branch=z9hG4bK-3",
    ]


def test_received_request_reaches_the_handler_stamped(net: Layer) -> None:
    """A UDP request goes to the handler with its Source and its top Via stamped."""
    net.udp.receive(
        options(via="SIP/2.0/UDP 10.0.0.9:5070;rport;branch=z9hG4bK-1"), "127.0.0.1", 5099
    )
    [(request, source)] = net.handler.requests
    assert source == Source("UDP", "127.0.0.1", 5099, "127.0.0.1", 5060)
    assert request.top_via.received == "127.0.0.1"
    assert request.top_via.rport == 5099


def test_ipv4_mapped_source_is_given_as_ipv4(log: LogCapture) -> None:
    """A dual-stack socket's ::ffff:a.b.c.d source is handed over as a.b.c.d."""
    net = Layer(host="::")
    net.udp.receive(options(), "::ffff:127.0.0.1", 5070)
    [(_, source)] = net.handler.requests
    assert source.remote_host == "127.0.0.1"


# -- response routing (RFC 3261 §18.2.2, RFC 3581 §4) -----------------------------------------


def route(via: str, source: Source | None = None) -> Destination:
    return response_destination(parse_via(via)[0], source)


def test_response_goes_to_received_and_rport_over_udp() -> None:
    """RFC 3581 §4: UDP with received and rport: the received address, the rport port."""
    assert route("SIP/2.0/UDP a.example;rport=6000;received=192.0.2.1") == Destination(
        "UDP", "192.0.2.1", 6000
    )


def test_response_without_rport_goes_to_received_and_sent_by_port() -> None:
    """§18.2.2: received without rport: the received address, the sent-by port."""
    assert route("SIP/2.0/UDP a.example:5070;received=192.0.2.1") == Destination(
        "UDP", "192.0.2.1", 5070
    )


def test_response_goes_to_sent_by_with_the_default_port() -> None:
    """§18.2.2: no received: the sent-by host and port, 5060 when none is given."""
    assert route("SIP/2.0/UDP 192.0.2.7") == Destination("UDP", "192.0.2.7", 5060)
    assert route("SIP/2.0/TLS [2001:db8::7]") == Destination("TLS", "2001:db8::7", 5061)


def test_response_never_goes_to_maddr() -> None:
    """maddr is ignored (a deviation from §18.2.2, docs/security.md): received and rport."""
    assert route("SIP/2.0/UDP 192.0.2.7:5070;maddr=192.0.2.99;received=192.0.2.1") == (
        Destination("UDP", "192.0.2.1", 5070)
    )
    assert route("SIP/2.0/UDP 192.0.2.7:5070;maddr=192.0.2.99") == (
        Destination("UDP", "192.0.2.7", 5070)
    )


def test_response_goes_to_the_request_source_whatever_the_via_says() -> None:
    """Given the request's source, a UDP response goes to its host (rport: its port), not to
    a maddr, received or sent-by the sender wrote."""
    source = Source("UDP", "127.0.0.1", 5099, "127.0.0.1", 5060)
    assert route(
        "SIP/2.0/UDP 127.0.0.9:5070;maddr=127.0.0.9;received=127.0.0.9;rport=9", source
    ) == Destination("UDP", "127.0.0.1", 5099)
    assert route("SIP/2.0/UDP 127.0.0.1:5070;maddr=127.0.0.9", source) == (
        Destination("UDP", "127.0.0.1", 5070)
    )


def test_a_received_the_sender_wrote_is_replaced_by_the_source() -> None:
    """A forged received= (sent-by equal to the source, so §18.2.1 adds none) is replaced."""
    assert stamped("SIP/2.0/UDP 192.0.2.1:5070;received=127.0.0.9;branch=z9hG4bK-1") == (
        "SIP/2.0/UDP 192.0.2.1:5070;received=192.0.2.1;branch=z9hG4bK-1"
    )
    via = "SIP/2.0/UDP 192.0.2.1:5070;received=192.0.2.1;branch=z9hG4bK-1"
    assert stamped(via) == via


@pytest.mark.parametrize(
    "via",
    [
        "SIP/2.0/UDP 127.0.0.1:5099;maddr=127.0.0.9;branch=z9hG4bK-1",
        "SIP/2.0/UDP 127.0.0.1:5099;maddr=127.0.0.9;rport;branch=z9hG4bK-1",
        "SIP/2.0/UDP 127.0.0.1:5099;received=127.0.0.9;branch=z9hG4bK-1",
        "SIP/2.0/UDP 127.0.0.9:5099;maddr=127.0.0.9;received=127.0.0.9;rport=5099;branch=z9hG4bK-1",
    ],
    ids=["maddr", "maddr-rport", "forged-received", "everything"],
)
def test_a_datagram_naming_a_maddr_is_answered_at_its_source_only(net: Layer, via: str) -> None:
    """The reflector: a request whose Via names a victim (maddr, a received of its own) gets
    its response at the packet's source, nothing at the victim (docs/security.md)."""
    net.udp.receive(options(via=via), "127.0.0.1", 5099)
    [(request, source)] = net.handler.requests
    net.layer.send_response(make_response(request, 401, to_tag="t"), source)
    [(_, addr)] = sent_messages(net.udp)
    assert addr[0] == "127.0.0.1"


def test_response_reuses_the_request_connection() -> None:
    """§18.2.2: a request that came over a connection is answered over it."""
    source = Source("TCP", "192.0.2.1", 40000, "127.0.0.1", 5060, 7)
    assert route("SIP/2.0/TCP a.example;received=192.0.2.1", source) == Destination(
        "TCP", "192.0.2.1", 40000, 7
    )


def test_tcp_response_without_connection_uses_sent_by_port_not_rport() -> None:
    """RFC 3581 §4 rport applies to UDP; TCP goes to received and the sent-by port."""
    assert route("SIP/2.0/TCP a.example:5090;rport=40000;received=192.0.2.1") == Destination(
        "TCP", "192.0.2.1", 5090
    )


def test_send_response_over_udp_uses_received_and_rport(net: Layer) -> None:
    """A UDP response is written to the address RFC 3581 names."""
    net.udp.receive(
        options(via="SIP/2.0/UDP 10.0.0.9:5070;rport;branch=z9hG4bK-1"), "127.0.0.1", 5099
    )
    [(request, source)] = net.handler.requests
    net.layer.send_response(make_response(request, 200, to_tag="t"), source)
    [(response, addr)] = sent_messages(net.udp)
    assert addr == ("127.0.0.1", 5099)
    assert isinstance(response, Response) and response.status == 200


def test_send_response_over_the_open_connection(net: Layer) -> None:
    """A response to a TCP request goes back over that connection."""
    protocol, transport = accept_tcp(net.reactor, "127.0.0.1", 40001)
    protocol.dataReceived(options(via="SIP/2.0/TCP 10.0.0.9:5070;branch=z9hG4bK-1"))
    [(request, source)] = net.handler.requests
    assert source.transport == "TCP" and source.connection is not None
    net.layer.send_response(make_response(request, 200, to_tag="t"), source)
    reply = parse_message(transport.value())
    assert isinstance(reply, Response) and reply.status == 200
    assert net.reactor.tcpClients == []


def test_send_response_opens_a_connection_when_the_request_one_closed(net: Layer) -> None:
    """§18.2.2: the request's connection is gone: connect to received and the sent-by port."""
    protocol, transport = accept_tcp(net.reactor, "127.0.0.1", 40001)
    protocol.dataReceived(options(via="SIP/2.0/TCP 10.0.0.9:5070;branch=z9hG4bK-1"))
    [(request, source)] = net.handler.requests
    protocol.connectionLost(Failure(ConnectionDone()))
    net.layer.send_response(make_response(request, 200, to_tag="t"), source)
    assert net.reactor.tcpClients[0][:2] == ("127.0.0.1", 5070)
    _, new_transport = complete_connect(net.reactor)
    reply = parse_message(new_transport.value())
    assert isinstance(reply, Response) and reply.status == 200


def test_send_response_without_via_is_a_transport_error(net: Layer) -> None:
    """A response with no Via cannot be routed: TransportError."""
    with pytest.raises(TransportError):
        net.layer.send_response(Response(200, headers=[("Call-ID", "x")]))


# -- sending requests (RFC 3261 §18.1.1) ------------------------------------------------------


def outgoing(size: int = 0, via: str = "SIP/2.0/UDP placeholder;branch=z9hG4bK-out") -> Request:
    return Request(
        "OPTIONS",
        "sip:bob@127.0.0.1:5070",
        [
            ("Via", via),
            ("Max-Forwards", "70"),
            ("From", "<sip:daemon@example.test>;tag=d1"),
            ("To", "<sip:bob@127.0.0.1>"),
            ("Call-ID", "out@test"),
            ("CSeq", "1 OPTIONS"),
            ("X-Padding", "x" * size),
        ],
    )


def test_send_request_writes_our_sent_by_and_rport(net: Layer) -> None:
    """The top Via's sent-by becomes our address, with ;rport added (RFC 3581 §3)."""
    request = outgoing()
    net.layer.send_request(request, Destination("UDP", "127.0.0.1", 5070))
    [(sent, addr)] = sent_messages(net.udp)
    assert addr == ("127.0.0.1", 5070)
    via = sent.top_via
    assert (via.transport, via.host, via.port, via.branch) == (
        "UDP",
        "127.0.0.1",
        5060,
        "z9hG4bK-out",
    )
    assert via.rport is True


def test_send_request_keeps_an_rport_value(net: Layer) -> None:
    """An rport already present is not touched."""
    request = outgoing(via="SIP/2.0/UDP x;rport=1;branch=z9hG4bK-out")
    net.layer.send_request(request, Destination("UDP", "127.0.0.1", 5070))
    [(sent, _)] = sent_messages(net.udp)
    assert sent.top_via.rport == 1


def test_a_top_via_that_already_says_our_sent_by_and_rport_is_sent_as_it_is(net: Layer) -> None:
    """A Via the transaction layer wrote (our sent-by on that transport, with rport) is
    not written anew: the same parsed Via, the same text on the wire."""
    via = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-out;rport"
    request = outgoing(via=via)
    top = request.top_via
    net.layer.send_request(request, Destination("UDP", "127.0.0.1", 5070))
    [(sent, _)] = sent_messages(net.udp)
    assert request.top_via is top
    assert sent.headers.get_fields("Via") == [via]
    other = outgoing(via="SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-out;rport")
    net.layer.send_request(other, Destination("UDP", "127.0.0.1", 5070))
    [(sent, _)] = sent_messages(net.udp)
    assert sent.headers.get_fields("Via") == [via]


def test_large_udp_request_goes_over_tcp(net: Layer) -> None:
    """§18.1.1: a request over 1300 bytes for UDP goes over TCP, its Via saying TCP."""
    request = outgoing(size=UDP_MAX_REQUEST)
    net.layer.send_request(request, Destination("UDP", "127.0.0.1", 5070))
    assert net.udp.take() == []
    assert net.reactor.tcpClients[0][:2] == ("127.0.0.1", 5070)
    _, transport = complete_connect(net.reactor)
    sent = parse_message(transport.value())
    assert sent.top_via.transport == "TCP"


def test_tcp_request_reuses_an_open_connection_to_the_peer(net: Layer) -> None:
    """A TCP request to a peer we have a connection with goes over that connection."""
    _, transport = accept_tcp(net.reactor, "127.0.0.1", 40001)
    net.layer.send_request(outgoing(), Destination("TCP", "127.0.0.1", 40001))
    assert net.reactor.tcpClients == []
    assert parse_message(transport.value()).top_via.transport == "TCP"


def test_tcp_requests_wait_for_the_connection_being_opened(net: Layer) -> None:
    """Requests sent while a connection is being opened go out, in order, once it is up."""
    net.layer.send_request(outgoing(), Destination("TCP", "127.0.0.1", 5070))
    second = outgoing()
    second.headers.set("CSeq", "2 OPTIONS")
    net.layer.send_request(second, Destination("TCP", "127.0.0.1", 5070))
    assert len(net.reactor.tcpClients) == 1
    protocol, transport = complete_connect(net.reactor)
    data = transport.value()
    assert data.count(b"OPTIONS sip:bob@127.0.0.1:5070") == 2
    assert data.index(b"CSeq: 1 ") < data.index(b"CSeq: 2 ")


def test_failed_connect_is_logged_and_forgotten(net: Layer, log: LogCapture) -> None:
    """A connection that cannot be made drops its queue, logs the peer, and is retried later."""
    net.layer.send_request(outgoing(), Destination("TCP", "127.0.0.1", 5070))
    factory = net.reactor.tcpClients[0][2]
    factory.clientConnectionFailed(net.reactor.connectors[-1], Failure(ConnectionRefusedError()))
    assert any(e.get("peer") == "127.0.0.1:5070" for e in log.events)
    net.layer.send_request(outgoing(), Destination("TCP", "127.0.0.1", 5070))
    assert len(net.reactor.tcpClients) == 2


def test_send_request_on_a_disabled_transport_is_an_error(log: LogCapture) -> None:
    """Sending over a transport that is not enabled raises TransportError."""
    net = Layer(transports="udp")
    with pytest.raises(TransportError):
        net.layer.send_request(outgoing(), Destination("TCP", "127.0.0.1", 5070))


def test_datagram_to_a_host_name_is_an_error(net: Layer) -> None:
    """UDP sends to addresses only (RFC 3263 resolution is the caller's)."""
    with pytest.raises(TransportError):
        net.layer.send_request(outgoing(), Destination("UDP", "bob.example", 5070))


def test_datagram_across_address_families_is_an_error(log: LogCapture) -> None:
    """An IPv6 socket cannot send to an IPv4 address: TransportError, not a crash."""
    net = Layer(host="::1")
    with pytest.raises(TransportError):
        net.layer.send_request(outgoing(), Destination("UDP", "127.0.0.1", 5070))


# -- received responses (RFC 3261 §18.1.2) ----------------------------------------------------


def test_response_for_us_reaches_the_handler(net: Layer) -> None:
    """A response whose top Via is our sent-by goes to the handler."""
    net.udp.receive(response_bytes())
    assert [r.status for r, _ in net.handler.responses] == [200]


def test_response_not_for_us_is_dropped(net: Layer, log: LogCapture) -> None:
    """§18.1.2: a response whose top Via sent-by is not ours is discarded (and logged)."""
    net.udp.receive(response_bytes(via="SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bK-2"))
    net.udp.receive(response_bytes(via="SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-2"))
    assert net.handler.responses == []
    assert sum("sent_by" in e for e in log.events) == 2


# -- bad input over UDP ------------------------------------------------------------------------


def test_malformed_request_gets_a_stateless_400_with_to_tag(net: Layer) -> None:
    """A request the parser rejects gets its 400, with a To tag, where its Via says."""
    net.udp.receive(bad_header(options(via="SIP/2.0/UDP 10.0.0.9:5070;rport;branch=z9hG4bK-1")))
    [(response, addr)] = sent_messages(net.udp)
    assert isinstance(response, Response)
    assert response.status == 400 and "max-forwards" in response.reason.lower()
    assert response.to.tag
    assert addr == ("127.0.0.1", 5070)
    assert net.handler.requests == []


def test_stateless_error_to_tag_is_stable_across_retransmissions(net: Layer) -> None:
    """§8.2.7: a retransmitted bad request gets the same To tag."""
    bad = bad_header(options())
    net.udp.receive(bad)
    net.udp.receive(bad)
    tags = [response.to.tag for response, _ in sent_messages(net.udp)]
    assert len(tags) == 2 and tags[0] == tags[1]


def test_request_shorter_than_content_length_gets_400(net: Layer) -> None:
    """§18.3: a UDP request shorter than its Content-Length gets 400."""
    net.udp.receive(options(content_length="100"))
    [(response, _)] = sent_messages(net.udp)
    assert response.status == 400  # type: ignore[union-attr]


def test_bytes_after_content_length_are_ignored(net: Layer) -> None:
    """§18.3: octets after Content-Length in a datagram are discarded."""
    net.udp.receive(options() + b"INVITE sip:x SIP/2.0\r\n\r\n")
    [(request, _)] = net.handler.requests
    assert request.body == b""


def test_malformed_response_is_dropped_silently(net: Layer, log: LogCapture) -> None:
    """§18.3: a bad response is never answered; it is logged with the peer."""
    net.udp.receive(b"SIP/2.0 999999 Nope\r\nVia: SIP/2.0/UDP 127.0.0.1\r\n\r\n", "127.0.0.1", 6001)
    assert net.udp.take() == []
    assert any(e.get("peer") == "127.0.0.1:6001" and "reason" in e for e in log.events)


def test_garbage_without_via_is_dropped_and_logged(net: Layer, log: LogCapture) -> None:
    """Bytes with no readable Via cannot be answered: dropped, logged with peer and reason."""
    net.udp.receive(b"\x00\xff garbage\r\n\r\n", "127.0.0.1", 6002)
    assert net.udp.take() == []
    assert any(e.get("peer") == "127.0.0.1:6002" and "reason" in e for e in log.events)


@pytest.mark.parametrize("datagram", [b"", b"\r\n", b"\r\n\r\n", b" \t\r\n"])
def test_empty_and_whitespace_datagrams_are_ignored(
    net: Layer, log: LogCapture, datagram: bytes
) -> None:
    """An empty or whitespace-only datagram (a keep-alive) is ignored without a log line."""
    before = len(log.events)
    net.udp.receive(datagram)
    assert net.udp.take() == [] and net.handler.requests == []
    assert len(log.events) == before


def test_malformed_ack_is_never_answered(net: Layer) -> None:
    """§17.1.1.3: an ACK is never answered, not even a malformed one."""
    bad = options(extra="Max-Forwards: many\r\n").replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 ACK")
    net.udp.receive(bad.replace(b"OPTIONS sip:", b"ACK sip:"))
    assert net.udp.take() == []


def test_the_transport_is_connected_to_its_handler_once() -> None:
    """connect() gives a transport built without a handler its handler, and refuses to
    replace one it already has."""
    reactor = FakeReactor()
    layer = SIPTransportLayer(reactor, sip_config("127.0.0.1", 5060, "udp"))
    assert layer.handler is None
    handler = RecordingHandler()
    layer.connect(handler)
    assert layer.handler is handler
    with pytest.raises(RuntimeError, match="already connected"):
        layer.connect(RecordingHandler())
    assert layer.handler is handler


def test_a_failing_handler_does_not_break_the_socket() -> None:
    """An exception in the handler is logged as a failure, never raised into the reactor."""

    class Broken(RecordingHandler):
        def request_received(self, request: Request, source: object) -> None:
            raise RuntimeError("bug")

        def response_received(self, response: Response, source: object) -> None:
            raise RuntimeError("bug")

    with LogCapture() as log:
        net = Layer(handler=Broken())
        net.udp.receive(options())
        net.udp.receive(response_bytes())
    assert len(log.failures()) == 2
    # (each names the request's method or the response's status)
    assert [e["what"] for e in log.failures()] == ["OPTIONS", "200"]


# -- TCP framing, keep-alives, idle connections -----------------------------------------------


def test_tcp_message_fed_one_byte_at_a_time(net: Layer) -> None:
    """A TCP message arriving one byte per segment is handed over once, whole."""
    protocol, _ = accept_tcp(net.reactor)
    data = options(body=b"v=0\r\n", extra="Content-Type: application/sdp\r\n")
    for i in range(len(data)):
        protocol.dataReceived(data[i : i + 1])
    [(request, _)] = net.handler.requests
    assert request.body == b"v=0\r\n"


def test_several_tcp_messages_in_one_segment(net: Layer) -> None:
    """Several messages in one segment are all handed over, in order."""
    protocol, _ = accept_tcp(net.reactor)
    protocol.dataReceived(options(call_id="a") + options(call_id="b") + options(call_id="c")[:20])
    protocol.dataReceived(options(call_id="c")[20:])
    assert [r.call_id for r, _ in net.handler.requests] == ["a", "b", "c"]


def test_tcp_framing_loss_gets_400_and_closes(net: Layer) -> None:
    """A bad Content-Length on TCP loses framing: 400 if possible, then the connection closes."""
    protocol, transport = accept_tcp(net.reactor)
    protocol.dataReceived(options(content_length="five"))
    reply = parse_message(transport.value())
    assert isinstance(reply, Response) and reply.status == 400
    assert transport.disconnecting
    protocol.dataReceived(options())
    assert net.handler.requests == []


def test_tcp_missing_content_length_closes(net: Layer) -> None:
    """Content-Length is mandatory on streams (§20.14): without it the connection closes."""
    protocol, transport = accept_tcp(net.reactor)
    protocol.dataReceived(options().replace(b"Content-Length: 0\r\n", b""))
    assert transport.disconnecting


def test_tcp_malformed_but_framed_message_is_answered_and_the_stream_goes_on(net: Layer) -> None:
    """A well-framed bad request gets its 400; the next message on the stream is served."""
    protocol, transport = accept_tcp(net.reactor)
    protocol.dataReceived(bad_header(options()) + options(call_id="next"))
    assert parse_message(transport.value()).status == 400  # type: ignore[union-attr]
    assert [r.call_id for r, _ in net.handler.requests] == ["next"]
    assert not transport.disconnecting


def test_keepalive_ping_gets_a_pong(net: Layer) -> None:
    """RFC 5626 §4.4.1: CRLFCRLF between messages is answered with CRLF, even byte by byte."""
    protocol, transport = accept_tcp(net.reactor)
    protocol.dataReceived(b"\r\n\r\n")
    assert transport.value() == b"\r\n"
    for byte in b"\r\n\r\n":
        protocol.dataReceived(bytes([byte]))
    assert transport.value() == b"\r\n\r\n"
    protocol.dataReceived(b"\r\n" + options())
    assert len(net.handler.requests) == 1
    assert not transport.disconnecting


def test_stray_line_feed_before_a_ping_does_not_hide_it(net: Layer) -> None:
    """A stray LF or CR before CRLFCRLF is skipped; the ping still gets its pong."""
    protocol, transport = accept_tcp(net.reactor)
    protocol.dataReceived(b"\n\r\r\n\r\n")
    assert transport.value() == b"\r\n"


def test_idle_tcp_connection_is_closed(net: Layer) -> None:
    """A connection silent for the idle timeout is closed; traffic restarts the timer."""
    protocol, transport = accept_tcp(net.reactor)
    net.reactor.pump([STEP] * int(20 / STEP))
    protocol.dataReceived(b"\r\n\r\n")
    net.reactor.pump([STEP] * int(20 / STEP))
    assert not transport.disconnecting
    net.reactor.pump([STEP] * int(11 / STEP))
    assert transport.disconnecting


def test_a_message_sent_byte_by_byte_does_not_keep_the_connection_open(net: Layer) -> None:
    """
    Slow-loris: a byte every few seconds of a message that never ends is not traffic; the
    connection closes the idle timeout (30 s here) after its last complete message.
    """
    protocol, transport = accept_tcp(net.reactor)
    protocol.dataReceived(options(call_id="whole"))
    trickle = options(call_id="slow")
    for i in range(25):
        net.reactor.pump([STEP] * int(2 / STEP))
        if transport.disconnecting:
            break
        protocol.dataReceived(trickle[i : i + 1])
    assert transport.disconnecting
    assert net.reactor.seconds() <= 32
    assert [r.call_id for r, _ in net.handler.requests] == ["whole"]


def test_connections_beyond_the_per_source_cap_are_closed_unread(log: LogCapture) -> None:
    """
    [sip] max_connections_per_source: one more connection from an address that holds the
    most is refused before any read (counted, logged once a minute); another address and
    the trusted proxies are not limited; a closed connection frees its place.
    """
    reactor = FakeReactor()
    limit = ConnectionLimit(reactor, "sip-tcp", 3, NetworkSet.parse("127.0.0.9"))
    layer = SIPTransportLayer(
        reactor, sip_config(), RecordingHandler(), connection_limits={"TCP": limit}
    )
    layer.startService()
    factory = reactor.tcpServers[0][1]
    local = ip_address("TCP", "127.0.0.1", 5060)
    held = [accept_tcp(reactor, "127.0.0.2", 40000 + i) for i in range(3)]
    for i in range(5):
        assert factory.buildProtocol(ip_address("TCP", "127.0.0.2", 41000 + i)) is None
    assert (limit.refused, limit.open) == (5, {"127.0.0.2": 3})
    refusals = [e for e in log.events if e.get("log_namespace") == "clicktodial.connlimit"]
    assert [(e["listener"], e["peer"]) for e in refusals] == [("sip-tcp", "127.0.0.2")]
    other, other_transport = accept_tcp(reactor, "127.0.0.3", 40000)
    other.dataReceived(options(call_id="other"))
    assert [r.call_id for r, _ in layer.handler.requests] == ["other"]  # type: ignore[union-attr]
    for i in range(10):
        accept_tcp(reactor, "127.0.0.9", 42000 + i)  # a trusted front: no cap
    held[0][0].connectionLost(None)
    assert limit.open == {"127.0.0.2": 2, "127.0.0.3": 1}
    protocol = factory.buildProtocol(ip_address("TCP", "127.0.0.2", 43000))
    assert protocol is not None
    protocol.makeConnection(
        StringTransport(hostAddress=local, peerAddress=ip_address("TCP", "127.0.0.2", 43000))
    )
    assert limit.open["127.0.0.2"] == 3


def test_tcp_message_shorter_than_its_content_length_waits_then_closes(net: Layer) -> None:
    """RFC 4475 §3.1.2.2 over TCP: wait for the rest; close when none comes in time."""
    protocol, transport = accept_tcp(net.reactor)
    protocol.dataReceived(options(body=b"v=0\r\n", content_length="9999"))
    net.reactor.pump([STEP] * int(29 / STEP))
    assert transport.value() == b"" and not transport.disconnecting
    net.reactor.pump([STEP] * int(2 / STEP))
    assert transport.disconnecting
    assert net.handler.requests == []


def test_closed_connection_forgets_its_timer(net: Layer) -> None:
    """A connection that closed leaves no delayed call behind."""
    protocol, _ = accept_tcp(net.reactor)
    protocol.connectionLost(Failure(ConnectionDone()))
    assert net.reactor.getDelayedCalls() == []


def test_stateless_to_tag_depends_on_the_request() -> None:
    """Two different requests get different stateless To tags; the same one the same tag."""
    a = parse_message(options(call_id="a")).headers
    b = parse_message(options(call_id="b")).headers
    assert stateless_to_tag(a) == stateless_to_tag(a.copy())
    assert stateless_to_tag(a) != stateless_to_tag(b)


# -- no input makes the transport fail ----------------------------------------------------------

_SEED_MESSAGES = [options(), response_bytes(), options(body=b"v=0\r\n", content_length="5")]


@st.composite
def mangled_messages(draw: st.DrawFn) -> bytes:
    """A valid message with a few bytes replaced, inserted or cut off."""
    data = bytearray(draw(st.sampled_from(_SEED_MESSAGES)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["replace", "insert", "cut"]))
        byte = draw(st.sampled_from(b'\x00\r\n :;,<>"\\\xff0aZ'))
        if action == "replace" and position < len(data):
            data[position] = byte
        elif action == "insert":
            data.insert(position, byte)
        else:
            del data[position:]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=600), mangled_messages()))
def test_no_datagram_makes_the_transport_fail(datagram: bytes) -> None:
    """Whatever a datagram holds, nothing raises and nothing logs a failure."""
    with LogCapture() as log:
        net = Layer()
        net.udp.receive(datagram)
    assert log.failures() == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=200), mangled_messages()), max_size=4))
def test_no_stream_makes_the_transport_fail(segments: list[bytes]) -> None:
    """Whatever arrives on a TCP connection, nothing raises and nothing logs a failure."""
    with LogCapture() as log:
        net = Layer()
        protocol, _ = accept_tcp(net.reactor)
        for segment in segments:
            protocol.dataReceived(segment)
    assert log.failures() == []


# -- flows: connections kept while a binding uses them, bounded closes, send failures ---------


def registered_over(net: Layer, peer_port: int = 40001) -> tuple[Source, object, object]:
    """A connection from 127.0.0.1:``peer_port`` that carried a request; its Source."""
    protocol, transport = accept_tcp(net.reactor, "127.0.0.1", peer_port)
    protocol.dataReceived(options(via="SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-r"))
    source = net.handler.requests[-1][1]
    return source, protocol, transport


def test_layer_provides_the_flow_keeper_interface(net: Layer) -> None:
    """SIPTransportLayer provides IFlowKeeper (the registrar's seam), Flow-Timer from config."""
    assert verifyObject(IFlowKeeper, net.layer)
    assert net.layer.flow_timer == 120


def test_a_connection_a_binding_uses_stays_open_while_silent(net: Layer) -> None:
    """
    keep_flow pins the connection: silent past the idle timeout (30 s here) it stays open
    until the binding's expiry plus flow_keep_margin (60 s), then it is closed.
    """
    source, _, transport = registered_over(net)
    net.layer.keep_flow(source, "sip:alice@example.test", net.reactor.seconds() + 100)
    net.reactor.pump([1.0] * 159)
    assert not transport.disconnecting  # type: ignore[attr-defined]
    net.reactor.pump([1.0] * 2)
    assert transport.disconnecting  # type: ignore[attr-defined]


def test_a_de_register_releases_the_connection(net: Layer) -> None:
    """A keep_flow with a time already past (a de-REGISTER) lets the idle timeout close it."""
    source, _, transport = registered_over(net)
    net.layer.keep_flow(source, "sip:alice@example.test", net.reactor.seconds() + 600)
    net.layer.keep_flow(source, "sip:alice@example.test", net.reactor.seconds())
    net.reactor.pump([1.0] * 31)
    assert transport.disconnecting  # type: ignore[attr-defined]


def test_each_aor_holds_the_connection_on_its_own(net: Layer) -> None:
    """Two AORs registered over one connection: one de-registering leaves the other's hold."""
    source, _, transport = registered_over(net)
    now = net.reactor.seconds()
    net.layer.keep_flow(source, "sip:alice@example.test", now + 600)
    net.layer.keep_flow(source, "sip:bob@example.test", now + 600)
    net.layer.keep_flow(source, "sip:alice@example.test", now)
    net.reactor.pump([1.0] * 300)
    assert not transport.disconnecting  # type: ignore[attr-defined]


def test_keep_flow_ignores_datagram_sources(net: Layer) -> None:
    """A UDP source has no connection to keep: nothing happens, nothing fails."""
    net.layer.keep_flow(Source("UDP", "127.0.0.1", 5070, "127.0.0.1", 5060), "a", 1e12)


def test_the_idle_close_log_names_the_transport(net: Layer, log: LogCapture) -> None:
    """The idle close says TCP for TCP (and TLS for TLS: transport_name)."""
    accept_tcp(net.reactor)
    net.reactor.pump([1.0] * 31)
    [event] = [e for e in log.events if "closing idle" in e.get("log_format", "")]
    assert event["transport"] == "TCP"


def test_a_closing_connection_leaves_routing_at_once(net: Layer) -> None:
    """
    Once closing (idle), a request to that peer is not written to it (a TLS connection
    waiting for close_notify would swallow it): a new connection is opened instead.
    """
    _, transport = accept_tcp(net.reactor, "127.0.0.1", 40001)
    net.reactor.pump([1.0] * 31)
    assert transport.disconnecting
    net.layer.send_request(outgoing(), Destination("TCP", "127.0.0.1", 40001))
    assert transport.value() == b""
    assert net.reactor.tcpClients[0][:2] == ("127.0.0.1", 40001)


def test_a_close_the_peer_never_completes_is_aborted(net: Layer, log: LogCapture) -> None:
    """A graceful close (TLS close_notify) not done after stream_close_timeout is aborted."""
    _, transport = accept_tcp(net.reactor)
    net.reactor.pump([1.0] * 31)
    assert transport.disconnecting and not transport.disconnected
    net.reactor.pump([1.0] * 5)
    assert transport.disconnected
    assert any("aborting" in e.get("log_format", "") for e in log.events)


def test_a_request_arriving_while_closing_is_handed_over(net: Layer) -> None:
    """A complete request that arrives before the close is done is not dropped."""
    protocol, transport = accept_tcp(net.reactor)
    net.reactor.pump([1.0] * 31)
    assert transport.disconnecting
    protocol.dataReceived(options(call_id="late"))
    assert [r.call_id for r, _ in net.handler.requests] == ["late"]


@implementer(ISendFailureHandler)
class FailureRecorder(RecordingHandler):
    """A message handler that also keeps the send failures it is told of."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: list[tuple[Request, Destination, str]] = []

    def request_failed(self, request: Request, destination: Destination, reason: str) -> None:
        self.failed.append((request, destination, reason))


def test_a_refused_connection_reports_its_requests_to_the_handler(log: LogCapture) -> None:
    """RFC 3261 §17.1.4: the requests queued for a connection that fails are reported."""
    handler = FailureRecorder()
    net = Layer(handler=handler)
    assert verifyObject(ISendFailureHandler, handler)
    request = outgoing()
    net.layer.send_request(request, Destination("TCP", "127.0.0.1", 5070))
    assert handler.failed == []
    factory = net.reactor.tcpClients[0][2]
    factory.clientConnectionFailed(net.reactor.connectors[-1], Failure(ConnectionRefusedError()))
    [(failed, destination, reason)] = handler.failed
    assert failed is request
    assert destination == Destination("TCP", "127.0.0.1", 5070)
    assert "refused" in reason.lower()


def test_a_dead_flow_is_reopened_at_the_contact_port(net: Layer) -> None:
    """
    A flow's connection (from an ephemeral port) is gone: connect to the same host at
    reconnect_port (the Contact's), not the ephemeral port.
    """
    net.layer.send_request(outgoing(), Destination("TCP", "127.0.0.1", 40001, reconnect_port=5070))
    assert [c[:2] for c in net.reactor.tcpClients] == [("127.0.0.1", 5070)]


def test_a_live_flow_is_used_despite_a_reconnect_port(net: Layer) -> None:
    """While the phone's connection is open, requests go over it."""
    _, transport = accept_tcp(net.reactor, "127.0.0.1", 40001)
    net.layer.send_request(outgoing(), Destination("TCP", "127.0.0.1", 40001, reconnect_port=5070))
    assert net.reactor.tcpClients == []
    assert transport.value().startswith(b"OPTIONS")


def test_a_dead_outbound_flow_is_not_reopened(net: Layer) -> None:
    """RFC 5626 §5.3: a gone outbound flow is a transport error (430 semantics), no connect."""
    with pytest.raises(TransportError, match="flow"):
        net.layer.send_request(
            outgoing(), Destination("TCP", "127.0.0.1", 40001, reconnect_port=NO_RECONNECT)
        )
    assert net.reactor.tcpClients == []


def test_expired_holds_of_a_busy_connection_are_dropped(net: Layer) -> None:
    """A connection that never goes idle keeps no more expired holds than it must."""
    source, protocol, _ = registered_over(net)
    now = net.reactor.seconds()
    for n in range(100):
        net.layer.keep_flow(source, f"sip:u{n}@example.test", now + 1)
    for _ in range(5):  # 100 s, never idle: a ping every 20 s
        net.reactor.advance(20)
        protocol.dataReceived(b"\r\n\r\n")  # type: ignore[attr-defined]
    net.layer.keep_flow(source, "sip:last@example.test", net.reactor.seconds() + 600)
    connection = net.layer._connections[source.connection]  # type: ignore[index]
    assert list(connection.pins) == ["sip:last@example.test"]


# -- the datagram send path over a real socket handle --------------------------------------


class _RecordingSocket:
    """A UDP socket stand-in: records sendto, or raises ``OSError(error)``."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.error: int | None = None

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        self.sent.append((data, addr))
        return len(data)


@implementer(ISystemHandle)
class _SocketPort(FakeDatagramPort):
    """A datagram port with a system handle (as Twisted's udp.Port has); write() is not
    what the transport uses then."""

    def __init__(self, protocol: Any, host: str, port: int) -> None:
        super().__init__(protocol, host, port)
        self.socket = _RecordingSocket()

    def getHandle(self) -> Any:
        return self.socket

    def write(self, datagram: bytes, addr: tuple[str, int]) -> None:
        raise AssertionError("the socket's sendto is used when there is one")


class _SocketReactor(FakeReactor):
    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> _SocketPort:
        udp = _SocketPort(protocol, interface or "0.0.0.0", port or 40000)
        self.udp_ports.append(udp)
        return udp


def _socket_layer() -> tuple[SIPTransportLayer, _RecordingSocket, Response, Source]:
    handler = RecordingHandler()
    reactor = _SocketReactor()
    layer = SIPTransportLayer(reactor, sip_config(), handler, tcp_idle_timeout=30.0)
    layer.startService()
    port = reactor.udp_ports[0]
    assert isinstance(port, _SocketPort)
    port.receive(options(via="SIP/2.0/UDP 10.0.0.9:5070;rport;branch=z9hG4bK-1"), "127.0.0.1", 5099)
    [(request, source)] = handler.requests
    return layer, port.socket, make_response(request, 200, to_tag="t"), source


def test_datagrams_go_through_the_socket_handle_when_the_port_has_one() -> None:
    """With a system handle (Twisted's udp.Port), a datagram is the socket's sendto to the
    address RFC 3581 names, the same octets port.write would get."""
    layer, sock, response, source = _socket_layer()
    layer.send_response(response, source)
    [(data, addr)] = sock.sent
    assert addr == ("127.0.0.1", 5099)
    assert parse_message(data) == response


def test_a_refused_datagram_is_not_an_error_as_with_port_write() -> None:
    """ECONNREFUSED on the unconnected socket is ignored, as Twisted's udp.Port.write does."""
    layer, sock, response, source = _socket_layer()
    sock.error = errno.ECONNREFUSED
    layer.send_response(response, source)


@pytest.mark.parametrize(
    ("error", "says"), [(errno.EMSGSIZE, "message too long"), (errno.EAGAIN, "cannot send to")]
)
def test_a_datagram_the_socket_cannot_send_is_a_transport_error(error: int, says: str) -> None:
    """EMSGSIZE (as port.write's MessageLengthError) and any other socket error, EAGAIN
    included, are a TransportError for the caller."""
    layer, sock, response, source = _socket_layer()
    sock.error = error
    with pytest.raises(TransportError, match=says):
        layer.send_response(response, source)
