"""
The SIP transport layer (RFC 3261 §18, RFC 3581, RFC 5626 §4.4.1): UDP, TCP and TLS
sockets (TLS: TCP framing over the ``[sip] tls_listen`` TLS listener, RFC 3261 §26.2).

It turns bytes into messages and messages into bytes, and nothing above it sees a socket:

- received requests get the top Via's ``received``/``rport`` stamped (§18.2.1, RFC 3581 §4)
  and go to the :class:`~clicktodial.interfaces.IMessageHandler` with their :class:`Source`;
- received responses whose top Via is not ours are dropped (§18.1.2);
- a request that cannot be parsed gets its 4xx statelessly when its Via can be read, and is
  dropped (logged) otherwise; a bad response is dropped (§18.3); nothing raises out of
  ``datagramReceived``/``dataReceived``;
- on TCP, messages are framed by Content-Length; when framing is lost the connection gets a
  400 (if it is a request we could read) and is closed; idle connections are closed unless
  a binding registered over them still lives (:meth:`SIPTransportLayer.keep_flow`); a close
  is bounded in time (a TLS peer that never answers ``close_notify`` is aborted);
  ``CRLFCRLF`` keep-alive pings are answered with ``CRLF`` (RFC 5626 §4.4.1);
- a stream connection that cannot be opened is reported to the handler when it provides
  :class:`~clicktodial.interfaces.ISendFailureHandler` (the transaction layer does, and
  what sits in front of it forwards), so that the request's client transaction fails at once
  (RFC 3261 §17.1.4);
- responses are routed by §18.2.2 and RFC 3581 (:func:`response_destination`).

Time is read from the injected reactor; there is no global reactor here.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import hmac
import ipaddress
import itertools
import os
import socket
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

import attrs
from twisted.application.service import Service
from twisted.internet import defer, ssl
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError, MessageLengthError
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IDelayedCall,
    IListeningPort,
    IReactorSocket,
    IReactorSSL,
    IReactorTCP,
    IReactorTime,
    IReactorUDP,
    ISystemHandle,
)
from twisted.internet.protocol import (
    ClientFactory,
    DatagramProtocol,
    Protocol,
    ServerFactory,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from clicktodial.config import SipConfig
from clicktodial.connlimit import ConnectionLimit
from clicktodial.netaddr import ip_of
from clicktodial.sip import banfilter
from clicktodial.sip.address import (
    NO_RECONNECT,
    Destination,
    Source,
    default_port,
    format_host_port,
)
from clicktodial.sip.headers import HeaderParseError, Via, parse_name_addr, parse_via
from clicktodial.sip.interfaces import (
    IFlowKeeper,
    IMessageHandler,
    ISendFailureHandler,
    ISIPTap,
    ISIPTransport,
    ISourceLimit,
)
from clicktodial.sip.message import Headers, Request, Response
from clicktodial.sip.parser import FramingError, MessageParseError, StreamParser, parse_message

__all__ = [
    "AdoptedSockets",
    "DEFAULT_TCP_IDLE_TIMEOUT",
    "NO_RECONNECT",
    "Destination",
    "SIPTransportLayer",
    "Source",
    "TransportError",
    "UDP_MAX_REQUEST",
    "error_response",
    "response_destination",
    "stamp_received",
    "stateless_to_tag",
]

log = Logger(namespace="clicktodial.sip.transport")

#: RFC 3261 §18.1.1: a request larger than 1300 bytes (path MTU unknown) MUST go over a
#: congestion-controlled transport such as TCP.
UDP_MAX_REQUEST = 1300

#: Seconds a TCP connection that carries no binding may carry nothing before we close it.
#: RFC 5626 clients ping every 95-120 s (§4.4.1), so a flow kept alive by its client survives.
DEFAULT_TCP_IDLE_TIMEOUT = 300.0

#: RFC 5626 §3.5.1: the "double CRLF" keep-alive ping and its single-CRLF pong.
_PING = b"\r\n\r\n"
_PONG = b"\r\n"

# linux/sock_diag.h: SO_MEMINFO gives u32 counters; SK_MEMINFO_DROPS is the 9th.
_SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)
_SK_MEMINFO_DROPS = 8
_MEMINFO_SIZE = 4 * (_SK_MEMINFO_DROPS + 1)

#: Holds (AORs) on one connection above which expired ones are dropped at each keep_flow.
_PRUNE_PINS_ABOVE = 64

_SUPPORTED = ("UDP", "TCP", "TLS")
_STREAMS = frozenset(["TCP", "TLS"])


class TransportError(Exception):
    """A message cannot be sent: no such transport, no usable address, a socket error."""


# -- pure helpers -------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def normalize_host(host: str) -> str:
    """An IP address in canonical text (IPv4-mapped IPv6 as IPv4, no brackets); a name lower."""
    # Memoized: every datagram's source goes through it, and ipaddress parsing cost about
    # 8 % of the daemon's CPU under REGISTER load (docs/benchmarks.md).
    address = ip_of(host)
    return host.strip("[]").lower() if address is None else address.compressed


def _what(message: Request | Response) -> str:
    """A message as the logs name it: its method, or its status code."""
    return message.method if isinstance(message, Request) else str(message.status)


def _host_port(address: IAddress) -> tuple[str, int]:
    if isinstance(address, (IPv4Address, IPv6Address)):
        return normalize_host(address.host), address.port
    return str(address), 0


def stamp_received(headers: Headers, source: Source) -> None:
    """
    Stamp the top Via of a received request with where it really came from.

    RFC 3261 §18.2.1: add ``received`` when the sent-by host is a name or an address other
    than the packet's source. RFC 3581 §4: when ``rport`` is present without a value, fill
    it with the source port and add ``received`` even if it equals the sent-by. A
    ``received`` the sender wrote that is not the source address is replaced by it.

    :raises HeaderParseError: the request has no readable Via.
    """
    text = headers.get("Via")
    if text is None:
        raise HeaderParseError("missing Via header")
    via = parse_via(text)[0]
    rport_empty = "rport" in via.params and via.params["rport"] is None
    sent_by = ip_of(via.host)
    source_ip = ip_of(source.remote_host)
    changed = False
    if rport_empty:
        via.params["rport"] = str(source.remote_port)
        changed = True
    # A received= the sender wrote itself is replaced too: responses are routed by it
    # (response_destination), and only the packet's source may say where it came from.
    forged = "received" in via.params and ip_of(via.params["received"] or "") != source_ip
    if rport_empty or forged or sent_by is None or sent_by != source_ip:
        # normalize_host is source_ip.compressed, memoized (ipaddress builds it each time).
        remote = source.remote_host
        received = normalize_host(remote) if source_ip is not None else remote
        if via.params.get("received") != received:
            via.params["received"] = received
            changed = True
    if changed:
        headers.replace_top_via(via)


def response_destination(via: Via, source: Source | None = None) -> Destination:
    """
    Where a response whose top Via is ``via`` goes (RFC 3261 §18.2.2, RFC 3581 §4), never
    to a host other than the request's source.

    1. The request came over a connection (``source.connection``): back over it, if it is
       still open (the transport falls back to the address otherwise).
    2. Otherwise to the request's source host (``source``, or the ``received`` that
       :func:`stamp_received` wrote from it); over UDP to the source port when the Via has
       ``rport`` (RFC 3581 §4), otherwise the sent-by port or the default port.
    3. Without either (a Via that was never stamped), the sent-by host and port.

    ``maddr`` is never used, a deliberate deviation from §18.2.2: anyone can write it, and
    obeying it would make the daemon send its responses (a 401 is larger than the
    REGISTER that asks for it) and their retransmissions to any host: a reflector
    (docs/security.md). Multicast responses are not a use anyone has for SIP; Kamailio
    answers to the source as well.
    """
    transport = via.transport.upper()
    sent_by_port = via.port or default_port(transport)
    if source is not None and source.connection is not None:
        return Destination(
            source.transport, source.remote_host, source.remote_port, source.connection
        )
    if source is not None:
        host, port = source.remote_host, sent_by_port
        if transport == "UDP" and source.transport == "UDP" and "rport" in via.params:
            port = source.remote_port
        return Destination(transport, host, port)
    received = via.received
    if received:
        port = sent_by_port
        rport = via.rport
        # rport is True (present, no value) or an int; bool is an int subclass.
        if transport == "UDP" and rport is not None and rport is not True:
            port = int(rport)
        return Destination(transport, received.strip("[]"), port)
    return Destination(transport, via.host, sent_by_port)


_TAG_SECRET = os.urandom(16)


def stateless_to_tag(headers: Headers) -> str:
    """
    The To tag a stateless UAS puts on its response to the request carrying ``headers``.

    RFC 3261 §8.2.7: a stateless UAS must give a retransmitted request the same To tag, so
    the tag is a keyed hash of what identifies the request (top Via, From, Call-ID, CSeq)
    instead of a random value.
    """
    text = "\0".join(headers.get(name) or "" for name in ("Via", "From", "Call-ID", "CSeq")).encode(
        "utf-8", "surrogateescape"
    )
    return hmac.new(_TAG_SECRET, text, hashlib.sha256).hexdigest()[:16]


def _with_to_tag(to: str, tag: str) -> str:
    try:
        has_tag = parse_name_addr(to).tag is not None
    except HeaderParseError:
        # A To we cannot read: tag it anyway unless it seems to carry one already.
        has_tag = ";tag=" in to.lower().replace(" ", "")
    return to if has_tag else f"{to};tag={tag}"


_ERROR_RESPONSE_FIELDS = frozenset(["Via", "From", "To", "Call-ID", "CSeq"])


def error_response(error: MessageParseError) -> Response | None:
    """
    The stateless response to a request the parser rejected, or ``None`` when there is none.

    Built from the Via/From/To/Call-ID/CSeq fields the parser could read (RFC 3261 §8.2.6),
    with a To tag. ``None`` for a response (never answered, §18.3), a message to drop, an
    ACK (never answered, §17.1.1.3) and a request without a Via. A Via that cannot be parsed
    is echoed as it came (the transport then answers the packet's source).
    """
    headers = error.partial_headers
    if not error.is_request or error.status is None or headers is None:
        return None
    if "Via" not in headers:
        return None
    cseq = headers.get("CSeq") or ""
    if cseq.split()[-1:] == ["ACK"]:
        return None
    tag = stateless_to_tag(headers)
    fields = []
    seen = set()
    for name, value in headers:
        if name not in _ERROR_RESPONSE_FIELDS:
            continue
        if name != "Via":
            # The bad request may repeat a field that must appear once: answer with the first.
            if name in seen:
                continue
            seen.add(name)
        fields.append((name, _with_to_tag(value, tag) if name == "To" else value))
    return Response(error.status, error.reason, fields)


def _with_salvaged_headers(error: MessageParseError, head: bytes) -> MessageParseError:
    """
    ``error`` with the Via/From/To/Call-ID/CSeq of the message whose framing was lost,
    read from ``head`` as if it were a datagram, so that it can get its 400.
    """
    if error.partial_headers is not None or not error.is_request:
        return error
    try:
        message = parse_message(head)
    except MessageParseError as e:
        headers = e.partial_headers
    else:
        headers = message.headers if isinstance(message, Request) else None
    return MessageParseError(
        error.detail, error.status, is_request=error.is_request, partial_headers=headers
    )


def _set_buffer_size(port: IListeningPort, size: int) -> None:
    """
    Ask for ``size``-byte receive and send buffers on a UDP port's socket, so that a burst
    of datagrams waits in the kernel instead of being dropped. Linux caps the size at
    ``net.core.rmem_max``/``wmem_max`` without an error: the size obtained is logged.
    """
    handle = ISystemHandle(port, None)
    if handle is None:
        return  # not a real socket (tests)
    sock = cast(socket.socket, handle.getHandle())
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    except OSError as e:
        log.warn("cannot set the UDP buffer size to {size}: {error}", size=size, error=str(e))
        return
    log.info(
        "UDP buffers: receive {receive} bytes, send {send} bytes (asked for {size})",
        receive=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        send=sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        size=size,
    )


class _KernelBanFilter:
    """
    Keeps the UDP socket's kernel filter (:mod:`clicktodial.sip.banfilter`) equal to the
    sources the rate limit has banned: refreshed at each ban and when the earliest ban ends;
    no filter at all while nobody is banned. Where the system refuses socket filters, it
    says so once and banned sources are dropped in the daemon (one look-up a datagram).
    """

    def __init__(self, clock: IReactorTime, limit: ISourceLimit, sock: socket.socket) -> None:
        self.clock = clock
        self.limit = limit
        self.sock = sock
        self.enabled = True
        self.attached = False
        self._call: IDelayedCall | None = None

    def refresh(self) -> None:
        self.stop()
        if not self.enabled:
            return
        banned = self.limit.banned()
        try:
            if banned:
                # The latest bans first: past banfilter.MAX_SOURCES the oldest stay out.
                newest = sorted(banned, key=banned.__getitem__, reverse=True)
                banfilter.attach(self.sock, banfilter.program(newest))
            elif self.attached:
                banfilter.detach(self.sock)
        except OSError as e:
            self.enabled = False
            log.warn(
                "cannot drop banned sources in the kernel ({error}): the daemon drops them",
                error=str(e),
            )
            return
        self.attached = bool(banned)
        if banned:
            delay = max(0.0, min(banned.values()) - self.clock.seconds())
            self._call = self.clock.callLater(delay, self.refresh)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


# -- protocols ------------------------------------------------------------------------------


class _DatagramProtocol(DatagramProtocol):
    """
    One UDP socket: counts every datagram against its source's rate limit before anything
    else (a banned source's datagram is dropped there), hands the others to the layer,
    never raises.
    """

    def __init__(self, layer: SIPTransportLayer) -> None:
        self.layer = layer
        #: our (host, port), read once: the socket's address does not change while it listens
        self.local: tuple[str, int] | None = None
        limit = layer.source_limit
        self._allow = None if limit is None else limit.allow

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        try:
            # Before parsing, so that garbage counts too and a flood from a banned source
            # costs one dictionary look-up per datagram, not a parse.
            allow = self._allow
            if allow is not None and not allow(addr[0]):
                return
            if not datagram.strip():
                return  # an empty or whitespace datagram (e.g. a CRLF keep-alive) means nothing
            local = self.local
            if local is None:
                local = self.local = _host_port(self.transport.getHost())  # type: ignore[union-attr]
            source = Source("UDP", normalize_host(addr[0]), addr[1], local[0], local[1])
            layer = self.layer
            try:
                message = parse_message(datagram)
            except MessageParseError as e:
                layer._rejected(e, source)
                return
            layer._message_received(message, source)
        except Exception:
            # A bug, not bad input (bad input is handled below): keep the socket serving.
            log.failure("error handling a datagram", peer=format_host_port(*addr[:2]))


class _StreamProtocol(Protocol):
    """
    One TCP or TLS connection, accepted or opened by us: frames messages by Content-Length,
    answers keep-alive pings, closes itself when idle (unless a binding keeps it: ``pins``)
    or when framing is lost.
    """

    source: Source
    _idle_call: IDelayedCall | None = None
    _abort_call: IDelayedCall | None = None

    def __init__(
        self,
        layer: SIPTransportLayer,
        pending: _StreamClientFactory | None = None,
        transport_name: str = "TCP",
    ) -> None:
        self.layer = layer
        #: "TCP", or "TLS" for a connection of the TLS listener (same framing, RFC 3261 §18)
        self.transport_name = transport_name
        #: for a connection we open: the factory holding what waits to be sent on it
        self.pending = pending
        self.parser = StreamParser()
        # CR/LF bytes seen between messages: a keep-alive ping in progress.
        self._between = b""
        # The bytes the parser is holding (a message not complete yet).
        self._unframed = bytearray()
        #: close() was called: out of routing, waiting for the close to complete
        self._closing = False
        #: the stream cannot be parsed any more: what follows is dropped
        self._framing_lost = False
        #: AOR -> POSIX time (margin included) until which its bindings keep us open
        self.pins: dict[str, float] = {}

    def connectionMade(self) -> None:
        peer_host, peer_port = _host_port(self.transport.getPeer())  # type: ignore[union-attr]
        local_host, local_port = _host_port(self.transport.getHost())  # type: ignore[union-attr]
        key = next(self.layer._connection_keys)
        self.source = Source(self.transport_name, peer_host, peer_port, local_host, local_port, key)
        self.layer._connection_made(self)
        self._touch()

    def connectionLost(self, reason: Failure | None = None) -> None:
        for call in (self._idle_call, self._abort_call):
            if call is not None and call.active():
                call.cancel()
        self._idle_call = self._abort_call = None
        if hasattr(self, "source"):
            self.layer._connection_lost(self)

    def write(self, data: bytes) -> None:
        """Send ``data`` on this connection and restart the idle timer."""
        self.transport.write(data)  # type: ignore[union-attr]
        self._touch()

    def close(self) -> None:
        """
        Close the connection after what was written has gone; abort it if that takes
        longer than the layer's ``close_timeout``.

        It leaves routing at once: nothing more is written to it (a TLS connection waiting
        for the peer's ``close_notify`` would swallow what we write). A request that still
        arrives before the close completes is handed over (its response takes the Via's
        route, §18.2.2).
        """
        if self._closing:
            return
        self._closing = True
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
        if hasattr(self, "source"):
            self.layer._connection_closing(self)
        self.transport.loseConnection()  # type: ignore[union-attr]
        # Twisted's TLS close waits, without limit, for the peer's close_notify, which some
        # phones (libre: baresip) never send.
        self._abort_call = self.layer.clock.callLater(self.layer.close_timeout, self._abort)

    def _abort(self) -> None:
        self._abort_call = None
        log.info(
            "aborting {transport} connection from {peer}: not closed after {seconds} s",
            transport=self.transport_name,
            peer=self.source.peer,
            seconds=self.layer.close_timeout,
        )
        # Every stream transport Twisted makes (TCP, TLS) has abortConnection, though
        # ITransport does not declare it.
        self.transport.abortConnection()  # type: ignore[union-attr]

    def _touch(self) -> None:
        timeout = self.layer.tcp_idle_timeout
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.reset(timeout)
        elif not self._closing:
            self._idle_call = self.layer.clock.callLater(timeout, self._idle)

    def _idle(self) -> None:
        self._idle_call = None
        now = self.layer.clock.seconds()
        pins = self.pins
        for aor in [aor for aor, until in pins.items() if until <= now]:
            del pins[aor]
        if pins:
            # A binding lives over this connection: it is the phone's way in (RFC 5626 §5.3).
            self._idle_call = self.layer.clock.callLater(max(pins.values()) - now, self._idle)
            return
        log.info(
            "closing idle {transport} connection from {peer}",
            transport=self.transport_name,
            peer=self.source.peer,
        )
        self.close()

    def dataReceived(self, data: bytes) -> None:
        try:
            self._data_received(data)
        except Exception:
            log.failure(
                "error handling {transport} data",
                transport=self.transport_name,
                peer=self.source.peer,
            )
            self._framing_lost = True
            self.close()

    def _data_received(self, data: bytes) -> None:
        if self._framing_lost:
            return
        # Only a complete message (or a keep-alive ping, answered by write) restarts the
        # idle timer: a message sent a byte at a time (slow-loris) does not keep the
        # connection open past stream_idle_timeout.
        if not self.parser.buffered:
            data = self._keepalives(data)
            if not data:
                return
        while not self._framing_lost:
            # Mirror what the parser holds: when framing is lost, the head of the offending
            # message is there, to build its 400 from. A bytearray, trimmed after each feed,
            # so that a message arriving byte by byte costs linear time.
            self._unframed += data
            try:
                messages = self.parser.feed(data)
            except FramingError as e:
                head = bytes(self._unframed[len(self._unframed) - self.parser.buffered :])
                self.layer._rejected(
                    _with_salvaged_headers(e, head), self.source, via_connection=self
                )
                log.info(
                    "closing {transport} connection from {peer}: {reason}",
                    transport=self.transport_name,
                    peer=self.source.peer,
                    reason=e.reason,
                )
                self._framing_lost = True
                self.close()
                return
            except MessageParseError as e:
                # Framing is intact: answer it and go on with the bytes after it.
                self._trim()
                self.layer._rejected(e, self.source, via_connection=self)
                data = b""
                continue
            self._trim()
            if not messages:
                return
            self._touch()
            for message in messages:
                self.layer._message_received(message, self.source)
            data = b""

    def _trim(self) -> None:
        del self._unframed[: len(self._unframed) - self.parser.buffered]

    def _keepalives(self, data: bytes) -> bytes:
        """
        Take CR/LF bytes before a message off ``data``; answer each ``CRLFCRLF`` ping with
        a ``CRLF`` pong (RFC 5626 §4.4.1). A lone CRLF before a message is ignored (§7.5).
        """
        i = 0
        while i < len(data) and data[i] in b"\r\n":
            self._between += data[i : i + 1]
            i += 1
            if self._between == _PING:
                self._between = b""
                if not self._closing:
                    self.write(_PONG)
            elif not _PING.startswith(self._between):
                # Not on the way to CRLFCRLF (a stray LF, CRCR): start again from this byte.
                self._between = self._between[-1:] if self._between.endswith(b"\r") else b""
        if i < len(data):
            self._between = b""
        return data[i:]


class _StreamServerFactory(ServerFactory):
    def __init__(self, layer: SIPTransportLayer, transport_name: str = "TCP") -> None:
        self.layer = layer
        self.transport_name = transport_name

    def buildProtocol(self, addr: IAddress | None) -> _StreamProtocol | None:
        # A new connection counts against its source's rate limit; a banned source's is
        # closed at once (None: Twisted closes the accepted socket).
        limit = self.layer.source_limit
        if (
            limit is not None
            and isinstance(addr, (IPv4Address, IPv6Address))
            and not limit.allow(addr.host)
        ):
            return None
        return _StreamProtocol(self.layer, transport_name=self.transport_name)


class _StreamClientFactory(ClientFactory):
    """
    Opens one outgoing connection and sends what was queued for it: the bytes, and the
    request they are (None for a response), to report it if the connection fails.
    """

    def __init__(
        self, layer: SIPTransportLayer, key: tuple[str, int], transport_name: str = "TCP"
    ) -> None:
        self.layer = layer
        self.key = key
        self.transport_name = transport_name
        self.queue: list[tuple[bytes, Request | None]] = []

    def buildProtocol(self, addr: IAddress | None) -> _StreamProtocol:
        return _StreamProtocol(self.layer, self)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.layer._connect_failed(self, reason)


# -- the layer ------------------------------------------------------------------------------


@attrs.frozen
class AdoptedSockets:
    """
    Listening sockets another process prepared (the main process of ``[daemon] workers``,
    :mod:`clicktodial.workers`): a bound UDP socket and a listening TCP socket, as file
    descriptors inherited by this process (``None``: that transport is not shared). What
    arrives on them is handled as on our own sockets; what we send goes out through our own
    (private) sockets, whose port is our Via sent-by, so that responses come back here.

    :ivar family: ``socket.AF_INET`` or ``socket.AF_INET6``.
    """

    family: int
    udp_fd: int | None = None
    tcp_fd: int | None = None


@implementer(ISIPTransport, IFlowKeeper)
class SIPTransportLayer(Service):
    """
    The SIP sockets: UDP and TCP on ``config.listen`` for ``config.transports``.

    Starting the service listens (UDP first; with port 0 TCP then takes the port UDP got,
    so both share one port as a Via's sent-by needs); stopping it stops listening and
    closes every connection.

    :ivar handler: the :class:`IMessageHandler` received messages go to: given to the
        constructor, or, when it is built after this transport (the layer above sends
        through it), once with :meth:`connect`. When it provides
        :class:`ISendFailureHandler`, it is told of requests that could not be delivered
        after :meth:`send_request` returned.
    :ivar source_limit: the per-source rate limit applied to every datagram before parsing
        and to every new connection (``None``: no limit).
    :ivar tcp_idle_timeout: seconds after which a silent TCP or TLS connection that
        carries no binding is closed (``[sip] stream_idle_timeout``).
    :ivar flow_keep_margin: seconds a connection is kept past the expiry of the last
        binding registered over it (``[sip] flow_keep_margin``).
    :ivar close_timeout: seconds a graceful close may take before the connection is
        aborted (``[sip] stream_close_timeout``).
    :ivar flow_timer: the Flow-Timer for RFC 5626 flows over TCP/TLS (``[sip] flow_timer``).
    :ivar tap: the :class:`ISIPTap` shown every message sent and every message received
        (before anything is stamped on it) while it is ``watching``, or ``None``.
    :ivar connection_limits: ``"TCP"``/``"TLS"`` -> the per-source cap on the open
        connections of that listener (:mod:`clicktodial.connlimit`; none: no cap).
    """

    def __init__(
        self,
        reactor: IReactorTime,
        config: SipConfig,
        handler: IMessageHandler | None = None,
        *,
        source_limit: ISourceLimit | None = None,
        tcp_idle_timeout: float | None = None,
        tap: ISIPTap | None = None,
        connection_limits: Mapping[str, ConnectionLimit] | None = None,
        adopted: AdoptedSockets | None = None,
    ) -> None:
        self.tap = tap
        #: shared listening sockets to serve as well (worker processes), or None
        self.adopted = adopted
        self._adopted_ports: list[IListeningPort] = []
        #: provides IReactorTime, and IReactorUDP / IReactorTCP for the enabled transports
        self.reactor = reactor
        self.clock = reactor
        self.config = config
        self._handler = handler
        self.source_limit = source_limit
        self.connection_limits = dict(connection_limits or {})
        self._ban_filter: _KernelBanFilter | None = None
        self._udp_socket: socket.socket | None = None
        #: our UDP address as a trace shows it (the advertised host when listening on a
        #: wildcard address)
        self._udp_local: tuple[str, int] = (config.listen.host, config.listen.port)
        if source_limit is not None:
            source_limit.on_ban(self._bans_changed)
        self.tcp_idle_timeout = (
            config.stream_idle_timeout if tcp_idle_timeout is None else tcp_idle_timeout
        )
        self.flow_keep_margin = config.flow_keep_margin
        self.close_timeout = config.stream_close_timeout
        self.flow_timer = config.flow_timer
        self.transports = tuple(t.upper() for t in config.transports if t.upper() in _SUPPORTED)
        self._udp_port: IListeningPort | None = None
        self._udp_protocol: _DatagramProtocol | None = None
        self._tcp_port: IListeningPort | None = None
        self._tls_port: IListeningPort | None = None
        self._tls_port_number = config.tls_listen.port
        self._connection_keys = itertools.count(1)
        self._connections: dict[int, _StreamProtocol] = {}
        self._connections_by_peer: dict[tuple[str, int], _StreamProtocol] = {}
        self._connecting: dict[tuple[str, int], _StreamClientFactory] = {}
        #: messages the parser rejected so far (read by /metrics)
        self.parse_errors = 0
        listen = config.listen
        self._listen_host = listen.host
        self._port = listen.port
        wildcard = ip_of(listen.host)
        if wildcard is not None and wildcard.is_unspecified:
            # A wildcard cannot go in a Via: advertise the SIP domain instead (§18.2.2 then
            # sends responses to the received address anyway).
            self._advertised_host = config.domain.strip("[]")
        else:
            self._advertised_host = listen.host

    @property
    def handler(self) -> IMessageHandler | None:
        """Where received messages go (``None``: not connected yet, they are dropped)."""
        return self._handler

    def connect(self, handler: IMessageHandler) -> None:
        """
        Hand received messages to ``handler`` from now on: the one way to give this
        transport its handler after construction, for the layer above that is built after
        it because it sends through it (the transaction layer, or admission control in
        front of it: :func:`clicktodial.service.build_service`).

        :raises RuntimeError: the transport already has a handler (nothing is rewired).
        """
        if self._handler is not None:
            raise RuntimeError("the SIP transport is already connected to a handler")
        self._handler = handler

    # -- service ---------------------------------------------------------------

    def startService(self) -> None:
        """Listen on UDP and TCP; raises ``CannotListenError`` if an address is taken."""
        host, port = self._listen_host, self._port
        for name in self.config.transports:
            if name.upper() not in _SUPPORTED:
                log.warn(
                    "SIP transport {transport} is not supported yet: not listening on it",
                    transport=name,
                )
        if "UDP" in self.transports:
            self._udp_protocol = _DatagramProtocol(self)
            self._udp_port = IReactorUDP(self.reactor).listenUDP(
                port, self._udp_protocol, interface=host, maxPacketSize=65535
            )
            port = _host_port(self._udp_port.getHost())[1]
            self._udp_local = (self._advertised_host, port)
            if self.config.udp_buffer:
                _set_buffer_size(self._udp_port, self.config.udp_buffer)
            handle = ISystemHandle(self._udp_port, None)  # None: not a real socket
            self._udp_socket = None if handle is None else cast(socket.socket, handle.getHandle())
            if self.source_limit is not None and self._udp_socket is not None:
                self._ban_filter = _KernelBanFilter(self.clock, self.source_limit, self._udp_socket)
                self._ban_filter.refresh()
        if "TCP" in self.transports:
            self._tcp_port = IReactorTCP(self.reactor).listenTCP(
                port, self._stream_server_factory("TCP"), interface=host
            )
            port = _host_port(self._tcp_port.getHost())[1]
        self._port = port
        if "TLS" in self.transports:
            self._listen_tls()
        if self.adopted is not None:
            self._adopt(self.adopted)
        log.info(
            "SIP listening on {address} ({transports})",
            address=format_host_port(host, port),
            transports=", ".join(self.transports),
        )
        super().startService()

    def stopService(self) -> defer.Deferred[None]:
        """Stop listening and close every TCP connection."""
        super().stopService()
        if self._ban_filter is not None:
            self._ban_filter.stop()
            self._ban_filter = None
        stopping = []
        for port in (self._udp_port, self._tcp_port, self._tls_port, *self._adopted_ports):
            if port is not None:
                stopping.append(defer.maybeDeferred(port.stopListening))
        self._udp_port = self._tcp_port = self._tls_port = None
        self._adopted_ports = []
        for connection in list(self._connections.values()):
            connection.close()
        for factory in list(self._connecting.values()):
            factory.queue.clear()
        return defer.gatherResults(stopping).addCallback(lambda _: None)

    def _adopt(self, adopted: AdoptedSockets) -> None:
        """
        Serve the shared sockets too. The reactor duplicates each descriptor; ours stays
        open, so that a stopped transport can start again.
        """
        reactor = IReactorSocket(self.reactor)
        if adopted.udp_fd is not None and "UDP" in self.transports:
            # An inherited socket may be blocking: the reactor would freeze on it.
            os.set_blocking(adopted.udp_fd, False)
            self._adopted_ports.append(
                reactor.adoptDatagramPort(
                    adopted.udp_fd,
                    socket.AddressFamily(adopted.family),
                    _DatagramProtocol(self),
                    maxPacketSize=65535,
                )
            )
        if adopted.tcp_fd is not None and "TCP" in self.transports:
            os.set_blocking(adopted.tcp_fd, False)
            self._adopted_ports.append(
                reactor.adoptStreamPort(
                    adopted.tcp_fd,
                    socket.AddressFamily(adopted.family),
                    self._stream_server_factory("TCP"),
                )
            )
        for port in self._adopted_ports:
            log.info(
                "SIP serving the shared socket {address}",
                address=format_host_port(*_host_port(port.getHost())),
            )

    def _stream_server_factory(self, transport_name: str) -> ServerFactory:
        """The factory of a TCP or TLS listener, behind its per-source connection cap."""
        factory = _StreamServerFactory(self, transport_name)
        limit = self.connection_limits.get(transport_name)
        return factory if limit is None else limit.wrap(factory)

    def _listen_tls(self) -> None:
        """
        SIP over TLS (RFC 3261 §26.2, sips:) on ``[sip] tls_listen``: TCP framing over a TLS
        connection (the same :class:`_StreamProtocol`), with the configured certificate.
        """
        config = self.config
        assert config.tls_certificate is not None and config.tls_private_key is not None
        try:
            with open(config.tls_certificate, "rb") as f:
                certificate = f.read()
            with open(config.tls_private_key, "rb") as f:
                key = f.read()
            options = ssl.PrivateCertificate.loadPEM(key + b"\n" + certificate).options()
        except (OSError, ValueError, ssl.SSL.Error) as e:
            raise CannotListenError(
                self.config.tls_listen.host,
                self._tls_port_number,
                f"cannot load the TLS certificate or key: {e}",
            ) from None
        tls = self.config.tls_listen
        self._tls_port = IReactorSSL(self.reactor).listenSSL(
            tls.port, self._stream_server_factory("TLS"), options, interface=tls.host
        )
        self._tls_port_number = _host_port(self._tls_port.getHost())[1]
        log.info(
            "SIP over TLS listening on {address}",
            address=format_host_port(tls.host, self._tls_port_number),
        )

    @property
    def udp_drops(self) -> int:
        """
        Datagrams the kernel dropped at the UDP socket since it was opened: its receive
        buffer was full, or they came from a banned source (the kernel filter). 0 where
        the system does not say (Linux ``SO_MEMINFO``) or nothing listens.
        """
        sock = self._udp_socket
        if sock is None or self._udp_port is None:
            return 0
        try:
            info = sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, _MEMINFO_SIZE)
        except OSError:
            return 0
        if len(info) < _MEMINFO_SIZE:
            return 0
        return int(struct.unpack_from("I", info, 4 * _SK_MEMINFO_DROPS)[0])

    def _bans_changed(self) -> None:
        if self._ban_filter is not None:
            self._ban_filter.refresh()

    # -- IFlowKeeper ----------------------------------------------------------

    def keep_flow(self, source: object, aor: str, until: float) -> None:
        """
        Keep the connection ``source`` came over open, silent or not, until ``until`` plus
        ``flow_keep_margin`` (the bindings of ``aor`` registered over it live until then);
        a time already past releases ``aor``'s hold. Other sources are ignored.
        """
        if not isinstance(source, Source) or source.connection is None:
            return
        connection = self._connections.get(source.connection)
        if connection is None:
            return  # gone or closing: the phone will register over a new one
        now = self.clock.seconds()
        pins = connection.pins
        if until <= now:
            pins.pop(aor, None)
            return
        pins[aor] = until + self.flow_keep_margin
        if len(pins) > _PRUNE_PINS_ABOVE:
            # A busy connection (a proxy carrying many phones) never goes idle, where
            # expired holds are otherwise dropped: drop them here, now and then.
            for expired in [a for a, t in pins.items() if t <= now]:
                del pins[expired]

    # -- ISIPTransport ------------------------------------------------------

    def local_address(self, transport: str) -> tuple[str, int]:
        """The ``(host, port)`` for a Via sent-by on ``transport`` ("UDP", "TCP", "TLS")."""
        if transport.upper() not in self.transports:
            raise TransportError(f"transport {transport} is not enabled")
        if transport.upper() == "TLS":
            return self._advertised_host, self._tls_port_number
        return self._advertised_host, self._port

    def send_request(self, request: Request, destination: Destination) -> None:
        """
        Send ``request`` to ``destination``, writing our address in the top Via's sent-by
        and adding ``rport`` (RFC 3581 §3) if it has none.

        RFC 3261 §18.1.1: a UDP request over 1300 bytes goes over TCP instead (when TCP is
        enabled), with the Via's transport changed to match. On TCP an open connection to
        the destination is reused, otherwise one is opened; a failure to connect is only
        logged (the client transaction then times out).

        :raises TransportError: the transport is not enabled, the request has no Via, or the
            datagram cannot be sent.
        """
        transport = destination.transport
        if transport not in self.transports:
            raise TransportError(f"transport {transport} is not enabled")
        data = self._stamp_via(request, transport)
        if transport == "UDP" and len(data) > UDP_MAX_REQUEST and "TCP" in self.transports:
            transport = "TCP"
            data = self._stamp_via(request, transport)
            destination = Destination(transport, destination.host, destination.port)
        self._send(data, destination, request)
        if self.tap is not None and self.tap.watching:
            self._tap_out(request, data, destination)

    def send_response(self, response: Response, source: object = None) -> None:
        """
        Send ``response`` where RFC 3261 §18.2.2 / RFC 3581 §4 say (:func:`response_destination`):
        back over the request's connection while it is open, else to the request's source
        host (``rport``: its port; never ``maddr``). When the Via cannot be read or names a
        transport we do not run, the response goes back to ``source`` (where the request
        came from).

        :raises TransportError: the response cannot be routed (no ``source`` to fall back
            on) or cannot be sent.
        """
        src = source if isinstance(source, Source) else None
        try:
            via = response.top_via
        except HeaderParseError as e:
            if src is None:
                raise TransportError(f"response has no usable Via: {e}") from None
            # Nothing to route by (a 400 to a request with a broken Via): answer the
            # packet's source, the only address we know works.
            destination = src.reply_destination()
            data = response.serialize()
            self._send(data, destination)
            if self.tap is not None and self.tap.watching:
                self._tap_out(response, data, destination)
            return
        destination = response_destination(via, src)
        if destination.connection is not None and destination.connection not in self._connections:
            # §18.2.2: the connection is gone, open a new one to received/sent-by port.
            destination = response_destination(via, None)
        if destination.transport not in self.transports:
            if src is None:
                raise TransportError(f"transport {destination.transport} is not enabled")
            # The Via names a transport we do not run (a UDP request claiming TLS): the
            # request's own path is the only one we have.
            destination = src.reply_destination()
        data = response.serialize()
        if destination.transport == "UDP":  # (_send's choice, made here: once per response)
            self._send_datagram(data, destination)
        else:
            self._send_stream(data, destination, None)
        if self.tap is not None and self.tap.watching:
            self._tap_out(response, data, destination)

    def _tap_out(self, message: Request | Response, data: bytes, destination: Destination) -> None:
        """Show the tap a message just sent (a tap that fails is logged, never raised)."""
        assert self.tap is not None
        try:
            if destination.transport == "UDP":
                local = self._udp_local
            else:
                connection = self._open_connection(destination)
                local = (
                    (connection.source.local_host, connection.source.local_port)
                    if connection is not None
                    else self.local_address(destination.transport)
                )
            self.tap.message_passed(
                "out",
                message,
                data,
                destination.transport,
                local,
                (normalize_host(destination.host), destination.port),
            )
        except Exception:
            log.failure("SIP tap failed on a message sent", call_id=message.headers.get("Call-ID"))

    # -- sending ---------------------------------------------------------------

    def _stamp_via(self, request: Request, transport: str) -> bytes:
        try:
            top = request.top_via
        except HeaderParseError as e:
            raise TransportError(f"request has no usable Via: {e}") from None
        host, port = self.local_address(transport)
        if (
            top.transport != transport
            or top.host != host
            or top.port != port
            or "rport" not in top.params
        ):  # (else the Via already says so: the transaction layer wrote it)
            params = dict(top.params)
            params.setdefault("rport", None)
            request.headers.replace_top_via(Via(transport, host, port, params))
        return request.serialize()

    def _send(self, data: bytes, destination: Destination, request: Request | None = None) -> None:
        if destination.transport == "UDP":
            self._send_datagram(data, destination)
        else:
            self._send_stream(data, destination, request)

    def _send_datagram(self, data: bytes, destination: Destination) -> None:
        port = self._udp_port
        if port is None:
            raise TransportError("UDP is not listening")
        address = ip_of(destination.host)
        if address is None:
            # RFC 3263 resolution is the caller's job; we only send to addresses.
            raise TransportError(f"cannot send a datagram to host name {destination.host!r}")
        listen = ip_of(self._listen_host)
        host = normalize_host(destination.host)  # address.compressed, memoized
        # (isinstance, not the .version property: a Python call less per datagram)
        to_ipv6 = isinstance(address, ipaddress.IPv6Address)
        if isinstance(listen, ipaddress.IPv6Address) and not to_ipv6:
            if not listen.is_unspecified:
                raise TransportError(f"cannot reach IPv4 {host} from {self._listen_host}")
            host = f"::ffff:{host}"  # dual-stack socket
        elif isinstance(listen, ipaddress.IPv4Address) and to_ipv6:
            raise TransportError(f"cannot reach IPv6 {host} from {self._listen_host}")
        sock = self._udp_socket
        try:
            if sock is None:
                port.write(data, (host, destination.port))  # type: ignore[attr-defined]
            else:
                # The socket's sendto with the error handling of Twisted's udp.Port.write,
                # without the address checks that make for every datagram (isIPAddress
                # three times, ~15 % of the reactor's work per message): the address is an
                # IP address of the socket's family, checked above.
                try:
                    sock.sendto(data, (host, destination.port))
                except OSError as e:
                    if e.errno == errno.EMSGSIZE:
                        raise MessageLengthError("message too long") from None
                    if e.errno != errno.ECONNREFUSED:
                        raise
                    # ECONNREFUSED on an unconnected UDP socket (an ICMP error of an earlier
                    # datagram, on some systems) says nothing of this one: Port.write
                    # ignores it too.
        except Exception as e:
            raise TransportError(f"cannot send to {destination}: {e}") from e

    def _open_connection(self, destination: Destination) -> _StreamProtocol | None:
        """The open connection ``destination`` names, or one open to its host and port."""
        if destination.connection is not None:
            connection = self._connections.get(destination.connection)
            if connection is not None:
                return connection
        connection = self._connections_by_peer.get(
            (normalize_host(destination.host), destination.port)
        )
        if connection is not None and connection.transport_name == destination.transport:
            return connection
        return None

    def _send_stream(
        self, data: bytes, destination: Destination, request: Request | None = None
    ) -> None:
        connection = self._open_connection(destination)
        if connection is None and destination.reconnect_port is not None:
            # The phone's flow (its connection from an ephemeral port) is gone. RFC 5626
            # §5.3: a dead outbound flow is not re-opened (430 Flow Failed semantics).
            # Otherwise RFC 3261 §18.1.1: connect to where it listens, its Contact's port,
            # at the address its REGISTER came from (docs/sip-transport.md).
            if destination.reconnect_port == NO_RECONNECT:
                raise TransportError(f"the flow to {destination} is gone (RFC 5626 outbound)")
            destination = Destination(
                destination.transport, destination.host, destination.reconnect_port
            )
            connection = self._open_connection(destination)
        if connection is not None:
            connection.write(data)
            return
        if destination.transport == "TLS":
            # Opening TLS connections (and verifying the peer's certificate) is not done:
            # requests over TLS go over a connection the phone opened (RFC 5626 flows).
            raise TransportError(f"no TLS connection open to {destination}")
        key = (normalize_host(destination.host), destination.port)
        factory = self._connecting.get(key)
        if factory is None:
            if not self.running:
                raise TransportError("the transport is stopped")
            factory = self._connecting[key] = _StreamClientFactory(self, key)
            IReactorTCP(self.reactor).connectTCP(
                destination.host, destination.port, factory, timeout=30
            )
        factory.queue.append((data, request))

    # -- connections -----------------------------------------------------------

    def _connection_made(self, connection: _StreamProtocol) -> None:
        source = connection.source
        self._connections[source.connection] = connection  # type: ignore[index]
        self._connections_by_peer[(source.remote_host, source.remote_port)] = connection
        pending = connection.pending
        if pending is not None:
            if self._connecting.get(pending.key) is pending:
                del self._connecting[pending.key]
            # Also known under the address it was asked for (it may have been a host name).
            self._connections_by_peer.setdefault(pending.key, connection)
            for data, _ in pending.queue:
                connection.write(data)
            pending.queue.clear()

    def _connection_closing(self, connection: _StreamProtocol) -> None:
        """``connection`` is closing: nothing is routed to it any more."""
        self._connection_lost(connection)

    def _connection_lost(self, connection: _StreamProtocol) -> None:
        if self._connections.get(connection.source.connection) is connection:  # type: ignore[arg-type]
            del self._connections[connection.source.connection]  # type: ignore[arg-type]
        for key, value in list(self._connections_by_peer.items()):
            if value is connection:
                del self._connections_by_peer[key]

    def _connect_failed(self, factory: _StreamClientFactory, reason: Failure) -> None:
        if self._connecting.get(factory.key) is factory:
            del self._connecting[factory.key]
        error = reason.getErrorMessage()
        log.info(
            "cannot connect to {peer}: {error}; {count} message(s) dropped",
            peer=format_host_port(*factory.key),
            error=error,
            count=len(factory.queue),
        )
        queue, factory.queue = factory.queue, []
        # RFC 3261 §17.1.4: the requests' client transactions fail now, not at Timer B/F.
        failures = ISendFailureHandler(self._handler, None)
        if failures is None:
            return
        destination = Destination(factory.transport_name, *factory.key)
        for _, request in queue:
            if request is None:
                continue
            try:
                failures.request_failed(request, destination, f"cannot connect: {error}")
            except Exception:
                log.failure("handler failed on a send failure", peer=format_host_port(*factory.key))

    # -- receiving (a datagram is parsed by its _DatagramProtocol) ---------------------

    def _rejected(
        self,
        error: MessageParseError,
        source: Source,
        via_connection: _StreamProtocol | None = None,
    ) -> None:
        """Answer a message the parser rejected with its 4xx when we can, else drop it."""
        self.parse_errors += 1
        if via_connection is not None and not self._stream_allowed(source):
            return
        response = error_response(error)
        if response is None:
            log.info(
                "dropped malformed {kind} from {peer}: {reason}",
                kind="request" if error.is_request else "response",
                peer=source.peer,
                reason=error.reason,
            )
            return
        log.info(
            "answered malformed request from {peer} with {status}: {reason}",
            peer=source.peer,
            status=response.status,
            reason=error.reason,
            call_id=response.headers.get("Call-ID"),
        )
        try:
            stamp_received(response.headers, source)
        except HeaderParseError:
            pass  # an unreadable Via: send_response answers the source
        try:
            if via_connection is not None:
                via_connection.write(response.serialize())
            else:
                self.send_response(response, source)
        except (TransportError, HeaderParseError, ValueError) as e:
            log.info(
                "cannot answer malformed request from {peer}: {error}",
                peer=source.peer,
                error=str(e),
            )

    def _stream_allowed(self, source: Source) -> bool:
        """
        Count a TCP/TLS message against its source's rate limit (a datagram was counted
        before parsing); a banned source's connection is closed.
        """
        limit = self.source_limit
        if limit is None or limit.allow(source.remote_host):
            return True
        connection = self._connections.get(source.connection)  # type: ignore[arg-type]
        if connection is not None:
            connection.close()
        return False

    def _message_received(self, message: Request | Response, source: Source) -> None:
        if source.connection is not None and not self._stream_allowed(source):
            return
        if self.tap is not None and self.tap.watching:
            # As it arrived: serialize() gives back the parsed octets until stamped.
            try:
                self.tap.message_passed(
                    "in",
                    message,
                    message.serialize(),
                    source.transport,
                    (source.local_host, source.local_port),
                    (source.remote_host, source.remote_port),
                )
            except Exception:
                log.failure(
                    "SIP tap failed on a message received", call_id=message.headers.get("Call-ID")
                )
        if isinstance(message, Request):
            try:
                stamp_received(message.headers, source)
            except HeaderParseError as e:
                log.info(
                    "dropped request without usable Via from {peer}: {error}",
                    peer=source.peer,
                    error=str(e),
                )
                return
        else:
            try:
                via = message.top_via
            except HeaderParseError as e:
                log.info(
                    "dropped response without usable Via from {peer}: {error}",
                    peer=source.peer,
                    error=str(e),
                )
                return
            if not self._is_ours(via):
                # RFC 3261 §18.1.2: a response whose top Via is not ours is discarded.
                log.info(
                    "dropped response for {sent_by} (not us) from {peer}",
                    sent_by=format_host_port(via.host, via.port),
                    peer=source.peer,
                )
                return
        # Handed over here (no frame of its own: this runs for every message).
        handler = self._handler
        if handler is None:
            log.info(
                "no handler: dropped {what} from {peer}", what=_what(message), peer=source.peer
            )
            return
        try:
            if isinstance(message, Request):
                handler.request_received(message, source)
            else:
                handler.response_received(message, source)
        except Exception:
            # A bug above us: log it with its traceback, keep the socket serving.
            log.failure(
                "handler failed on {what} from {peer}",
                what=_what(message),
                peer=source.peer,
                call_id=message.headers.get("Call-ID"),
            )

    def _is_ours(self, via: Via) -> bool:
        """Whether a Via sent-by names this transport (RFC 3261 §18.1.2)."""
        port = via.port or default_port(via.transport)
        if port != self._port and not (
            via.transport.upper() == "TLS" and port == self._tls_port_number
        ):
            return False
        return normalize_host(via.host) in self._own_hosts()

    def _own_hosts(self) -> Iterable[str]:
        hosts: Sequence[str] = (self._advertised_host, self._listen_host)
        return {normalize_host(h) for h in hosts}
