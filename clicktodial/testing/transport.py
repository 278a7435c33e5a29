"""
Fakes for testing the SIP transport layer without sockets.

- :class:`FakeReactor`: a ``MemoryReactorClock`` that can also "listen" on UDP, giving a
  :class:`FakeDatagramPort` that records what is written to it.
- :func:`accept_tcp` / :func:`complete_connect`: attach a ``StringTransport`` to the
  factory the layer listened or connected with, as if a TCP connection were made.
- :class:`LogCapture`: collects ``twisted.logger`` events (to assert on named fields, and
  that nothing logged a failure).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IListeningPort, IProtocol, IProtocolFactory, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import implementer

__all__ = [
    "FakeDatagramPort",
    "FakeReactor",
    "LogCapture",
    "accept_tcp",
    "complete_connect",
    "ip_address",
    "loopback_via",
    "no_failures_logged",
]


def ip_address(kind: str, host: str, port: int) -> IPv4Address | IPv6Address:
    """A Twisted address object for ``host`` (``kind`` is "TCP" or "UDP")."""
    if ":" in host:
        return IPv6Address(kind, host, port)  # type: ignore[arg-type]
    return IPv4Address(kind, host, port)  # type: ignore[arg-type]


@implementer(IListeningPort)
class FakeDatagramPort:
    """A listening UDP port: ``written`` holds ``(datagram, (host, port))`` pairs."""

    def __init__(self, protocol: DatagramProtocol, host: str, port: int) -> None:
        self.protocol = protocol
        self.host = host
        self.port = port
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.listening = True
        protocol.makeConnection(self)  # type: ignore[arg-type]

    def write(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.written.append((datagram, addr))

    def getHost(self) -> IPv4Address | IPv6Address:
        return ip_address("UDP", self.host, self.port)

    def startListening(self) -> None:
        self.listening = True

    def stopListening(self) -> None:
        self.listening = False
        self.protocol.doStop()

    def receive(self, datagram: bytes, host: str = "127.0.0.1", port: int = 5070) -> None:
        """Deliver ``datagram`` as if it came from ``host``:``port``."""
        self.protocol.datagramReceived(datagram, (host, port))

    def take(self) -> list[tuple[bytes, tuple[str, int]]]:
        """What was written since the last call."""
        written, self.written = self.written, []
        return written


@implementer(IReactorUDP)
class FakeReactor(MemoryReactorClock):
    """``MemoryReactorClock`` plus ``listenUDP``; ``udp_ports`` are the ports made."""

    def __init__(self) -> None:
        super().__init__()
        self.udp_ports: list[FakeDatagramPort] = []

    def listenUDP(
        self,
        port: int,
        protocol: DatagramProtocol,
        interface: str = "",
        maxPacketSize: int = 8192,
    ) -> FakeDatagramPort:
        udp = FakeDatagramPort(
            protocol, interface or "0.0.0.0", port or 40000 + len(self.udp_ports)
        )
        self.udp_ports.append(udp)
        return udp

    def listenMulticast(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError


def _connect(
    factory: IProtocolFactory, peer: IPv4Address | IPv6Address, local: IPv4Address | IPv6Address
) -> tuple[IProtocol, StringTransport]:
    protocol = factory.buildProtocol(peer)
    assert protocol is not None
    transport = StringTransport(hostAddress=local, peerAddress=peer)
    protocol.makeConnection(transport)
    return protocol, transport


def accept_tcp(
    reactor: MemoryReactorClock,
    peer_host: str = "127.0.0.1",
    peer_port: int = 40001,
    index: int = 0,
) -> tuple[IProtocol, StringTransport]:
    """A connection accepted on the ``index``-th ``listenTCP``, from ``peer_host:peer_port``."""
    port, factory, _backlog, interface = reactor.tcpServers[index]
    local = ip_address("TCP", interface or "0.0.0.0", port)
    return _connect(factory, ip_address("TCP", peer_host, peer_port), local)


def complete_connect(
    reactor: MemoryReactorClock, index: int = -1, local_port: int = 50000
) -> tuple[IProtocol, StringTransport]:
    """Make the ``index``-th ``connectTCP`` succeed."""
    host, port, factory, _timeout, _bind = reactor.tcpClients[index]
    local = ip_address("TCP", "::1" if ":" in host else "127.0.0.1", local_port)
    return _connect(factory, ip_address("TCP", host, port), local)


@implementer(ILogObserver)
class LogCapture:
    """
    Collects the events logged while it is installed (``with LogCapture() as log:``).

    :ivar events: every event, in order.
    """

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        self.events.append(event)

    def __enter__(self) -> LogCapture:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        globalLogPublisher.removeObserver(self)

    def failures(self) -> list[LogEvent]:
        """Events that carry a failure (a traceback)."""
        return [e for e in self.events if "log_failure" in e]

    def with_field(self, name: str) -> Iterator[LogEvent]:
        """Events carrying the named field."""
        return (e for e in self.events if name in e)


def no_failures_logged() -> Iterator[LogCapture]:
    """
    The body of a pytest fixture: captures log events while the test runs, then fails if
    anything logged a failure (a traceback). Use as ``yield from no_failures_logged()``.
    """
    with LogCapture() as capture:
        yield capture
    assert capture.failures() == [], [e.get("log_format") for e in capture.failures()]


def loopback_via(
    message: bytes, port: int, transport: str = "UDP", host: str = "127.0.0.1"
) -> bytes:
    """
    ``message`` with a top Via naming ``host:port`` and ``;rport`` put before its others, so
    that whatever answers it answers there (corpus messages name example.com and 192.0.2.x,
    which must never be sent to). A response (status line) is returned unchanged.
    """
    if message.startswith(b"SIP/"):
        return message
    end = message.find(b"\r\n")
    if end < 0:
        return message
    sent_by = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    via = f"Via: SIP/2.0/{transport} {sent_by};rport;branch=z9hG4bK-loopback\r\n".encode()
    return message[: end + 2] + via + message[end + 2 :]
