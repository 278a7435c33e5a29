"""
Binding trust through the running daemon (docs/registrar.md, "Binding trust"): what a
phone puts in its REGISTER never decides where the daemon's INVITEs go, and one click
never fans out into more INVITEs than ``[calls] max_forks``.

The daemon runs as a subprocess (``twistd -n clicktodial``, SQLite, demo users alice and
bob, default ``[registrar]``: ``path = off``, ``max_contacts = 5``); phones are raw UDP
sockets that register with Digest and then listen on the port they registered from; the
click is ``POST /api/v1/calls`` with an API token. A "trap" the test owns listens on
127.0.0.5:5099 (UDP and TCP): the address a malicious phone names in its Path or Contact.
Run inside ``unshare -n`` (127.0.0.5 must be local). Every wait is bounded; the daemon is
killed by PID at the end.
"""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from calltools import CallsApi, api_token, daemon_ini, register, register_status, web_place_call
from conftest import find_free_port  # type: ignore[import-not-found]

pytestmark = pytest.mark.interop

TRAP = ("127.0.0.5", 5099)
#: How long the phone waits for the click's INVITE(s).
INVITE_WAIT = 5.0


class Trap:
    """UDP and TCP listeners on L{TRAP}: did anything arrive?"""

    def __init__(self) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.udp.bind(TRAP)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.tcp.bind(TRAP)
        except OSError as e:
            self.close()
            pytest.skip(f"cannot listen on {TRAP} (run inside unshare -n): {e}")
        self.tcp.listen(8)

    def touched(self) -> list[str]:
        """What reached the trap so far: datagrams and TCP connections."""
        seen = []
        while select.select([self.udp, self.tcp], [], [], 0)[0]:
            if select.select([self.udp], [], [], 0)[0]:
                data = self.udp.recv(65536)
                seen.append("UDP " + data.decode(errors="replace").split("\r\n", 1)[0])
            if select.select([self.tcp], [], [], 0)[0]:
                connection, peer = self.tcp.accept()
                connection.close()
                seen.append(f"TCP connection from {peer}")
        return seen

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


class Phone:
    """A UDP socket on the port a phone registered from: collects what the daemon sends."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.received: list[tuple[str, tuple[str, int]]] = []

    def collect(self, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        end = time.monotonic() + seconds
        while not until():
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return
            data, peer = self.sock.recvfrom(65536)
            self.received.append((data.decode(errors="replace"), peer))

    def invites(self) -> list[str]:
        return [text for text, _ in self.received if text.startswith("INVITE ")]

    def answer(self, request: str, peer: tuple[str, int], status: str) -> None:
        """A final response to ``request`` (its Via, From, To + tag, Call-ID, CSeq)."""
        lines = request.split("\r\n")
        copied = [line for line in lines
                  if re.match(r"(Via|v|From|f|Call-ID|i|CSeq):", line, re.I)]
        to = next(line for line in lines if re.match(r"(To|t):", line, re.I))
        response = "\r\n".join([f"SIP/2.0 {status}", *copied, f"{to};tag=phone",
                                "Content-Length: 0", "", ""])
        self.sock.sendto(response.encode(), peer)

    def close(self) -> None:
        self.sock.close()


def request_uri(request: str) -> str:
    return request.split(" ", 2)[1]


def distinct_transactions(invites: list[str]) -> int:
    """INVITE transactions (top Via branch), retransmissions counted once."""
    return len({re.search(r"branch=([^;\s]+)", text).group(1)  # type: ignore[union-attr]
                for text in invites})


@pytest.fixture
def trap() -> Iterator[Trap]:
    trap = Trap()
    yield trap
    trap.close()


@pytest.fixture
def daemon(tmp_path: Path, start_daemon: Callable[[str], Any]) -> Callable[..., dict[str, Any]]:
    """Start the daemon (``[calls]`` keys in ``calls``, ``[registrar]`` keys as keyword
    arguments); its ports, calls API and alice's API token."""

    def start(calls: dict[str, str] | None = None, **registrar: str) -> dict[str, Any]:
        sip_port, web_port = find_free_port(), find_free_port()
        text = daemon_ini(sip_port, web_port, str(tmp_path), **(calls or {}))
        extra = "".join(f"{key} = {value}\n" for key, value in registrar.items())
        text = text.replace("[registrar]\n", "[registrar]\n" + extra, 1)
        process = start_daemon(text)
        process.wait_for_tcp(web_port)
        return {"sip": sip_port, "web": web_port,
                "control": CallsApi(web_port, process.config_path),
                "token": api_token(tmp_path / "daemon0.ini", "alice")}

    return start


