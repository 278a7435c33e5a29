"""
The running daemon's SIP transports (``twistd -n clicktodial`` on loopback): SIPp OPTIONS
pings over UDP, TCP and IPv6 get 200; every torture message gets what its INDEX.md row
says (or silence); the daemon keeps answering afterwards and never logs a traceback.

Corpus messages name example.com and 192.0.2.x: each gets a loopback top Via with
``;rport`` first (:func:`loopback_via`), so every answer comes back to the test's socket.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import find_free_port  # type: ignore[import-not-found]

from clicktodial.sip.message import Request, Response
from clicktodial.sip.parser import parse_message
from clicktodial.testing.stack import STACK_TORTURE_ANSWERS as TORTURE
from clicktodial.testing.transport import loopback_via

pytestmark = pytest.mark.interop

DATA = Path(__file__).resolve().parent.parent / "data"
SCENARIO = Path(__file__).resolve().parent / "sipp" / "options_ping.xml"
SIPP = shutil.which("sipp")
needs_sipp = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")

#: Seconds to wait for one answer on loopback: generous for a loaded machine, finite.
ANSWER_TIMEOUT = 10.0

#: Corpus requests whose Content-Length frames them exactly, for the TCP run.
TCP_FILES = [
    "rfc4475/wsinv.dat",
    "rfc4475/intmeth.dat",
    "rfc4475/esc01.dat",
    "rfc4475/bext01.dat",
    "rfc4475/invut.dat",
    "rfc4475/unkscm.dat",
    "rfc4475/novelsc.dat",
    "rfc4475/zeromf.dat",
    "rfc4475/mismatch02.dat",
    "rfc4475/badinv01.dat",
]


def daemon_config(host: str, sip_port: int, web_port: int, tmp_path: Path) -> str:
    sent_by = f"[{host}]" if ":" in host else host
    return (
        "[sip]\n"
        # The domain and aliases STACK_TORTURE_ANSWERS assumes (the corpus names them).
        "domain = example.com\n"
        f"listen = {sent_by}:{sip_port}\n"
        "transports = udp, tcp\n"
        "[registrar]\n"
        "aliases = 127.0.0.1, 2001:db8::10\n"
        "[web]\n"
        f"listen = tcp:{web_port}:interface=127.0.0.1\n"
        "[store]\n"
        f"url = sqlite:///{tmp_path}/clicktodial.sqlite\n"
        "auto_upgrade = yes\n"
    )


class SipDaemon:
    """A running daemon and the address its SIP transports listen on."""

    def __init__(self, daemon: Any, host: str, port: int) -> None:
        self.daemon = daemon
        self.host = host
        self.port = port

    def assert_healthy(self) -> None:
        """Still running, and nothing logged a traceback."""
        assert self.daemon.process.poll() is None, self.daemon.log()
        text = self.daemon.log() + self.daemon.output()
        assert "Traceback" not in text
        assert "Unhandled" not in text


@pytest.fixture
def sip_daemon(start_daemon: Callable[[str], Any], tmp_path: Path) -> Callable[[str], SipDaemon]:
    """A function starting the daemon with SIP on ``host`` (a free port) and waiting for it."""

    def start(host: str = "127.0.0.1") -> SipDaemon:
        port = find_free_port(host)
        daemon = start_daemon(daemon_config(host, port, find_free_port("127.0.0.1"), tmp_path))
        daemon.wait_for_log("SIP listening on")
        return SipDaemon(daemon, host, port)

    return start


def status_of(message: bytes) -> int:
    """The status code on a response's status line (its headers may echo bad input)."""
    match = re.match(rb"SIP/2\.0 (\d{3}) ", message)
    assert match, message[:200]
    return int(match.group(1))


