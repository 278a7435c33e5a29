"""
What a phone (or anyone) can steer through the running daemon: nothing (docs/security.md).

The attack checks of ``scripts/attacks`` run against a ``twistd -n clicktodial`` subprocess
(SQLite, demo users alice and bob): their traps listen on 127.0.0.9 (UDP and TCP) and must
receive nothing, while the honest side of each exchange still works.

- ``check_reflector``: REGISTER, OPTIONS and INVITE datagrams from 127.0.0.1 whose top Via
  names the trap with ``maddr`` (UDP and TCP Via) or a ``received`` of their own.  Before
  (issue 13) the trap got the 401/200/403 and the INVITE's retransmissions (1-3 packets,
  up to 939 bytes for a 426-byte INVITE, in 3 s) and a TCP connection; now the answers go
  to the packet's source.
- ``check_steer``: raw-socket phones for alice and bob answer the daemon's INVITEs with a
  Contact or Record-Route naming the trap (UDP and ``transport=tcp``), and alice with two
  phones at once (a late fork's 2xx).  Before, with Flow I, every ACK to the callee went to
  the trap (1 datagram or TCP connection per call) and, with both flows, a late fork's ACK
  and BYE (4-5 datagrams, or a TCP connection); now the call connects, each phone gets
  its ACK and BYE, the trap nothing.  Under both call-flow policies.

Run inside ``unshare -n`` (127.0.0.9 must be local and nothing may leave the machine).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from calltools import daemon_ini
from conftest import REPO_ROOT, find_free_port  # type: ignore[import-not-found]

sys.path.insert(0, str(REPO_ROOT / "scripts" / "attacks"))

import check_reflector  # type: ignore[import-not-found]
import check_steer  # type: ignore[import-not-found]

pytestmark = pytest.mark.interop

USERS = [("alice", "alice"), ("bob", "bob")]


@pytest.fixture
def daemon(tmp_path: Path, start_daemon: Callable[[str], Any]) -> Callable[[str], dict[str, Any]]:
    """Start a daemon with ``[calls] policy``; its SIP address and web base URL."""

    def start(policy: str) -> dict[str, Any]:
        sip_port, web_port = find_free_port(), find_free_port()
        process = start_daemon(daemon_ini(sip_port, web_port, str(tmp_path),
                                          policy=policy))
        process.wait_for_tcp(web_port)
        process.wait_for_log("created demo users")
        return {"sip": ("127.0.0.1", sip_port), "web": f"http://127.0.0.1:{web_port}",
                "process": process}

    return start


def no_traceback(process: Any) -> None:
    assert "Traceback" not in process.log(), process.log()


def test_a_via_maddr_or_received_reflects_nothing(
        daemon: Callable[[str], dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    """Responses go to the request's source, never to the Via's maddr or to a received= the
    sender wrote: the trap gets 0 packets, the sender its answers."""
    ports = daemon("flow4")
    failures = check_reflector.run(ports["sip"], "alice")
    print(capsys.readouterr().out)
    assert failures == []
    no_traceback(ports["process"])


@pytest.mark.parametrize("policy", ["flow1", "flow4"])
def test_a_phones_contact_or_record_route_steers_no_request_of_its_call(
        daemon: Callable[[str], dict[str, Any]], policy: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Every request of a dialog with a phone (ACK, re-INVITE, BYE; a late fork's ACK and
    BYE) goes to the address the phone registered from, whatever its 180/2xx Contact and
    Record-Route say: the trap gets 0 packets, the call connects, each phone gets its ACK
    and BYE."""
    ports = daemon(policy)
    failures = check_steer.run(ports["sip"], ports["web"], USERS)
    print(capsys.readouterr().out)
    assert failures == []
    no_traceback(ports["process"])
