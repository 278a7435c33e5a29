"""
The transaction layer on a real UDP socket against SIPp (loopback only).

Our side is ``python -m clicktodial.testing.sipapp`` (the real transport and
transaction layers with a trivial TU, reporting JSON lines); SIPp runs the
``tests/interop/sipp/tx_*.xml`` scenarios.  Every run is bounded (``-m``,
``-timeout``, ``-timeout_error``, subprocess timeouts) and every process we
start is killed by its PID.  Retransmission times are read from SIPp's
message trace, so they are what the peer saw on the wire.
"""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from apptools import TestingApp  # type: ignore[import-not-found]
from conftest import (  # type: ignore[import-not-found]
    START_TIMEOUT,
    find_free_port,
    wait_until,
)

from clicktodial.testing.daemon import udp_bound

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) not installed"),
]

SCENARIOS = Path(__file__).parent / "sipp"
HOST = "127.0.0.1"


def wait_until_bound(sipp: Sipp) -> None:
    """Until SIPp listens on its UDP port (read from /proc: binding the port to find out
    could take it from SIPp in the instant it binds), failing if SIPp exits first."""

    def bound() -> bool:
        assert sipp.proc.poll() is None, sipp.log.read_text()[-2000:]
        return udp_bound(sipp.port)

    wait_until(bound, START_TIMEOUT, f"SIPp on UDP {sipp.port}")


def sip_app(tmp: Path, *args: str) -> TestingApp:
    """Our stack (``clicktodial.testing.sipapp``) as a subprocess; its JSON-line events."""
    return TestingApp(tmp, "sipapp", "--host", HOST, *args)


class Sipp:
    """One bounded SIPp run; its message trace parsed."""

    def __init__(
        self, tmp: Path, scenario: str, port: int, *args: str, calls: int = 1, timeout: int = 30
    ) -> None:
        self.trace = tmp / f"{scenario}-{port}.msg.log"
        self.log = tmp / f"{scenario}-{port}.out"
        self.timeout = timeout
        self.port = port
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    "sipp",
                    *args,
                    "-sf",
                    str(SCENARIOS / f"{scenario}.xml"),
                    "-i",
                    HOST,
                    "-p",
                    str(port),
                    "-m",
                    str(calls),
                    "-timeout",
                    f"{timeout}s",
                    "-timeout_error",
                    "-nostdin",
                    "-trace_msg",
                    "-message_file",
                    str(self.trace),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp,
            )

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=self.timeout + 15)
        except subprocess.TimeoutExpired:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def messages(self) -> list[tuple[float, str, str]]:
        """``(time, "sent"|"received", first line)`` for every traced message. (After a
        message its ``lost=`` dropped, SIPp writes the next one's separator on the line that
        says so: ``UDP message lost (recv).----- DATE``.)"""
        text = self.trace.read_text(errors="replace")
        found = re.findall(
            r"^(?:UDP message lost \([a-z]+\)\.)?-+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\s*\n"
            r"UDP message (sent|received)[^\n]*\n(?:\s*\n)*([^\n]+)",
            text,
            re.MULTILINE,
        )
        return [
            (datetime.datetime.fromisoformat(when).timestamp(), direction, first.strip())
            for when, direction, first in found
        ]

    def times(self, direction: str, first_line_prefix: str) -> list[float]:
        return [
            t
            for t, d, line in self.messages()
            if d == direction and line.startswith(first_line_prefix)
        ]


@pytest.fixture
def procs() -> Iterator[list[TestingApp | Sipp]]:
    started: list[TestingApp | Sipp] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.stop()


def deltas(times: list[float]) -> list[float]:
    return [round(t - times[0], 2) for t in times]


def gaps(times: list[float]) -> list[float]:
    """The time between each message and the next."""
    return [round(b - a, 2) for a, b in zip(times, times[1:], strict=False)]


#: How far a gap between two retransmissions SIPp saw may be from the RFC's, in seconds:
#: under half the smallest difference between two gaps of a schedule (0.5 s against 1 s),
#: so a wrong schedule still fails, with room for a loaded machine delaying either process.
#: (The timers themselves are checked exactly on a fake clock by the unit tests.)
GAP_SLACK = 0.24


