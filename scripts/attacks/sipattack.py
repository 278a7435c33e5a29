"""
Shared pieces of the SIP attack checks (``check_*.py`` next to this file): the common
command line, a trap that counts what reaches it, Digest registration from a raw UDP socket,
a web session (log in, place a call, hang up), and a scripted phone that answers the
daemon's INVITEs with whatever headers the attack needs.

Standard library only, loopback only: every socket is bound to a 127.0.0.x address and
every wait is bounded.  Imported by the checks and by tests/interop/test_steering.py.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import re
import secrets
import select
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "Phone",
    "Trap",
    "WebSession",
    "parse_args",
    "register",
    "split_host_port",
]


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options ``scripts/attacks/run`` gives every check."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--sip", required=True, help="the daemon's SIP address, HOST:PORT (UDP)")
    parser.add_argument("--web", required=True, help="the daemon's web base URL")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True, help="web and SIP password of --user")
    parser.add_argument("--user2", required=True)
    parser.add_argument("--password2", required=True, help="web and SIP password of --user2")
    parser.add_argument("--trap-host", default="127.0.0.9",
                        help="loopback address of the trap sockets (default 127.0.0.9)")
    # The driver (scripts/attacks/run) passes every check the same arguments (--log,
    # --metrics-token, ...): ignore those these checks do not use.
    namespace, _unknown = parser.parse_known_args(argv)
    return namespace


def split_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class Trap:
    """
    A UDP socket and a TCP listener on ``host`` and one port: what the daemon should never
    send to.  :meth:`count` reads what arrived: datagrams, TCP connections, bytes.
    """

    def __init__(self, host: str = "127.0.0.9", port: int = 0) -> None:
        self.host = host
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((host, port))
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, self.port))
        self.tcp.listen(16)
        self.datagrams = 0
        self.connections = 0
        self.bytes = 0
        self.first_lines: list[str] = []
        self._open: list[socket.socket] = []

    def poll(self, seconds: float = 0.0) -> None:
        """Read what arrives for up to ``seconds`` (0: what is there now)."""
        end = time.monotonic() + seconds
        while True:
            ready = select.select([self.udp, self.tcp, *self._open], [], [],
                                  max(0.0, end - time.monotonic()))[0]
            if not ready:
                return
            for sock in ready:
                if sock is self.udp:
                    data = self.udp.recv(65536)
                    self.datagrams += 1
                    self._seen(data)
                elif sock is self.tcp:
                    connection, _ = self.tcp.accept()
                    self.connections += 1
                    self._open.append(connection)
                else:
                    data = sock.recv(65536)
                    if not data:
                        self._open.remove(sock)
                        sock.close()
                    else:
                        self._seen(data)

    def _seen(self, data: bytes) -> None:
        self.bytes += len(data)
        self.first_lines.append(data.split(b"\r\n", 1)[0].decode("ascii", "replace"))

    @property
    def packets(self) -> int:
        """Datagrams plus TCP connections received."""
        return self.datagrams + self.connections

    def summary(self) -> str:
        return (f"{self.datagrams} datagrams, {self.connections} TCP connections, "
                f"{self.bytes} bytes")

    def close(self) -> None:
        for sock in [self.udp, self.tcp, *self._open]:
            sock.close()


# -- Digest registration ----------------------------------------------------------------------

def _digest_response(algorithm: str, user: str, realm: str, password: str, method: str,
                     uri: str, nonce: str, qop: str | None, cnonce: str) -> str:
    name = "sha256" if algorithm.upper().startswith("SHA-256") else "md5"

    def h(text: str) -> str:
        return hashlib.new(name, text.encode()).hexdigest()

    ha1, ha2 = h(f"{user}:{realm}:{password}"), h(f"{method}:{uri}")
    if qop:
        return h(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
    return h(f"{ha1}:{nonce}:{ha2}")


def authorization(challenge_text: str, user: str, password: str, method: str,
                  uri: str) -> str:
    """An ``Authorization`` value answering the MD5 (else SHA-256) challenge of a 401."""
    challenges = [dict(re.findall(r'(\w+)="?([^",]*)"?', match))
                  for match in re.findall(r"^WWW-Authenticate:\s*Digest\s+(.*?)\r?$",
                                          challenge_text, re.I | re.M)]
    if not challenges:
        raise ValueError("no Digest challenge")
    challenges.sort(key=lambda c: c.get("algorithm", "MD5").upper() != "MD5")
    params = challenges[0]
    algorithm = params.get("algorithm", "MD5")
    qop = "auth" if "auth" in params.get("qop", "").split(",") else None
    cnonce = secrets.token_hex(4)
    response = _digest_response(algorithm, user, params["realm"], password, method, uri,
                                params["nonce"], qop, cnonce)
    value = (f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
             f'uri="{uri}", response="{response}", algorithm={algorithm}')
    if qop:
        value += f', qop=auth, nc=00000001, cnonce="{cnonce}"'
    if "opaque" in params:
        value += f', opaque="{params["opaque"]}"'
    return value


def register(sock: socket.socket, sip: tuple[str, int], user: str, password: str,
             expires: int = 300, timeout: float = 5.0) -> int:
    """REGISTER ``sip:user@HOST:PORT`` (the socket's address) with Digest; the final status."""
    host, port = sock.getsockname()[:2]
    registrar = f"sip:{sip[0]}:{sip[1]}"
    call_id = secrets.token_hex(8)
    from_tag = secrets.token_hex(4)
    auth = ""
    deadline = time.monotonic() + timeout
    for cseq in (1, 2):
        request = (
            f"REGISTER {registrar} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{sip[0]}>;tag={from_tag}\r\n"
            f"To: <sip:{user}@{sip[0]}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:{user}@{host}:{port}>\r\nExpires: {expires}\r\n{auth}"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), sip)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                raise TimeoutError(f"no answer to {user}'s REGISTER")
            text = sock.recv(65536).decode("utf-8", "replace")
            if f"CSeq: {cseq} REGISTER" not in text:
                continue
            status = int(text.split(" ", 2)[1])
            if status < 200:
                continue
            if status != 401 or cseq == 2:
                return status
            value = authorization(text, user, password, "REGISTER", registrar)
            auth = f"Authorization: {value}\r\n"
            break
    raise AssertionError("unreachable")


