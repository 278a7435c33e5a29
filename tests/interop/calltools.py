"""
Helpers for the click-to-dial interop tests: a daemon with the demo users and the
internal call-control API, Digest registration of a phone's address from Python, and
the control API client.

The phones' bindings are made by real REGISTER requests with Digest authentication,
sent from the very UDP port the phone (SIPp, baresip) then listens on, so the stored
contact and the ``received`` address agree.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import socket
import urllib.error
import urllib.request
from typing import Any

DOMAIN = "127.0.0.1"


def daemon_ini(sip_port: int, web_port: int, control_port: int, tmp: str,
               policy: str = "flow4", **calls: str) -> str:
    """A daemon config: SQLite in ``tmp``, demo users, short T1, the control API."""
    extra = "".join(f"{key} = {value}\n" for key, value in calls.items())
    return (
        "[sip]\n"
        f"domain = {DOMAIN}\n"
        f"listen = 127.0.0.1:{sip_port}\n"
        "[web]\n"
        f"listen = tcp:{web_port}:interface=127.0.0.1\n"
        "[store]\n"
        f"url = sqlite:///{tmp}/clicktodial.sqlite\n"
        "auto_upgrade = yes\n"
        "demo_users = yes\n"
        "[registrar]\n"
        "digest_algorithms = MD5\n"
        "[calls]\n"
        f"policy = {policy}\n"
        f"control_listen = tcp:{control_port}:interface=127.0.0.1\n"
        + extra
    )


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def register(user: str, password: str, port: int, sip_port: int, expires: int = 600,
             timeout: float = 5.0) -> None:
    """
    REGISTER ``sip:user@127.0.0.1:port`` with Digest (MD5) from UDP 127.0.0.1:``port``.

    :raises AssertionError: the registrar did not answer 200.
    """
    call_id = secrets.token_hex(8)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.settimeout(timeout)
        authorization = ""
        for cseq in (1, 2):
            request = (
                f"REGISTER sip:{DOMAIN}:{sip_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
                f"From: <sip:{user}@{DOMAIN}>;tag={secrets.token_hex(4)}\r\n"
                f"To: <sip:{user}@{DOMAIN}>\r\n"
                f"Call-ID: {call_id}\r\n"
                f"CSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:{user}@127.0.0.1:{port}>\r\n"
                f"Expires: {expires}\r\nMax-Forwards: 70\r\n{authorization}"
                "Content-Length: 0\r\n\r\n"
            )
            sock.sendto(request.encode(), ("127.0.0.1", sip_port))
            data, _ = sock.recvfrom(65536)
            text = data.decode(errors="replace")
            status = int(text.split(" ", 2)[1])
            if status == 200:
                return
            assert status == 401, text
            challenge = re.search(r"WWW-Authenticate:\s*Digest\s+(.*)", text, re.I)
            assert challenge is not None, text
            params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.group(1)))
            uri = f"sip:{DOMAIN}:{sip_port}"
            ha1 = _md5(f"{user}:{params['realm']}:{password}")
            ha2 = _md5(f"REGISTER:{uri}")
            cnonce = secrets.token_hex(4)
            if "qop" in params:
                response = _md5(f"{ha1}:{params['nonce']}:00000001:{cnonce}:auth:{ha2}")
                qop = f', qop=auth, nc=00000001, cnonce="{cnonce}"'
            else:
                response = _md5(f"{ha1}:{params['nonce']}:{ha2}")
                qop = ""
            authorization = (
                f'Authorization: Digest username="{user}", realm="{params["realm"]}", '
                f'nonce="{params["nonce"]}", uri="{uri}", response="{response}", '
                f'algorithm=MD5{qop}\r\n'
            )
    raise AssertionError("no 200 to the authenticated REGISTER")


class Control:
    """
    The daemon's internal call-control API (``[calls] control_listen``) and, given
    ``web_port``, its ``/metrics`` (what the UA core and the controller still hold).
    """

    def __init__(self, port: int, web_port: int | None = None) -> None:
        self.base = f"http://127.0.0.1:{port}/calls"
        self.metrics_url = f"http://127.0.0.1:{web_port}/metrics" if web_port else None
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method: str, url: str, body: object = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def place(self, caller: str, callee: str) -> dict[str, Any]:
        status, body = self._call("POST", self.base, {"caller": caller, "callee": callee})
        assert status == 201, body
        return dict(body)

    def get(self, call_id: str) -> dict[str, Any]:
        status, body = self._call("GET", f"{self.base}/{call_id}")
        assert status == 200, body
        return dict(body)

    def hang_up(self, call_id: str, by: str = "") -> bool:
        status, body = self._call("DELETE", f"{self.base}/{call_id}?by={by}")
        assert status == 200, body
        return bool(body["hung_up"])

    def active(self) -> list[dict[str, Any]]:
        """The calls in progress (``GET /calls``)."""
        status, body = self._call("GET", self.base)
        assert status == 200, body
        return list(body)

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as ``{name: value}``, each metric summed over its labels."""
        assert self.metrics_url is not None, "Control made without web_port"
        with self.opener.open(self.metrics_url, timeout=10) as response:
            text = response.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            name = sample.split("{", 1)[0]
            values[name] = values.get(name, 0.0) + float(value)
        return values
