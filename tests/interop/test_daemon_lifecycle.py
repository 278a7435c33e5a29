"""
The daemon as twistd runs it: start, serve /healthz, survive SIGHUP, stop cleanly on SIGTERM
(also when it comes during start-up), refuse a bad configuration with one line. Real
processes on loopback ports.
"""

import json
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import START_TIMEOUT, wait_until  # type: ignore[import-not-found]  # tests/ is on sys.path

from clicktodial import __version__
from clicktodial.testing.daemon import tcp_connected

pytestmark = pytest.mark.interop


def daemon_config(web_port: int, sip_port: int, tmp_path: Path) -> str:
    return (
        "[sip]\n"
        "domain = 127.0.0.1\n"
        f"listen = 127.0.0.1:{sip_port}\n"
        "[web]\n"
        f"listen = tcp:{web_port}:interface=127.0.0.1\n"
        "[store]\n"
        f"url = sqlite:///{tmp_path}/clicktodial.sqlite\n"
        "auto_upgrade = yes\n"
    )


@pytest.fixture
def running(
    start_daemon: Callable[[str], Any], free_port: Callable[[], int], tmp_path: Path
) -> tuple[Any, int]:
    """A daemon serving on a free web port, and that port."""
    web_port = free_port()
    daemon = start_daemon(daemon_config(web_port, free_port(), tmp_path))
    daemon.wait_for_tcp(web_port)
    # The web port listens before the reactor runs; SIGTERM and SIGHUP are handled once it
    # runs, and SIP listens after that (when the store has started).
    daemon.wait_for_log("SIP listening on")
    return daemon, web_port


def test_daemon_serves_healthz_then_stops_with_status_0_on_sigterm(
    running: tuple[Any, int], http_get: Callable[[str], tuple[int, bytes]]
) -> None:
    daemon, web_port = running
    assert http_get(f"http://127.0.0.1:{web_port}/healthz") == (200, b"ok")
    assert daemon.stop() == 0
    log = daemon.log()
    assert f"clicktodial {__version__} starting" in log
    assert "Received SIGTERM, shutting down." in log
    assert "clicktodial stopped" in log
    assert "Traceback" not in log + daemon.output()


def test_sighup_reloads_the_configuration_and_does_not_stop_the_daemon(
    running: tuple[Any, int], http_get: Callable[[str], tuple[int, bytes]]
) -> None:
    daemon, web_port = running
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("SIGHUP: configuration reloaded")
    assert daemon.process.poll() is None
    assert http_get(f"http://127.0.0.1:{web_port}/healthz") == (200, b"ok")
    assert daemon.stop() == 0


