"""
What the attack checks (``scripts/attacks/check_*.py``) share: their command line, a SIP
client over UDP and TCP with Digest (MD5, written here, not by the code under test), web
requests, the daemon's log, and the PASS/FAIL last line.

Every check takes ``--sip HOST:PORT --web URL --user U --password P --user2 U2
--password2 P2`` and, from ``scripts/attacks/run``, ``--log PATH`` and
``--metrics-token T``; arguments it does not know are ignored (``parse_known_args``).
Loopback only: every target must be in 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import ipaddress
import re
import secrets
import select
import socket
import sys
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Args",
    "fail",
    "metric_delta",
    "parse_args",
    "passed",
    "register",
    "sip_request",
    "verdict",
    "web_login",
]


@dataclass
class Args:
    sip_host: str
    sip_port: int
    web: str
    web_host: str
    web_port: int
    user: str
    password: str
    user2: str
    password2: str
    log: str | None
    metrics_token: str | None
    domain: str


def _loopback(host: str) -> str:
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"FAIL: {host} is not a loopback address (these checks stay on loopback)")
    return host


def _url(text: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(text)
    return _loopback(parts.hostname or ""), parts.port or 80


def parse_args(
    description: str,
    argv: Sequence[str] | None = None,
    extra: Sequence[tuple[str, dict[str, object]]] = (),
) -> tuple[Args, argparse.Namespace]:
    """The common arguments (and ``extra`` ones: (flag, add_argument keywords))."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--sip", required=True, help="HOST:PORT of the daemon's SIP (UDP, TCP)")
    parser.add_argument("--web", required=True, help="URL of the web interface")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--user2", required=True)
    parser.add_argument("--password2", required=True)
    parser.add_argument("--log", help="the daemon's log file ([log] file)")
    parser.add_argument("--metrics-token", help="[web] metrics_token")
    parser.add_argument("--domain", help="[sip] domain (default: the SIP host)")
    for flag, keywords in extra:
        parser.add_argument(flag, **keywords)  # type: ignore[arg-type]
    namespace, _unknown = parser.parse_known_args(argv)
    sip_host, _, sip_port = namespace.sip.rpartition(":")
    web_host, web_port = _url(namespace.web)
    args = Args(
        sip_host=_loopback(sip_host), sip_port=int(sip_port), web=namespace.web.rstrip("/"),
        web_host=web_host, web_port=web_port, user=namespace.user,
        password=namespace.password, user2=namespace.user2, password2=namespace.password2,
        log=namespace.log, metrics_token=namespace.metrics_token,
        domain=namespace.domain or sip_host,
    )
    return args, namespace


def passed(figures: str = "") -> int:
    if figures:
        print(figures)
    print("PASS")
    return 0


def fail(reason: str) -> int:
    print(f"FAIL: {reason}")
    return 1


def verdict(figures: str, problems: Sequence[str]) -> int:
    """The figures, then ``PASS``, or ``FAIL:`` and the problems (exit status 0 or 1)."""
    if problems:
        print(figures)
        return fail("; ".join(problems))
    return passed(figures)


def metric_delta(after: float | None, before: float | None) -> str:
    """How much a counter grew, as text (``?`` when either reading is missing)."""
    return "?" if after is None or before is None else f"{after - before:.0f}"


# -- SIP ----------------------------------------------------------------------------------


def md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8", "surrogateescape")).hexdigest()


def status_of(data: bytes) -> int:
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def challenge(data: bytes) -> dict[str, str]:
    """The parameters of the MD5 (or first) Digest challenge in a 401."""
    found = re.findall(rb"\r\nWWW-Authenticate[ \t]*:[ \t]*Digest[ \t]+([^\r\n]+)", data, re.I)
    if not found:
        return {}
    chosen = next((c for c in found if b"MD5" in c.upper()), found[0])
    return {k.lower(): (v or w) for k, v, w in re.findall(
        r'([A-Za-z-]+)[ \t]*=[ \t]*(?:"([^"]*)"|([^,\s]+))', chosen.decode("latin-1"))}


