"""
clicktodial.web.site.BoundedSite: a request must arrive whole within [web] request_timeout
(slow-loris: a request sent a byte at a time does not hold the connection).
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from clicktodial.web.site import BoundedSite

STEP = 0.5


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return b"hello"


class _Stream(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> object:
        request.write(b"data: 1\n\n")
        return NOT_DONE_YET


def _open(clock: Clock) -> tuple[object, StringTransport]:
    root = Resource()
    root.putChild(b"hello", _Hello())
    root.putChild(b"events", _Stream())
    site = BoundedSite(root, clock, request_timeout=30)
    site.doStart()  # as listening does: the access log works from here
    peer = IPv4Address("TCP", "127.0.0.2", 40000)
    channel = site.buildProtocol(peer)
    assert channel is not None
    transport = StringTransport(peerAddress=peer)
    channel.makeConnection(transport)
    return channel, transport


def test_a_request_sent_a_byte_at_a_time_is_cut_off_at_the_request_timeout() -> None:
    clock = Clock()
    channel, transport = _open(clock)
    head = b"GET /hello HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
    for i in range(len(head)):
        clock.advance(STEP)
        if transport.disconnecting:
            break
        channel.dataReceived(head[i : i + 1])  # type: ignore[attr-defined]
    assert transport.disconnecting
    assert clock.seconds() <= 30 + STEP


def test_a_connection_that_sends_nothing_is_closed_at_the_request_timeout() -> None:
    clock = Clock()
    _, transport = _open(clock)
    clock.pump([STEP] * int(29 / STEP))
    assert not transport.disconnecting
    clock.pump([STEP] * 4)
    assert transport.disconnecting


def test_keep_alive_requests_each_get_the_full_time_and_idle_keep_alive_ends() -> None:
    clock = Clock()
    channel, transport = _open(clock)
    for _ in range(3):
        clock.pump([STEP] * int(20 / STEP))
        channel.dataReceived(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[attr-defined]
        assert transport.value().endswith(b"hello")
        assert not transport.disconnecting
        transport.clear()
    clock.pump([STEP] * int(31 / STEP))
    assert transport.disconnecting


def test_a_streamed_response_is_not_cut_off() -> None:
    """An event stream: the request arrived whole; the answer may last."""
    clock = Clock()
    channel, transport = _open(clock)
    channel.dataReceived(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[attr-defined]
    clock.pump([STEP] * int(120 / STEP))
    assert not transport.disconnecting
    assert b"data: 1" in transport.value()
