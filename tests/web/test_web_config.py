"""
The web interface's limits are ``[web]`` settings: their defaults are what the web used to
hard-code, bad values stop start-up naming file, section and key, and each one is obeyed.
"""

from __future__ import annotations

import attrs
import pytest

from clicktodial.config import ConfigError, WebConfig, parse_config
from clicktodial.store.memory import MemoryStore
from clicktodial.testing.fakes import InlineReactor, InlineThreadPool, cheap_password_hasher
from clicktodial.testing.webfakes import Reply, WebClient, web_world
from clicktodial.web.app import DEFAULT_LIMITS, login_throttle_settings, make_web_app

MINIMAL = "[sip]\ndomain = example.test\n[store]\nbackend = memory\n"


def web_config(text: str) -> WebConfig:
    config: WebConfig = parse_config(MINIMAL + "[web]\n" + text, "x.ini").web
    return config


def test_the_defaults_are_the_limits_the_web_had() -> None:
    """The INI defaults, the Python defaults, and the values that were module constants."""
    assert web_config("") == DEFAULT_LIMITS
    throttle = login_throttle_settings(DEFAULT_LIMITS)
    assert (
        throttle.free_failures,
        throttle.base_delay,
        throttle.max_delay,
        throttle.refuse_after,
        throttle.refuse_seconds,
        throttle.forget_after,
    ) == (5, 1.0, 8.0, 10, 300.0, 900.0)
    limits = DEFAULT_LIMITS
    assert (limits.session_idle_timeout, limits.session_lifetime, limits.max_sessions) == (
        3600.0,
        43200.0,
        100_000,
    )
    assert (
        limits.calls_per_minute,
        limits.event_streams_per_user,
        limits.event_keepalive,
        limits.event_retry,
        limits.presence_poll_interval,
        limits.max_body,
    ) == (10, 8, 15.0, 3.0, 2.0, 65536)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "calls_per_minute = 0\n",
            "x.ini: [web] calls_per_minute: invalid number '0' (expected 1 or more)",
        ),
        (
            "event_streams_per_user = many\n",
            "x.ini: [web] event_streams_per_user: invalid number 'many'",
        ),
        ("event_keepalive = 0\n", "x.ini: [web] event_keepalive: invalid duration '0'"),
        ("event_retry = -1\n", "x.ini: [web] event_retry: invalid duration '-1'"),
        (
            "presence_poll_interval = soon\n",
            "x.ini: [web] presence_poll_interval: invalid duration 'soon'",
        ),
        ("session_idle_timeout = 0\n", "x.ini: [web] session_idle_timeout: invalid duration"),
        (
            "session_idle_timeout = 7200\nsession_lifetime = 3600\n",
            "x.ini: [web] session_lifetime: 3600.0 is less than session_idle_timeout (7200.0)",
        ),
        (
            "login_base_delay = 10\n",
            "x.ini: [web] login_max_delay: 8.0 is less than login_base_delay (10.0)",
        ),
        ("login_max_tracked = 0\n", "x.ini: [web] login_max_tracked: invalid number '0'"),
        ("login_forget_after = 0\n", "x.ini: [web] login_forget_after: invalid duration '0'"),
        ("max_sessions = -5\n", "x.ini: [web] max_sessions: invalid number '-5'"),
        ("max_body = 100\n", "x.ini: [web] max_body: 100 is less than 1024 bytes"),
        ("login_free_failure = 3\n", "x.ini: [web] login_free_failure: unknown key"),
    ],
)
def test_a_bad_web_limit_stops_start_up_naming_file_section_and_key(
    text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        web_config(text)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_zero_login_delays_and_no_refusal_are_allowed() -> None:
    limits = web_config("login_base_delay = 0\nlogin_max_delay = 0\nlogin_refuse_after = 0\n")
    throttle = login_throttle_settings(limits)
    assert (throttle.base_delay, throttle.max_delay, throttle.refuse_after) == (0.0, 0.0, 0)


def world_with(text: str):  # type: ignore[no-untyped-def]
    return web_world(limits=web_config(text))


def caller(world) -> tuple[WebClient, str]:  # type: ignore[no-untyped-def]
    """alice online (her phone registered) and logged in: her client and API CSRF token."""
    world.register("alice")
    client = WebClient(world)
    client.login("alice")
    return client, client.api_csrf()


def post_call(client: WebClient, token: str, body: dict[str, str]) -> Reply:
    """``POST /api/v1/calls`` with ``body``."""
    return client.request("POST", "/api/v1/calls", json_body=body, headers={"X-CSRF-Token": token})


def test_calls_per_minute_is_obeyed() -> None:
    client, token = caller(world_with("calls_per_minute = 2\n"))
    codes = [post_call(client, token, {"callee": "bob"}).code for _ in range(3)]
    assert codes == [201, 201, 429]


def test_event_streams_per_user_keepalive_and_retry_are_obeyed() -> None:
    world = world_with("event_streams_per_user = 1\nevent_keepalive = 5\nevent_retry = 7.5\n")
    client = WebClient(world)
    client.login("bob")
    first = client.get("/api/v1/events", stream=True)
    assert first.code == 200
    assert first.body.startswith(b"retry: 7500\n\n")
    world.clock.advance(5)
    assert client.streamed().endswith(b": keepalive\n\n")
    other = WebClient(world)
    other.login("bob")
    assert other.get("/api/v1/events", stream=True).code == 429


def test_session_idle_timeout_and_lifetime_are_obeyed() -> None:
    world = world_with("session_idle_timeout = 60\nsession_lifetime = 100\n")
    client = WebClient(world)
    client.login("bob")
    world.clock.advance(59)
    assert client.get("/directory").code == 200
    world.clock.advance(59)  # idle for 59 s again, but 118 s since the login
    assert client.get("/directory").code == 303
    client.login("bob")
    world.clock.advance(61)
    assert client.get("/directory").code == 303


def test_max_sessions_is_obeyed() -> None:
    world = world_with("max_sessions = 1\n")
    first, second = WebClient(world), WebClient(world)
    first.login("bob")
    second.login("carol")
    assert first.get("/directory").code == 303
    assert second.get("/directory").code == 200


def test_login_throttling_follows_its_settings() -> None:
    world = world_with(
        "login_free_failures = 0\nlogin_base_delay = 0\nlogin_max_delay = 0\n"
        "login_refuse_after = 2\nlogin_refuse_seconds = 30\n"
    )
    client = WebClient(world)
    assert [client.login("bob", "wrong").code for _ in range(2)] == [401, 401]
    reply = client.login("bob", "bob-pass")
    assert reply.code == 429 and int(reply.headers["retry-after"]) == 30
    world.clock.advance(31)
    assert client.login("bob", "bob-pass").code == 303


def test_max_body_is_obeyed_by_pages_and_api() -> None:
    client, token = caller(world_with("max_body = 1024\n"))
    reply = post_call(client, token, {"callee": "bob", "padding": "x" * 1100})
    assert reply.code == 413 and "1024 bytes" in reply.json()["error"]
    reply = client.post_form("/calls", {"callee": "bob", "padding": "x" * 1100})
    assert reply.code == 413
    assert client.post_form("/calls", {"callee": "bob"}).code == 303


def test_the_daemon_builds_its_web_app_from_web_settings() -> None:
    config = parse_config(
        MINIMAL + "[web]\npresence_poll_interval = 0.5\ncalls_per_minute = 3\n", "x.ini"
    )
    clock = InlineReactor()
    store = MemoryStore(
        clock, realm="example.test", hash_pool=InlineThreadPool(), hasher=cheap_password_hasher()
    )
    app = make_web_app(config, clock, store, None)
    assert app.limits == config.web
    assert app.registrations.interval == 0.5
    assert app.call_rate.count == 3
    assert app.sessions.lifetime == config.web.session_lifetime
    assert attrs.asdict(app.limits) == attrs.asdict(config.web)
