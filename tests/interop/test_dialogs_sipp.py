"""
The dialog / user-agent core against SIPp over UDP on loopback.

Our side is ``python -m clicktodial.testing.uaapp`` (real transport,
transaction layer and UA core) as a subprocess reporting JSON lines; SIPp
runs the built-in ``uas``/``uac`` scenarios or ours in ``sipp/dlg_*.xml``.
Every run is bounded (``-m``, ``-timeout``, subprocess timeouts) and every
process is killed by PID at the end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (  # type: ignore[import-not-found]  # tests/ is on sys.path
    REPO_ROOT,
    START_TIMEOUT,
    find_free_port,
    python_env,
    wait_until,
)

from clicktodial.testing.daemon import udp_bound

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) not installed"),
]

SCENARIOS = Path(__file__).parent / "sipp"
#: Our T1 in these runs: 64*T1 = 6.4 s bounds the no-ACK wait and every timer.
T1 = "0.1"
T2 = "0.8"
T4 = "1.0"
SIPP_TIMEOUT = 40


class UAApp:
    """A uaapp subprocess writing its JSON lines to a file."""

    def __init__(self, process: subprocess.Popen[bytes], output: Path) -> None:
        self.process = process
        self.output = output

    def events(self) -> list[dict[str, object]]:
        found = []
        for line in self.output.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                found.append(json.loads(line))
        return found

    def names(self) -> list[object]:
        return [event["event"] for event in self.events()]

    def of(self, name: str) -> list[dict[str, object]]:
        return [event for event in self.events() if event["event"] == name]

    def port(self) -> int:
        wait_until(
            lambda: bool(self.of("listening")) or self.process.poll() is not None,
            30,
            "uaapp to listen",
        )
        listening = self.of("listening")
        assert listening, self.output.read_text()
        port = listening[0]["port"]
        assert isinstance(port, int)
        return port

    def wait(self, timeout: float) -> dict[str, object]:
        """Wait for the exit; return the final ``done`` event."""
        self.process.wait(timeout)
        done = self.of("done")
        assert done, self.output.read_text()
        return done[-1]


@pytest.fixture
def start_uaapp(tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> Iterator[object]:
    def start(*args: str) -> UAApp:
        output = tmp_path / f"uaapp{len(processes)}.out"
        with output.open("wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "clicktodial.testing.uaapp",
                    "--t1",
                    T1,
                    "--t2",
                    T2,
                    "--t4",
                    T4,
                    *args,
                ],
                cwd=REPO_ROOT,
                env=python_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        processes.append(process)
        return UAApp(process, output)

    yield start


def sipp_argv(tmp_path: Path, port: int, *args: str) -> list[str]:
    return [
        "sipp",
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-t",
        "u1",
        "-nostdin",
        "-timeout",
        f"{SIPP_TIMEOUT}s",
        "-timeout_error",
        "-trace_err",
        "-error_file",
        str(tmp_path / "sipp_errors.log"),
        "-trace_msg",
        "-message_file",
        str(tmp_path / "sipp_messages.log"),
        *args,
    ]


def start_sipp(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]], port: int, *args: str
) -> subprocess.Popen[bytes]:
    with (tmp_path / "sipp.out").open("wb") as out:
        process = subprocess.Popen(
            sipp_argv(tmp_path, port, *args),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    processes.append(process)
    return process


def wait_udp_bound(port: int, process: subprocess.Popen[bytes]) -> None:
    """Wait until something (SIPp) holds UDP ``port`` (read from /proc: binding the port to
    find out could take it from SIPp in the instant it binds)."""

    def bound() -> bool:
        assert process.poll() is None, "SIPp exited before listening"
        return udp_bound(port)

    wait_until(bound, START_TIMEOUT, f"SIPp on UDP {port}")


def sipp_report(tmp_path: Path) -> str:
    parts = []
    for name in ("sipp.out", "sipp_errors.log"):
        path = tmp_path / name
        if path.exists():
            parts.append(f"--- {name}\n{path.read_text(errors='replace')[-3000:]}")
    return "\n".join(parts)


def received_by_sipp(tmp_path: Path, start_line: str, cseq_method: str) -> int:
    """How many messages starting ``start_line`` (with that CSeq method) SIPp received."""
    log = (tmp_path / "sipp_messages.log").read_text(errors="replace")
    count = 0
    for block in log.split("----------------------------------------------- ")[1:]:
        head, _, message = block.partition("\n\n")
        if "message received" not in head:
            continue
        lines = message.lstrip().splitlines()
        if not lines or not lines[0].startswith(start_line):
            continue
        if any(
            line.lower().startswith("cseq:") and line.split()[-1] == cseq_method for line in lines
        ):
            count += 1
    return count


def assert_clean(done: dict[str, object]) -> None:
    assert done["sessions"] == 0
    assert done["core"] == 0
    assert done["transactions"] == 0


def test_our_uac_completes_calls_with_sipp_uas(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]], start_uaapp: object
) -> None:
    """Our UAC: INVITE(offer) -> 180, 200(answer) -> ACK, BYE -> 200, twice; SIPp counts 2 OK."""
    port = find_free_port()
    sipp = start_sipp(tmp_path, processes, port, "-sn", "uas", "-m", "2")
    wait_udp_bound(port, sipp)
    app = start_uaapp(  # type: ignore[operator]
        "--role",
        "ua-uac",
        "--target",
        f"127.0.0.1:{port}",
        "--count",
        "2",
        "--hold",
        "0.3",
        "--linger",
        "8",
        "--duration",
        "30",
    )
    assert sipp.wait(SIPP_TIMEOUT + 10) == 0, sipp_report(tmp_path)
    done = app.wait(40)
    assert [e["status"] for e in app.of("answered")] == [200, 200]
    assert [e["reason"] for e in app.of("terminated")] == ["local-bye", "local-bye"]
    assert app.of("failed") == []
    assert_clean(done)


def test_sipp_uac_completes_a_call_with_our_uas(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]], start_uaapp: object
) -> None:
    """Our UAS: SIPp INVITE -> our 180/200 -> SIPp ACK, BYE -> our 200; nothing left after."""
    app = start_uaapp("--role", "ua-uas", "--duration", "12")  # type: ignore[operator]
    our_port = app.port()
    sipp = start_sipp(
        tmp_path,
        processes,
        find_free_port(),
        "-sn",
        "uac",
        "-m",
        "1",
        "-d",
        "500",
        f"127.0.0.1:{our_port}",
    )
    assert sipp.wait(SIPP_TIMEOUT + 10) == 0, sipp_report(tmp_path)
    done = app.wait(30)
    assert app.names()[1:] == ["incoming", "confirmed", "terminated", "done"]
    assert app.of("terminated")[0]["reason"] == "remote-bye"
    assert_clean(done)


def test_calls_complete_when_sipp_drops_messages(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]], start_uaapp: object
) -> None:
    """
    SIPp drops 20-30% of INVITEs, 180s, 200s, ACKs, BYEs and BYE 200s
    (lost=): retransmissions on both sides still complete all 5 calls.
    """
    app = start_uaapp("--role", "ua-uas", "--duration", "30")  # type: ignore[operator]
    our_port = app.port()
    sipp = start_sipp(
        tmp_path,
        processes,
        find_free_port(),
        "-sf",
        str(SCENARIOS / "dlg_uac_lossy.xml"),
        "-m",
        "5",
        "-l",
        "1",
        f"127.0.0.1:{our_port}",
    )
    assert sipp.wait(SIPP_TIMEOUT + 10) == 0, sipp_report(tmp_path)
    done = app.wait(45)
    assert len(app.of("incoming")) == 5
    assert [e["reason"] for e in app.of("terminated")] == ["remote-bye"] * 5
    assert_clean(done)


def test_unacked_2xx_is_retransmitted_then_the_session_ended_with_bye(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]], start_uaapp: object
) -> None:
    """
    §13.3.1.4: SIPp never ACKs; we retransmit the 200 (T1=0.1 s doubling to
    T2=0.8 s) for 64*T1 = 6.4 s, then send BYE, which SIPp answers.
    """
    app = start_uaapp("--role", "ua-uas", "--no-ring", "--duration", "20")  # type: ignore[operator]
    our_port = app.port()
    sipp = start_sipp(
        tmp_path,
        processes,
        find_free_port(),
        "-sf",
        str(SCENARIOS / "dlg_uac_noack.xml"),
        "-m",
        "1",
        f"127.0.0.1:{our_port}",
    )
    assert sipp.wait(SIPP_TIMEOUT + 10) == 0, sipp_report(tmp_path)
    done = app.wait(40)
    assert [e["reason"] for e in app.of("terminated")] == ["no-ack"]
    assert app.of("confirmed") == []
    # 0.1, 0.2, 0.4, 0.8 (T2), then every 0.8 s up to 6.4 s: about 11 copies.
    copies = received_by_sipp(tmp_path, "SIP/2.0 200", "INVITE")
    assert 9 <= copies <= 12, copies
    assert received_by_sipp(tmp_path, "BYE ", "BYE") >= 1
    assert_clean(done)
