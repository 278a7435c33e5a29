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

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).parent / "sipp"
HOST = "127.0.0.1"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class RegistrarApp:
    """The registrar as a subprocess; its JSON-line events."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.out = tmp / f"registrar-{time.monotonic_ns()}.jsonl"
        self.err = self.out.with_suffix(".err")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "clicktodial.testing.registrarapp",
                    "--host",
                    HOST,
                    "--port",
                    "0",
                    *args,
                ],
                stdout=out,
                stderr=err,
                cwd=ROOT,
                env=env,
            )

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = self.out.read_text().splitlines()
        events = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in events if e["event"] == name]

    def wait_listening(self, deadline: float = 15.0) -> int:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            listening = self.events("listening")
            if listening:
                return int(listening[0]["port"])
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"registrarapp did not start: {self.err.read_text()[-2000:]}")

    def wait(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        assert self.proc.returncode == 0, self.err.read_text()[-2000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


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
            str(free_udp_port()),
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
def apps() -> Iterator[list[RegistrarApp]]:
    started: list[RegistrarApp] = []
    try:
        yield started
    finally:
        for app in started:
            app.kill()


def start(
    tmp: Path, apps: list[RegistrarApp], duration: float, *args: str
) -> tuple[RegistrarApp, int]:
    app = RegistrarApp(
        tmp,
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


def test_sipp_registers_and_unregisters_with_digest(
    tmp_path: Path, apps: list[RegistrarApp]
) -> None:
    """SIPp gets 401, answers the MD5 challenge, gets 200; its unregister
    reuses the nonce with the next nc and gets 200 without a challenge."""
    app, port = start(tmp_path, apps, 6)
    result = run_sipp(tmp_path, "reg_uac_auth", port, "alice", "secret", "-m", "1")
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]
    app.wait(timeout=30)
    assert app.events("bindings")[0]["bindings"] == []


def test_sipp_binding_stored(tmp_path: Path, apps: list[RegistrarApp]) -> None:
    """A SIPp registration is stored as sent, with its source address and
    the expiry it asked for."""
    app, port = start(tmp_path, apps, 5)
    result = run_sipp(tmp_path, "reg_uac_register", port, "alice", "secret", "-m", "1")
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]
    app.wait(timeout=30)
    [binding] = app.events("bindings")[0]["bindings"]
    assert binding["aor"] == f"sip:alice@{HOST}"
    assert binding["contact"].startswith(f"sip:alice@{HOST}:")
    assert binding["received"].startswith(f"sip:{HOST}:")
    assert 590 <= binding["expires_in"] <= 600


def test_sipp_wrong_password_gets_a_fresh_401(tmp_path: Path, apps: list[RegistrarApp]) -> None:
    """A wrong password is answered 401 again (not 403), and binds nothing."""
    app, port = start(tmp_path, apps, 5)
    result = run_sipp(tmp_path, "reg_uac_wrong_password", port, "alice", "guess", "-m", "1")
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]
    app.wait(timeout=30)
    assert app.events("bindings")[0]["bindings"] == []


def test_sipp_bounded_registration_load(tmp_path: Path, apps: list[RegistrarApp]) -> None:
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
    assert app.events("bindings")[0]["bindings"] == []
