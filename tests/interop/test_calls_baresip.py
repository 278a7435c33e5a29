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

import json
import shutil
import socket
import subprocess
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from calltools import Control, daemon_ini
from conftest import find_free_port, wait_until  # type: ignore[import-not-found]

numpy = pytest.importorskip("numpy")

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip is not installed"),
    pytest.mark.skipif(
        not Path("/usr/lib/baresip/modules/sndfile.so").exists(), reason="no baresip sndfile"
    ),
]

TONES = {"alice": 440.0, "bob": 880.0}


class Phone:
    """One headless baresip: tone source, recordings, ctrl_tcp for commands."""

    def __init__(self, tmp_path: Path, name: str, sip_port: int, answermode: str) -> None:
        self.name = name
        self.port = find_free_port()
        self.control_port = find_free_port()
        self.directory = tmp_path / f"baresip-{name}"
        self.directory.mkdir()
        self.recordings = self.directory / "recordings"
        self.recordings.mkdir()
        (self.directory / "config").write_text(
            "poll_method\tepoll\n"
            f"sip_listen\t127.0.0.1:{self.port}\n"
            "module_path\t/usr/lib/baresip/modules\n"
            "module\tg711.so\n"
            "module\tausine.so\n"
            "module\taufile.so\n"
            "module\tsndfile.so\n"
            "module_app\taccount.so\n"
            "module_app\tmenu.so\n"
            "module_app\tctrl_tcp.so\n"
            f"ctrl_tcp_listen\t127.0.0.1:{self.control_port}\n"
            "audio_player\taufile,/dev/null\n"
            f"audio_source\tausine,{int(TONES[name])}\n"
            # ausine only produces 48 kHz stereo: baresip resamples to and from PCMU's 8 kHz.
            "ausrc_srate\t48000\n"
            "ausrc_channels\t2\n"
            "auplay_srate\t48000\n"
            "audio_alert\taufile,/dev/null\n"
            f"snd_path\t{self.recordings}\n"
        )
        (self.directory / "accounts").write_text(
            f"<sip:{name}@127.0.0.1:{sip_port}>;auth_pass={name};regint=600;"
            f"answermode={answermode};audio_codecs=PCMU\n"
        )
        self.output_path = self.directory / "output.txt"
        with self.output_path.open("wb") as output:
            self.process = subprocess.Popen(
                ["baresip", "-4", "-n", "127.0.0.1", "-f", str(self.directory)],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        def seen() -> bool:
            assert self.process.poll() is None, f"baresip {self.name} exited:\n{self.output()}"
            return text in self.output()

        wait_until(seen, timeout, f"{text!r} from baresip {self.name}")

    def command(self, command: str) -> None:
        """Send a ctrl_tcp command (a netstring of JSON)."""
        message = json.dumps({"command": command, "params": "", "token": "t"}).encode()
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=5) as sock:
            sock.sendall(str(len(message)).encode() + b":" + message + b",")
            sock.settimeout(5)
            try:
                sock.recv(4096)
            except OSError:
                pass

    def received_tone(self) -> float:
        """The dominant frequency of what this phone received (its decoder recording)."""
        files = sorted(self.recordings.glob("*dec*.wav"))
        assert files, f"no recording of received audio in {self.recordings}"
        with wave.open(str(files[-1])) as recording:
            rate = recording.getframerate()
            frames = recording.readframes(recording.getnframes())
            width = recording.getsampwidth()
        samples = numpy.frombuffer(frames, dtype=numpy.int16 if width == 2 else numpy.int8)
        # The last second of the call: well after the media went both ways.
        tail = samples[-rate:].astype(float)
        assert len(tail) == rate and numpy.abs(tail).max() > 100, "recording is silent"
        spectrum = numpy.abs(numpy.fft.rfft(tail * numpy.hanning(len(tail))))
        return float(numpy.fft.rfftfreq(len(tail), 1 / rate)[int(spectrum.argmax())])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def phones() -> Iterator[list[Phone]]:
    made: list[Phone] = []
    yield made
    for phone in made:
        phone.stop()


def run_call(tmp_path: Path, start_daemon: Callable[[str], Any], made: list[Phone],
             policy: str, answer_after: float | None) -> None:
    sip_port, web_port, control_port = find_free_port(), find_free_port(), find_free_port()
    daemon = start_daemon(daemon_ini(sip_port, web_port, control_port, str(tmp_path), policy,
                                     callee_ring_timeout="90"))
    daemon.wait_for_tcp(control_port)
    daemon.wait_for_log("created demo users")
    alice = Phone(tmp_path, "alice", sip_port, "auto")
    bob = Phone(tmp_path, "bob", sip_port, "auto" if answer_after is None else "manual")
    made.extend([alice, bob])
    for phone in (alice, bob):
        wait_until(lambda p=phone: f"sip:{p.name}@127.0.0.1" in daemon.log() and "binding"
                   in daemon.log(), 30, f"{phone.name} to register")
    for name in ("alice", "bob"):
        daemon.wait_for_log(f"REGISTER sip:{name}@127.0.0.1: 1 binding(s)", 30)
    control = Control(control_port)
    call = control.place("alice", "bob")
    call_id = call["call_id"]
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
    assert (record["end_reason"], record["who_hung_up"], record["state"]) == (
        "caller-hangup", "caller", "ended")
    bob.wait_for_output("terminated", 30)
    alice.stop()
    bob.stop()
    # Each phone heard the other's tone: the media went directly between them.
    assert abs(alice.received_tone() - TONES["bob"]) < 15
    assert abs(bob.received_tone() - TONES["alice"]) < 15


@pytest.mark.parametrize("policy", ["flow1", "flow4"])
def test_softphones_connect_hear_each_other_and_the_hang_up_reaches_the_other(
    tmp_path: Path, start_daemon: Callable[[str], Any], phones: list[Phone], policy: str
) -> None:
    run_call(tmp_path, start_daemon, phones, policy, None)


def test_flow4_connects_a_callee_answering_after_40_seconds(
    tmp_path: Path, start_daemon: Callable[[str], Any], phones: list[Phone]
) -> None:
    run_call(tmp_path, start_daemon, phones, "flow4", 40.0)
