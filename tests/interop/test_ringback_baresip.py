"""
A real softphone hears the daemon's ringback and busy tone (RFC 3725 Flow IV with
``[calls] ringback`` on): alice's baresip answers the daemon and records what it
receives (module ``sndfile``); the recording is checked by frequency analysis.

* bob answers: alice hears US ringback (440+480 Hz, 2 s on / 4 s off) while bob's
  phone rings, then bob's 880 Hz tone directly; the daemon dropped what alice's
  phone sent it meanwhile.
* bob rejects (baresip answers ``486 Busy Here`` when told to hang up a ringing
  call): alice hears UK ringback, then the UK busy tone (400 Hz, 0.375 s on / off)
  for ``failure_tone_seconds``, then gets the BYE; the call record says the callee
  was busy.

The daemon runs with the default ``[media] direction`` (``sendrecv``): with a
``sendonly`` answer baresip 1.x plays and records nothing (docs/media.md).
Each packet the daemon's reactor was too late to send (a loaded host; the count is
in the daemon's log) is 20 ms missing from the recording: the timing tolerance
grows by that much. Loopback only; every process is stopped by its PID.
"""

from __future__ import annotations

import re
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from calltools import (
    Baresip,
    CallsApi,
    daemon_ini,
    demo_phone,
    needs_baresip,
    needs_baresip_sndfile,
)
from conftest import find_free_port, wait_until  # type: ignore[import-not-found]

numpy = pytest.importorskip("numpy")

pytestmark = [
    pytest.mark.interop,
    needs_baresip,
    needs_baresip_sndfile,
]

RING_SECONDS = 9.0
BUSY_SECONDS = 3.0  # [calls] failure_tone_seconds


def recording(phone: Baresip) -> tuple[Any, int]:
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


def start_call_world(
    tmp_path: Path, start_daemon: Callable[[str], Any], phones: list[Baresip], **calls: str
) -> tuple[Any, Baresip, Baresip, CallsApi]:
    """
    A Flow IV daemon with ``[calls]`` settings ``calls`` (bob's phone rings for up to 60 s)
    and tone streams on loopback; alice's phone answering at once (440 Hz), bob's on
    command (880 Hz).
    """
    sip_port, web_port = find_free_port(), find_free_port()
    ini = daemon_ini(
        sip_port,
        web_port,
        str(tmp_path),
        "flow4",
        callee_ring_timeout="60",
        **calls,
    )
    daemon = start_daemon(ini + "[media]\naddress = 127.0.0.1\nrtp_ports = 23000-23099\n")
    daemon.wait_for_tcp(web_port)
    daemon.wait_for_log("created demo users")
    alice = demo_phone(tmp_path, "alice", sip_port, "auto", 440)
    bob = demo_phone(tmp_path, "bob", sip_port, "manual", 880)
    phones.extend([alice, bob])
    for name in ("alice", "bob"):
        daemon.wait_for_log(f"REGISTER sip:{name}@127.0.0.1: 1 binding(s)")
    return daemon, alice, bob, CallsApi(web_port, daemon.config_path)


def skipped_packets(daemon: Any) -> int:
    """
    Packets the daemon skipped in its tone stream (its reactor ran late on a loaded
    host): each is 20 ms of tone the phone never got, shortening what it recorded.
    """
    found = re.findall(r"tone stream stopped: \d+ packets sent, (\d+) skipped", daemon.log())
    assert len(found) == 1, "the tone stream's summary is not in the daemon's log"
    return int(found[0])


