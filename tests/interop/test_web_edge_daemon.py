"""
Trust at the web's edge, against the running daemon over real sockets: its web interface on
a TLS (``ssl:``) endpoint with a certificate made in the test, ``[web] metrics_listen`` on
plain loopback TCP, ``metrics_token`` set, a phone registered with Digest over UDP.

- ``/metrics`` and ``/readyz`` are refused on the web listener without the token (and to a
  user who is not an administrator), answered with it, and answered on the metrics endpoint;
- a non-admin's ``/api/v1/users`` and event stream say a registered phone is online, never
  its address;
- a JSON body of 30,000 ``[`` gets 400, logged in one line, no traceback;
- every HTTPS answer carries ``Strict-Transport-Security``.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from calltools import DOMAIN, register  # type: ignore[import-not-found]
from conftest import (  # type: ignore[import-not-found]
    Daemon,
    find_free_port,
    spawn_daemon,
)
from test_tls_daemon import client_context, make_certificate  # type: ignore[import-not-found]

pytestmark = pytest.mark.interop

TOKEN = "interop-edge-metrics-token-0123"


class Edge:
    """The daemon, its ports, and HTTP clients of its two listeners."""

    def __init__(
        self, daemon: Daemon, web_port: int, metrics_port: int, sip_port: int, cert: Path
    ) -> None:
        self.daemon = daemon
        self.web = f"https://127.0.0.1:{web_port}"
        self.metrics = f"http://127.0.0.1:{metrics_port}"
        self.sip_port = sip_port
        self.cert = cert

    def browser(self) -> Browser:
        return Browser(self.web, self.cert)


class Browser:
    """An HTTPS client keeping cookies (trusting the test's certificate), never redirected."""

    def __init__(self, base: str, cert: Path) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=client_context(cert)),
            urllib.request.HTTPCookieProcessor(self.jar),
            NoRedirect(),
        )

    def request(
        self, path: str, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        url = path if path.startswith("http") else self.base + path
        request = urllib.request.Request(url, data=data, headers=headers or {})
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def login(self, username: str) -> None:
        _, _, page = self.request("/login")
        match = re.search(rb'name="csrf" value="([^"]*)"', page)
        assert match, page
        form = urllib.parse.urlencode(
            {"csrf": match.group(1).decode(), "username": username, "password": username}
        ).encode()
        status, _, _ = self.request("/login", form)
        assert status == 303


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("edge")
    cert, key = make_certificate(tmp)
    web_port, metrics_port, sip_port = find_free_port(), find_free_port(), find_free_port()
    config = tmp / "daemon.ini"
    log_path = tmp / "daemon.log"
    config.write_text(
        f"[sip]\ndomain = {DOMAIN}\nlisten = 127.0.0.1:{sip_port}\n"
        "[registrar]\ndigest_algorithms = MD5\n"
        f"[web]\nlisten = ssl:{web_port}:privateKey={key}:certKey={cert}:interface=127.0.0.1\n"
        f"metrics_listen = tcp:{metrics_port}:interface=127.0.0.1\n"
        f"metrics_token = {TOKEN}\n"
        f"[store]\nurl = sqlite:///{tmp}/clicktodial.sqlite\nauto_upgrade = yes\n"
        "demo_users = yes\n"
        f"[log]\nlevel = debug\nfile = {log_path}\n"
    )
    daemon = spawn_daemon(config, log_path, tmp / "daemon.out")
    try:
        daemon.wait_for_tcp(web_port)
        daemon.wait_for_tcp(metrics_port)
        daemon.wait_for_log("created demo users")
        yield Edge(daemon, web_port, metrics_port, sip_port, cert)
        assert "Traceback" not in daemon.log()
        assert daemon.stop() == 0
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


def plain_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_metrics_and_readyz_need_the_token_on_the_web_listener(edge: Edge) -> None:
    anonymous = edge.browser()
    for path in ("/metrics", "/readyz"):
        status, headers, body = anonymous.request(path)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), path
        assert b"clicktodial_" not in body
        wrong = {"Authorization": "Bearer not-the-token-at-all"}
        assert anonymous.request(path, headers=wrong)[0] == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, _, body = anonymous.request("/metrics", headers=auth)
    assert status == 200 and b"clicktodial_sip_transactions_active" in body
    assert anonymous.request("/readyz", headers=auth)[::2] == (200, b"ready")
    assert anonymous.request("/healthz")[::2] == (200, b"ok")
    bob = edge.browser()
    bob.login("bob")
    assert bob.request("/metrics")[0] == 403


