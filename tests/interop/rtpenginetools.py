"""
A real rtpengine (Debian ``rtpengine-daemon``, userspace forwarding, no
kernel module) started by a test, and a private Twisted reactor to drive our
``ng`` client against it without the global reactor.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
from conftest import START_TIMEOUT  # type: ignore[import-not-found]
from twisted.internet.defer import Deferred
from twisted.internet.selectreactor import SelectReactor

T = TypeVar("T")

RTPENGINE = shutil.which("rtpengine") or "/usr/bin/rtpengine"


def need_rtpengine() -> None:
    if not shutil.which("rtpengine"):
        pytest.skip("rtpengine not installed (Debian rtpengine-daemon; scripts/test installs it)")


class RtpEngine:
    """
    rtpengine in the foreground, on ``interfaces`` (``[NAME/]IP``), ``ng`` on
    ``ng``, logging to ``log_path``; :func:`stop` kills it by its PID.
    """

    def __init__(
        self, interfaces: list[str], ng: tuple[str, int], ports: tuple[int, int], log_path: str
    ) -> None:
        command = [
            RTPENGINE,
            "--config-file=none",
            "--foreground",
            "--log-stderr",
            "--no-log-timestamps",
            "--table=-1",
            f"--listen-ng={ng[0]}:{ng[1]}",
            f"--port-min={ports[0]}",
            f"--port-max={ports[1]}",
            "--delete-delay=0",
            "--log-level=6",
            *[f"--interface={i}" for i in interfaces],
        ]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_ng(ng, self.process)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def running_rtpengine(
    interfaces: list[str], ng: tuple[str, int], ports: tuple[int, int], log_path: str
) -> Iterator[RtpEngine]:
    """:class:`RtpEngine`, stopped on exit."""
    engine = RtpEngine(interfaces, ng, ports, log_path)
    try:
        yield engine
    finally:
        engine.stop()


def wait_for_ng(ng: tuple[str, int], process: subprocess.Popen[bytes]) -> None:
    """Until rtpengine answers a ping on ``ng`` (at most START_TIMEOUT s)."""
    deadline = time.monotonic() + START_TIMEOUT
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            assert process.poll() is None, "rtpengine exited"
            sock.sendto(b"probe d7:command4:pinge", ng)
            try:
                if sock.recv(1000).startswith(b"probe "):
                    return
            except OSError:
                time.sleep(0.1)
    raise AssertionError(f"rtpengine did not answer ng pings within {START_TIMEOUT:g} s")


class PrivateReactor:
    """A reactor of the test's own (never the global one), run until a Deferred fires."""

    def __init__(self) -> None:
        self.reactor: Any = SelectReactor()

    def wait(self, d: Deferred[T], timeout: float = 10.0) -> T:
        results: list[Any] = []
        d.addBoth(results.append)
        deadline = time.monotonic() + timeout
        while not results and time.monotonic() < deadline:
            self.reactor.iterate(0.01)
        assert results, "no result within the time limit"
        result = results[0]
        if hasattr(result, "raiseException"):
            result.raiseException()
        return result  # type: ignore[no-any-return]
