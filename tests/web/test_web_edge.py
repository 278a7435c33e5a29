"""
Trust at the web's edge, through a real Site (StubTreq) on a memory store and a fake clock:
who may read /metrics and /readyz, who sees contact addresses, JSON bodies too deep or too
strange, HSTS, Secure cookies and X-Forwarded-* believed only from trusted proxies.
"""

from __future__ import annotations

import json

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.web.test.requesthelper import DummyRequest

from clicktodial.config import WebConfig, parse_config
from clicktodial.metrics import DaemonMetrics, MetricsResource, ReadinessResource
from clicktodial.netaddr import NetworkSet
from clicktodial.service import METRICS_SERVICE_NAME, build_service
from clicktodial.testing.transport import FakeReactor, LogCapture
from clicktodial.testing.webfakes import WebClient, WebWorld, web_world
from clicktodial.web.edge import RequestOrigin
from clicktodial.web.http import MAX_JSON_DEPTH, json_too_deep
from clicktodial.web.resource import make_operator_root, make_root_resource

MINIMAL = "[sip]\ndomain = example.test\n[store]\nbackend = memory\n"
METRICS_TOKEN = "s3cret-metrics-token-0123"


def web_config(text: str = "") -> WebConfig:
    config: WebConfig = parse_config(MINIMAL + "[web]\n" + text, "x.ini").web
    return config


def world_with(text: str = "") -> WebWorld:
    return web_world(limits=web_config(text))


class Operated:
    """A web world with the operator tree (/metrics, /readyz, /healthz) as the daemon has it."""

    def __init__(self, text: str = "") -> None:
        self.world = world_with(text)
        self.operator = make_operator_root()
        self.operator.putChild(b"metrics", MetricsResource(DaemonMetrics().registry))
        self.operator.putChild(b"readyz", ReadinessResource(self.world.clock, self.world.store))
        self.root = make_root_resource(self.world.app, self.operator)

    def client(self) -> WebClient:
        """A client of the main listener."""
        return WebClient(self.world, self.root)

    def metrics_client(self) -> WebClient:
        """A client of the ``[web] metrics_listen`` endpoint."""
        return WebClient(self.world, self.operator)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- /metrics and /readyz ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/metrics", "/readyz"])
def test_metrics_and_readyz_refuse_anonymous_and_non_admins_on_the_main_listener(
    path: str,
) -> None:
    operated = Operated(f"metrics_token = {METRICS_TOKEN}\n")
    client = operated.client()
    reply = client.get(path)
    assert reply.code == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert b"clicktodial_" not in reply.body
    assert client.get(path, headers=bearer("wrong-token-wrong-token")).code == 401
    bob_token = operated.world.store.create_token("bob").result
    assert client.get(path, headers=bearer(bob_token)).code == 403
    client.login("bob")
    assert client.get(path).code == 403


@pytest.mark.parametrize("path, expected", [("/metrics", b"# HELP"), ("/readyz", b"ready")])
def test_metrics_and_readyz_answer_the_metrics_token_and_admins(path: str, expected: bytes) -> None:
    operated = Operated(f"metrics_token = {METRICS_TOKEN}\n")
    client = operated.client()
    reply = client.get(path, headers=bearer(METRICS_TOKEN))
    assert reply.code == 200 and expected in reply.body
    assert reply.headers["cache-control"] == "no-store"
    alice_token = operated.world.store.create_token("alice").result
    assert client.get(path, headers=bearer(alice_token)).code == 200
    client.login("alice")
    assert client.get(path).code == 200


def test_without_a_metrics_token_a_bearer_token_is_only_a_user_token() -> None:
    operated = Operated()
    assert operated.client().get("/metrics", headers=bearer(METRICS_TOKEN)).code == 401


def test_healthz_stays_public_and_says_only_ok() -> None:
    reply = Operated().client().get("/healthz")
    assert (reply.code, reply.body) == (200, b"ok")


def test_the_metrics_endpoint_serves_metrics_readyz_healthz_to_anyone_and_nothing_else() -> None:
    client = Operated().metrics_client()
    assert b"# HELP" in client.get("/metrics").body
    assert client.get("/readyz").body == b"ready"
    assert client.get("/healthz").body == b"ok"
    for path in ("/", "/directory", "/api/v1/users", "/login"):
        assert client.get(path).code == 404, path