@pytest.mark.parametrize(("contact", "headers"), [
    # The attack: a premium number, and a Path to where the INVITE should go.
    ("<sip:+19005550123@premium.itsp.test>", ("Path: <sip:127.0.0.5:5099;lr>",)),
    # Over TCP, the daemon would connect to any host:port and write an INVITE there.
    ("<sip:+19005550123@premium.itsp.test>", ("Path: <sip:127.0.0.5:5099;lr;transport=tcp>",)),
    # A Contact naming another host, or a maddr, with another transport.
    ("<sip:+19005550123@127.0.0.5:5099;transport=tcp>", ()),
    ("<sip:+19005550123@premium.itsp.test:5099;maddr=127.0.0.5;transport=udp>", ()),
], ids=["path-udp", "path-tcp", "contact-host", "contact-maddr"])
def test_a_phones_path_or_contact_never_decides_where_the_invite_goes(
        daemon: Callable[..., dict[str, Any]], trap: Trap, contact: str,
        headers: tuple[str, ...]) -> None:
    """With the default [registrar] path = off, a click-to-dial call to a user whose phone
    registered a Path or a Contact naming 127.0.0.5:5099 sends its INVITE (Request-URI:
    the registered contact) to the address the REGISTER came from, and nothing (no datagram,
    no TCP connection) reaches 127.0.0.5:5099."""
    ports = daemon()
    phone_port = find_free_port()
    status, text = register_status("alice", "alice", phone_port, ports["sip"],
                                    contacts=[contact], headers=headers)
    assert status == 200, text
    assert "Path:" not in text  # not stored, so not echoed either
    register("bob", "bob", find_free_port(), ports["sip"])
    phone = Phone(phone_port)
    try:
        web_place_call(ports["web"], ports["token"], "bob")
        phone.collect(INVITE_WAIT, until=lambda: bool(phone.invites()))
        assert trap.touched() == []
        [invite, *_] = phone.invites() or [""]
        assert request_uri(invite) == contact.strip("<>"), phone.received
        phone.answer(invite, next(p for t, p in phone.received if t == invite), "486 Busy Here")
        phone.collect(1.0)  # the ACK
        assert any(text.startswith("ACK ") for text, _ in phone.received)
        assert trap.touched() == []
    finally:
        phone.close()


def test_require_path_from_a_phone_gets_420(daemon: Callable[..., dict[str, Any]]) -> None:
    """RFC 3327 §5.3: with path = off, Require: path is an unsupported extension."""
    ports = daemon()
    status, text = register_status("alice", "alice", find_free_port(), ports["sip"],
                                   headers=("Require: path", "Path: <sip:127.0.0.5:5099;lr>"))
    assert status == 420, text
    assert re.search(r"^Unsupported: path\r$", text, re.M), text


def test_a_200_contact_register_is_refused_and_a_click_sends_at_most_the_cap(
        daemon: Callable[..., dict[str, Any]]) -> None:
    """Three REGISTERs of 200 Contacts each get 503 and bind nothing; alice's phones get at
    most max_contacts (5) bindings, the sixth REGISTER 503 too; one click then sends 5
    INVITEs (5 INVITE transactions, retransmissions aside), all to the phones' source."""
    ports = daemon()
    phone_port = find_free_port()
    for batch in range(3):
        contacts = [f"<sip:alice-{batch}-{n}@127.0.0.1:{phone_port}>" for n in range(200)]
        status, text = register_status("alice", "alice", phone_port, ports["sip"],
                                       contacts=contacts)
        assert status == 503, text
        assert "Too Many Registered Contacts" in text
    for n in range(5):
        status, text = register_status("alice", "alice", phone_port, ports["sip"],
                                       contacts=[f"<sip:alice-{n}@127.0.0.1:{phone_port}>"])
        assert status == 200, text
    status, text = register_status("alice", "alice", phone_port, ports["sip"],
                                   contacts=[f"<sip:alice-6@127.0.0.1:{phone_port}>"])
    assert status == 503, text
    register("bob", "bob", find_free_port(), ports["sip"])
    phone = Phone(phone_port)
    try:
        call = web_place_call(ports["web"], ports["token"], "bob")
        phone.collect(INVITE_WAIT)
        assert distinct_transactions(phone.invites()) == 5, len(phone.invites())
        ports["control"].hang_up(call["id"])
    finally:
        phone.close()


def test_one_click_rings_at_most_max_forks_bindings(
        daemon: Callable[..., dict[str, Any]]) -> None:
    """[calls] max_forks under a larger max_contacts: 8 bindings, 3 INVITEs."""
    ports = daemon({"max_forks": "3"}, max_contacts="8")
    phone_port = find_free_port()
    contacts = [f"<sip:alice-{n}@127.0.0.1:{phone_port}>" for n in range(8)]
    status, text = register_status("alice", "alice", phone_port, ports["sip"],
                                   contacts=contacts)
    assert status == 200, text
    register("bob", "bob", find_free_port(), ports["sip"])
    phone = Phone(phone_port)
    try:
        call = web_place_call(ports["web"], ports["token"], "bob")
        phone.collect(INVITE_WAIT / 2)
        assert distinct_transactions(phone.invites()) == 3
        ports["control"].hang_up(call["id"])
    finally:
        phone.close()