def authorization(user: str, password: str, params: dict[str, str], uri: str, method: str,
                  nc: int = 1, username: str | None = None) -> str:
    """An RFC 2617 MD5 response to ``params`` (qop=auth when offered)."""
    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    ha1 = md5(f"{user}:{realm}:{password}")
    ha2 = md5(f"{method}:{uri}")
    shown = user if username is None else username
    if "auth" in params.get("qop", ""):
        nc_text, cnonce = f"{nc:08x}", secrets.token_hex(4)
        response = md5(f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")
        tail = f', qop=auth, nc={nc_text}, cnonce="{cnonce}"'
    else:
        response, tail = md5(f"{ha1}:{nonce}:{ha2}"), ""
    return (f'Digest username="{shown}", realm="{realm}", nonce="{nonce}", uri="{uri}",'
            f' response="{response}", algorithm=MD5{tail}')


def sip_request(args: Args, method: str, user: str, local: tuple[str, int], *,
                transport: str = "UDP", call_id: str | None = None, cseq: int = 1,
                contacts: Sequence[str] | None = None, headers: Sequence[str] = (),
                expires: int = 600, from_display: str = "") -> bytes:
    """A request from ``local`` (``contacts`` default: ``<sip:user@local>``)."""
    host, port = local
    if contacts is None:
        contacts = [f"<sip:{user}@{host}:{port};transport={transport.lower()}>"]
    lines = [
        f"{method} sip:{args.domain} SIP/2.0",
        f"Via: SIP/2.0/{transport} {host}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport",
        "Max-Forwards: 70",
        f"From: {from_display}<sip:{user}@{args.domain}>;tag={secrets.token_hex(4)}",
        f"To: <sip:{user}@{args.domain}>",
        f"Call-ID: {call_id or secrets.token_hex(8)}",
        f"CSeq: {cseq} {method}",
        *(f"Contact: {c}" for c in contacts),
        f"Expires: {expires}",
        *headers,
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


class SipClient:
    """One phone: a UDP socket, or a TCP connection, from ``host`` (port chosen by the system)."""

    def __init__(self, args: Args, host: str, transport: str = "UDP", port: int = 0,
                 timeout: float = 5.0) -> None:
        self.args = args
        self.transport = transport
        self.timeout = timeout
        kind = socket.SOCK_DGRAM if transport == "UDP" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        if transport != "UDP":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.settimeout(timeout)
        if transport != "UDP":
            self.sock.connect((args.sip_host, args.sip_port))
        self.local = self.sock.getsockname()
        self._buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SipClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        if self.transport == "UDP":
            self.sock.sendto(data, (self.args.sip_host, self.args.sip_port))
        else:
            self.sock.sendall(data)

    def receive(self, timeout: float | None = None) -> bytes:
        """The next message (b"" if none in time, or the connection closed)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if self.transport != "UDP":
                message = self._framed()
                if message:
                    return message
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return b""
            try:
                data = self.sock.recv(65535)
            except OSError:
                return b""
            if self.transport == "UDP":
                return data
            if not data:
                return b""
            self._buffer += data

    def _framed(self) -> bytes:
        head, sep, rest = self._buffer.partition(b"\r\n\r\n")
        if not sep:
            return b""
        length = re.search(rb"\r\n(?:Content-Length|l)[ \t]*:[ \t]*(\d+)", head, re.I)
        size = int(length.group(1)) if length else 0
        if len(rest) < size:
            return b""
        self._buffer = rest[size:]
        return head + sep + rest[:size]

    def final(self, timeout: float | None = None) -> bytes:
        """The next final response (provisional ones skipped)."""
        while True:
            data = self.receive(timeout)
            if not data or status_of(data) >= 200:
                return data


def register(args: Args, user: str, password: str, client: SipClient, *,
             contacts: Sequence[str] | None = None, headers: Sequence[str] = (),
             expires: int = 600, from_display: str = "", username: str | None = None,
             timeout: float = 5.0) -> tuple[int, bytes]:
    """A whole registration (REGISTER, 401, REGISTER with Digest): (final status, response)."""
    call_id = secrets.token_hex(8)
    client.send(sip_request(args, "REGISTER", user, client.local, transport=client.transport,
                            call_id=call_id, cseq=1, contacts=contacts, headers=headers,
                            expires=expires, from_display=from_display))
    first = client.final(timeout)
    if status_of(first) != 401:
        return status_of(first), first
    auth = authorization(user, password, challenge(first), f"sip:{args.domain}", "REGISTER",
                         username=username)
    client.send(sip_request(args, "REGISTER", user, client.local, transport=client.transport,
                            call_id=call_id, cseq=2, contacts=contacts,
                            headers=[*headers, f"Authorization: {auth}"], expires=expires,
                            from_display=from_display))
    second = client.final(timeout)
    return status_of(second), second


def unregister_all(args: Args, user: str, password: str, host: str) -> int:
    """Remove every binding of ``user`` (Contact: *, Expires: 0): the final status."""
    with SipClient(args, host) as client:
        return register(args, user, password, client, contacts=["*"], expires=0)[0]


# -- HTTP ---------------------------------------------------------------------------------


def http_request(host: str, port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None, source: str | None = None,
                 timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection: (status, headers, body)."""
    connection = http.client.HTTPConnection(
        host, port, timeout=timeout, source_address=(source, 0) if source else None)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def web_login(args: Args, username: str, password: str, source: str | None = None,
              timeout: float = 60.0) -> int:
    """POST /login (the form, with its double-submit token): the status (303: logged in)."""
    token = secrets.token_hex(16)
    body = urllib.parse.urlencode(
        {"csrf": token, "username": username, "password": password}).encode()
    status, _, _ = http_request(
        args.web_host, args.web_port, "POST", "/login", body,
        {"Content-Type": "application/x-www-form-urlencoded",
         "Cookie": f"clicktodial_login={token}"}, source=source, timeout=timeout)
    return status


def metric(args: Args, name: str) -> float | None:
    """The sum of a metric's samples named ``name`` (with labels in it), or None."""
    if not args.metrics_token:
        return None
    try:
        status, _, body = http_request(args.web_host, args.web_port, "GET", "/metrics",
                                       headers={"Authorization": f"Bearer {args.metrics_token}"},
                                       timeout=10)
    except OSError:
        return None
    if status != 200:
        return None
    total, found = 0.0, False
    for line in body.decode().splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


def log_text(args: Args) -> str:
    """The daemon's log so far ("" without ``--log``)."""
    if not args.log:
        return ""
    with open(args.log, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def main_guard(run: object) -> None:
    """Run ``run()``; an unexpected error is a FAIL line, not a traceback as last line."""
    try:
        code = run()  # type: ignore[operator]
    except Exception as e:  # the last line must say FAIL
        print(f"FAIL: {type(e).__name__}: {e}")
        code = 1
    sys.exit(code)
