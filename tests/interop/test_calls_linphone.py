"""
A second softphone stack against the daemon: Debian's ``linphonec`` (liblinphone 5.1,
belle-sip), headless as :mod:`linphone` tells, next to baresip. What linphone does
differently is written up in docs/dialogs.md.

A linphone phone registers with Digest (after a 423) and is one binding, its keep-alives
are harmless, and it unregisters when it quits. A click-to-dial call between a linphone
phone and a baresip phone (linphone as caller and as callee, Flow I and Flow IV)
connects, each phone hears the other's tone (linphone plays a wav and records what it
receives, baresip plays a sine and records with ``sndfile``), and a hang-up on the
linphone side reaches the other phone and the record names who hung up; a hold and a
resume from linphone are relayed to baresip. A linphone declining (603), a ringing
linphone cancelled, two linphones sharing no codec (PCMU only against PCMA only: a
``failed`` call with SIP status 488 in the web API, never ``ended``), two linphones over
TCP. Every wait is bounded and every process is stopped by its PID.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from calltools import (
    CallsApi,
    api_token,
    assert_failed_without_answer,
    daemon_ini,
    demo_phone,
    dominant_frequency,
    needs_baresip,
    needs_baresip_sndfile,
)
from conftest import find_free_port, python_env, wait_until  # type: ignore[import-not-found]
from linphone import Linphone, needs_linphone

numpy = pytest.importorskip("numpy")

pytestmark = [pytest.mark.interop, needs_linphone]

TONES = {"alice": 440.0, "bob": 880.0}

#: Every audio codec liblinphone 5.1 enables by default.
ALL_CODECS = ("PCMU", "PCMA", "opus", "speex", "G729")


def start(
    start_daemon: Callable[[str], Any], tmp_path: Path, policy: str = "flow4"
) -> tuple[Any, int, int, CallsApi]:
    """A daemon with the demo users: (daemon, SIP port, web port, its calls API)."""
    sip_port, web_port = find_free_port(), find_free_port()
    daemon = start_daemon(daemon_ini(sip_port, web_port, str(tmp_path), policy))
    daemon.wait_for_tcp(web_port)
    daemon.wait_for_log("created demo users")
    return daemon, sip_port, web_port, CallsApi(web_port, daemon.config_path)


def test_linphone_registers_with_digest_as_one_binding_and_unregisters_when_it_quits(
    tmp_path: Path, start_daemon: Callable[[str], Any], running: list[Any]
) -> None:
    """linphonec asks for 30 s, gets 423 with ``Min-Expires: 60`` and asks again for 60 s;
    it answers the 401 with Digest (MD5, qop=auth) and is bound once, at the UDP port it
    listens on, whatever ``+sip.instance`` and ``;transport=udp`` it adds to its Contact;
    its CRLFCRLF keep-alives (every 0.5 s here) are taken silently and the phone stays
    registered; it unregisters (Expires: 0) when it quits."""
    daemon, sip_port, _, _ = start(start_daemon, tmp_path)
    alice = Linphone(tmp_path / "linphone-alice", "alice", sip_port, keepalive_ms=500, expires=30)
    running.append(alice)
    daemon.wait_for_log("REGISTER sip:alice@127.0.0.1: 1 binding(s)")
    register_log = alice.log()
    assert "SIP/2.0 423 Interval Too Brief" in register_log and "Min-Expires: 60" in register_log
    assert re.search(r"^Expires: 60\s*$", register_log, re.MULTILINE), register_log
    # Past liblinphone's 5 s network check (see let_linphone_see_a_network).
    wait_until(lambda: alice.log().count("keep alive sent to") >= 14, 30, "14 keep-alives")
    alice.command("status register")
    alice.wait_for_output("registered, identity=sip:alice@127.0.0.1", 30)
    [contact] = listed_contacts(user_list(tmp_path / "daemon0.ini"), "alice")
    assert f"sip:alice@127.0.0.1:{alice.port}" in contact
    log = daemon.log()
    assert "#warn]" not in log and "#error]" not in log and "Traceback" not in log, log
    alice.stop()
    daemon.wait_for_log("REGISTER sip:alice@127.0.0.1: 0 binding(s)")
    assert listed_contacts(user_list(tmp_path / "daemon0.ini"), "alice") == []


def user_list(ini: Path) -> str:
    """``clicktodial --config INI user list``."""
    return subprocess.run(
        [sys.executable, "-m", "clicktodial.cli", "--config", str(ini), "user", "list"],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def listed_contacts(listing: str, user: str) -> list[str]:
    """The bindings listed under ``user`` (``expires in`` lines) in a ``user list``."""
    lines = listing.splitlines()
    start_at = next(i for i, line in enumerate(lines) if line.split(" ", 1)[0] == user) + 1
    contacts = []
    for line in lines[start_at:]:
        if not line.startswith("    "):
            break
        if "expires in" in line:
            contacts.append(line.strip())
    return contacts


@pytest.mark.parametrize("linphone_side", ["caller", "callee"])
@pytest.mark.parametrize("policy", ["flow1", "flow4"])
@needs_baresip
@needs_baresip_sndfile
def test_linphone_and_baresip_connect_hear_each_other_and_the_linphone_hang_up_ends_it(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    running: list[Any],
    policy: str,
    linphone_side: str,
) -> None:
    """A call between a linphone phone and a baresip phone connects; each hears the
    other's tone (the media goes directly between them); the linphone phone hangs up: the
    baresip phone gets the BYE, and the record says the linphone side hung up."""
    daemon, sip_port, _, control = start(start_daemon, tmp_path, policy)
    names = {"caller": "alice", "callee": "bob"}
    linphone_name = names[linphone_side]
    baresip_name = names["callee" if linphone_side == "caller" else "caller"]
    # linphone's own codec list (opus, speex, G.729 too; telephone-event at three rates)
    # against baresip's PCMU only: the two settle on PCMU through the daemon.
    linphone = Linphone(
        tmp_path / f"linphone-{linphone_name}",
        linphone_name,
        sip_port,
        tone=TONES[linphone_name],
        codecs=ALL_CODECS,
    )
    running.append(linphone)
    baresip = demo_phone(tmp_path, baresip_name, sip_port, "auto", TONES[baresip_name])
    running.append(baresip)
    for name in ("alice", "bob"):
        daemon.wait_for_log(f"REGISTER sip:{name}@127.0.0.1: 1 binding(s)")
    call_id = control.place("alice", "bob")["id"]
    wait_until(lambda: control.get(call_id)["state"] == "connected", 30, "the call to connect")
    time.sleep(4)  # media both ways
    linphone.command("terminate")
    wait_until(lambda: control.get(call_id).get("ended_at") is not None, 30, "the call to end")
    record = control.get(call_id)
    assert (record["reason"], record["who_hung_up"], record["state"]) == (
        f"{linphone_side}-hangup",
        linphone_side,
        "ended",
    ), record
    baresip.wait_for_output("terminated", 30)
    linphone.stop()
    baresip.stop()
    [baresip_received] = sorted(baresip.recordings.glob("*dec*.wav"))[-1:]
    assert abs(dominant_frequency(linphone.received) - TONES[baresip_name]) < 15
    assert abs(dominant_frequency(baresip_received) - TONES[linphone_name]) < 15
    assert "Traceback" not in daemon.log()


@pytest.mark.parametrize("policy", ["flow1", "flow4"])
def test_linphone_phones_sharing_no_codec_make_a_failed_call_with_488_in_the_api(
    tmp_path: Path, start_daemon: Callable[[str], Any], running: list[Any], policy: str
) -> None:
    """alice's linphone offers only PCMU, bob's only PCMA: the call never connects, and
    the web API says ``failed`` with SIP status 488, no ``answered`` and no ``duration``
    (Flow I: bob's phone refuses alice's offer in the INVITE; Flow IV: alice's phone
    refuses bob's offer in the re-INVITE)."""
    daemon, sip_port, web_port, control = start(start_daemon, tmp_path, policy)
    phones = [
        Linphone(tmp_path / f"linphone-{name}", name, sip_port, codecs=(codec,))
        for name, codec in (("alice", "PCMU"), ("bob", "PCMA"))
    ]
    running.extend(phones)
    for name in ("alice", "bob"):
        daemon.wait_for_log(f"REGISTER sip:{name}@127.0.0.1: 1 binding(s)")
    token = api_token(tmp_path / "daemon0.ini", "alice")
    call_id = control.place("alice", "bob")["id"]
    assert_failed_without_answer(web_port, token, call_id, 488)
    assert "Traceback" not in daemon.log()


@pytest.mark.parametrize("linphone_side", ["caller", "callee"])
@pytest.mark.parametrize("policy", ["flow1", "flow4"])
@needs_baresip
@needs_baresip_sndfile
def test_linphone_holds_and_resumes_through_the_daemon_and_the_audio_comes_back(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    running: list[Any],
    policy: str,
    linphone_side: str,
) -> None:
    """The linphone phone puts the call on hold (a re-INVITE offering ``sendonly``) and
    resumes it (``sendrecv``): the daemon relays both re-INVITEs to the baresip phone and
    its answers back, the call stays connected, and after the resume each phone hears the
    other's tone again."""
    daemon, sip_port, _, control = start(start_daemon, tmp_path, policy)
    names = {"caller": "alice", "callee": "bob"}
    linphone_name = names[linphone_side]
    baresip_name = names["callee" if linphone_side == "caller" else "caller"]
    linphone = Linphone(
        tmp_path / f"linphone-{linphone_name}", linphone_name, sip_port, tone=TONES[linphone_name]
    )
    running.append(linphone)
    baresip = demo_phone(tmp_path, baresip_name, sip_port, "auto", TONES[baresip_name])
    running.append(baresip)
    for name in ("alice", "bob"):
        daemon.wait_for_log(f"REGISTER sip:{name}@127.0.0.1: 1 binding(s)")
    call_id = control.place("alice", "bob")["id"]
    wait_until(lambda: control.get(call_id)["state"] == "connected", 30, "the call to connect")
    time.sleep(2)
    # In Flow IV a baresip caller got one re-INVITE already: the callee's offer.
    reinvites = baresip.output().count("got re-INVITE (SDP Offer)")
    linphone.command("pause")
    linphone.wait_for_output("is now paused", 30)
    time.sleep(2)
    linphone.command("resume")
    wait_until(
        lambda: linphone.output().count("Media streams established") == 2,
        30,
        "the linphone's media to be back",
    )
    time.sleep(4)  # media both ways again
    assert control.get(call_id)["state"] == "connected"
    # Both re-INVITEs reached the baresip phone with their offers (not answered by the
    # daemon).
    assert baresip.output().count("got re-INVITE (SDP Offer)") == reinvites + 2, baresip.output()
    linphone.command("terminate")
    wait_until(lambda: control.get(call_id).get("ended_at") is not None, 30, "the call to end")
    baresip.wait_for_output("terminated", 30)
    linphone.stop()
    baresip.stop()
    [baresip_received] = sorted(baresip.recordings.glob("*dec*.wav"))[-1:]
    assert abs(dominant_frequency(linphone.received) - TONES[baresip_name]) < 15
    assert abs(dominant_frequency(baresip_received) - TONES[linphone_name]) < 15
    assert "Traceback" not in daemon.log()


@pytest.mark.parametrize("side", ["caller", "callee"])
def test_a_linphone_declining_the_call_is_recorded_as_rejected_by_that_side(
    tmp_path: Path, start_daemon: Callable[[str], Any], running: list[Any], side: str
) -> None:
    """A linphone phone that rings and is told to ``terminate`` declines (603 Decline):
    the call fails ``{side}-rejected`` with that status, and a caller that had answered
    gets a BYE whose ``Reason: SIP ;cause=603`` linphone shows as "Call declined"."""
    daemon, sip_port, _, control = start(start_daemon, tmp_path)
    alice = Linphone(tmp_path / "linphone-alice", "alice", sip_port, auto_answer=side != "caller")
    bob = Linphone(tmp_path / "linphone-bob", "bob", sip_port, auto_answer=False)
    running.extend([alice, bob])
    for name in ("alice", "bob"):
        daemon.wait_for_log(f"REGISTER sip:{name}@127.0.0.1: 1 binding(s)")
    call_id = control.place("alice", "bob")["id"]
    decliner = alice if side == "caller" else bob
    decliner.wait_for_output("Receiving new incoming call", 30)
    decliner.command("terminate")
    wait_until(lambda: control.get(call_id).get("ended_at") is not None, 30, "the call to end")
    record = control.get(call_id)
    assert (record["state"], record["reason"], record.get("sip_status"), record["who_hung_up"]) == (
        "failed",
        f"{side}-rejected",
        603,
        side,
    ), record
    if side == "callee":
        alice.wait_for_output("ended (Call declined)", 30)
    assert "Traceback" not in daemon.log()


@pytest.mark.parametrize("ending", ["ring-timeout", "caller-hangs-up"])
@pytest.mark.parametrize("policy", ["flow1", "flow4"])
def test_a_ringing_linphone_callee_is_cancelled(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    running: list[Any],
    policy: str,
    ending: str,
) -> None:
    """bob's linphone rings (it sends its 180 without a Contact: RFC 3261 §12.1.1 wants
    one, the daemon copes) and is cancelled, either at ``callee_ring_timeout`` (the
    caller's linphone then gets a BYE with ``Reason: SIP ;cause=408``) or because alice's
    linphone hung up meanwhile; bob's linphone sees the call end, and the daemon lets go
    of the call."""
    sip_port, web_port = find_free_port(), find_free_port()
    daemon = start_daemon(
        daemon_ini(sip_port, web_port, str(tmp_path), policy, callee_ring_timeout="3")
    )
    daemon.wait_for_tcp(web_port)
    daemon.wait_for_log("created demo users")
    alice = Linphone(tmp_path / "linphone-alice", "alice", sip_port)
    bob = Linphone(tmp_path / "linphone-bob", "bob", sip_port, auto_answer=False)
    running.extend([alice, bob])
    for name in ("alice", "bob"):
        daemon.wait_for_log(f"REGISTER sip:{name}@127.0.0.1: 1 binding(s)")
    control = CallsApi(web_port, daemon.config_path)
    call_id = control.place("alice", "bob")["id"]
    bob.wait_for_output("Receiving new incoming call", 30)
    if ending == "caller-hangs-up":
        alice.command("terminate")
    wait_until(lambda: control.get(call_id).get("ended_at") is not None, 30, "the call to end")
    record = control.get(call_id)
    expected = {
        "ring-timeout": ("callee-no-answer", 408, "system"),
        "caller-hangs-up": ("caller-hangup", None, "caller"),
    }[ending]
    assert (record["reason"], record.get("sip_status"), record["who_hung_up"], record["state"]) == (
        *expected,
        "failed",
    ), record
    bob.wait_for_output("ended", 30)
    assert "CANCEL sip:bob@" in bob.log()
    if ending == "ring-timeout":
        alice.wait_for_output("ended", 30)
        assert "Reason: SIP ;cause=408" in alice.log()
    wait_until(lambda: control.active() == [], 30, "the daemon to let go of the call")
    assert "Traceback" not in daemon.log()


def test_linphone_phones_over_tcp_register_connect_and_hang_up(
    tmp_path: Path, start_daemon: Callable[[str], Any], running: list[Any]
) -> None:
    """Two linphone phones on SIP over TCP (``;transport=tcp`` in their Contact) register
    and connect a Flow IV call, hear each other, and bob's hang-up reaches alice."""
    sip_port, web_port = find_free_port(), find_free_port()
    ini = daemon_ini(sip_port, web_port, str(tmp_path)).replace(
        "[web]\n", "transports = udp, tcp\n[web]\n", 1
    )
    daemon = start_daemon(ini)
    daemon.wait_for_tcp(web_port)
    daemon.wait_for_log("created demo users")
    alice = Linphone(
        tmp_path / "linphone-alice", "alice", sip_port, tone=TONES["alice"], transport="tcp"
    )
    bob = Linphone(tmp_path / "linphone-bob", "bob", sip_port, tone=TONES["bob"], transport="tcp")
    running.extend([alice, bob])
    for name in ("alice", "bob"):
        daemon.wait_for_log(f"REGISTER sip:{name}@127.0.0.1: 1 binding(s)")
    [contact] = listed_contacts(user_list(tmp_path / "daemon0.ini"), "alice")
    assert "transport=tcp" in contact, contact
    control = CallsApi(web_port, daemon.config_path)
    call_id = control.place("alice", "bob")["id"]
    wait_until(lambda: control.get(call_id)["state"] == "connected", 30, "the call to connect")
    time.sleep(4)  # media both ways
    bob.command("terminate")
    wait_until(lambda: control.get(call_id).get("ended_at") is not None, 30, "the call to end")
    record = control.get(call_id)
    assert (record["reason"], record["who_hung_up"], record["state"]) == (
        "callee-hangup",
        "callee",
        "ended",
    ), record
    alice.wait_for_output("ended", 30)
    alice.stop()
    bob.stop()
    assert abs(dominant_frequency(alice.received) - TONES["bob"]) < 15
    assert abs(dominant_frequency(bob.received) - TONES["alice"]) < 15
    assert "Traceback" not in daemon.log()
