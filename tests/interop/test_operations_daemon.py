"""
Running it for real, against the daemon as twistd runs it (a subprocess on loopback):

- SIGTERM mid-call: new requests get 503 with Retry-After while the call goes on for the
  grace period, then both phones (SIPp) get BYE, the daemon exits 0;
- SIGTERM and SIGKILL mid-load: the SQLite store passes ``PRAGMA integrity_check``, every
  binding answered 200 is still there after a restart, and the restarted daemon serves;
- a REGISTER flood from one address (SIPp, bounded): the source is banned, OPTIONS keep
  being answered, registered users keep their bindings and can refresh them;
- ``/metrics`` after real REGISTERs; ``/readyz``; SIGHUP with a bad file keeps the daemon.

Every wait and every load is bounded; every process is killed by PID at the end.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from calltools import (  # type: ignore[import-not-found]
    METRICS_AUTH,
    CallsApi,
    daemon_ini,
    register,
    start_sipp_phone,
)
from conftest import (  # type: ignore[import-not-found]
    REPO_ROOT,
    START_TIMEOUT,
    find_free_port,
    get_url,
    python_env,
    wait_until,
)

pytestmark = pytest.mark.interop

SCENARIOS = Path(__file__).parent / "sipp"
SIPP = shutil.which("sipp")
needs_sipp = pytest.mark.skipif(SIPP is None, reason="SIPp (sip-tester) not installed")


#: ``[daemon] shutdown_grace`` of the SIGTERM test.
SHUTDOWN_GRACE = 15.0


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def header(data: bytes, name: str) -> str | None:
    for line in data.decode(errors="replace").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def probe_request(method: str, sip_port: int, port: int, to: str = "sip:alice@127.0.0.1") -> bytes:
    """A ``method`` outside any dialog to the daemon, as sent from 127.0.0.1:``port``."""
    return (
        f"{method} sip:127.0.0.1:{sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
        f"To: <{to}>\r\n"
        f"Call-ID: {secrets.token_hex(8)}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:probe@127.0.0.1:{port}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def sip_request(method: str, sip_port: int, timeout: float = 2.0) -> bytes:
    """Send one ``method`` outside any dialog from a fresh UDP port; the first answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        sock.sendto(probe_request(method, sip_port, sock.getsockname()[1]), ("127.0.0.1", sip_port))
        while True:
            data, _ = sock.recvfrom(65536)
            if status_of(data) >= 200:
                return data


def committed_bindings(database: Path) -> int:
    """How many bindings the store holds now, read while the daemon writes (0 while its
    write lock holds the file)."""
    try:
        return len(bindings(database))
    except sqlite3.OperationalError:
        return 0


def integrity(database: Path) -> str:
    with sqlite3.connect(database) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def bindings(database: Path) -> set[str]:
    """The AORs with a binding in the store (read directly: the daemon may be stopped)."""
    with sqlite3.connect(database) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        table = "bindings" if "bindings" in tables else "registrations"
        return {str(row[0]) for row in db.execute(f"SELECT aor FROM {table}")}


class Setup:
    """A daemon with the demo users, the calls API and ``extra`` INI text; restartable."""

    def __init__(self, tmp_path: Path, start_daemon: Callable[[str], Any], extra: str) -> None:
        self.tmp_path = tmp_path
        self.start_daemon = start_daemon
        self.sip_port, self.web_port = find_free_port(), find_free_port()
        text = daemon_ini(self.sip_port, self.web_port, str(tmp_path))
        text = text.replace("[web]\n", "t1 = 0.1\nt2 = 0.8\nt4 = 1.0\n[web]\n", 1)
        self.text = text + extra
        self.database = tmp_path / "clicktodial.sqlite"
        self._control: CallsApi | None = None

    @property
    def control(self) -> CallsApi:
        """The calls API (an administrator made once the first daemon has its database)."""
        assert self._control is not None, "no daemon started yet"
        return self._control

    def start(self) -> Any:
        daemon = self.start_daemon(self.text)
        daemon.wait_for_tcp(self.web_port)
        daemon.wait_for_log("SIP listening on")
        if self._control is None:
            self._control = CallsApi(self.web_port, daemon.config_path)
        return daemon


@pytest.fixture
def make_setup(tmp_path: Path, start_daemon: Callable[[str], Any]) -> Callable[[str], Setup]:
    return lambda extra="": Setup(tmp_path, start_daemon, extra)


