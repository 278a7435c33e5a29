"""
``[daemon] workers = 2`` against real SIP peers (docs/deploy.md, "Worker processes").

The daemon (``twistd -n clicktodial``, SQLite) runs a main process and two workers sharing
the SIP port (SO_REUSEPORT). Checked: requests from many source ports are spread over both
workers and each answers from its own private port; a nonce one worker issued is accepted
by the other (one secret); SIPp registers through the shared port; two click-to-dial calls
between baresip phones placed through the web API run on different workers, each worker's
legs reach the phones and the phones' in-dialog requests (ACK, BYE) come back to it; a
worker killed (SIGKILL, by PID) mid-call is restarted, its call recorded as ended (lost),
and calls work again after; the main process's /metrics holds both workers' metrics and its
/readyz says 503 while a worker is restarting. Loopback only; every wait is bounded;
processes are stopped by their PID.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from calltools import (
    Baresip,
    api_token,
    demo_phone,
    needs_baresip,
    web_api_get,
    web_place_call,
)
from conftest import find_free_port, wait_until  # type: ignore[import-not-found]

pytestmark = pytest.mark.interop

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).parent / "sipp"
DOMAIN = "127.0.0.1"


def workers_ini(tmp: Path, sip_port: int, web_port: int, metrics_port: int = 0) -> str:
    return (
        "[sip]\n"
        f"domain = {DOMAIN}\n"
        f"listen = 127.0.0.1:{sip_port}\n"
        "transports = udp, tcp\n"
        "[web]\n"
        f"listen = tcp:{web_port}:interface=127.0.0.1\n"
        + (f"metrics_listen = tcp:{metrics_port}:interface=127.0.0.1\n" if metrics_port else "")
        + "[store]\n"
        f"url = sqlite:///{tmp}/clicktodial.sqlite\n"
        "auto_upgrade = yes\n"
        "demo_users = yes\n"
        "[registrar]\n"
        "digest_algorithms = MD5\n"
        "[daemon]\n"
        "workers = 2\n"
        "shutdown_grace = 2\n"
    )


@pytest.fixture
def daemon(start_daemon: Callable[[str], Any], tmp_path: Path) -> tuple[Any, int, int, Path]:
    """A 2-worker daemon, both workers ready: (daemon, SIP port, web port, ini)."""
    sip_port, web_port = find_free_port(), find_free_port()
    text = workers_ini(tmp_path, sip_port, web_port)
    running = start_daemon(text)
    running.wait_for_tcp(web_port)
    wait_until(lambda: running.log().count("is ready") >= 2, 60, "both workers to be ready")
    return running, sip_port, web_port, tmp_path / "daemon0.ini"


def private_ports(log: str) -> set[int]:
    return {int(p) for p in re.findall(r"SIP listening on 127\.0\.0\.1:(\d+)", log)}


def worker_pids(log: str) -> dict[int, int]:
    """Worker index -> the PID of its latest process, from the main process's log."""
    return {int(i): int(pid) for i, pid in re.findall(r"worker (\d+) started \(pid (\d+)", log)}


