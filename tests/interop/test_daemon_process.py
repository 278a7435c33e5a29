"""
:mod:`clicktodial.testing.daemon`, the launcher the benchmarks and these tests share: it
starts ``twistd -n clicktodial``, knows when the daemon is ready by each of its probes,
reports a daemon that exits instead of getting ready, and stops it by its PID (SIGTERM,
then SIGKILL). Real processes on loopback ports.
"""

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO_ROOT, START_TIMEOUT, python_env  # type: ignore[import-not-found]

from clicktodial.testing.daemon import (
    DaemonNotReady,
    DaemonProcess,
    sip_answered,
    sip_answering_ports,
    tcp_accepts,
    web_answers,
)

pytestmark = pytest.mark.interop


def write_config(tmp_path: Path, sip_port: int, web_port: int) -> Path:
    config = tmp_path / "daemon.ini"
    config.write_text(
        f"[sip]\ndomain = 127.0.0.1\nlisten = 127.0.0.1:{sip_port}\ntransports = udp\n"
        f"[web]\nlisten = tcp:{web_port}:interface=127.0.0.1\n"
        f"[store]\nurl = sqlite:///{tmp_path}/clicktodial.sqlite\nauto_upgrade = yes\n"
        f"[log]\nlevel = info\nfile = {tmp_path}/daemon.log\n"
    )
    return config


def test_the_daemon_is_ready_by_every_probe_then_stops_with_status_0_on_sigterm(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    sip_port, web_port = free_port(), free_port()
    daemon = DaemonProcess(
        write_config(tmp_path, sip_port, web_port), tree=REPO_ROOT, output=tmp_path / "out"
    )
    with daemon:
        daemon.wait_ready(lambda: sip_answered(sip_port), START_TIMEOUT, "SIP")
        assert daemon.running()
        assert web_answers(f"http://127.0.0.1:{web_port}/healthz")
        assert tcp_accepts(web_port)
        assert sip_answering_ports(sip_port, probes=4) == {sip_port}
        assert daemon.stop() == 0
    assert not daemon.running()
    assert not tcp_accepts(web_port)
    assert "clicktodial stopped" in (tmp_path / "daemon.log").read_text()


def test_a_daemon_that_exits_while_starting_is_reported_with_its_output(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    config = tmp_path / "daemon.ini"
    config.write_text("[sip]\nno_such_key = 1\n")
    daemon = DaemonProcess(config, tree=REPO_ROOT, output=tmp_path / "out").start()
    with pytest.raises(DaemonNotReady, match=r"exited \(1\)[\s\S]*no_such_key"):
        daemon.wait_ready(lambda: False, START_TIMEOUT)
    assert daemon.stop() == 1


def test_a_probe_that_never_holds_times_out_and_the_daemon_is_still_stopped(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    sip_port, web_port = free_port(), free_port()
    daemon = DaemonProcess(write_config(tmp_path, sip_port, web_port), tree=REPO_ROOT)
    with daemon, pytest.raises(DaemonNotReady, match="nothing not ready within 0.5 s"):
        daemon.wait_ready(lambda: False, 0.5, "nothing")
    assert not daemon.running()


def test_a_daemon_deaf_to_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    """The prelude runs before twistd: here it ignores SIGTERM and never starts twistd."""
    deaf = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('deaf', flush=True)\n"
        "time.sleep(120)\n"
        "sys.exit(0)\n"
    )
    output = tmp_path / "out"
    daemon = DaemonProcess(tmp_path / "unused.ini", prelude=deaf, output=output).start()
    daemon.wait_ready(lambda: "deaf" in output.read_text(), START_TIMEOUT, "the prelude")
    assert daemon.stop(grace=0.5) == -9


def test_the_ready_command_waits_for_the_sip_port_and_fails_for_a_gone_process(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    sip_port, web_port = free_port(), free_port()
    ready = [sys.executable, "-m", "clicktodial.testing.daemon", "ready"]
    with DaemonProcess(write_config(tmp_path, sip_port, web_port), tree=REPO_ROOT) as daemon:
        waited = subprocess.run(
            [
                *ready,
                "--pid",
                str(daemon.pid),
                "--sip",
                str(sip_port),
                "--web",
                str(web_port),
                "--timeout",
                str(START_TIMEOUT),
            ],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT + 30,
            env=python_env(),
        )
        assert waited.returncode == 0, waited.stderr
    gone = subprocess.run(
        [*ready, "--pid", str(daemon.pid), "--sip", str(sip_port), "--timeout", "30"],
        capture_output=True,
        text=True,
        timeout=90,
        env=python_env(),
    )
    assert gone.returncode == 1
    assert f"(PID {daemon.pid}) exited" in gone.stderr
