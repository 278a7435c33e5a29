"""
The media engine on a real socket: a receiver in the test process decodes the
stream that the engine, run as a subprocess on the real reactor, sends over
loopback, and checks the tone, the cadence, the RTP header sequence and the
teardown.
"""

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from clicktodial.media.codecs import Codec, decode
from clicktodial.media.rtp import parse_packet

pytestmark = pytest.mark.interop


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    yield sock
    sock.close()


def receive_stream(
    sock: socket.socket, *args: str
) -> tuple[list[tuple[bytes, tuple[str, int]]], dict, dict]:
    """Run rtpapp with ``args``; return the datagrams received and its two events."""
    port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "clicktodial.testing.rtpapp", "--to", f"127.0.0.1:{port}", *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        started = json.loads(process.stdout.readline())
        datagrams = []
        while True:
            try:
                datagrams.append(sock.recvfrom(2048))
            except TimeoutError:
                if process.poll() is not None:
                    break  # it has finished and nothing came for 0.5 s
        done = json.loads(process.stdout.readline())
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return datagrams, started, done


def test_us_ringback_over_loopback(receiver: socket.socket) -> None:
    """
    7 s of US ringback in PCMU: consecutive sequence numbers, +160 timestamps, one SSRC,
    all from the advertised even port; 440+480 Hz for 2 s then 4 s of silence; about
    50 packets a second; the port and timer released at the end.
    """
    datagrams, started, done = receive_stream(
        receiver, "--source", "us", "--codec", "PCMU", "--seconds", "7", "--ports", "21000-21099"
    )
    (port,) = started["ports"]
    assert port % 2 == 0 and 21000 <= port <= 21099
    assert {source for _, source in datagrams} == {("127.0.0.1", port)}
    assert done == {
        "event": "done",
        "sent": len(datagrams),
        "skipped": 0,
        "dropped": 0,
        "ports_in_use": 0,
        "pending_timers": 0,
    }
    assert 340 <= len(datagrams) <= 352  # 7 s at 50/s; start-up/stop timing is the slack
    parsed = [parse_packet(data) for data, _ in datagrams]
    headers = [h for h, _ in parsed]
    assert len({h.ssrc for h in headers}) == 1
    assert {h.payload_type for h in headers} == {0}
    assert [h.marker for h in headers].count(True) == 1 and headers[0].marker
    for before, after in zip(headers, headers[1:], strict=False):
        assert after.sequence == (before.sequence + 1) % 65536
        assert after.timestamp == (before.timestamp + 160) % 2**32
    samples = np.array([s for _, payload in parsed for s in decode(Codec.PCMU, payload)], float)
    frames = samples[: len(samples) // 160 * 160].reshape(-1, 160)
    on = np.sqrt((frames**2).mean(axis=1)) > 500
    assert on[:100].all() and not on[100:300].any() and on[300:].all()
    # 1 Hz bins over the first second: nearly all the energy is within 5 Hz of 440 and 480.
    power = np.abs(np.fft.rfft(samples[:8000] * np.hanning(8000))) ** 2
    near = power[435:446].sum() + power[475:486].sum()
    assert near > 0.99 * power.sum()
    assert power[440] > 0.3 * power[435:446].sum() and power[480] > 0.3 * power[475:486].sum()


def test_many_streams_each_on_its_own_even_port(receiver: socket.socket) -> None:
    """20 PCMA streams: 20 distinct even ports and SSRCs, every one released at the end."""
    datagrams, started, done = receive_stream(
        receiver,
        *("--source", "busy-eu", "--codec", "PCMA", "--seconds", "2"),
        *("--streams", "20", "--ports", "21100-21199"),
    )
    ports = started["ports"]
    assert len(set(ports)) == 20 and all(p % 2 == 0 for p in ports)
    ssrcs = {parse_packet(data)[0].ssrc for data, _ in datagrams}
    assert len(ssrcs) == 20
    assert {source[1] for _, source in datagrams} == set(ports)
    assert done["ports_in_use"] == 0 and done["pending_timers"] == 0
    assert done["sent"] == len(datagrams)
