"""
A bounded single-source UDP flood against the daemon as twistd runs it, while a phone
registers from another address (issue 13, item 5).

Two sender processes send as fast as they can from 127.0.0.1 (garbage the parser rejects,
or REGISTERs without credentials), each bounded to 60 s and 30,000,000 datagrams, and
stopped when the phone is done. Once the flooder is banned, the phone (bench/regload.py)
registers with Digest from 127.0.0.2 every 0.25 s for 3 s, retransmitting as a UDP client
transaction does, each registration allowed 16 s (a bound for a loaded machine, not a
latency figure): all 12 must succeed. Before the fix the daemon parsed every datagram
before counting it (garbage was never counted, so never banned) and the phone got 0-4
registrations of 28 through (docs/benchmarks.md); now the flooder is banned after
rate_max_requests datagrams and dropped before parsing, by the kernel filter of the UDP
socket, and the phone is served.

Run inside ``unshare -n`` (loopback only). Every process is killed by PID at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from calltools import METRICS_AUTH, daemon_ini  # type: ignore[import-not-found]
from conftest import (  # type: ignore[import-not-found]
    REPO_ROOT,
    START_TIMEOUT,
    find_free_port,
    get_url,
    python_env,
    wait_until,
)

pytestmark = pytest.mark.interop

#: The senders' bounds; the test stops them once the phone is done (19 s at most), and they
#: must still be flooding then, however slowly the phone's process started.
FLOOD_SECONDS = 60.0
FLOOD_DATAGRAMS = 30_000_000
#: Seconds each of the phone's registrations may take (regload's default).
REGISTRATION_TIMEOUT = 16.0
SENDER = """
import os, signal, socket, sys, time
kind, port, seconds, count = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
if kind == "garbage":
    messages = [os.urandom(200) for _ in range(64)]
else:
    messages = [(
        "REGISTER sip:127.0.0.1 SIP/2.0\\r\\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;rport;branch=z9hG4bKf{i}\\r\\n"
        f"Max-Forwards: 70\\r\\nFrom: <sip:f{i}@127.0.0.1>;tag=f{i}\\r\\n"
        f"To: <sip:f{i}@127.0.0.1>\\r\\nCall-ID: f{i}@flood\\r\\nCSeq: 1 REGISTER\\r\\n"
        f"Contact: <sip:f{i}@127.0.0.1:5999>\\r\\nContent-Length: 0\\r\\n\\r\\n"
    ).encode() for i in range(64)]
sent, deadline = 0, time.monotonic() + seconds
def stop(*_):
    print(sent, flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
while sent < count and time.monotonic() < deadline:
    for m in messages:
        try:
            sock.sendto(m, ("127.0.0.1", port))
        except OSError:
            pass
    sent += len(messages)
print(sent)
"""


#: What the daemon logs (at warn) when it bans the senders' address.
BANNED = "127.0.0.1 sent more than 200 requests"


def provision(tmp_path: Path, ini: str) -> None:
    """One user u00000 / p00000 (bench/regload.py's first user)."""
    path = tmp_path / "provision.ini"
    path.write_text(ini)
    (tmp_path / "users.csv").write_text("username,sip_password\nu00000,p00000\n")
    for args in (["db", "upgrade"], ["user", "import", str(tmp_path / "users.csv")]):
        result = subprocess.run(
            [sys.executable, "-m", "clicktodial.cli", "--config", str(path), *args],
            capture_output=True, text=True, env=python_env(), cwd=tmp_path, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kind", ["garbage", "register"])
def test_a_flood_from_one_address_gets_banned_and_a_phone_elsewhere_keeps_registering(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    processes: list[subprocess.Popen[str]],
    kind: str,
) -> None:
    sip_port, web_port = find_free_port(), find_free_port()
    log_path = tmp_path / "daemon.log"
    ini = daemon_ini(sip_port, web_port, str(tmp_path))
    # warn: the flood's rejected datagrams would otherwise each write a line.
    ini += f"[log]\nlevel = warn\nfile = {log_path}\n"
    provision(tmp_path, ini)
    daemon = start_daemon(ini)
    daemon.wait_for_tcp(web_port)
    for _ in range(2):
        sender = subprocess.Popen(
            [sys.executable, "-c", SENDER, kind, str(sip_port), str(FLOOD_SECONDS),
             str(FLOOD_DATAGRAMS)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        processes.append(sender)
    # The phone starts once the flooder is banned (the senders are up and sending).
    wait_until(
        lambda: log_path.exists() and BANNED in log_path.read_text(),
        START_TIMEOUT,
        "the flooder's ban",
    )
    phone = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "regload.py"),
         "--target", f"127.0.0.1:{sip_port}", "--local-host", "127.0.0.2",
         "--domain", "127.0.0.1", "--users", "1", "--count", "12", "--rate", "4",
         "--timeout", f"{REGISTRATION_TIMEOUT:g}", "--max-seconds", "3", "--json"],
        capture_output=True, text=True, timeout=START_TIMEOUT + 3 + REGISTRATION_TIMEOUT,
    )  # fmt: skip
    flooding = all(p.poll() is None for p in processes)
    for sender in processes:
        sender.terminate()
    sent = sum(int(p.communicate(timeout=30)[0]) for p in processes)
    result = json.loads(phone.stdout)
    assert flooding, "the flood lasted as long as the phone's registrations"
    assert sent > 100_000, f"the flood was too weak to mean anything ({sent} datagrams)"
    assert result["started"] == 12 and result["succeeded"] == 12, result
    log = log_path.read_text()
    assert "Traceback" not in log
    _, body = get_url(f"http://127.0.0.1:{web_port}/metrics", headers=METRICS_AUTH)
    [drops] = [
        float(line.split()[-1]) for line in body.decode().splitlines()
        if line.startswith("clicktodial_sip_udp_kernel_drops ")
    ]  # fmt: skip
    assert drops > sent / 2, "most of the flood was dropped by the kernel"
