"""
The registrar on a real UDP socket against SIPp's Digest client (loopback
only).

Our side is ``python -m clicktodial.testing.registrarapp`` (the real
transport and transaction layers, the registrar, a memory store); SIPp runs
the ``tests/interop/sipp/reg_*.xml`` scenarios. SIPp 3.6 answers only the
first challenge and knows only MD5, so the registrar offers MD5 first here
(``digest_algorithms = MD5, SHA-256``). Every run is bounded (``-m``,
``-timeout``, subprocess timeouts) and every process we start is killed by
its PID.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from apptools import TestingApp  # type: ignore[import-not-found]
from conftest import find_free_port  # type: ignore[import-not-found]

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) not installed"),
]

SCENARIOS = Path(__file__).parent / "sipp"
HOST = "127.0.0.1"


def run_sipp(
    tmp: Path,
    scenario: str,
    target_port: int,
    user: str,
    password: str,
    *extra: str,
    timeout: int = 20,
) -> subprocess.CompletedProcess[bytes]:
    """One bounded SIPp client run (SIPp stops itself within -timeout)."""
    return subprocess.run(
        [
            "sipp",
            "-sf",
            str(SCENARIOS / f"{scenario}.xml"),
            "-i",
            HOST,
            "-p",
            str(find_free_port()),
            "-s",
            user,
            "-au",
            user,
            "-ap",
            password,
            "-timeout",
            f"{timeout}s",
            "-timeout_error",
            "-nostdin",
            *extra,
            f"{HOST}:{target_port}",
        ],
        cwd=tmp,
        capture_output=True,
        timeout=timeout + 15,
        check=False,
    )


@pytest.fixture
def apps() -> Iterator[list[TestingApp]]:
    started: list[TestingApp] = []
    try:
        yield started
    finally:
        for app in started:
            app.stop()


def start(tmp: Path, apps: list[TestingApp], duration: float, *args: str) -> tuple[TestingApp, int]:
    app = TestingApp(
        tmp,
        "registrarapp",
        "--host",
        HOST,
        "--port",
        "0",
        "--user",
        "alice:secret",
        "--algorithms",
        "MD5,SHA-256",
        "--duration",
        str(duration),
        *args,
    )
    apps.append(app)
    return app, app.wait_listening()


def test_sipp_registers_and_unregisters_with_digest(tmp_path: Path, apps: list[TestingApp]) -> None:
    """SIPp gets 401, answers the MD5 challenge, gets 200; its unregister
    reuses the nonce with the next nc and gets 200 without a challenge."""
    app, port = start(tmp_path, apps, 6)
    result = run_sipp(tmp_path, "reg_uac_auth", port, "alice", "secret", "-m", "1")
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]
    app.wait(timeout=30)
    assert app.of("bindings")[0]["bindings"] == []


def test_sipp_binding_stored(tmp_path: Path, apps: list[TestingApp]) -> None:
    """A SIPp registration is stored as sent, with its source address and
    the expiry it asked for."""
    app, port = start(tmp_path, apps, 5)
    result = run_sipp(tmp_path, "reg_uac_register", port, "alice", "secret", "-m", "1")
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]
    app.wait(timeout=30)
    [binding] = app.of("bindings")[0]["bindings"]
    assert binding["aor"] == f"sip:alice@{HOST}"
    assert binding["contact"].startswith(f"sip:alice@{HOST}:")
    assert binding["received"].startswith(f"sip:{HOST}:")
    assert 590 <= binding["expires_in"] <= 600


def test_sipp_wrong_password_gets_a_fresh_401(tmp_path: Path, apps: list[TestingApp]) -> None:
    """A wrong password is answered 401 again (not 403), and binds nothing."""
    app, port = start(tmp_path, apps, 5)
    result = run_sipp(tmp_path, "reg_uac_wrong_password", port, "alice", "guess", "-m", "1")
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]
    app.wait(timeout=30)
    assert app.of("bindings")[0]["bindings"] == []


def test_sipp_bounded_registration_load(tmp_path: Path, apps: list[TestingApp]) -> None:
    """300 register/unregister cycles (100/s, at most 50 at once) all
    succeed: no lost transaction, no throttling of a right password."""
    app, port = start(tmp_path, apps, 12)
    result = run_sipp(
        tmp_path,
        "reg_uac_auth",
        port,
        "alice",
        "secret",
        "-m",
        "300",
        "-r",
        "100",
        "-l",
        "50",
        timeout=30,
    )
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]
    app.wait(timeout=40)
    assert app.of("bindings")[0]["bindings"] == []