def test_sigterm_while_the_store_is_still_starting_exits_0_and_leaves_the_database_usable(
    start_daemon: Callable[[str], Any], free_port: Callable[[], int], tmp_path: Path
) -> None:
    """The store's start-up (here: the schema migration, waiting for a database another
    process holds locked) is interrupted by SIGTERM: twistd exits 0 once the database
    operation in progress gives up (busy_timeout), with no thread left running; the database
    is intact and a daemon started afterwards migrates it and serves."""
    database = tmp_path / "clicktodial.sqlite"
    locker = sqlite3.connect(database, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        web_port = free_port()
        ini = daemon_config(web_port, free_port(), tmp_path)
        daemon = start_daemon(ini)
        daemon.wait_for_log(f"clicktodial {__version__} starting")
        time.sleep(0.5)  # the migration is waiting for the lock
        assert "SIP listening on" not in daemon.log()
        daemon.signal(signal.SIGTERM)
        status = daemon.process.wait(30)
    finally:
        locker.rollback()
        locker.close()
    log = daemon.log()
    assert status == 0, log + daemon.output()
    assert "the daemon stopped during start-up" in log
    assert "clicktodial stopped" in log
    assert "Traceback" not in log + daemon.output()
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    again = start_daemon(ini)
    again.wait_for_log("SIP listening on")
    assert again.stop() == 0


def test_sigterm_while_postgresql_does_not_answer_exits_0_within_the_connect_timeout(
    start_daemon: Callable[[str], Any], free_port: Callable[[], int], tmp_path: Path
) -> None:
    """A PostgreSQL address that accepts connections and never answers (a hung server, a
    full backlog): the store's start waits, SIGTERM cancels it, and the daemon exits 0
    once the connection attempt gives up ([store] PostgreSQL connect_timeout, 10 s),
    instead of waiting for the server forever."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        ini = daemon_config(free_port(), free_port(), tmp_path).replace(
            f"url = sqlite:///{tmp_path}/clicktodial.sqlite\n",
            f"url = postgresql+psycopg://postgres@127.0.0.1:{port}/clicktodial\n",
        )
        daemon = start_daemon(ini)
        daemon.wait_for_log(f"clicktodial {__version__} starting")
        # SIGTERM once the store's connection attempt waits on the silent server.
        wait_until(lambda: tcp_connected(port), START_TIMEOUT, "the store's connection")
        daemon.signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            status = daemon.process.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"twistd still running 30 s after SIGTERM\n{daemon.log()}")
    log = daemon.log()
    assert status == 0, log + daemon.output()
    # connect_timeout (10 s) and a loaded machine's margin; a hung wait would take minutes.
    assert time.monotonic() - started < 25
    assert "the daemon stopped during start-up" in log
    assert "Traceback" not in log + daemon.output()


@pytest.mark.timeout(900)  # about 30 start-ups; each takes long on a loaded machine
def test_sigterm_at_any_moment_of_start_up_ends_the_daemon_cleanly(
    start_daemon: Callable[[str], Any], free_port: Callable[[], int], tmp_path: Path
) -> None:
    """SIGTERM at growing delays after spawning twistd (a sweep through start-up, until the
    daemon has been serving before the signal three times): each time it ends within
    seconds, with status 0 once it has loaded its configuration. Before that, while Python
    and twistd are still importing, SIGTERM ends the process as it ends any process:
    nothing had started (systemd counts that as a clean stop too)."""
    # How long start-up takes here and now (seconds on an idle machine, many more on a
    # loaded one): the sweep goes through it in about 30 steps, whatever it is.
    spawned = time.monotonic()
    first = start_daemon(daemon_config(free_port(), free_port(), tmp_path))
    first.wait_for_log("SIP listening on")
    start_up = time.monotonic() - spawned
    assert first.stop() == 0
    step = max(0.05, start_up / 30)
    served = 0
    delay = 0.0
    while served < 3 and delay < 3 * start_up + 5:
        ini = daemon_config(free_port(), free_port(), tmp_path / f"{delay:.2f}")
        (tmp_path / f"{delay:.2f}").mkdir()
        daemon = start_daemon(ini)
        time.sleep(delay)
        daemon.signal(signal.SIGTERM)
        try:
            status = daemon.process.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"twistd still running 30 s after SIGTERM at {delay:.2f} s\n{daemon.log()}")
        log = daemon.log()
        assert "Traceback" not in log + daemon.output()
        if status != 0:
            assert status == -signal.SIGTERM, log + daemon.output()
            assert ": configuration " not in log, "killed by the signal after loading its config"
        else:
            assert "clicktodial stopped" in log, log
            listening = log.find("SIP listening on")
            if 0 <= listening < log.index("Received SIGTERM"):
                served += 1
        database = tmp_path / f"{delay:.2f}" / "clicktodial.sqlite"
        if database.exists():
            with sqlite3.connect(database) as db:
                assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        delay += step
    assert served == 3


def test_json_log_goes_to_the_configured_file(
    start_daemon: Callable[[str], Any], free_port: Callable[[], int], tmp_path: Path
) -> None:
    web_port = free_port()
    log_path = tmp_path / "json.log"
    ini = daemon_config(web_port, free_port(), tmp_path)
    daemon = start_daemon(ini + f"[log]\nformat = json\nfile = {log_path}\n")
    daemon.wait_for_tcp(web_port)
    wait_until(
        lambda: log_path.exists() and "SIP listening on" in log_path.read_text(),
        60,
        "the daemon running",
    )
    assert daemon.stop() == 0
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    formats = [r.get("log_format") for r in records]
    assert "clicktodial stopped" in formats
    # twistd's own lines come through the [log] observer too, instead of twistd's.
    assert "Main loop terminated." in formats


def test_bad_config_exits_nonzero_with_one_line_naming_file_section_key(
    run_twistd: Callable[..., Any], tmp_path: Path
) -> None:
    path = tmp_path / "bad.ini"
    path.write_text("[sip]\ndomain = 127.0.0.1\nlisten = 127.0.0.1:abc\n")
    result = run_twistd("-n", "--pidfile=", "clicktodial", "--config", str(path))
    assert result.returncode != 0
    assert result.stderr == (
        f"{path}: [sip] listen: invalid port 'abc' (expected host:port, IPv6 as [::1]:5060)\n"
    )


def test_a_bad_plugin_option_exits_nonzero_with_one_line_naming_file_section_key(
    run_twistd: Callable[..., Any], tmp_path: Path
) -> None:
    """The plugins validate their [KIND:NAME] sections at start-up, before anything listens."""
    path = tmp_path / "bad.ini"
    path.write_text(
        "[sip]\ndomain = 127.0.0.1\n[store]\nbackend = memory\n"
        "[location]\nbackend = sql\n[location:sql]\nurl = sqlite:///x.sqlite\nthreads = 0\n"
    )
    result = run_twistd("-n", "--pidfile=", "clicktodial", "--config", str(path))
    assert result.returncode != 0
    assert result.stderr == (
        f"{path}: [location:sql] threads: threads must be an integer from 1 to 64, not '0'\n"
    )


def test_missing_config_option_exits_nonzero_with_usage(run_twistd: Callable[..., Any]) -> None:
    result = run_twistd("-n", "--pidfile=", "clicktodial")
    assert result.returncode != 0
    assert "--config FILE is required" in result.stdout + result.stderr


def test_web_port_in_use_exits_nonzero_naming_the_address(
    start_daemon: Callable[[str], Any],
    free_port: Callable[[], int],
    tmp_path: Path,
) -> None:
    web_port = free_port()
    first = start_daemon(daemon_config(web_port, free_port(), tmp_path))
    first.wait_for_tcp(web_port)
    first.wait_for_log("SIP listening on")
    second = start_daemon(daemon_config(web_port, free_port(), tmp_path))
    assert second.process.wait(60) != 0
    assert f"clicktodial: Couldn't listen on 127.0.0.1:{web_port}" in second.log()
    assert "Traceback" not in second.log() + second.output()
    assert first.stop() == 0


def test_twistd_help_lists_the_clicktodial_options(run_twistd: Callable[..., Any]) -> None:
    result = run_twistd("clicktodial", "--help")
    assert result.returncode == 0
    assert "--config=" in result.stdout
