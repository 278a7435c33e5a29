"""
Shared test helpers.

Unit tests are synchronous and use fakes (``task.Clock``, ``MemoryReactorClock``, ...).
Interop tests (``tests/interop/``, marker ``interop``) run the daemon and real peers as
subprocesses on loopback; :func:`start_daemon` runs ``twistd -n clicktodial``.
"""

import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from clicktodial.log import LOG_LEVELS
from clicktodial.testing.daemon import DaemonProcess, tree_env, twistd_argv

__all__ = ["twistd_argv"]  # re-exported: the interop tests import it from here

REPO_ROOT = Path(__file__).resolve().parent.parent
INTEROP_DIR = REPO_ROOT / "tests" / "interop"

# Bounds for waiting on subprocesses: generous for a loaded 2-core machine (READY=1 once took
# over 30 s here, with other suites running beside), finite.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
POLL_INTERVAL = 0.05


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/interop/ carries the ``interop`` marker, even if it forgot to."""
    for item in items:
        if INTEROP_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.interop)


def python_env() -> dict[str, str]:
    """The environment for a Python subprocess that must import this checkout's code."""
    return tree_env(REPO_ROOT)


_HANDED_OUT: set[tuple[str, int]] = set()

#: Where the ports of :func:`find_free_port` come from: below the kernel's ephemeral range
#: (32768 up by default), and clear of the fixed media ranges the tests configure (the
#: daemon's default ``rtp_ports`` 20000-20999, 23000-23099, rtpengine's 31000-31099,
#: 31200-31299 and 32000-32099), which their owners take ports from while a test runs.
TEST_PORTS = range(24000, 31000)


def _ephemeral_low() -> int:
    """The first port the kernel hands out to sockets bound to port 0."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _candidate_port(family: int, host: str) -> int:
    """
    A port to try: a random one of :data:`TEST_PORTS`, which no client socket (SIPp, a
    softphone, a probe bound to port 0) can be given by the kernel between the moment we
    find it free and the moment the daemon binds it; the kernel's own choice when its
    ephemeral range overlaps :data:`TEST_PORTS`.
    """
    if _ephemeral_low() >= TEST_PORTS.stop:
        return TEST_PORTS.start + secrets.randbelow(len(TEST_PORTS))
    with socket.socket(family, socket.SOCK_STREAM) as tcp:
        tcp.bind((host, 0))
        port: int = tcp.getsockname()[1]
        return port


def find_free_port(host: str = "127.0.0.1") -> int:
    """
    A port on ``host`` that is free for both TCP and UDP right now, outside the kernel's
    ephemeral range (see :func:`_candidate_port`), and that this session has not handed
    out before: a test asking for three ports must get three.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(1000):
        port = _candidate_port(family, host)
        if (host, port) in _HANDED_OUT:
            continue
        try:
            with socket.socket(family, socket.SOCK_STREAM) as tcp:
                tcp.bind((host, port))
                with socket.socket(family, socket.SOCK_DGRAM) as udp:
                    udp.bind((host, port))
        except OSError:
            continue
        _HANDED_OUT.add((host, port))
        return port
    raise RuntimeError(f"no free port on {host}")