def test_the_daemon_listens_for_metrics_on_metrics_listen() -> None:
    config = parse_config(
        "[sip]\ndomain = 127.0.0.1\n[web]\nlisten = tcp:8181:interface=127.0.0.1\n"
        "metrics_listen = tcp:9100:interface=127.0.0.1\n[store]\nbackend = memory\n",
        "x.ini",
    )
    reactor = FakeReactor()
    root = build_service(config, reactor)
    root.startService()
    try:
        [(_, factory, _, interface)] = [s for s in reactor.tcpServers if s[0] == 9100]
        assert interface == "127.0.0.1"
        assert factory.resource.getStaticEntity(b"metrics") is not None
        assert factory.resource.getStaticEntity(b"readyz") is not None
        assert root.getServiceNamed(METRICS_SERVICE_NAME).running
    finally:
        root.stopService()


def test_metrics_listen_must_differ_from_listen_and_the_token_must_be_long() -> None:
    from clicktodial.config import ConfigError

    with pytest.raises(ConfigError, match=r"\[web\] metrics_listen: is the same endpoint"):
        web_config("metrics_listen = tcp:8080:interface=127.0.0.1\n")
    with pytest.raises(ConfigError, match=r"\[web\] metrics_token: too short") as error:
        web_config("metrics_token = short\n")
    assert "short'" not in str(error.value)


# --- contact addresses -----------------------------------------------------------------------


def test_users_show_non_admins_presence_but_no_contact_addresses() -> None:
    world = web_world()
    world.register("carol", "sip:carol@192.0.2.7:5099")
    world.register("bob", "sip:bob@192.0.2.8:5098")
    client = WebClient(world)
    client.login("bob")
    reply = client.get("/api/v1/users")
    assert reply.code == 200
    assert b"192.0.2.7" not in reply.body
    users = {u["username"]: u for u in reply.json()}
    assert users["carol"] == {
        "username": "carol",
        "display_name": "Carol",
        "registered": True,
        "phones": 1,
    }
    assert users["alice"]["registered"] is False and "contacts" not in users["alice"]
    # My own phone's address is mine to see.
    assert users["bob"]["contacts"] == [{"uri": "sip:bob@192.0.2.8:5098", "expires": 3600}]


def test_users_show_admins_every_contact() -> None:
    world = web_world()
    world.register("carol", "sip:carol@192.0.2.7:5099")
    client = WebClient(world)
    client.login("alice")
    users = {u["username"]: u for u in client.get("/api/v1/users").json()}
    assert users["carol"]["contacts"] == [{"uri": "sip:carol@192.0.2.7:5099", "expires": 3600}]
    assert users["carol"]["phones"] == 1


def registration_events(client: WebClient) -> list[dict[str, object]]:
    events = []
    for block in client.streamed().split(b"\n\n"):
        lines = block.split(b"\n")
        if lines[0] == b"event: registration":
            events.append(json.loads(lines[2][len(b"data: ") :]))
    return events


def test_event_streams_show_non_admins_presence_and_admins_contacts() -> None:
    world = web_world()
    bob, alice = WebClient(world), WebClient(world)
    bob.login("bob")
    alice.login("alice")
    bob.get("/api/v1/events", stream=True)
    alice.get("/api/v1/events", stream=True)
    world.clock.advance(2.1)  # the monitor's first read establishes the state
    world.register("carol", "sip:carol@192.0.2.7:5099")
    for _ in range(25):
        world.clock.advance(0.1)
    assert b"192.0.2.7" not in bob.streamed()
    assert registration_events(bob) == [{"username": "carol", "registered": True, "phones": 1}]
    [seen] = registration_events(alice)
    assert seen["contacts"] == [{"uri": "sip:carol@192.0.2.7:5099", "expires": 3598}]


# --- JSON bodies -------------------------------------------------------------------------------