# -- the web ----------------------------------------------------------------------------------

class WebSession:
    """A logged-in browser session on the daemon's web interface (cookie + CSRF token)."""

    def __init__(self, base: str, user: str, password: str, timeout: float = 10.0) -> None:
        url = urllib.parse.urlsplit(base)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.timeout = timeout
        self.cookies: dict[str, str] = {}
        token = secrets.token_urlsafe(16)
        # The login form's CSRF token is a double-submit cookie: any value, sent twice.
        self.cookies["clicktodial_login"] = token
        form = urllib.parse.urlencode({"csrf": token, "username": user, "password": password})
        status, _ = self.request("POST", "/login", form.encode(),
                                 {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 303 or "clicktodial_session" not in self.cookies:
            raise RuntimeError(f"log in as {user} failed ({status})")
        status, me = self.request("GET", "/api/v1/me")
        self.csrf = str(json.loads(me)["csrf_token"])

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            all_headers = dict(headers or {})
            if self.cookies:
                all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            connection.request(method, path, body, all_headers)
            response = connection.getresponse()
            data = response.read()
            for header in response.headers.get_all("Set-Cookie") or []:
                name, _, rest = header.partition("=")
                value = rest.split(";", 1)[0]
                if value and "max-age=0" not in header.lower():
                    self.cookies[name.strip()] = value
                else:
                    self.cookies.pop(name.strip(), None)
            return response.status, data
        finally:
            connection.close()

    def api(self, method: str, path: str, payload: object = None) -> tuple[int, Any]:
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {"X-CSRF-Token": self.csrf}
        if body is not None:
            headers["Content-Type"] = "application/json"
        status, data = self.request(method, "/api/v1" + path, body, headers)
        return status, json.loads(data) if data else None

    def place_call(self, callee: str) -> str:
        status, call = self.api("POST", "/calls", {"callee": callee})
        if status != 201:
            raise RuntimeError(f"placing a call to {callee} failed: {status} {call}")
        return str(call["id"])

    def call_state(self, call_id: str) -> str:
        return str(self.api("GET", f"/calls/{call_id}")[1]["state"])

    def wait_state(self, call_id: str, states: Sequence[str], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        state = self.call_state(call_id)
        while state not in states and time.monotonic() < deadline:
            time.sleep(0.1)
            state = self.call_state(call_id)
        return state

    def hang_up(self, call_id: str) -> None:
        self.api("DELETE", f"/calls/{call_id}")


# -- a scripted phone -------------------------------------------------------------------------

_SDP = ("v=0\r\no=phone {sess} {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
        "t=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def _header(text: str, name: str, short: str | None = None) -> list[str]:
    names = [name.lower()] + ([short] if short else [])
    values = []
    for line in text.split("\r\n")[1:]:
        if not line:
            break
        key, _, value = line.partition(":")
        if key.strip().lower() in names:
            values.append(value.strip())
    return values


class Phone:
    """
    A phone on a raw UDP socket (127.0.0.1, a free port): registers, then answers every
    INVITE (180, then 200 with an SDP) and re-INVITE, 200s BYE and CANCEL, and records
    every request it receives.  ``headers`` go into its 180 and 200s to INVITEs (a Contact
    or Record-Route of the attacker's choosing); without a Contact among them it gives its
    own address.  Runs on a thread until :meth:`close`.
    """

    def __init__(self, user: str, password: str, sip: tuple[str, int],
                 headers: Sequence[str] = (), host: str = "127.0.0.1") -> None:
        self.user, self.password, self.sip = user, password, sip
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()[:2]
        self.headers = list(headers)
        self.received: list[str] = []
        self.tag = secrets.token_hex(4)
        self._version = 1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self, expires: int = 300) -> int:
        return register(self.sock, self.sip, self.user, self.password, expires)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"phone-{self.user}",
                                        daemon=True)
        self._thread.start()

    def methods(self) -> list[str]:
        return [text.split(" ", 1)[0] for text in list(self.received)]

    def _run(self) -> None:
        while not self._stop.is_set():
            if not select.select([self.sock], [], [], 0.1)[0]:
                continue
            try:
                data, peer = self.sock.recvfrom(65536)
            except OSError:
                return
            text = data.decode("utf-8", "replace")
            if text.startswith("SIP/2.0"):
                continue
            self.received.append(text)
            self._answer(text, peer)

    def _answer(self, text: str, peer: tuple[str, int]) -> None:
        method = text.split(" ", 1)[0]
        if method == "INVITE":
            if ";tag=" not in (_header(text, "To", "t") or [""])[0]:
                self._respond(text, peer, "180 Ringing", dialog=True)
            self._version += 1
            sdp = _SDP.format(sess=self.port, version=self._version, port=self.port + 1)
            self._respond(text, peer, "200 OK", dialog=True, body=sdp)
        elif method in ("BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE"):
            self._respond(text, peer, "200 OK")
        elif method != "ACK":
            self._respond(text, peer, "501 Not Implemented")

    def _respond(self, request: str, peer: tuple[str, int], status: str, *,
                 dialog: bool = False, body: str = "") -> None:
        lines = [f"SIP/2.0 {status}"]
        lines += [f"Via: {via}" for via in _header(request, "Via", "v")]
        lines += [f"From: {value}" for value in _header(request, "From", "f")]
        to = (_header(request, "To", "t") or [""])[0]
        lines.append(f"To: {to}" if ";tag=" in to else f"To: {to};tag={self.tag}")
        lines += [f"Call-ID: {value}" for value in _header(request, "Call-ID", "i")]
        lines += [f"CSeq: {value}" for value in _header(request, "CSeq")]
        if dialog:
            extra = self.headers
            if not any(h.lower().startswith("contact:") for h in extra):
                lines.append(f"Contact: <sip:{self.user}@{self.host}:{self.port}>")
            lines += extra
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), peer)

    def close(self, unregister: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if unregister:
            try:
                self.register(expires=0)
            except (OSError, TimeoutError, ValueError):
                pass
        self.sock.close()


def run_phones(phones: Sequence[Phone], body: Callable[[], None]) -> None:
    """Start ``phones``, run ``body``, close them (unregistering) whatever happens."""
    for phone in phones:
        phone.start()
    try:
        body()
    finally:
        for phone in phones:
            phone.close()
