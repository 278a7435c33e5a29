"""
Real softphones against the running daemon: two headless baresip instances (Debian
``baresip-core``) register alice and bob with Digest authentication, refresh, survive a
daemon restart in the store, and unregister when they quit; a wrong password is refused.

baresip 1.0 (libre) gives up with ENOSYS on a 401 carrying any challenge that is not MD5,
so the daemon here offers MD5 only (``[registrar] digest_algorithms = MD5``, as in
``conf/dev.ini``). Registrations last 10 s (``regint=10``, ``min_expires = 5``), so the
refresh is seen within seconds. Everything runs on 127.0.0.1; every wait is bounded and
every process is stopped by its PID.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from calltools import Baresip, needs_baresip
from conftest import python_env, wait_until  # type: ignore[import-not-found]  # tests/ is on sys.path

pytestmark = [
    pytest.mark.interop,
    needs_baresip,
]

#: Bounds (seconds): generous for a loaded 2-core machine, finite.
REGISTER_TIMEOUT = 30.0
EXIT_TIMEOUT = 30.0


def daemon_ini(tmp_path: Path, sip_port: int, web_port: int, throttle: str = "") -> str:
    return (
        "[sip]\n"
        "domain = 127.0.0.1\n"
        f"listen = 127.0.0.1:{sip_port}\n"
        "transports = udp, tcp\n"
        "[registrar]\n"
        "min_expires = 5\n"
        "digest_algorithms = MD5\n"
        f"{throttle}"
        "[web]\n"
        f"listen = tcp:{web_port}:interface=127.0.0.1\n"
        "[store]\n"
        f"url = sqlite:///{tmp_path}/clicktodial.sqlite\n"
        "auto_upgrade = yes\n"
        "demo_users = yes\n"
    )


def baresip(tmp_path: Path, name: str, password: str, sip_port: int) -> Baresip:
    """A baresip registering ``name`` with ``password`` for 10 s at a time."""
    return Baresip(
        tmp_path / f"baresip-{name}",
        name,
        f"<sip:{name}@127.0.0.1:{sip_port}>;auth_pass={password};regint=10\n",
    )


def user_list(ini: Path) -> str:
    """``clicktodial --config INI user list`` (it reads the store, daemon running or not)."""
    result = subprocess.run(
        [sys.executable, "-m", "clicktodial.cli", "--config", str(ini), "user", "list"],
        capture_output=True,
        text=True,
        env=python_env(),
        cwd=ini.parent,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def listed_contacts(listing: str, user: str) -> list[str]:
    """The contact lines under ``user`` in a ``user list`` output."""
    lines = listing.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split(" ", 1)[0] == user)
    contacts = []
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        if "expires in" in line:
            contacts.append(line.strip())
    return contacts


def registrations(daemon: Any, user: str) -> int:
    """How many REGISTERs of ``user`` the daemon logged as binding something."""
    return daemon.log().count(f"REGISTER sip:{user}@127.0.0.1: 1 binding(s)")


def test_softphones_register_refresh_survive_a_restart_and_unregister(
    start_daemon: Callable[[str], Any],
    free_port: Callable[[], int],
    tmp_path: Path,
    running: list[Baresip],
) -> None:
    """alice and bob register with Digest auth, refresh before expiry; their bindings are
    in ``user list``, still there after the daemon restarts (they live in the store), and
    gone once each phone quits (Expires: 0)."""
    sip_port, web_port = free_port(), free_port()
    ini_text = daemon_ini(tmp_path, sip_port, web_port)
    ini = tmp_path / "clicktodial.ini"
    ini.write_text(ini_text)
    daemon = start_daemon(ini_text)
    daemon.wait_for_log("SIP listening on")

    alice = baresip(tmp_path, "alice", "alice", sip_port)
    bob = baresip(tmp_path, "bob", "bob", sip_port)
    running += [alice, bob]
    for phone in (alice, bob):
        phone.wait_for_output("200 OK", REGISTER_TIMEOUT)
    listing = user_list(ini)
    [alice_contact] = listed_contacts(listing, "alice")
    [bob_contact] = listed_contacts(listing, "bob")
    assert f"@127.0.0.1:{alice.port}" in alice_contact and "baresip" in alice_contact
    assert f"@127.0.0.1:{bob.port}" in bob_contact

    # regint=10: baresip refreshes before the 10 s are over.
    wait_until(lambda: registrations(daemon, "alice") >= 2, REGISTER_TIMEOUT, "alice's refresh")

    # A restart: the bindings are in the database, not in the daemon.
    assert daemon.stop() == 0
    assert len(listed_contacts(user_list(ini), "alice")) == 1
    daemon = start_daemon(ini_text)
    daemon.wait_for_log("SIP listening on")
    after = user_list(ini)
    assert len(listed_contacts(after, "alice")) == 1
    assert len(listed_contacts(after, "bob")) == 1

    # Quitting unregisters (the restarted daemon serves the unregistration).
    assert bob.quit(EXIT_TIMEOUT) == 0
    wait_until(
        lambda: listed_contacts(user_list(ini), "bob") == [], REGISTER_TIMEOUT, "bob unregistered"
    )
    assert len(listed_contacts(user_list(ini), "alice")) == 1
    assert alice.quit(EXIT_TIMEOUT) == 0
    assert listed_contacts(user_list(ini), "alice") == []
    assert "Traceback" not in daemon.log()


def test_wrong_password_is_refused_and_baresip_reports_failure(
    start_daemon: Callable[[str], Any],
    free_port: Callable[[], int],
    tmp_path: Path,
    running: list[Baresip],
) -> None:
    """Credentials with a wrong password get a new 401 each time (baresip retries with
    each new nonce), until the failure throttle refuses the source with 503, which baresip
    reports; nothing is bound."""
    sip_port = free_port()
    # A quick throttle, so the refusal comes within seconds.
    throttle = "auth_free_failures = 1\nauth_base_delay = 0.1\nauth_refuse_after = 3\n"
    ini_text = daemon_ini(tmp_path, sip_port, free_port(), throttle)
    ini = tmp_path / "clicktodial.ini"
    ini.write_text(ini_text)
    daemon = start_daemon(ini_text)
    daemon.wait_for_log("SIP listening on")

    mallory = baresip(tmp_path, "alice", "not-alice", sip_port)
    running.append(mallory)
    mallory.wait_for_output("503 Service Unavailable", REGISTER_TIMEOUT)
    log = daemon.log()
    assert log.count("Authentication failed for alice") >= 2
    assert registrations(daemon, "alice") == 0
    assert listed_contacts(user_list(ini), "alice") == []
    mallory.quit(EXIT_TIMEOUT)


def test_daemon_refuses_to_start_on_an_out_of_date_schema(
    start_daemon: Callable[[str], Any], free_port: Callable[[], int], tmp_path: Path
) -> None:
    """Without auto_upgrade, a database without the current schema stops start-up with
    exit status 1 and a log line saying to run ``db upgrade``."""
    ini_text = daemon_ini(tmp_path, free_port(), free_port()).replace(
        "auto_upgrade = yes\n", "auto_upgrade = no\n"
    )
    daemon = start_daemon(ini_text)
    assert daemon.process.wait(60) == 1
    assert "db upgrade" in daemon.log()
    assert "SIP listening on" not in daemon.log()