def test_the_metrics_endpoint_answers_metrics_readyz_healthz_and_nothing_else(
    edge: Edge,
) -> None:
    status, body = plain_get(edge.metrics + "/metrics")
    assert status == 200 and b"clicktodial_register_responses_total" in body
    assert plain_get(edge.metrics + "/readyz") == (200, b"ready")
    assert plain_get(edge.metrics + "/healthz") == (200, b"ok")
    for path in ("/directory", "/api/v1/users", "/login"):
        assert plain_get(edge.metrics + path)[0] == 404, path


def next_registration_event(stream: Any) -> dict[str, Any]:
    """The data of the next ``registration`` event on the open stream."""
    lines: list[bytes] = []
    while True:
        line = stream.readline()
        assert line, "the event stream closed"
        if line != b"\n":
            lines.append(line.rstrip(b"\n"))
            continue
        if lines and lines[0] == b"event: registration":
            data = [x for x in lines if x.startswith(b"data: ")]
            return dict(json.loads(data[0][len(b"data: ") :]))
        lines = []


def test_a_non_admin_sees_a_registered_phone_online_but_never_its_address(edge: Edge) -> None:
    phone_port = find_free_port()
    register("alice", "alice", phone_port, edge.sip_port)
    bob = edge.browser()
    bob.login("bob")
    status, _, body = bob.request("/api/v1/users")
    assert status == 200
    assert f":{phone_port}".encode() not in body
    users = {u["username"]: u for u in json.loads(body)}
    assert users["alice"]["registered"] is True and users["alice"]["phones"] >= 1
    assert "contacts" not in users["alice"]
    # The event stream: more phones of alice's register while bob's stream is open, one
    # every 0.5 s (the stream's first read of the registrations sets the state: only a
    # REGISTER after it is news), until an event came (at most 20 phones).
    ports: list[int] = []
    came = threading.Event()

    def phones() -> None:
        while not came.is_set() and len(ports) < 20:
            ports.append(find_free_port())
            register("alice", "alice", ports[-1], edge.sip_port)
            came.wait(0.5)

    request = urllib.request.Request(
        edge.web + "/api/v1/events", headers={"Accept": "text/event-stream"}
    )
    with bob.opener.open(request, timeout=60) as stream:
        registering = threading.Thread(target=phones)
        registering.start()
        try:
            event = next_registration_event(stream)
        finally:
            came.set()
            registering.join(60)
    assert event["username"] == "alice" and event["registered"] is True
    assert "contacts" not in event
    assert not any(str(port) in json.dumps(event) for port in [phone_port, *ports])


def test_a_json_body_of_30000_brackets_gets_400_and_one_log_line_without_traceback(
    edge: Edge,
) -> None:
    bob = edge.browser()
    bob.login("bob")
    csrf = json.loads(bob.request("/api/v1/me")[2])["csrf_token"]
    status, _, body = bob.request(
        "/api/v1/calls", b"[" * 30000, {"Content-Type": "application/json", "X-CSRF-Token": csrf}
    )
    assert status == 400
    assert json.loads(body) == {"error": "the request body nests deeper than 20 levels"}
    log = edge.daemon.log()
    refused = [line for line in log.splitlines() if "refused a JSON body of 30000 bytes" in line]
    assert len(refused) == 1 and len(refused[0]) < 300, refused
    assert "Traceback" not in log and "RecursionError" not in log


def test_every_https_answer_carries_hsts(edge: Edge) -> None:
    browser = edge.browser()
    for path in ("/login", "/healthz", "/static/style.css", "/api/v1/users", "/metrics"):
        headers = browser.request(path)[1]
        assert headers.get("Strict-Transport-Security") == "max-age=31536000", path
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(edge.metrics + "/healthz", timeout=10) as response:
        assert response.headers.get("Strict-Transport-Security") is None