def sipp_phone(
    tmp_path: Path, user: str, sip_port: int, processes: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    """A SIPp phone for ``user`` that answers, and ends when the daemon's BYE comes."""
    phone = start_sipp_phone(tmp_path, user, sip_port, delay_ms=200)
    processes.append(phone.process)
    return phone.process


def connected_call(
    setup: Setup, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> tuple[Any, subprocess.Popen[bytes], subprocess.Popen[bytes], dict[str, Any]]:
    """The daemon of ``setup`` started, SIPp phones for alice and bob, a call from alice to
    bob connected: ``(daemon, alice's phone, bob's phone, call)``."""
    daemon = setup.start()
    daemon.wait_for_log("created demo users")
    alice = sipp_phone(tmp_path, "alice", setup.sip_port, processes)
    bob = sipp_phone(tmp_path, "bob", setup.sip_port, processes)
    call = setup.control.place("alice", "bob")
    wait_until(lambda: setup.control.get(call["id"])["state"] == "connected", 30, "connected")
    return daemon, alice, bob, call


@needs_sipp
def test_sigterm_mid_call_refuses_new_requests_then_byes_the_call_and_exits_0(
    make_setup: Callable[[str], Setup],
    processes: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    # A grace long enough for the checks below on a loaded machine: they must all happen
    # inside it (the phones' BYE marks its end).
    setup = make_setup(f"[daemon]\nshutdown_grace = {SHUTDOWN_GRACE:g}\n")
    daemon, alice, bob, call = connected_call(setup, tmp_path, processes)
    daemon.signal(signal.SIGTERM)
    daemon.wait_for_log("stopping: refusing new calls and registrations")
    # During the grace period: the call goes on, new requests get 503 + Retry-After.
    for method in ("OPTIONS", "REGISTER"):
        answer = sip_request(method, setup.sip_port)
        assert status_of(answer) == 503, answer
        assert header(answer, "Retry-After") == "5"
    assert daemon.process.poll() is None and alice.poll() is None and bob.poll() is None
    # Then both phones get BYE (their scenarios end on it) and the daemon exits cleanly.
    assert alice.wait(SHUTDOWN_GRACE + 30) == 0 and bob.wait(30) == 0
    assert daemon.process.wait(30) == 0
    log = daemon.log()
    assert "stopping: ending 1 call(s) still in progress" in log
    assert "Traceback" not in log
    assert integrity(setup.database) == "ok"
    # Restarted: the phones' bindings are still there, and it answers at once.
    assert {"sip:alice@127.0.0.1", "sip:bob@127.0.0.1"} <= bindings(setup.database)
    setup.start()
    assert status_of(sip_request("OPTIONS", setup.sip_port)) == 200


def regload(sip_port: int, users: int, count: int, rate: float) -> list[str]:
    return [
        sys.executable, str(REPO_ROOT / "bench" / "regload.py"),
        "--target", f"127.0.0.1:{sip_port}", "--domain", "127.0.0.1",
        "--users", str(users), "--count", str(count), "--rate", str(rate),
        "--timeout", "10", "--max-seconds", "20", "--json",
    ]  # fmt: skip


def provision(setup: Setup, users: int) -> None:
    ini = setup.tmp_path / "provision.ini"
    ini.write_text(setup.text)
    csv = setup.tmp_path / "users.csv"
    rows = "".join(f"u{i:05d},p{i:05d}\n" for i in range(users))
    csv.write_text("username,sip_password\n" + rows)
    for args in (["db", "upgrade"], ["user", "import", str(csv)]):
        result = subprocess.run(
            [sys.executable, "-m", "clicktodial.cli", "--config", str(ini), *args],
            capture_output=True, text=True, env=python_env(), cwd=setup.tmp_path, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_killed_mid_load_the_store_stays_intact_and_bindings_survive_a_restart(
    make_setup: Callable[[str], Setup],
    processes: list[subprocess.Popen[bytes]],
    signum: int,
) -> None:
    setup = make_setup("[limits]\nrate_exempt = 127.0.0.1\n")
    provision(setup, 200)
    daemon = setup.start()
    first = subprocess.run(
        regload(setup.sip_port, 20, 20, 40), capture_output=True, text=True, timeout=60
    )
    assert json.loads(first.stdout)["succeeded"] == 20, first.stdout + first.stderr
    load = subprocess.Popen(
        regload(setup.sip_port, 200, 3000, 150), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    processes.append(load)  # type: ignore[arg-type]
    # Killed once the load is under way: some of its bindings are committed.
    wait_until(lambda: committed_bindings(setup.database) > 20, 60, "the load's first bindings")
    daemon.signal(signum)
    status = daemon.process.wait(30)
    assert status == (0 if signum == signal.SIGTERM else -signal.SIGKILL)
    load.kill()
    load.wait()
    assert integrity(setup.database) == "ok"
    registered = bindings(setup.database)
    assert {f"sip:u{i:05d}@127.0.0.1" for i in range(20)} <= registered
    assert len(registered) > 20, "some of the load registered before the kill"
    restarted = setup.start()
    assert status_of(sip_request("OPTIONS", setup.sip_port)) == 200
    again = subprocess.run(
        regload(setup.sip_port, 20, 20, 40), capture_output=True, text=True, timeout=60
    )
    assert json.loads(again.stdout)["failed"] == 0, again.stdout
    assert "Traceback" not in restarted.log()


@needs_sipp
def test_register_flood_from_one_address_is_banned_and_others_keep_being_served(
    make_setup: Callable[[str], Setup],
    processes: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    """SIPp floods REGISTERs from 127.0.0.2 at 2,000/s for 10 s (several times what
    the daemon can answer with SQLite here); meanwhile OPTIONS from 127.0.0.1 are answered,
    and registered users' refreshes all succeed (each within 10 s: a bound for a loaded
    machine, not a latency figure)."""
    assert SIPP is not None
    setup = make_setup("[limits]\nrate_window = 1\nrate_max_requests = 100\n")
    daemon = setup.start()
    daemon.wait_for_log("created demo users")
    phone_port = find_free_port()  # a refresh comes from the phone's own port
    register("alice", "alice", phone_port, setup.sip_port)
    flood = subprocess.Popen(
        [SIPP, "-sf", str(SCENARIOS / "ops_register_flood.xml"), "-i", "127.0.0.2",
         "-p", str(find_free_port()), "-r", "2000", "-m", "20000", "-l", "20000",
         "-timeout", "60s", "-nostdin", f"127.0.0.1:{setup.sip_port}"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    processes.append(flood)
    daemon.wait_for_log("127.0.0.2 sent more than 100 requests")
    answered = 0
    while flood.poll() is None and answered < 20:
        assert status_of(sip_request("OPTIONS", setup.sip_port, timeout=10.0)) == 200
        register("alice", "alice", phone_port, setup.sip_port, timeout=10.0)
        answered += 1
    flood.wait(90)
    assert answered > 0
    assert "sip:alice@127.0.0.1" in bindings(setup.database)
    _, body = get_url(f"http://127.0.0.1:{setup.web_port}/metrics", headers=METRICS_AUTH)
    metrics = body.decode()
    # Dropped after the ban: by the daemon, or before it by the kernel filter on the socket.
    dropped = [
        float(line.split()[-1]) for line in metrics.splitlines()
        if line.startswith('clicktodial_sip_requests_refused{reason="rate_limited"}')
        or line.startswith("clicktodial_sip_udp_kernel_drops ")
    ]  # fmt: skip
    assert len(dropped) == 2 and sum(dropped) > 1000


def test_metrics_after_a_real_register_and_readyz(make_setup: Callable[[str], Setup]) -> None:
    """Calls are covered by the unit tests; here a scripted REGISTER drives /metrics."""
    setup = make_setup()
    daemon = setup.start()
    daemon.wait_for_log("created demo users")
    register("alice", "alice", find_free_port(), setup.sip_port)
    status, body = get_url(f"http://127.0.0.1:{setup.web_port}/metrics", headers=METRICS_AUTH)
    text = body.decode()
    assert status == 200
    assert 'clicktodial_register_responses_total{status="200"} 1.0' in text
    assert 'clicktodial_register_responses_total{status="401"} 1.0' in text
    assert 'clicktodial_store_latency_seconds_count{operation="register"} 2.0' in text
    assert "clicktodial_sip_transactions_active" in text
    readyz = f"http://127.0.0.1:{setup.web_port}/readyz"
    assert get_url(readyz, headers=METRICS_AUTH) == (200, b"ready")


def test_sighup_with_a_bad_file_keeps_the_running_configuration(
    make_setup: Callable[[str], Setup], tmp_path: Path
) -> None:
    setup = make_setup()
    daemon = setup.start()
    config = next(tmp_path.glob("daemon*.ini"))
    config.write_text(config.read_text() + "[limits]\nretry_after = soon\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("SIGHUP: configuration not reloaded, the running one stays")
    assert status_of(sip_request("OPTIONS", setup.sip_port)) == 200
    assert daemon.stop() == 0


def test_under_systemd_the_daemon_notifies_ready_reloading_and_stopping(
    make_setup: Callable[[str], Setup], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With $NOTIFY_SOCKET set (Type=notify), READY=1 comes once SIP and web listen."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(path))
        notify.settimeout(START_TIMEOUT)  # READY=1 comes once start-up is over
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        setup = make_setup()
        daemon = setup.start_daemon(setup.text)
        assert notify.recv(4096) == b"READY=1\nSTATUS=serving"
        assert status_of(sip_request("OPTIONS", setup.sip_port)) == 200
        assert get_url(f"http://127.0.0.1:{setup.web_port}/healthz")[0] == 200
        daemon.signal(signal.SIGHUP)
        assert notify.recv(4096).startswith(b"RELOADING=1\nMONOTONIC_USEC=")
        assert notify.recv(4096) == b"READY=1\nSTATUS=configuration reloaded"
        daemon.signal(signal.SIGTERM)
        assert notify.recv(4096) == b"STOPPING=1"
        assert daemon.process.wait(30) == 0


@needs_sipp
def test_sighup_swaps_the_calls_policy_and_the_call_in_progress_goes_on(
    make_setup: Callable[[str], Setup],
    processes: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    """A call connected between two SIPp phones survives a SIGHUP that lowers
    ``[calls] max_calls_total`` to 1; the next call is refused by the new limit while the
    first one is up, and allowed once it has ended."""
    setup = make_setup("")
    daemon, alice, bob, call = connected_call(setup, tmp_path, processes)
    config = next(tmp_path.glob("daemon*.ini"))
    config.write_text(config.read_text().replace("[calls]\n", "[calls]\nmax_calls_total = 1\n"))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("SIGHUP: configuration reloaded")
    assert "[calls] policy flow4 in force for new calls" in daemon.log()
    assert "take effect at the next restart" not in daemon.log()
    refused = setup.control.try_place("bob", "alice")
    assert (refused["status"], refused["error"]) == (403, "1 calls are in progress already")
    time.sleep(1.0)
    assert setup.control.get(call["id"])["state"] == "connected"
    assert alice.poll() is None and bob.poll() is None
    assert setup.control.hang_up(call["id"])
    assert alice.wait(30) == 0 and bob.wait(30) == 0
    wait_until(lambda: setup.control.active() == [], 30, "the call ended")
    # The limit counts calls in progress: with none, a new call may be placed.
    again = setup.control.place("bob", "alice")
    setup.control.hang_up(again["id"])
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


def test_metrics_count_retransmissions_received_and_sent_again(
    make_setup: Callable[[str], Setup],
) -> None:
    """An OPTIONS sent twice with one branch (a phone's Timer E): the daemon answers both
    times from its server transaction, and /metrics counts one request received again and
    one response sent again."""
    setup = make_setup()
    setup.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(15)
        request = probe_request(
            "OPTIONS", setup.sip_port, sock.getsockname()[1], to="sip:127.0.0.1"
        )
        answers = []
        for _ in range(2):
            sock.sendto(request, ("127.0.0.1", setup.sip_port))
            answers.append(sock.recvfrom(65536)[0])
    assert [status_of(a) for a in answers] == [200, 200]
    assert answers[0] == answers[1], "the same response, re-sent by the transaction"
    _, body = get_url(f"http://127.0.0.1:{setup.web_port}/metrics", headers=METRICS_AUTH)
    text = body.decode()
    assert 'clicktodial_sip_retransmissions_received_total{message="request"} 1.0' in text
    assert 'clicktodial_sip_retransmissions_sent_total{message="response"} 1.0' in text
    assert 'clicktodial_sip_retransmissions_sent_total{message="request"} 0.0' in text
