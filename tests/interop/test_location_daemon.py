"""
The daemon (``twistd -n clicktodial``) with users in one store and registrations in a location
backend of their own: ``[store]`` SQLite for users, ``[location] backend = sql`` with
``[location:sql]`` on a second SQLite file. A phone registers with Digest (the user from the
store); the binding is written to the location database only; ``clicktodial user list`` shows
it from there; a restart keeps it. Loopback only; processes stopped by PID.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from calltools import register  # type: ignore[import-not-found]
from conftest import python_env  # type: ignore[import-not-found]  # tests/ is on sys.path

pytestmark = pytest.mark.interop


def ini(tmp_path: Path, sip_port: int, web_port: int) -> str:
    return (
        "[sip]\ndomain = 127.0.0.1\n"
        f"listen = 127.0.0.1:{sip_port}\n"
        f"[web]\nlisten = tcp:{web_port}:interface=127.0.0.1\n"
        f"[store]\nbackend = sql\ndemo_users = yes\n"
        f"[store:sql]\nurl = sqlite:///{tmp_path}/users.sqlite\nauto_upgrade = yes\n"
        "[location]\nbackend = sql\n"
        f"[location:sql]\nurl = sqlite:///{tmp_path}/locations.sqlite\nauto_upgrade = yes\n"
        "threads = 2\n"
        "[registrar]\ndigest_algorithms = MD5\n"
    )


def cli(config: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "clicktodial.cli", "--config", str(config), *args],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def bindings_in(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        return sorted(db.execute("SELECT aor, contact FROM bindings").fetchall())


def test_registrations_go_to_the_location_backend_and_survive_a_restart(
    start_daemon: Callable[[str], Any], free_port: Callable[[], int], tmp_path: Path
) -> None:
    sip_port, web_port, phone_port = free_port(), free_port(), free_port()
    text = ini(tmp_path, sip_port, web_port)
    config = tmp_path / "daemon.ini"
    config.write_text(text)
    daemon = start_daemon(text)
    daemon.wait_for_log("SIP listening on")
    register("alice", "alice", phone_port, sip_port)
    contact = f"sip:alice@127.0.0.1:{phone_port}"
    assert bindings_in(tmp_path / "locations.sqlite") == [("sip:alice@127.0.0.1", contact)]
    assert bindings_in(tmp_path / "users.sqlite") == []
    assert contact in cli(config, "user", "list")
    assert daemon.stop() == 0

    again = start_daemon(text)
    again.wait_for_log("SIP listening on")
    assert contact in cli(config, "user", "list")
    assert again.stop() == 0
    assert "Traceback" not in daemon.log() + again.log()