def options_ping(call_id: str, port: int, transport: str = "UDP", host: str = "127.0.0.1") -> bytes:
    sent_by = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return (
        f"OPTIONS sip:ping@{sent_by} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {sent_by};rport;branch=z9hG4bK-{call_id}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:test@{sent_by}>;tag=t1\r\n"
        f"To: <sip:ping@{sent_by}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class UdpPeer:
    """A UDP socket on loopback talking to the daemon."""

    def __init__(self, daemon: SipDaemon) -> None:
        family = socket.AF_INET6 if ":" in daemon.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((daemon.host, 0))
        self.sock.settimeout(ANSWER_TIMEOUT)
        self.port = self.sock.getsockname()[1]
        self.daemon = daemon

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, (self.daemon.host, self.daemon.port))

    def recv(self) -> bytes:
        data, _ = self.sock.recvfrom(70000)
        return data

    def ping(self) -> bytes:
        """Send an OPTIONS and return the next datagram, which must be its 200."""
        call_id = uuid.uuid4().hex
        self.send(options_ping(call_id, self.port, host=self.daemon.host))
        answer = self.recv()
        assert status_of(answer) == 200 and call_id.encode() in answer, answer[:300]
        return answer


@pytest.fixture
def peers() -> Iterator[list[UdpPeer]]:
    made: list[UdpPeer] = []
    yield made
    for peer in made:
        peer.sock.close()


def run_sipp(daemon: SipDaemon, transport: str, calls: int, tmp_path: Path) -> None:
    """Run the OPTIONS scenario ``calls`` times; fail unless every call got its 200."""
    assert SIPP is not None
    host = daemon.host
    remote = f"[{host}]:{daemon.port}" if ":" in host else f"{host}:{daemon.port}"
    argv = [
        SIPP,
        remote,
        "-sf", str(SCENARIO),
        "-t", transport,
        "-i", host,
        "-p", str(find_free_port(host)),
        "-m", str(calls),
        "-r", "20",
        "-timeout", "30s",
        "-timeout_error",
        "-nostdin",
    ]  # fmt: skip
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, timeout=60)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])


@needs_sipp
@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_options_pings_get_200(
    sip_daemon: Callable[[str], SipDaemon], tmp_path: Path, transport: str
) -> None:
    """Every SIPp OPTIONS ping, over UDP and over one TCP connection, gets 200 with Allow."""
    daemon = sip_daemon("127.0.0.1")
    run_sipp(daemon, transport, 20, tmp_path)
    daemon.assert_healthy()


@needs_sipp
def test_sipp_options_over_ipv6_get_200(
    sip_daemon: Callable[[str], SipDaemon], tmp_path: Path
) -> None:
    """Listening on [::1], OPTIONS over UDP/IPv6 gets 200."""
    daemon = sip_daemon("::1")
    run_sipp(daemon, "u1", 10, tmp_path)
    daemon.assert_healthy()


def with_own_branch(datagram: bytes) -> bytes:
    """``datagram`` (from :func:`loopback_via`) with a top Via branch of its own: the
    daemon's transaction layer would take a second message with the same branch and
    method for a retransmission of the first (RFC 3261 §17.2.3)."""
    branch = f"branch=z9hG4bK-{uuid.uuid4().hex}".encode()
    return datagram.replace(b"branch=z9hG4bK-loopback", branch, 1)


def ack_for(invite: bytes, response: bytes) -> bytes | None:
    """The ACK for a 300-699 answer to an INVITE (RFC 3261 §17.1.1.3), else None: without
    it the daemon retransmits the answer (Timer G) and the next datagram is not the ping's."""
    try:
        request = parse_message(invite)
        answer = parse_message(response)
    except ValueError:
        return None
    if not isinstance(request, Request) or not isinstance(answer, Response):
        return None
    if request.method != "INVITE" or answer.status < 300:
        return None
    fields = [
        ("Via", request.headers.get_all("Via")[0]),
        ("Max-Forwards", "70"),
        ("From", answer.headers.get("From") or ""),
        ("To", answer.headers.get("To") or ""),
        ("Call-ID", answer.headers.get("Call-ID") or ""),
        ("CSeq", f"{request.cseq.seq} ACK"),
    ]
    return Request("ACK", request.uri, fields).serialize()