def options_from(port: int, sip_port: int) -> tuple[int, str]:
    """OPTIONS from UDP 127.0.0.1:port; the responder's source port and the response."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.settimeout(15)
        sock.sendto(
            (
                f"OPTIONS sip:{DOMAIN}:{sip_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
                f"From: <sip:probe@{DOMAIN}>;tag={secrets.token_hex(4)}\r\n"
                f"To: <sip:{DOMAIN}>\r\nCall-ID: {secrets.token_hex(8)}\r\nCSeq: 1 OPTIONS\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", sip_port),
        )
        data, source = sock.recvfrom(65536)
        return source[1], data.decode(errors="replace")


def register_from_six_ports(sip_port: int, tmp_path: Path) -> None:
    """Six SIPp registrations (alice, bob, ...) from six source ports: the kernel's hash
    spreads them over the workers."""
    assert SIPP is not None
    for i in range(6):
        user = ("alice", "bob")[i % 2]
        result = subprocess.run(
            [SIPP, "-sf", str(SCENARIOS / "reg_stack_register.xml"),
             "-i", "127.0.0.1", "-p", str(find_free_port()),
             "-s", user, "-au", user, "-ap", user,
             "-m", "1", "-timeout", "20s", "-timeout_error", "-nostdin",
             f"127.0.0.1:{sip_port}"],
            cwd=tmp_path, capture_output=True, timeout=40, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]


def register_request(
    user: str, port: int, sip_port: int, cseq: int, call_id: str, authorization: str = ""
) -> bytes:
    return (
        f"REGISTER sip:{DOMAIN}:{sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        f"From: <sip:{user}@{DOMAIN}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:{user}@{DOMAIN}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{user}@127.0.0.1:{port}>\r\nExpires: 60\r\nMax-Forwards: 70\r\n"
        f"{authorization}Content-Length: 0\r\n\r\n"
    ).encode()


def test_requests_spread_over_both_workers_each_answering_from_its_private_port(
    daemon: tuple[Any, int, int, Path],
) -> None:
    running, sip_port, _, _ = daemon
    ports = private_ports(running.log())
    assert len(ports) == 2 and sip_port not in ports
    by_worker: dict[int, list[int]] = {}
    for _ in range(16):
        source = find_free_port()
        responder, response = options_from(source, sip_port)
        assert response.startswith("SIP/2.0 200"), response
        by_worker.setdefault(responder, []).append(source)
    # 16 source ports hashed over 2 sockets: all on one has probability 2**-15
    assert set(by_worker) == ports


def test_a_nonce_from_one_worker_is_good_on_the_other(daemon: tuple[Any, int, int, Path]) -> None:
    """The 401 comes from one worker, the answer to it goes through the other: 200."""
    import hashlib

    running, sip_port, _, _ = daemon
    sockets: dict[int, socket.socket] = {}
    try:
        while len(sockets) < 2:  # one source port hashed to each worker
            port = find_free_port()
            responder, _ = options_from(port, sip_port)
            if responder not in sockets:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind(("127.0.0.1", port))
                sock.settimeout(15)
                sockets[responder] = sock
        first, second = sockets.values()
        call_id = secrets.token_hex(8)
        port1 = first.getsockname()[1]
        first.sendto(
            register_request("alice", port1, sip_port, 1, call_id), ("127.0.0.1", sip_port)
        )
        challenge = first.recvfrom(65536)[0].decode()
        assert challenge.startswith("SIP/2.0 401"), challenge
        params = dict(
            re.findall(r'(\w+)="?([^",\r]*)"?', challenge.split("Digest", 1)[1].split("\r\n", 1)[0])
        )
        uri = f"sip:{DOMAIN}:{sip_port}"

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        ha1, ha2 = md5(f"alice:{params['realm']}:alice"), md5(f"REGISTER:{uri}")
        cnonce = secrets.token_hex(4)
        response = md5(f"{ha1}:{params['nonce']}:00000001:{cnonce}:auth:{ha2}")
        authorization = (
            f'Authorization: Digest username="alice", realm="{params["realm"]}", '
            f'nonce="{params["nonce"]}", uri="{uri}", response="{response}", algorithm=MD5, '
            f'qop=auth, nc=00000001, cnonce="{cnonce}"\r\n'
        )
        port2 = second.getsockname()[1]
        second.sendto(
            register_request("alice", port2, sip_port, 2, call_id, authorization),
            ("127.0.0.1", sip_port),
        )
        answer, source = second.recvfrom(65536)
        assert answer.decode().startswith("SIP/2.0 200"), answer
        assert source[1] != [p for p, s in sockets.items() if s is first][0]
    finally:
        for sock in sockets.values():
            sock.close()


@pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")
def test_sipp_registers_through_the_shared_port(
    daemon: tuple[Any, int, int, Path], tmp_path: Path
) -> None:
    running, sip_port, _, _ = daemon
    assert SIPP is not None
    register_from_six_ports(sip_port, tmp_path)
    assert "Traceback" not in running.log()


def call_node(database: Path, call_id: str) -> str:
    with sqlite3.connect(database) as db:
        row = db.execute("SELECT node FROM calls WHERE call_id = ?", (call_id,)).fetchone()
    assert row is not None
    return str(row[0])


@needs_baresip
def test_calls_run_on_both_workers_and_a_worker_killed_mid_call_is_restarted(
    daemon: tuple[Any, int, int, Path], tmp_path: Path, running: list[Baresip]
) -> None:
    daemon_, sip_port, web_port, ini = daemon
    alice = demo_phone(tmp_path, "alice", sip_port, "auto")
    bob = demo_phone(tmp_path, "bob", sip_port, "auto")
    running.extend([alice, bob])
    for name in ("alice", "bob"):
        daemon_.wait_for_log(f"REGISTER sip:{name}@127.0.0.1: 1 binding(s)")
    token = api_token(ini, "alice")

    def state(call_id: str) -> dict[str, Any]:
        return dict(web_api_get(web_port, token, f"/calls/{call_id}"))

    def connected_call() -> str:
        call_id = str(web_place_call(web_port, token, "bob")["id"])
        wait_until(lambda: state(call_id)["state"] == "connected", 30, "the call to connect")
        return call_id

    # Two calls, placed round robin: one on each worker. The phones' in-dialog requests
    # (the ACKs, alice's BYE) reach the worker running the call through its Contact port.
    nodes = []
    for _ in range(2):
        call_id = connected_call()
        nodes.append(call_node(tmp_path / "clicktodial.sqlite", call_id))
        alice.command("hangup")
        wait_until(lambda c=call_id: state(c)["state"] == "ended", 30, "the call to end")
        assert (state(call_id)["reason"], state(call_id)["who_hung_up"]) == (
            "caller-hangup",
            "caller",
        )
        time.sleep(1)
    assert sorted(n.rsplit("/", 1)[1] for n in nodes) == ["w0", "w1"]

    # A worker killed mid-call: its call is ended as lost; it is restarted.
    call_id = connected_call()
    index = int(call_node(tmp_path / "clicktodial.sqlite", call_id).rsplit("/w", 1)[1])
    pids = worker_pids(daemon_.log())
    os.kill(pids[index], signal.SIGKILL)
    wait_until(
        lambda: state(call_id)["state"] in ("ended", "failed"), 30, "the lost call to be ended"
    )
    assert state(call_id)["reason"] == "lost"
    wait_until(
        lambda: worker_pids(daemon_.log())[index] != pids[index], 30, "the worker to be restarted"
    )
    wait_until(lambda: daemon_.log().count("is ready") >= 3, 60, "the new worker to be ready")
    for phone in (alice, bob):
        phone.command("hangup")  # their dialog died with the worker
    time.sleep(2)
    # Calls work again, on either worker.
    for _ in range(2):
        call_id = connected_call()
        bob.command("hangup")
        wait_until(lambda c=call_id: state(c)["state"] == "ended", 30, "the call to end")
        assert state(call_id)["who_hung_up"] == "callee"
        time.sleep(1)
    assert "Traceback" not in daemon_.log()


def http_get(port: int, path: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def daemon_log_count(running: Any, text: str) -> int:
    return int(running.log().count(text))


def test_main_process_metrics_and_readyz_cover_every_worker(
    start_daemon: Callable[[str], Any], tmp_path: Path
) -> None:
    """/metrics of the main process: both workers' families, labelled worker, and the
    REGISTERs they answered; /readyz: 503 naming a killed worker until its successor is
    ready, then 200; the restart is counted."""
    assert SIPP is not None
    sip_port, web_port, metrics_port = find_free_port(), find_free_port(), find_free_port()
    running = start_daemon(workers_ini(tmp_path, sip_port, web_port, metrics_port))
    running.wait_for_tcp(metrics_port)
    wait_until(lambda: http_get(metrics_port, "/readyz") == (200, "ready"), 60, "readyz 200")
    register_from_six_ports(sip_port, tmp_path)
    code, text = http_get(metrics_port, "/metrics")
    assert code == 200
    lines = text.splitlines()
    for index in (0, 1):
        assert f'clicktodial_worker_up{{worker="{index}"}} 1.0' in lines
        assert any(
            line.startswith(f'clicktodial_sip_transactions_active{{worker="{index}"}}')
            for line in lines
        )
    answered = re.findall(
        r'^clicktodial_register_responses_total\{status="200",worker="\d"\} (\S+)$', text, re.M
    )
    assert sum(float(n) for n in answered) == 6
    assert "clicktodial_worker_restarts_total 0.0" in lines

    pids = worker_pids(running.log())
    os.kill(pids[1], signal.SIGKILL)
    wait_until(
        lambda: http_get(metrics_port, "/readyz") == (503, "worker 1 not ready"),
        20,
        "readyz to name the dead worker",
    )
    # the successor starts after a 1 s back-off; its start-up is slow on a loaded machine
    wait_until(
        lambda: daemon_log_count(running, "is ready") >= 3, 120, "the new worker to be ready"
    )
    assert http_get(metrics_port, "/readyz") == (200, "ready")
    code, text = http_get(metrics_port, "/metrics")
    assert "clicktodial_worker_restarts_total 1.0" in text.splitlines()
    assert 'clicktodial_worker_up{worker="1"} 1.0' in text.splitlines()
    assert "Traceback" not in running.log()


def test_sighup_reaches_every_worker_and_sigterm_stops_them_all_with_status_0(
    daemon: tuple[Any, int, int, Path],
) -> None:
    running, _, _, _ = daemon
    pids = worker_pids(running.log())
    assert len(pids) == 2
    running.process.send_signal(signal.SIGHUP)
    # the main process and both workers re-read the file
    wait_until(
        lambda: running.log().count("SIGHUP: configuration reloaded") >= 3,
        30,
        "the reload in every process",
    )
    assert running.process.poll() is None
    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(60) == 0
    for pid in pids.values():
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )
    assert "Traceback" not in running.log()