def post_call_body(body: bytes) -> tuple[int, str, LogCapture]:
    world = web_world()
    world.register("alice")
    world.register("bob")
    client = WebClient(world)
    token = world.store.create_token("alice").result
    with LogCapture() as capture:
        reply = client.request(
            "POST",
            "/api/v1/calls",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
    return reply.code, reply.json()["error"], capture


def test_30000_nested_brackets_get_400_and_one_short_log_line_without_traceback() -> None:
    code, error, capture = post_call_body(b"[" * 30000)
    assert code == 400
    assert error == f"the request body nests deeper than {MAX_JSON_DEPTH} levels"
    assert capture.failures() == []
    refused = [e for e in capture.events if "refused a JSON body" in e.get("log_format", "")]
    assert len(refused) == 1
    assert refused[0]["problem"] == error and refused[0]["size"] == 30000


@pytest.mark.parametrize(
    "body",
    [
        b'{"callee": ' + b"9" * 60_000 + b"}",  # int() refuses more than 4,300 digits
        b'{"callee": NaN}',
        b'{"callee": -Infinity}',
        b'{"callee": "bob"',
        b"\xff\xfe",
    ],
    ids=["60000-digits", "NaN", "-Infinity", "unterminated", "not-utf8"],
)
def test_strange_json_bodies_get_400_without_traceback(body: bytes) -> None:
    code, error, capture = post_call_body(body)
    assert (code, error) == (400, "the request body is not valid JSON")
    assert capture.failures() == []


def test_json_depth_counts_arrays_and_objects_but_not_brackets_in_strings() -> None:
    assert not json_too_deep(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert json_too_deep(b"[" * (MAX_JSON_DEPTH + 1))
    assert json_too_deep(b'{"a":' * (MAX_JSON_DEPTH + 1))
    assert not json_too_deep(b'{"a": "' + b"[{" * 1000 + b'"}')
    assert not json_too_deep(b'{"a": "\\"' + b"[" * 1000 + b'"}')
    assert json_too_deep(b'{"a": "\\\\"' + b", [" * 1000 + b"}")
    assert not json_too_deep(b"[]" * 30000)
    # An unterminated string runs to the end (and a lone trailing backslash is no trouble).
    assert not json_too_deep(b'["' + b"[" * 100 + b"\\")


# --- HSTS, Secure cookies, trusted proxies ----------------------------------------------------


def test_answers_over_tls_carry_hsts_and_plain_http_ones_do_not() -> None:
    world = web_world()
    for path in ("/login", "/healthz", "/static/app.js", "/api/v1/users", "/nowhere"):
        reply = WebClient(world, base="https://clicktodial.test").get(path)
        assert reply.headers["strict-transport-security"] == "max-age=31536000", path
        assert "strict-transport-security" not in WebClient(world).get(path).headers, path


def test_hsts_max_age_is_configurable_and_0_sends_none() -> None:
    reply = WebClient(world_with("hsts_max_age = 600\n"), base="https://x.test").get("/login")
    assert reply.headers["strict-transport-security"] == "max-age=600"
    reply = WebClient(world_with("hsts_max_age = 0\n"), base="https://x.test").get("/login")
    assert "strict-transport-security" not in reply.headers


def session_cookie(
    world: WebWorld, base: str = "http://clicktodial.test", headers: dict[str, str] | None = None
) -> str:
    """The Set-Cookie of a login's session cookie."""
    client = WebClient(world, base=base)
    token = client.csrf("/login")
    reply = client.request(
        "POST",
        "/login",
        headers=headers,
        form={"csrf": token, "username": "bob", "password": "bob-pass"},
    )
    assert reply.code == 303
    [cookie] = [
        c for c in reply.headers["set-cookie"].split(", ") if c.startswith("clicktodial_session=")
    ]
    return cookie


def test_cookies_are_secure_over_tls_only_unless_always() -> None:
    assert "Secure" in session_cookie(web_world(), "https://clicktodial.test")
    assert "Secure" not in session_cookie(web_world())
    assert "Secure" in session_cookie(world_with("secure_cookies = always\n"))


def test_x_forwarded_proto_https_counts_only_from_a_trusted_proxy() -> None:
    https = {"X-Forwarded-Proto": "https"}
    trusted = world_with("trusted_proxies = 127.0.0.1\n")
    cookie = session_cookie(trusted, headers=https)
    assert "Secure" in cookie
    reply = WebClient(trusted).get("/login", headers=https)
    assert reply.headers["strict-transport-security"] == "max-age=31536000"
    untrusted = world_with("trusted_proxies = 192.0.2.0/24\n")
    assert "Secure" not in session_cookie(untrusted, headers=https)
    reply = WebClient(untrusted).get("/login", headers=https)
    assert "strict-transport-security" not in reply.headers


def failed_logins(world: WebWorld, forwarded_for: str, count: int, first: int = 0) -> list[int]:
    """Codes of ``count`` failed logins (each as a different unknown user)."""
    codes = []
    for i in range(first, first + count):
        client = WebClient(world)
        token = client.csrf("/login")
        codes.append(
            client.request(
                "POST",
                "/login",
                headers={"X-Forwarded-For": forwarded_for},
                form={"csrf": token, "username": f"nobody{i}", "password": "wrong-password"},
            ).code
        )
    return codes


THROTTLE = "login_refuse_after = 3\nlogin_base_delay = 0\nlogin_max_delay = 0\n"


def test_the_login_throttle_counts_the_forwarded_client_behind_a_trusted_proxy() -> None:
    world = world_with(THROTTLE + "trusted_proxies = 127.0.0.1\n")
    assert failed_logins(world, "198.51.100.7", 4) == [401, 401, 401, 429]
    assert failed_logins(world, "198.51.100.8", 1, first=10) == [401]


def test_the_login_throttle_ignores_x_forwarded_for_from_anyone_else() -> None:
    world = world_with(THROTTLE)
    assert failed_logins(world, "198.51.100.7", 3) == [401, 401, 401]
    assert failed_logins(world, "198.51.100.8", 1, first=10) == [429]


def request_from(peer: object, **headers: str) -> DummyRequest:
    request = DummyRequest([b""])
    request.client = peer
    for name, value in headers.items():
        request.requestHeaders.addRawHeader(name.replace("_", "-"), value)
    return request


@pytest.mark.parametrize(
    "peer, forwarded, client",
    [
        # Not from a proxy: the header is the client's own say.
        (IPv4Address("TCP", "203.0.113.9", 1), "198.51.100.7", "203.0.113.9"),
        # From the proxy: the address it appended.
        (IPv4Address("TCP", "10.0.0.2", 1), "198.51.100.7", "198.51.100.7"),
        # What the client sent before the proxy appended is not believed.
        (IPv4Address("TCP", "10.0.0.2", 1), "1.2.3.4, 198.51.100.7", "198.51.100.7"),
        # Through two trusted proxies.
        (IPv4Address("TCP", "10.0.0.2", 1), "1.2.3.4, 198.51.100.7, 10.0.0.3", "198.51.100.7"),
        # Garbage written by a proxy: the walk stops at that proxy.
        (IPv4Address("TCP", "10.0.0.2", 1), "198.51.100.7, unknown", "10.0.0.2"),
        (IPv4Address("TCP", "10.0.0.2", 1), "", "10.0.0.2"),
        (IPv6Address("TCP", "::1", 1), "2001:db8::7", "2001:db8::7"),
        (IPv6Address("TCP", "::1", 1), "[2001:db8::7]", "2001:db8::7"),
        (UNIXAddress(b"/run/web.sock"), "198.51.100.7", "unix"),
    ],
)
def test_client_address_walks_x_forwarded_for_through_trusted_proxies_only(
    peer: object, forwarded: str, client: str
) -> None:
    origin = RequestOrigin(NetworkSet.parse("10.0.0.0/24, ::1"))
    request = request_from(peer, x_forwarded_for=forwarded)
    assert origin.client_address(request) == client


def test_several_x_forwarded_for_headers_are_one_list() -> None:
    origin = RequestOrigin(NetworkSet.parse("10.0.0.0/24"))
    request = request_from(IPv4Address("TCP", "10.0.0.2", 1))
    request.requestHeaders.addRawHeader("x-forwarded-for", "198.51.100.7")
    request.requestHeaders.addRawHeader("x-forwarded-for", "10.0.0.3")
    assert origin.client_address(request) == "198.51.100.7"
