"""
Phones behind NAT, for real: a network of namespaces (tests/interop/natnet.py)
with two homes, each behind its own NAT (one port-randomising), a baresip
phone in each, and the daemon and rtpengine (started by the test, userspace
forwarding) in the "public" namespace.

* With ``[media] relay = rtpengine``: both phones register through their
  NATs, a click-to-dial call connects, and each phone hears the other's
  tone (440 Hz / 880 Hz, from its recording of what it received); after the
  hang-up rtpengine holds no session (``list`` is empty).
* The same with both homes on the same LAN range (192.168.1.0/24), as real
  homes are.
* Without the relay (``relay = off``) the call connects but each phone was
  given the other's private address: neither hears the other.

Run inside ``unshare -n`` (root: namespaces, veth, nft); every process is
killed by its PID.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from calltools import Baresip, CallsApi, needs_baresip, needs_baresip_sndfile, received_tone
from conftest import find_free_port, wait_until  # type: ignore[import-not-found]
from natnet import PUBLIC, NatNetwork, nat_tools_missing
from rtpenginetools import RtpEngine

from clicktodial.media.bencode import bdecode, bencode

numpy = pytest.importorskip("numpy")

pytestmark = [pytest.mark.interop, needs_baresip, needs_baresip_sndfile]

TONES = {"alice": 440.0, "bob": 880.0}


@pytest.fixture
def network() -> Iterator[NatNetwork]:
    missing = nat_tools_missing() or (
        None if shutil.which("rtpengine") else "rtpengine is not installed (rtpengine-daemon)"
    )
    if missing:
        pytest.skip(missing)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()]
    if [name for name in names if not name.startswith("to-")] != ["lo"]:
        pytest.skip("run inside unshare -n (only loopback): the test adds veth pairs here")
    net = NatNetwork()
    yield net
    net.close()


def nat_daemon_ini(
    sip_port: int,
    web_port: int,
    ng_port: int,
    tmp: Path,
    relay: str,
    ringback: str = "none",
    registrar: str = "",
    sip: str = "",
) -> str:
    return (
        "[sip]\n"
        f"domain = {PUBLIC}\n"
        f"listen = {PUBLIC}:{sip_port}\n" + sip + "[web]\n"
        f"listen = tcp:{web_port}:interface=127.0.0.1\n"
        "[store]\n"
        f"url = sqlite:///{tmp}/clicktodial.sqlite\n"
        "auto_upgrade = yes\n"
        "demo_users = yes\n"
        "[registrar]\n"
        "digest_algorithms = MD5\n" + registrar + "[calls]\n"
        f"ringback = {ringback}\n"
        "[media]\n"
        f"address = {PUBLIC}\n"
        f"relay = {relay}\n"
        "[media:rtpengine]\n"
        f"ng = 127.0.0.1:{ng_port}\n"
    )


def ng_list(ng_port: int) -> list[bytes]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(b"list1 " + bencode({"command": "list"}), ("127.0.0.1", ng_port))
        reply = bdecode(sock.recv(65535).split(b" ", 1)[1])
    assert isinstance(reply, dict)
    return list(reply["calls"])  # type: ignore[arg-type]


def loudness(phone: Baresip, which: str) -> float:
    """The peak amplitude of the last second ``phone`` recorded: ``dec`` (received), ``enc``."""
    files = sorted(phone.recordings.glob(f"*{which}*.wav"))
    assert files, f"no {which} recording in {phone.recordings}"
    with wave.open(str(files[-1])) as recording:
        rate, channels = recording.getframerate(), recording.getnchannels()
        frames = recording.readframes(recording.getnframes())
    samples = numpy.frombuffer(frames, dtype=numpy.int16)[::channels][-rate:]
    return float(numpy.abs(samples.astype(float)).max()) if len(samples) else 0.0


def call_between_homes(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    made: list[Any],
    net: NatNetwork,
    relay: str,
    same_lan: bool,
    ringback_seconds: float | None = None,
    hold: bool = False,
) -> tuple[Baresip, Baresip, dict[str, Any]]:
    """
    Alice (home a, port-randomising NAT) calls bob (home b); with ``ringback_seconds``,
    bob never answers, the daemon plays US ringback to alice for that long, then the
    call is hung up.
    """
    home_a = net.add_home("a", 1, random_ports=True)
    home_b = net.add_home("b", 2, lan="192.168.1" if same_lan else "192.168.2")
    sip_port, web_port, ng_port = (find_free_port() for _ in range(3))
    made.append(
        RtpEngine([PUBLIC], ("127.0.0.1", ng_port), (32000, 32099), str(tmp_path / "rtpengine.log"))
    )

    def engine_log() -> str:
        return (tmp_path / "rtpengine.log").read_text(errors="replace")

    daemon = start_daemon(
        nat_daemon_ini(
            sip_port,
            web_port,
            ng_port,
            tmp_path,
            relay,
            "none" if ringback_seconds is None else "us",
        )
    )
    daemon.wait_for_tcp(web_port)
    daemon.wait_for_log("created demo users")
    phones = []
    for name, home in (("alice", home_a), ("bob", home_b)):
        phone = Baresip(
            tmp_path / f"baresip-{name}",
            name,
            f"<sip:{name}@{PUBLIC}:{sip_port}>;auth_pass={name};regint=600;"
            f"answermode={'manual' if ringback_seconds and name == 'bob' else 'auto'};"
            "audio_codecs=PCMU\n",
            audio_source=f"ausine,{int(TONES[name])}",
            record=True,
            namespace=home.home_pid,
            host=home.address,
            control=hold,
        )
        made.append(phone)
        phones.append(phone)
    for name in ("alice", "bob"):
        daemon.wait_for_log(f"REGISTER sip:{name}@{PUBLIC}: 1 binding(s)")
    control = CallsApi(web_port, daemon.config_path)
    call_id = control.place("alice", "bob")["id"]
    if ringback_seconds is not None:
        wait_until(
            lambda: control.get(call_id)["state"] == "calling-callee", 30, "bob's phone to ring"
        )
        time.sleep(ringback_seconds)
    else:
        wait_until(lambda: control.get(call_id)["state"] == "connected", 30, "the call to connect")
        time.sleep(4)  # media both ways
        if hold:
            alice = phones[0]
            alice.command("hold")
            # rtpengine logs two lines a command (received, replying): the call's offer,
            # then the hold's, then the resume's.
            wait_until(lambda: engine_log().count("'offer'") >= 4, 30, "the hold re-INVITE")
            time.sleep(2)
            alice.command("resume")
            wait_until(lambda: engine_log().count("'offer'") >= 6, 30, "the resume re-INVITE")
            time.sleep(4)  # media both ways again
    active = control.get(call_id)
    control.hang_up(call_id, "alice")
    wait_until(lambda: control.get(call_id).get("ended_at") is not None, 30, "the call to end")
    alice, bob = phones
    if ringback_seconds is None:
        bob.wait_for_output("terminated", 30)
    alice.wait_for_output("terminated", 30)
    if relay != "off":
        wait_until(lambda: ng_list(ng_port) == [], 30, "rtpengine to have no session")
    alice.stop()
    bob.stop()
    return alice, bob, active


@pytest.mark.parametrize("same_lan", [False, True], ids=["two-lans", "same-lan-range"])
def test_phones_behind_two_nats_hear_each_other_through_rtpengine(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    running: list[Any],
    network: NatNetwork,
    same_lan: bool,
) -> None:
    alice, bob, active = call_between_homes(
        tmp_path, start_daemon, running, network, "rtpengine", same_lan
    )
    assert active["media_relay"] == "relayed"
    assert abs(received_tone(alice) - TONES["bob"]) < 15
    assert abs(received_tone(bob) - TONES["alice"]) < 15


def test_hold_and_resume_through_rtpengine_keep_the_audio(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    running: list[Any],
    network: NatNetwork,
) -> None:
    """alice's phone holds then resumes the call: both re-INVITEs go through rtpengine
    (offer and answer each), and after the resume each phone hears the other again."""
    alice, bob, _ = call_between_homes(
        tmp_path, start_daemon, running, network, "rtpengine", False, hold=True
    )
    engine_log = (tmp_path / "rtpengine.log").read_text(errors="replace")
    assert engine_log.count("Received command 'offer'") == 3  # the call, hold, resume
    assert engine_log.count("Received command 'answer'") == 3
    assert "hold sip:bob" in alice.output() and "resume sip:bob" in alice.output()
    assert abs(received_tone(alice) - TONES["bob"]) < 15
    assert abs(received_tone(bob) - TONES["alice"]) < 15


def test_without_the_relay_phones_behind_nat_hear_nothing(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    running: list[Any],
    network: NatNetwork,
) -> None:
    alice, bob, _ = call_between_homes(tmp_path, start_daemon, running, network, "off", False)
    # Both sent their tone for seconds, but each was given the other's private address
    # (192.168.x.10, unreachable from the other home): nothing arrived either way.
    assert loudness(alice, "enc") > 1000 and loudness(bob, "enc") > 1000
    assert loudness(alice, "dec") < 100 and loudness(bob, "dec") < 100


def test_ringback_reaches_the_caller_behind_nat(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    running: list[Any],
    network: NatNetwork,
) -> None:
    """
    alice's phone (behind the port-randomising NAT) names 192.168.1.10 in its SDP; the
    daemon's ringback follows the RTP alice's phone sends from its NAT's address (the
    address its signalling comes from): alice hears 440+480 Hz while bob's phone rings.
    """
    alice, _, _ = call_between_homes(
        tmp_path, start_daemon, running, network, "rtpengine", False, ringback_seconds=5
    )
    files = sorted(alice.recordings.glob("*dec*.wav"))
    assert files, "alice recorded nothing received"
    with wave.open(str(files[-1])) as recording:
        rate, channels = recording.getframerate(), recording.getnchannels()
        samples = numpy.frombuffer(recording.readframes(recording.getnframes()), numpy.int16)
    first_burst = samples[::channels][: 2 * rate].astype(float)  # US ringback: 2 s on
    assert len(first_burst) == 2 * rate and numpy.abs(first_burst).max() > 1000, "no ringback"
    power = numpy.abs(numpy.fft.rfft(first_burst * numpy.hanning(len(first_burst)))) ** 2
    frequencies = numpy.fft.rfftfreq(len(first_burst), 1 / rate)
    shares = [float(power[abs(frequencies - hz) < 4].sum() / power.sum()) for hz in (440, 480)]
    assert min(shares) > 0.25, f"440/480 Hz shares of the first burst: {shares}"


@pytest.mark.parametrize("keepalive", [True, False], ids=["keepalive", "no-keepalive"])
def test_server_keepalive_keeps_a_silent_phones_nat_mapping_open(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    running: list[Any],
    network: NatNetwork,
    keepalive: bool,
) -> None:
    """
    Both NATs forget a UDP mapping after 5 s of silence; the phones re-register only every
    600 s and send no keep-alives. With [registrar] nat_keepalive_interval = 2 the daemon's
    OPTIONS keep alice's mapping open and a call placed 12 s after registering connects;
    without, the INVITEs to alice die at her NAT (the issue measured the call stuck in
    calling-caller; with T1 = 0.1 s it fails at Timer B, caller-unreachable). Then, with
    the keep-alive, bob's phone dies without unregistering: after 3 unanswered pings its
    binding is gone (shown offline).
    """
    home_a = network.add_home("a", 1, random_ports=True, udp_timeout=5)
    home_b = network.add_home("b", 2, lan="192.168.2", udp_timeout=5)
    sip_port, web_port, ng_port = (find_free_port() for _ in range(3))
    registrar = "nat_keepalive_interval = 2\n" if keepalive else ""
    # t1 = 0.1 s: Timer F (64*T1) is 6.4 s, so an unanswered ping is known in seconds.
    daemon = start_daemon(
        nat_daemon_ini(
            sip_port, web_port, ng_port, tmp_path, "off", registrar=registrar, sip="t1 = 0.1\n"
        )
    )
    daemon.wait_for_tcp(web_port)
    daemon.wait_for_log("created demo users")
    phones = {}
    for name, home in (("alice", home_a), ("bob", home_b)):
        phones[name] = Baresip(
            tmp_path / f"baresip-{name}",
            name,
            f"<sip:{name}@{PUBLIC}:{sip_port}>;auth_pass={name};regint=600;"
            "answermode=auto;audio_codecs=PCMU\n",
            audio_source=f"ausine,{int(TONES[name])}",
            namespace=home.home_pid,
            host=home.address,
        )
        running.append(phones[name])
    for name in ("alice", "bob"):
        daemon.wait_for_log(f"REGISTER sip:{name}@{PUBLIC}: 1 binding(s)")
    time.sleep(12)  # more than twice the NATs' UDP timeout
    control = CallsApi(web_port, daemon.config_path)
    call_id = control.place("alice", "bob")["id"]
    if keepalive:
        wait_until(lambda: control.get(call_id)["state"] == "connected", 30, "the call to connect")
        control.hang_up(call_id)
        wait_until(lambda: control.get(call_id).get("ended_at") is not None, 30, "the call to end")
        phones["bob"].process.kill()  # gone without unregistering
        phones["bob"].process.wait()
        daemon.wait_for_log(f"removing sip:bob@{PUBLIC}", 40)
        assert f"removing sip:alice@{PUBLIC}" not in daemon.log()
    else:
        # The INVITEs die at alice's NAT: no answer until Timer B (64*T1), then 408.
        wait_until(lambda: control.get(call_id).get("ended_at") is not None, 30, "the call to fail")
        record = control.get(call_id)
        assert (record["state"], record["reason"], record.get("answered")) == (
            "failed",
            "caller-unreachable",
            None,
        )
        assert "Incoming call" not in phones["alice"].output()
