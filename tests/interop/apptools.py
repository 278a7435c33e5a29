"""
The small test applications of :mod:`clicktodial.testing` (``registrarapp``, ``sipapp``,
``uaapp``: our SIP layers on a real socket) as subprocesses, for the interop tests that
put SIPp in front of them. Each app reports what happens as JSON lines on stdout
(``{"event": "listening", "port": ...}`` first); :class:`TestingApp` reads them back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import REPO_ROOT, START_TIMEOUT, python_env  # type: ignore[import-not-found]


class TestingApp:
    """
    ``python -m clicktodial.testing.MODULE ARGS`` of this checkout: its stdout (the JSON
    lines) to ``directory/MODULE-N.jsonl``, its stderr to the same name ending ``.err``.
    Killed by :meth:`stop` (by PID) if it still runs.
    """

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, directory: Path, module: str, *args: str) -> None:
        self.module = module
        self.out = directory / f"{module}-{time.monotonic_ns()}.jsonl"
        self.err = self.out.with_suffix(".err")
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"clicktodial.testing.{module}", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=REPO_ROOT,
                env=python_env(),
            )

    def events(self) -> list[dict[str, Any]]:
        """Every event it reported so far."""
        lines = self.out.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def of(self, name: str) -> list[dict[str, Any]]:
        """The events named ``name`` so far."""
        return [event for event in self.events() if event["event"] == name]

    def names(self) -> list[str]:
        """The names of the events so far, in order."""
        return [event["event"] for event in self.events()]

    def errors(self) -> str:
        """The tail of its stderr."""
        return self.err.read_text(errors="replace")[-2000:]

    def wait_listening(self, deadline: float = START_TIMEOUT) -> int:
        """The port of its ``listening`` event, once reported (failing if it exits first)."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            listening = self.of("listening")
            if listening:
                return int(listening[0]["port"])
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.module} did not start: {self.errors()}")

    def wait(self, timeout: float) -> None:
        """Wait for it to exit, with status 0 (killed if it is still running after
        ``timeout`` s)."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        assert self.process.returncode == 0, self.errors()

    def stop(self) -> None:
        """SIGKILL (by PID) if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
