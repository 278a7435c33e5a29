"""
Users in SQLite, registrations in Redis (``[location] backend = redis``, the
``plugins/clicktodial-redis`` package), tried as a new user would: two baresip phones register
with Digest, show online in the web API, a click-to-dial call between them connects; the
daemon restarts and the registrations are still there (they live in Redis, not in the
process), and a call still connects; a bad key in ``[location:redis]`` stops start-up with
one line naming file, section and key.

Redis is a ``redis-server`` of the test's own on a unix socket (inside ``unshare -n`` the
machine's Redis on 127.0.0.1:6379 is unreachable), stopped by its PID. Every wait is
bounded; every process is stopped by its PID.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pytest
from calltools import (
    Baresip,
    api_token,
    daemon_ini,
    demo_phone,
    needs_baresip,
    web_api_get,
    web_place_call,
)
from conftest import find_free_port, wait_until  # type: ignore[import-not-found]

import clicktodial.interfaces

pytestmark = [pytest.mark.interop, needs_baresip]


def _skip_reason() -> str | None:
    if not hasattr(clicktodial.interfaces, "ILocationBackendFactory"):
        return "needs the [location] seam (clicktodial.interfaces.ILocationBackendFactory)"
    try:
        distribution("clicktodial-redis")
    except PackageNotFoundError:
        return "clicktodial-redis is not installed (pip install ./plugins/clicktodial-redis)"
    return None


if (_reason := _skip_reason()) is not None:
    pytest.skip(_reason, allow_module_level=True)

from clicktodial_redis.testing import RedisServer  # noqa: E402


@pytest.fixture
def redis_url() -> Iterator[str]:
    if not RedisServer.installed():
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    with tempfile.TemporaryDirectory(prefix="ctd-redis-") as directory:
        server = RedisServer(Path(directory))
        try:
            yield server.start()
        finally:
            server.stop()


def redis_ini(sip_port: int, web_port: int, tmp: Path, url: str, **location: str) -> str:
    """Users (and call records) in SQLite, registrations in Redis."""
    extra = "".join(f"{key} = {value}\n" for key, value in location.items())
    return (
        daemon_ini(sip_port, web_port, str(tmp))
        + "[location]\nbackend = redis\n"
        + f"[location:redis]\nurl = {url}\nkey_prefix = interop:\n"
        + extra
    )


def registered(web_port: int, token: str) -> dict[str, bool]:
    return {u["username"]: u["registered"] for u in web_api_get(web_port, token, "/users")}


def call_connects(web_port: int, token: str, alice: Baresip, bob: Baresip) -> None:
    """alice clicks "call bob": both phones answer, the call connects; alice hangs up."""
    call = web_place_call(web_port, token, "bob")
    wait_until(
        lambda: web_api_get(web_port, token, f"/calls/{call['id']}")["state"] == "connected",
        30,
        "the call to connect",
    )
    alice.command("hangup")
    wait_until(
        lambda: web_api_get(web_port, token, f"/calls/{call['id']}")["state"] == "ended",
        30,
        "the call to end",
    )
    bob.wait_for_output("session closed", 30)  # the BYE reached bob


def test_phones_registered_in_redis_call_each_other_and_survive_a_restart(
    tmp_path: Path, start_daemon: Callable[[str], Any], running: list[Baresip], redis_url: str
) -> None:
    sip_port, web_port = find_free_port(), find_free_port()
    ini = redis_ini(sip_port, web_port, tmp_path, redis_url)
    daemon = start_daemon(ini)
    daemon.wait_for_tcp(web_port)
    daemon.wait_for_log("created demo users")
    alice = demo_phone(tmp_path, "alice", sip_port, "auto")
    bob = demo_phone(tmp_path, "bob", sip_port, "auto", 880.0)
    running.extend([alice, bob])
    for name in ("alice", "bob"):
        daemon.wait_for_log(f"REGISTER sip:{name}@127.0.0.1: 1 binding(s)")
    token = api_token(tmp_path / "daemon0.ini", "alice")
    wait_until(
        lambda: registered(web_port, token) == {"alice": True, "bob": True},
        10,
        "alice and bob online in the web API",
    )
    call_connects(web_port, token, alice, bob)

    assert daemon.stop() == 0
    daemon = start_daemon(ini)
    daemon.wait_for_tcp(web_port)
    # The phones did not register again (regint 600 s): the bindings came from Redis.
    assert registered(web_port, token) == {"alice": True, "bob": True}
    call_connects(web_port, token, alice, bob)
    assert daemon.stop() == 0


def test_bad_key_in_the_redis_section_stops_start_up_with_one_line(
    tmp_path: Path, run_twistd: Callable[..., Any], redis_url: str
) -> None:
    """A typo in [location:redis] is one line naming file, section and key; exit status 1."""
    ini = tmp_path / "bad.ini"
    ini.write_text(redis_ini(find_free_port(), find_free_port(), tmp_path, redis_url, treads="4"))
    result = run_twistd("-n", "--pidfile=", "clicktodial", "--config", str(ini))
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert str(ini) in line and "[location:redis]" in line and "treads" in line, line