def test_non_invite_client_retransmits_at_t1_and_stops_on_the_final_response(
    tmp_path: Path, procs: list[TestingApp | Sipp]
) -> None:
    """SIPp answers OPTIONS after 1.2 s: Timer E resent it at 0.5 s, once; one 200 goes up."""
    sipp_port = find_free_port()
    sipp = Sipp(tmp_path, "tx_uas_options_late", sipp_port, timeout=20)
    procs.append(sipp)
    wait_until_bound(sipp)
    app = sip_app(
        tmp_path,
        "--role",
        "uac",
        "--port",
        "0",
        "--target",
        f"{HOST}:{sipp_port}",
        "--method",
        "OPTIONS",
        "--duration",
        "15",
        "--linger",
        "5.5",
    )
    procs.append(app)
    app.wait(timeout=30)
    assert sipp.wait() == 0, sipp.log.read_text()[-2000:]
    received = sipp.times("received", "OPTIONS")
    assert len(received) == 2
    assert abs(gaps(received)[0] - 0.5) < GAP_SLACK
    assert [e["status"] for e in app.of("response")] == [200]
    # Timer K (T4) ended the transaction before the harness stopped.
    assert app.of("done")[0]["active"] == 0


def test_non_invite_client_gets_through_sipp_dropping_half_the_requests(
    tmp_path: Path, procs: list[TestingApp | Sipp]
) -> None:
    """SIPp lost="50" on MESSAGE: retransmissions recover; each of 3 requests gets one 200."""
    sipp_port = find_free_port()
    sipp = Sipp(tmp_path, "tx_uas_message_lossy", sipp_port, calls=3, timeout=40)
    procs.append(sipp)
    wait_until_bound(sipp)
    app = sip_app(
        tmp_path,
        "--role",
        "uac",
        "--port",
        "0",
        "--target",
        f"{HOST}:{sipp_port}",
        "--method",
        "MESSAGE",
        "--count",
        "3",
        "--duration",
        "40",
        "--linger",
        "5.5",
    )
    procs.append(app)
    app.wait(timeout=60)
    assert sipp.wait() == 0, sipp.log.read_text()[-2000:]
    assert [e["status"] for e in app.of("response")] == [200, 200, 200]
    assert app.of("done")[0]["active"] == 0


def test_invite_server_absorbs_a_duplicate_invite_and_recovers_lost_486(
    tmp_path: Path, procs: list[TestingApp | Sipp]
) -> None:
    """SIPp sends each INVITE twice and drops a quarter of the 486s: one INVITE per call reaches
    the TU, 100 Trying comes from the transaction, Timer G gets a 486 through, the ACK ends it.

    SIPp may lose the 486 several times in a row (the eighth copy goes at 19.5 s; losing all eight
    is 1 in 65,536 calls), so the app runs 20 s with T4 = 1 s (Timer I) and every
    transaction has ended when it reports."""
    app = sip_app(
        tmp_path,
        "--role",
        "uas",
        "--port",
        "0",
        "--invite-status",
        "486",
        "--answer-delay",
        "0.5",
        "--duration",
        "20",
        "--t4",
        "1",
    )
    procs.append(app)
    our_port = app.wait_listening()
    sipp = Sipp(
        tmp_path,
        "tx_uac_invite_lossy",
        find_free_port(),
        f"{HOST}:{our_port}",
        "-r",
        "5",
        calls=5,
        timeout=20,
    )
    procs.append(sipp)
    assert sipp.wait() == 0, sipp.log.read_text()[-2000:]
    app.wait(timeout=30)
    requests = app.of("request")
    assert len(requests) == 5
    assert len({r["call_id"] for r in requests}) == 5
    assert app.of("failure") == []
    assert len(sipp.times("received", "SIP/2.0 100")) == 5
    assert len(sipp.times("received", "SIP/2.0 486")) >= 5
    assert app.of("done")[0]["active"] == 0


def test_invite_server_retransmits_486_on_timer_g_and_gives_up_on_timer_h(
    tmp_path: Path, procs: list[TestingApp | Sipp]
) -> None:
    """SIPp never ACKs: it sees our 486 at 0, .5, 1.5, 3.5, 7.5, 11.5 ... 31.5; Timer H ends it."""
    app = sip_app(
        tmp_path,
        "--role",
        "uas",
        "--port",
        "0",
        "--invite-status",
        "486",
        "--answer-delay",
        "0.3",
        "--duration",
        "36",
    )
    procs.append(app)
    our_port = app.wait_listening()
    sipp = Sipp(
        tmp_path, "tx_uac_invite_no_ack", find_free_port(), f"{HOST}:{our_port}", timeout=50
    )
    procs.append(sipp)
    assert sipp.wait() == 0, sipp.log.read_text()[-2000:]
    app.wait(timeout=30)
    seen = deltas(sipp.times("received", "SIP/2.0 486"))
    expected = [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert len(seen) == len(expected), seen
    assert all(abs(s - e) < GAP_SLACK for s, e in zip(gaps(seen), gaps(expected), strict=True)), (
        seen
    )
    assert sipp.times("sent", "ACK") == []
    assert [f["reason"] for f in app.of("failure")] == ["timer H"]
    assert app.of("done")[0]["active"] == 0