def bursts(samples: Any, rate: int, threshold: float = 1000) -> list[tuple[float, float]]:
    """(start, end) in seconds of each stretch of tone: RMS over 5 ms blocks > threshold."""
    size = rate // 200
    blocks = samples[: len(samples) // size * size].reshape(-1, size)
    on = numpy.concatenate(([0], numpy.sqrt((blocks**2).mean(axis=1)) > threshold, [0]))
    edges = numpy.diff(on.astype(int))
    starts, ends = numpy.flatnonzero(edges == 1), numpy.flatnonzero(edges == -1)
    return [(s * size / rate, e * size / rate) for s, e in zip(starts, ends, strict=True)]


def part(samples: Any, rate: int, start: float, end: float) -> Any:
    return samples[int(start * rate) : int(end * rate)]


def test_caller_hears_us_ringback_then_the_callee(
    tmp_path: Path, start_daemon: Callable[[str], Any], running: list[Baresip]
) -> None:
    # [media] direction is left at its default (sendrecv).
    daemon, alice, bob, control = start_call_world(tmp_path, start_daemon, running, ringback="us")
    call_id = control.place("alice", "bob")["id"]
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
    tones = bursts(samples, rate)
    assert len(tones) >= 3, f"alice heard too little: {tones}"
    # Each packet the daemon skipped under load is 20 ms missing from the recording;
    # 80 ms more for what a loaded phone loses on its side.
    slack = 0.08 + 0.02 * skipped_packets(daemon)
    # US ringback from the first packet: 440+480 Hz, 2 s on, 4 s off, 2 s on.
    (a0, a1), (b0, b1) = tones[:2]
    assert abs(a1 - a0 - 2.0) < slack and abs(b0 - a0 - 6.0) < slack, tones[:2]
    assert abs(b1 - b0 - 2.0) < slack, tones[:2]
    for start, end in tones[:2]:
        assert share_near(part(samples, rate, start + 0.1, end - 0.1), rate, [440, 480]) > 0.9
    assert numpy.sqrt((part(samples, rate, a1 + 0.3, b0 - 0.3) ** 2).mean()) < 100
    # The last second: bob's own tone, straight from his phone.
    assert share_near(samples[-rate:], rate, [880]) > 0.5
    # sendrecv: alice's phone sent us its audio while bob's rang, and we dropped it.
    dropped = re.findall(r"tone stream stopped: .* (\d+) received and dropped", daemon.log())
    assert len(dropped) == 1 and int(dropped[0]) > 0, dropped


def test_caller_hears_ringback_then_the_busy_tone_until_the_bye_when_the_callee_rejects(
    tmp_path: Path, start_daemon: Callable[[str], Any], running: list[Baresip]
) -> None:
    daemon, alice, bob, control = start_call_world(
        tmp_path,
        start_daemon,
        running,
        ringback="uk",
        tones="uk",
        failure_tone_seconds=str(BUSY_SECONDS),
    )
    call_id = control.place("alice", "bob")["id"]
    bob.wait_for_output("Incoming call", 30)
    time.sleep(4.5)  # one whole ringback cadence (3 s) and a half
    assert control.get(call_id)["state"] == "calling-callee"
    bob.command("hangup")  # baresip rejects a ringing call: 486 Busy Here
    wait_until(lambda: control.get(call_id).get("ended_at") is not None, 30, "the call to fail")
    record = control.get(call_id)
    assert (record["state"], record["reason"], record.get("sip_status")) == (
        "failed",
        "callee-busy",
        486,
    )
    assert record["who_hung_up"] == "callee"
    # Our BYE comes after the busy tone; alice's phone ends the call (and the recording).
    alice.wait_for_output("terminated", 30)
    alice.stop()
    bob.stop()

    samples, rate = recording(alice)
    end = len(samples) / rate
    tones = bursts(samples, rate)
    assert len(tones) >= 6, f"too few tone bursts: {tones}"
    # Each packet the daemon skipped under load is 20 ms missing from the recording;
    # 80 ms more for what a loaded phone loses on its side.
    slack = 0.08 + 0.02 * skipped_packets(daemon)

    # UK ringback: 400+450 Hz, 0.4 s on, 0.2 off, 0.4 on, 2 off; from the first packet.
    (a0, a1), (b0, b1), (c0, _) = tones[:3]
    assert abs(a1 - a0 - 0.4) < slack and abs(b0 - a1 - 0.2) < slack, tones[:3]
    assert abs(b1 - b0 - 0.4) < slack and abs(c0 - a0 - 3.0) < slack, tones[:3]
    first = part(samples, rate, a0 + 0.02, a1 - 0.02)
    assert share_near(first, rate, [400, 450]) > 0.9
    assert min(share_near(first, rate, [400]), share_near(first, rate, [450])) > 0.3

    # Where the busy tone starts: after the last 100 ms that still has ringback's 450 Hz.
    step, width = 0.02, 0.1
    with_450 = [
        t + width
        for t in numpy.arange(0, end - width, step)
        if numpy.sqrt((part(samples, rate, t, t + width) ** 2).mean()) > 1000
        and share_near(part(samples, rate, t, t + width), rate, [450]) > 0.25
    ]
    assert with_450, "no ringback heard"
    ringback_end = with_450[-1]
    busy_start = next(max(s, ringback_end) for s, e in tones if e > ringback_end)
    # The busy tone lasts failure_tone_seconds, then the BYE ends the recording (the
    # last packets, still in the phone's jitter buffer, are never played: up to 0.4 s).
    busy_seconds = end - busy_start
    assert BUSY_SECONDS - 0.35 - slack < busy_seconds < BUSY_SECONDS + 0.15, (busy_start, end)

    # UK busy: 400 Hz alone, 0.375 s on / 0.375 s off, until the end.
    busy = [(s, e) for s, e in tones if s >= busy_start - 0.01]
    assert len(busy) >= 3, busy
    for (s, e), (next_start, _) in zip(busy, busy[1:], strict=False):
        assert abs(e - s - 0.375) < slack and abs(next_start - s - 0.75) < slack, busy
    heard = numpy.concatenate([part(samples, rate, s + 0.02, e - 0.02) for s, e in busy])
    assert share_near(heard, rate, [400]) > 0.9
    assert share_near(heard, rate, [450]) < 0.02
