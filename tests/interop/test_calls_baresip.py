"""
A click-to-dial call between two real softphones through the running daemon.

Two headless baresip instances (Debian ``baresip-core``) register alice and bob with
Digest; alice's phone plays a 440 Hz tone and bob's 880 Hz (module ``ausine``), both
record what they receive and send (module ``sndfile``), both answer automatically
(bob, for the late-answer case, when told to over ``ctrl_tcp``). The call is placed
through the daemon's internal call-control API; once connected, media flows directly
between the phones, so each recording of received audio carries the *other* phone's
tone (checked with a numpy FFT). Then alice hangs up: bob gets the BYE, and the call
record says the caller hung up. Run with Flow I and Flow IV, and with Flow IV once more
with bob answering after 40 s (past the 32 s for which alice's phone retransmits its
2xx). Every wait is bounded and every process is stopped by its PID.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from calltools import (
    Baresip,
    CallsApi,
    api_token,
    assert_failed_without_answer,
    daemon_ini,
    demo_phone,
    needs_baresip,
    needs_baresip_sndfile,
    received_tone,
)
from conftest import START_TIMEOUT, find_free_port, wait_until  # type: ignore[import-not-found]

numpy = pytest.importorskip("numpy")

pytestmark = [
    pytest.mark.interop,
    needs_baresip,
    needs_baresip_sndfile,
]

TONES = {"alice": 440.0, "bob": 880.0}


def run_call(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    made: list[Baresip],
    policy: str,
    answer_after: float | None,
) -> None:
    sip_port, web_port = find_free_port(), find_free_port()
    daemon = start_daemon(
        daemon_ini(sip_port, web_port, str(tmp_path), policy, callee_ring_timeout="90")
    )
    daemon.wait_for_tcp(web_port)
    daemon.wait_for_log("created demo users")
    alice = demo_phone(tmp_path, "alice", sip_port, "auto", TONES["alice"])
    bob = demo_phone(
        tmp_path, "bob", sip_port, "auto" if answer_after is None else "manual", TONES["bob"]
    )
    made.extend([alice, bob])
    for phone in (alice, bob):
        wait_until(
            lambda p=phone: f"sip:{p.name}@127.0.0.1" in daemon.log() and "binding" in daemon.log(),
            START_TIMEOUT,
            f"{phone.name} to register",
        )
    for name in ("alice", "bob"):
        daemon.wait_for_log(f"REGISTER sip:{name}@127.0.0.1: 1 binding(s)")
    control = CallsApi(web_port, daemon.config_path)
    call = control.place("alice", "bob")
    call_id = call["id"]
    if answer_after is not None:
        bob.wait_for_output("Incoming call", 30)
        time.sleep(answer_after)
        assert control.get(call_id)["state"] == "calling-callee"
        bob.command("accept")
    wait_until(lambda: control.get(call_id)["state"] == "connected", 30, "the call to connect")
    time.sleep(4)  # media both ways
    alice.command("hangup")
    wait_until(lambda: control.get(call_id).get("ended_at") is not None, 30, "the call to end")
    record = control.get(call_id)
    assert (record["reason"], record["who_hung_up"], record["state"]) == (
        "caller-hangup",
        "caller",
        "ended",
    )
    bob.wait_for_output("terminated", 30)
    alice.stop()
    bob.stop()
    # Each phone heard the other's tone: the media went directly between them.
    assert abs(received_tone(alice) - TONES["bob"]) < 15
    assert abs(received_tone(bob) - TONES["alice"]) < 15


@pytest.mark.parametrize("policy", ["flow1", "flow4"])
def test_softphones_connect_hear_each_other_and_the_hang_up_reaches_the_other(
    tmp_path: Path, start_daemon: Callable[[str], Any], running: list[Baresip], policy: str
) -> None:
    run_call(tmp_path, start_daemon, running, policy, None)


def test_flow4_connects_a_callee_answering_after_40_seconds(
    tmp_path: Path, start_daemon: Callable[[str], Any], running: list[Baresip]
) -> None:
    run_call(tmp_path, start_daemon, running, "flow4", 40.0)


def test_phones_sharing_no_codec_make_a_failed_call_in_the_api_and_history(
    tmp_path: Path, start_daemon: Callable[[str], Any], running: list[Baresip]
) -> None:
    """
    alice's phone offers only PCMU, bob's only PCMA: both answer, then alice's phone
    refuses bob's offer (488). The call never connected: the web API says ``failed``, with
    no ``answered`` and no ``duration``, and so does alice's history.
    """
    sip_port, web_port = find_free_port(), find_free_port()
    daemon = start_daemon(daemon_ini(sip_port, web_port, str(tmp_path)))
    daemon.wait_for_tcp(web_port)
    daemon.wait_for_log("created demo users")
    codecs = {"alice": "PCMU", "bob": "PCMA"}
    phones = [
        Baresip(
            tmp_path / f"baresip-{name}",
            name,
            f"<sip:{name}@127.0.0.1:{sip_port}>;auth_pass={name};regint=600;"
            f"answermode=auto;audio_codecs={codec}\n",
        )
        for name, codec in codecs.items()
    ]
    running.extend(phones)
    for name in codecs:
        daemon.wait_for_log(f"REGISTER sip:{name}@127.0.0.1: 1 binding(s)")
    token = api_token(tmp_path / "daemon0.ini", "alice")
    call_id = CallsApi(web_port, daemon.config_path).place("alice", "bob")["id"]
    assert_failed_without_answer(web_port, token, call_id, 488)
    daemon.wait_for_log("offer/answer between the phones failed (488)", 30)
