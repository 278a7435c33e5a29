"""
A real softphone hears the daemon's ringback (RFC 3725 Flow IV with
``[calls] ringback = us``): alice's baresip answers the daemon, records what it
receives, and hears 440+480 Hz, 2 s on / 4 s off, while bob's phone rings; once
bob answers, alice hears bob's 880 Hz tone directly. Loopback only; every process
is stopped by its PID. ``[media] direction = sendrecv``: see docs/media.md.
"""

from __future__ import annotations

import shutil
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from calltools import Control, daemon_ini
from conftest import find_free_port, wait_until  # type: ignore[import-not-found]
from test_calls_baresip import Phone

numpy = pytest.importorskip("numpy")

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip is not installed"),
    pytest.mark.skipif(
        not Path("/usr/lib/baresip/modules/sndfile.so").exists(), reason="no baresip sndfile"
    ),
]

RING_SECONDS = 9.0


@pytest.fixture
def phones() -> Iterator[list[Phone]]:
    made: list[Phone] = []
    yield made
    for phone in made:
        phone.stop()


def recording(phone: Phone) -> tuple[Any, int]:
    files = sorted(phone.recordings.glob("*dec*.wav"))
    assert files, f"no recording of received audio in {phone.recordings}"
    with wave.open(str(files[-1])) as w:
        rate, frames, channels = w.getframerate(), w.readframes(w.getnframes()), w.getnchannels()
    samples = numpy.frombuffer(frames, dtype=numpy.int16).astype(float)
    return samples[::channels], rate


def share_near(samples: Any, rate: int, frequencies: list[float], width: float = 15) -> float:
    power = numpy.abs(numpy.fft.rfft(samples * numpy.hanning(len(samples)))) ** 2
    bins = numpy.fft.rfftfreq(len(samples), 1 / rate)
    near = sum(power[numpy.abs(bins - f) <= width].sum() for f in frequencies)
    return float(near / power.sum())


def test_caller_hears_us_ringback_then_the_callee(
    tmp_path: Path, start_daemon: Callable[[str], Any], phones: list[Phone]
) -> None:
    sip_port, web_port, control_port = find_free_port(), find_free_port(), find_free_port()
    ini = (
        daemon_ini(
            sip_port,
            web_port,
            control_port,
            str(tmp_path),
            "flow4",
            callee_ring_timeout="60",
            ringback="us",
        )
        + "[media]\naddress = 127.0.0.1\nrtp_ports = 23000-23099\n"
    )
    # baresip 1.x plays (and records) nothing on a stream it may not send on: with our
    # default sendonly answer alice would hear silence, so this test answers sendrecv.
    ini += "direction = sendrecv\n"
    daemon = start_daemon(ini)
    daemon.wait_for_tcp(control_port)
    daemon.wait_for_log("created demo users")
    alice = Phone(tmp_path, "alice", sip_port, "auto")
    bob = Phone(tmp_path, "bob", sip_port, "manual")
    phones.extend([alice, bob])
    for name in ("alice", "bob"):
        daemon.wait_for_log(f"REGISTER sip:{name}@127.0.0.1: 1 binding(s)", 30)
    control = Control(control_port)
    call_id = control.place("alice", "bob")["call_id"]
    bob.wait_for_output("Incoming call", 30)
    time.sleep(RING_SECONDS)
    assert control.get(call_id)["state"] == "calling-callee"
    bob.command("accept")
    wait_until(lambda: control.get(call_id)["state"] == "connected", 30, "the call to connect")
    time.sleep(3)
    alice.command("hangup")
    wait_until(lambda: control.get(call_id).get("ended_at") is not None, 30, "the call to end")
    alice.stop()
    bob.stop()

    samples, rate = recording(alice)
    loud = numpy.flatnonzero(numpy.abs(samples) > 1000)
    assert len(loud), "alice heard nothing"
    start = int(loud[0])  # the first ringback burst
    burst = samples[start + rate // 10 : start + rate * 19 // 10]  # 0.1-1.9 s into it
    assert share_near(burst, rate, [440, 480]) > 0.9
    gap = samples[start + rate * 23 // 10 : start + rate * 57 // 10]  # 2.3-5.7 s: off
    assert numpy.sqrt((gap**2).mean()) < 100
    second = samples[start + rate * 61 // 10 : start + rate * 79 // 10]  # next burst at 6 s
    assert share_near(second, rate, [440, 480]) > 0.9
    # The last second: bob's own tone, straight from his phone.
    assert share_near(samples[-rate:], rate, [880]) > 0.5