def get_url(
    url: str, timeout: float = 10.0, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """GET ``url`` directly (never through a proxy from the environment): (status, body)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(
        urllib.request.Request(url, headers=headers or {}), timeout=timeout
    ) as response:
        return response.status, response.read()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_INTERVAL)


def stop_process(process: "subprocess.Popen[bytes]", grace: float = 15.0) -> None:
    """SIGTERM ``process`` and wait for it; SIGKILL it (by PID) if it is not gone in ``grace`` s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Stoppable(Protocol):
    """A helper around a subprocess (a softphone, a proxy, a load generator)."""

    def stop(self) -> None:
        """Stop the subprocess (by PID); nothing when it has exited already."""


class Daemon:
    """A ``twistd -n clicktodial`` subprocess logging to ``log_path``."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        log_path: Path,
        output_path: Path,
        config_path: Path | None = None,
    ):
        self.process = process
        self.log_path = log_path
        self.output_path = output_path
        #: its INI file (what ``clicktodial --config`` commands for it name)
        self.config_path = config_path

    def log(self) -> str:
        """What the daemon logged so far (its [log] file)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def output(self) -> str:
        """What twistd wrote to stdout and stderr."""
        return self.output_path.read_text(errors="replace")

    def _check_alive(self, what: str) -> None:
        if self.process.poll() is not None:
            pytest.fail(
                f"daemon exited with {self.process.returncode} while waiting for {what}\n"
                f"--- log\n{self.log()}\n--- output\n{self.output()}"
            )

    def wait_for_log(self, text: str, timeout: float = START_TIMEOUT) -> None:
        """Wait until ``text`` appears in the log (the daemon must stay up meanwhile)."""

        def logged() -> bool:
            if text in self.log():
                return True
            self._check_alive(repr(text))
            return False

        wait_until(logged, timeout, f"{text!r} in the daemon log")

    def wait_for_tcp(
        self, port: int, timeout: float = START_TIMEOUT, host: str = "127.0.0.1"
    ) -> None:
        """Wait until ``host``:``port`` accepts connections."""

        def accepting() -> bool:
            self._check_alive(f"TCP port {port}")
            try:
                socket.create_connection((host, port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_until(accepting, timeout, f"TCP port {port}")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait for the exit status (fails the test if it does not exit)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"daemon did not exit within {timeout} s of SIGTERM\n{self.log()}")


def spawn_daemon(config_path: Path, log_path: Path, output_path: Path) -> Daemon:
    """``twistd -n clicktodial --config CONFIG_PATH`` of this checkout, in the INI file's
    directory, twistd's stdout and stderr to ``output_path``."""
    process = DaemonProcess(config_path, tree=REPO_ROOT, output=output_path).start().process
    assert process is not None
    return Daemon(process, log_path, output_path, config_path)


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[[str], Daemon]]:
    """
    A function starting ``twistd -n clicktodial`` on an INI text, in ``tmp_path``.

    The text may omit ``[log]``: logging then goes to ``tmp_path/daemon.log`` at debug level.
    Daemons still running at the end of the test are killed (by PID).
    """
    daemons: list[Daemon] = []

    def start(ini: str) -> Daemon:
        n = len(daemons)
        log_path = tmp_path / f"daemon{n}.log"
        if "[log]" not in ini:
            ini += f"\n[log]\nlevel = debug\nfile = {log_path}\n"
        config_path = tmp_path / f"daemon{n}.ini"
        config_path.write_text(ini)
        daemon = spawn_daemon(config_path, log_path, tmp_path / f"daemon{n}.out")
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


@pytest.fixture
def running() -> Iterator[list[Stoppable]]:
    """
    A list for the helpers around subprocesses a test starts (anything with ``stop()``):
    each is stopped at the end of the test, the last started first.
    """
    started: list[Stoppable] = []
    yield started
    for helper in reversed(started):
        helper.stop()


@pytest.fixture
def processes() -> Iterator[list["subprocess.Popen[Any]"]]:
    """
    A list for the subprocesses a test starts itself (SIPp, load generators): each one
    still running at the end of the test is killed (by PID).
    """
    started: list[subprocess.Popen[Any]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A function returning a port on 127.0.0.1 free for both TCP and UDP right now."""
    return find_free_port


@pytest.fixture
def http_get() -> Callable[[str], tuple[int, bytes]]:
    """A function GETting a URL without any proxy: ``(status, body)``."""
    return get_url


@pytest.fixture
def run_twistd(tmp_path: Path) -> Callable[..., "subprocess.CompletedProcess[str]"]:
    """A function running ``twistd ARGS`` to completion in ``tmp_path`` (bounded in time)."""

    def run(*args: str) -> "subprocess.CompletedProcess[str]":
        return subprocess.run(
            twistd_argv(*args),
            cwd=tmp_path,
            env=python_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
        )

    return run


@pytest.fixture(autouse=True)
def _daemon_log_gate_open() -> Iterator[None]:
    """
    Every test starts and ends with the daemon's :data:`~clicktodial.log.LOG_LEVELS` open
    (info and debug events built): a test that starts the daemon's log observer (tap,
    workers, reloads) sets the global gate to its ``[log] level``, and a later test
    asserting an info or debug event would then depend on which tests ran before it.
    """
    LOG_LEVELS.reset()
    yield
    LOG_LEVELS.reset()
