"""
The daemon as production runs it (``twistd -n clicktodial --config FILE``), as a
subprocess: for the benchmarks in ``bench/`` and the interop tests.

:class:`DaemonProcess` starts twistd with this interpreter, waits until a readiness probe
holds (:meth:`DaemonProcess.wait_ready`) and stops the process by its PID: SIGTERM, then
SIGKILL when it is still there after a grace period; :func:`run_cli` runs the
``clicktodial`` command on its INI file. The probes:

- :func:`web_answers`: ``GET URL`` answers 200 (``/healthz`` of ``[web] listen``);
- :func:`tcp_accepts`: a TCP port accepts connections;
- :func:`udp_bound`: a UDP port is bound (a peer listens on it);
- :func:`tcp_connected`: a connection to a local TCP port is established;
- :func:`sip_options`: an ``OPTIONS`` over UDP is answered (and from which port: with
  ``[daemon] workers``, each worker answers from its own).

``python -m clicktodial.testing.daemon ready ...`` runs the probes from a shell script.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

#: The Python code run as ``python -c``: twistd with this interpreter (a ``twistd`` on
#: PATH may belong to another Python).
TWISTD_CODE = "from twisted.scripts.twistd import run; run()"


def twistd_argv(*args: str, prelude: str = "") -> list[str]:
    """
    ``twistd ARGS`` run by this interpreter.

    :param prelude: Python statements run before twistd starts (a benchmark replacing a
        function of the daemon, say).
    """
    return [sys.executable, "-c", prelude + TWISTD_CODE, *args]


def tree_env(tree: Path | str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """
    The environment of ``base`` (default: this process's) with ``tree`` first on
    ``PYTHONPATH``: a subprocess then imports the ``clicktodial`` of that checkout.
    """
    env = dict(os.environ if base is None else base)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(tree), env.get("PYTHONPATH", "")] if p)
    return env


def run_cli(
    config: Path, *args: str, tree: Path | str | None = None, timeout: float = 120.0
) -> str:
    """
    ``clicktodial --config CONFIG ARGS`` (``python -m clicktodial.cli`` of this
    interpreter) in the INI file's directory, with ``tree`` first on ``PYTHONPATH``.

    :return: what it wrote to stdout.
    :raises RuntimeError: it exited with a status other than 0 (its stderr in the message).
    """
    result = subprocess.run(
        [sys.executable, "-m", "clicktodial.cli", "--config", str(config), *args],
        cwd=Path(config).parent,
        env=tree_env(tree),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"clicktodial {' '.join(args)} exited {result.returncode}: {result.stderr}"
        )
    return result.stdout


class DaemonNotReady(RuntimeError):
    """The daemon exited, or its readiness probe did not hold in time."""


class DaemonProcess:
    """
    ``twistd -n --pidfile= clicktodial --config CONFIG`` as a subprocess.

    Use it as a context manager (stopped on leaving), or call :meth:`start` and
    :meth:`stop`. Only the process it started is ever signalled, by its PID.

    :param config: the INI file.
    :param cwd: the working directory (default: the INI file's).
    :param tree: a checkout put first on ``PYTHONPATH`` (the daemon's code comes from it).
    :param output: a file for twistd's stdout and stderr (default: discarded).
    :param prelude: Python statements run in the daemon before twistd starts.
    :param twistd_args: more twistd options, before ``clicktodial`` (``--profile=...``).
    """

    def __init__(
        self,
        config: Path,
        *,
        cwd: Path | None = None,
        tree: Path | str | None = None,
        output: Path | None = None,
        prelude: str = "",
        twistd_args: Sequence[str] = (),
    ) -> None:
        self.config = Path(config)
        self.cwd = Path(cwd) if cwd is not None else self.config.parent
        self.tree = tree
        self.output = output
        self.argv = twistd_argv(
            "-n",
            "--pidfile=",
            *twistd_args,
            "clicktodial",
            "--config",
            str(self.config),
            prelude=prelude,
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The PID of twistd (the daemon's main process)."""
        if self.process is None:
            raise DaemonNotReady("the daemon was not started")
        return self.process.pid

    def start(self) -> DaemonProcess:
        """Spawn twistd (once); returns ``self``."""
        if self.process is not None:
            raise RuntimeError("the daemon was started already")
        output: Any = (
            contextlib.nullcontext(subprocess.DEVNULL)
            if self.output is None
            else self.output.open("wb")
        )
        with output as out:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=tree_env(self.tree),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def output_tail(self, limit: int = 2000) -> str:
        """The last ``limit`` characters twistd wrote (empty when discarded)."""
        if self.output is None or not self.output.exists():
            return ""
        return self.output.read_text(errors="replace")[-limit:]

    def wait_ready(
        self,
        probe: Callable[[], bool],
        timeout: float = 120.0,
        what: str = "the daemon",
        interval: float = 0.1,
    ) -> None:
        """
        Poll ``probe`` every ``interval`` seconds until it holds.

        :raises DaemonNotReady: the process exited first, or ``timeout`` seconds passed.
        """
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                code = None if self.process is None else self.process.returncode
                raise DaemonNotReady(
                    f"the daemon exited ({code}) before {what} was ready\n{self.output_tail()}"
                )
            if probe():
                return
            if time.monotonic() > deadline:
                raise DaemonNotReady(f"{what} not ready within {timeout:g} s\n{self.output_tail()}")
            time.sleep(interval)

    def stop(self, grace: float = 30.0) -> int | None:
        """
        SIGTERM, then SIGKILL if the process is still there after ``grace`` seconds.

        :return: its exit status (negative: the signal that ended it), ``None`` when it
            was never started.
        """
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
        return process.wait()

    def __enter__(self) -> DaemonProcess:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def web_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether ``GET url`` answers 200 (never through a proxy from the environment)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def tcp_accepts(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """Whether ``host``:``port`` accepts a TCP connection."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _sockets(protocol: str) -> list[tuple[int, str]]:
    """(local port, state in hex) of each socket of this network namespace, from
    ``/proc/net/PROTOCOL`` and ``PROTOCOL6``."""
    found = []
    for table in (protocol, f"{protocol}6"):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3:
                found.append((int(fields[1].rsplit(":", 1)[1], 16), fields[3]))
    return found


def udp_bound(port: int) -> bool:
    """
    Whether a UDP socket of this network namespace is bound to ``port`` (any address): a
    peer such as SIPp is listening. (Binding the port to find out could take it from the
    peer in the instant it binds.)
    """
    return any(local == port for local, _ in _sockets("udp"))


def tcp_connected(port: int) -> bool:
    """Whether a TCP connection to the local ``port`` is established (in the listener's
    backlog or accepted): someone connected to it."""
    return any(local == port and state == "01" for local, state in _sockets("tcp"))


def sip_options(
    port: int, host: str = "127.0.0.1", source: str = "127.0.0.1", timeout: float = 0.5
) -> tuple[int, bytes] | None:
    """
    Send one ``OPTIONS`` over UDP to ``host``:``port`` from a fresh socket on ``source``.

    :return: ``(the port that answered, the answer)``, or ``None`` when nothing came
        within ``timeout`` seconds.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(timeout)
        local = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {source}:{local};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{source}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{host}>\r\n"
            f"Call-ID: {secrets.token_hex(8)}@{source}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), (host, port))
        try:
            answer, (_, answered_from) = sock.recvfrom(65536)
        except OSError:
            return None
    return answered_from, answer


def sip_answered(port: int, host: str = "127.0.0.1", source: str = "127.0.0.1") -> bool:
    """Whether an ``OPTIONS`` to ``host``:``port`` is answered ``200``."""
    answer = sip_options(port, host, source)
    return answer is not None and answer[1].startswith(b"SIP/2.0 200")


def sip_answering_ports(port: int, probes: int = 32, host: str = "127.0.0.1") -> set[int]:
    """The ports that answered ``probes`` OPTIONS, each from another source port: with
    ``[daemon] workers = N``, N ports once every worker serves."""
    answers = (sip_options(port, host) for _ in range(probes))
    return {answer[0] for answer in answers if answer is not None}


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clicktodial.testing.daemon",
        description="Wait until a running daemon is ready (for shell scripts).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ready = commands.add_parser("ready", help="exit 0 once the probes hold, 1 after --timeout")
    ready.add_argument("--pid", type=int, help="fail at once when this process is gone")
    ready.add_argument("--web", type=int, metavar="PORT", help="GET /healthz answers 200")
    ready.add_argument("--sip", type=int, metavar="PORT", help="OPTIONS over UDP answered")
    ready.add_argument(
        "--workers", type=int, default=1, help="with --sip: answered from this many ports"
    )
    ready.add_argument("--host", default="127.0.0.1")
    # Generous: a daemon beside other test suites on a 2-core machine took over 30 s.
    ready.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)

    def holds() -> bool:
        if args.web is not None and not web_answers(f"http://{args.host}:{args.web}/healthz"):
            return False
        if args.sip is not None:
            return len(sip_answering_ports(args.sip, 32 if args.workers > 1 else 1)) >= args.workers
        return True

    deadline = time.monotonic() + args.timeout
    while not holds():
        if args.pid is not None and not _alive(args.pid):
            print(f"the daemon (PID {args.pid}) exited", file=sys.stderr)
            return 1
        if time.monotonic() > deadline:
            print(f"the daemon was not ready within {args.timeout:g} s", file=sys.stderr)
            return 1
        time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