def test_every_torture_message_over_udp_gets_its_answer(
    sip_daemon: Callable[[str], SipDaemon], peers: list[UdpPeer]
) -> None:
    """Each corpus datagram gets exactly its INDEX answer (or nothing), then the daemon
    still answers OPTIONS: the next datagram after each answer is the ping's 200."""
    daemon = sip_daemon("127.0.0.1")
    peer = UdpPeer(daemon)
    peers.append(peer)
    got: dict[str, int | None] = {}
    for name, expected in sorted(TORTURE.items()):
        datagram = with_own_branch(loopback_via((DATA / name).read_bytes(), peer.port))
        peer.send(datagram)
        if expected is None:
            peer.ping()  # the first thing back is the ping's answer: silence before it
            got[name] = None
            continue
        answer = peer.recv()
        got[name] = status_of(answer)
        ack = ack_for(datagram, answer)
        if ack is not None:
            peer.send(ack)
        peer.ping()  # exactly one answer: the next datagram is the ping's 200
    assert got == TORTURE
    daemon.assert_healthy()


def read_message(sock: socket.socket) -> bytes:
    """One message off a stream: headers to the empty line, then Content-Length bytes."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length\s*:\s*(\d+)", head)
    length = int(match.group(1)) if match else 0
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in a body"
        body += chunk
    assert len(body) == length, "more than one message arrived"
    return head + b"\r\n\r\n" + body


@pytest.fixture
def tcp_connect() -> Iterator[Callable[[SipDaemon], socket.socket]]:
    made: list[socket.socket] = []

    def connect(daemon: SipDaemon) -> socket.socket:
        sock = socket.create_connection((daemon.host, daemon.port), timeout=ANSWER_TIMEOUT)
        made.append(sock)
        return sock

    yield connect
    for sock in made:
        sock.close()


def test_torture_messages_over_one_tcp_connection(
    sip_daemon: Callable[[str], SipDaemon],
    tcp_connect: Callable[[SipDaemon], socket.socket],
) -> None:
    """Framed corpus requests on one TCP connection each get their answer on it, in order;
    a CRLFCRLF ping gets its CRLF pong (RFC 5626 §4.4.1)."""
    daemon = sip_daemon("127.0.0.1")
    sock = tcp_connect(daemon)
    port = sock.getsockname()[1]
    for name in TCP_FILES:
        sock.sendall(with_own_branch(loopback_via((DATA / name).read_bytes(), port, "TCP")))
        assert status_of(read_message(sock)) == TORTURE[name], name
    sock.sendall(b"\r\n\r\n")
    assert sock.recv(16) == b"\r\n"
    sock.sendall(options_ping("after-torture", port, "TCP"))
    assert status_of(read_message(sock)) == 200
    daemon.assert_healthy()


def test_tcp_framing_loss_gets_400_and_the_connection_closed(
    sip_daemon: Callable[[str], SipDaemon],
    tcp_connect: Callable[[SipDaemon], socket.socket],
) -> None:
    """A negative Content-Length on TCP (RFC 4475 ncl.dat) gets 400, then the connection
    closes; the daemon serves new connections."""
    daemon = sip_daemon("127.0.0.1")
    sock = tcp_connect(daemon)
    port = sock.getsockname()[1]
    sock.sendall(loopback_via((DATA / "rfc4475/ncl.dat").read_bytes(), port, "TCP"))
    assert status_of(read_message(sock)) == 400
    assert sock.recv(65536) == b""  # closed by the daemon
    again = tcp_connect(daemon)
    again.sendall(options_ping("after-ncl", again.getsockname()[1], "TCP"))
    assert status_of(read_message(again)) == 200
    daemon.assert_healthy()
