"""
A relayed call whose daemon is killed (SIGKILL) leaves a session in rtpengine
(started by the test, userspace forwarding, loopback only); the restarted
daemon records the call as ended C{lost} and deletes that session: rtpengine's
``list`` is empty within seconds (its own timeout for silent calls is 60 s).
SIPp plays both phones. Every wait is bounded; every process is killed by PID.
"""

from __future__ import annotations

import shutil
import signal
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from calltools import CallsApi, daemon_ini
from conftest import find_free_port, wait_until  # type: ignore[import-not-found]
from rtpenginetools import need_rtpengine, running_rtpengine
from test_calls_sipp import Phones

from clicktodial.media.bencode import bdecode, bencode

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) not installed"),
]

#: Well within rtpengine's own --timeout (60 s) for a call without media.
DELETE_WITHIN = 15


def ng_list(ng_port: int) -> list[bytes]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        # A fresh cookie each time: rtpengine answers a repeated one from its reply cache.
        cookie = uuid.uuid4().hex.encode()
        sock.sendto(cookie + b" " + bencode({"command": "list"}), ("127.0.0.1", ng_port))
        reply = bdecode(sock.recv(65535).split(b" ", 1)[1])
    assert isinstance(reply, dict)
    return list(reply["calls"])  # type: ignore[arg-type]


def test_a_killed_daemons_relayed_call_is_deleted_from_rtpengine_at_restart(
    tmp_path: Path, start_daemon: Callable[[str], Any]
) -> None:
    need_rtpengine()
    ng_port = find_free_port()
    sip_port, web_port = find_free_port(), find_free_port()
    text = daemon_ini(sip_port, web_port, str(tmp_path))
    text = text.replace("[web]\n", "t1 = 0.1\nt2 = 0.8\nt4 = 1.0\n[web]\n", 1)
    text += f"[media]\nrelay = rtpengine\n[media:rtpengine]\nng = 127.0.0.1:{ng_port}\n"
    with running_rtpengine(["127.0.0.1"], ("127.0.0.1", ng_port), (31200, 31299),
                           str(tmp_path / "rtpengine.log")):
        daemon = start_daemon(text)
        daemon.wait_for_tcp(web_port)
        daemon.wait_for_log("created demo users")
        phones = Phones(tmp_path, sip_port)
        try:
            phones.start("alice", "call_phone_answer.xml", 300)
            phones.start("bob", "call_phone_answer.xml", 300)
            control = CallsApi(web_port, daemon.config_path)
            call_id = control.place("alice", "bob")["id"]
            wait_until(lambda: control.get(call_id)["state"] == "connected", 30,
                       f"call {call_id} to connect")
            assert ng_list(ng_port) == [call_id.encode()]

            daemon.signal(signal.SIGKILL)
            daemon.process.wait(10)
            assert ng_list(ng_port) == [call_id.encode()]  # nobody deleted it

            restarted = start_daemon(text)
            restarted.wait_for_tcp(web_port)
            wait_until(lambda: ng_list(ng_port) == [], DELETE_WITHIN,
                       "rtpengine to have no session left")
            record = control.get(call_id)
            assert (record["reason"], record["who_hung_up"]) == ("lost", "system")
            restarted.wait_for_log("deleted the sessions of 1 lost call(s)")
            assert restarted.stop() == 0
        finally:
            phones.kill()
