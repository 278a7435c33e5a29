"""
Media sources: call-progress tones with cadences, and WAV files, each encoded
once per codec into 20 ms packets so that sending costs one list lookup.

A source is a :class:`PacketLoop`: a tuple of 160-byte payloads (20 ms at
8 kHz) played in a loop.  A cadence whose period is not a whole number of
packets (the UK busy tone: 0.75 s = 37.5 packets) is repeated until it is.

Tone plans (ITU-T E.180 Supplement 2 lists each country's):

========  =====================  =======================================
region    ringback               busy / congestion (failure)
========  =====================  =======================================
``us``    440+480 Hz, 2 s on,    busy 480+620 Hz 0.5/0.5;
          4 s off                reorder 480+620 Hz 0.25/0.25
``uk``    400+450 Hz, 0.4 on     busy 400 Hz 0.375/0.375;
          0.2 off 0.4 on 2 off   congestion 400 Hz 0.4 on 0.35 off
                                 0.225 on 0.525 off
``eu``    425 Hz, 1 s on,        busy 425 Hz 0.5/0.5;
          4 s off                congestion 425 Hz 0.25/0.25
========  =====================  =======================================

This module is pure: no Twisted imports.
"""

from __future__ import annotations

import array
import math
import sys
import wave
from collections.abc import Sequence
from math import gcd

import attrs

from clicktodial.media.codecs import Codec, encode

__all__ = [
    "BUSY",
    "CONGESTION",
    "FRAME_SAMPLES",
    "REGIONS",
    "RINGBACK",
    "SAMPLE_RATE",
    "Cadence",
    "MediaSourceError",
    "PacketLoop",
    "cadence_samples",
    "silence",
    "tone",
    "wav_file",
]

#: G.711 narrowband: 8,000 samples a second (RFC 3551 §4.5.14).
SAMPLE_RATE = 8000
#: 20 ms of audio, the default packetisation of G.711 (RFC 3551 §4.5).
FRAME_SAMPLES = 160

#: Longest WAV file accepted, in seconds: it is held in memory once per codec.
MAX_WAV_SECONDS = 600

# Each tone component at -16 dBm0-ish (about 0.2 of full scale): two of them stay well
# clear of clipping, and the level is what exchanges send.
_COMPONENT_AMPLITUDE = 0.2 * 32767


class MediaSourceError(ValueError):
    """A media source cannot be used (a WAV file of the wrong format, an unknown tone)."""


@attrs.frozen
class Cadence:
    """
    A tone: frequencies played together, and the on/off durations of one period.

    ``pattern`` alternates on and off durations in seconds, starting with on:
    ``(2.0, 4.0)`` is 2 s of tone then 4 s of silence.
    """

    frequencies: tuple[float, ...]
    pattern: tuple[float, ...]

    @property
    def period(self) -> float:
        """Length of one period in seconds."""
        return sum(self.pattern)


#: Ringback tones by region.
RINGBACK: dict[str, Cadence] = {
    "us": Cadence((440.0, 480.0), (2.0, 4.0)),
    "uk": Cadence((400.0, 450.0), (0.4, 0.2, 0.4, 2.0)),
    "eu": Cadence((425.0,), (1.0, 4.0)),
}
#: Busy tones by region.
BUSY: dict[str, Cadence] = {
    "us": Cadence((480.0, 620.0), (0.5, 0.5)),
    "uk": Cadence((400.0,), (0.375, 0.375)),
    "eu": Cadence((425.0,), (0.5, 0.5)),
}
#: Congestion (reorder) tones by region: the failure tone.
CONGESTION: dict[str, Cadence] = {
    "us": Cadence((480.0, 620.0), (0.25, 0.25)),
    "uk": Cadence((400.0,), (0.4, 0.35, 0.225, 0.525)),
    "eu": Cadence((425.0,), (0.25, 0.25)),
}
#: The tone regions known.
REGIONS = tuple(RINGBACK)


@attrs.frozen
class PacketLoop:
    """
    Encoded audio as 20 ms payloads, played in a loop.

    :ivar codec: the encoding of every payload.
    :ivar packets: the payloads, each :data:`FRAME_SAMPLES` bytes.
    :ivar name: what it is, for logs (``ringback us``, ``file /x.wav``).
    """

    codec: Codec
    packets: tuple[bytes, ...]
    name: str

    def __attrs_post_init__(self) -> None:
        if not self.packets:
            raise MediaSourceError(f"{self.name}: no audio")
        if any(len(p) != FRAME_SAMPLES for p in self.packets):
            raise MediaSourceError(f"{self.name}: every packet must hold {FRAME_SAMPLES} samples")

    @classmethod
    def from_samples(cls, codec: Codec, samples: Sequence[int], name: str) -> PacketLoop:
        """
        Encode one period of ``samples``, repeating it until the loop is a whole number
        of packets (so the cadence stays exact across the wrap).
        """
        if not samples:
            raise MediaSourceError(f"{name}: no audio")
        repeats = FRAME_SAMPLES // gcd(len(samples), FRAME_SAMPLES)
        data = encode(codec, samples) * repeats
        packets = tuple(data[i : i + FRAME_SAMPLES] for i in range(0, len(data), FRAME_SAMPLES))
        return cls(codec=codec, packets=packets, name=name)

    @property
    def duration(self) -> float:
        """Length of the loop in seconds."""
        return len(self.packets) * FRAME_SAMPLES / SAMPLE_RATE


def cadence_samples(cadence: Cadence) -> list[int]:
    """One period of ``cadence`` as signed 16-bit samples at 8 kHz."""
    samples: list[int] = []
    for i, seconds in enumerate(cadence.pattern):
        count = round(seconds * SAMPLE_RATE)
        if i % 2:
            samples.extend([0] * count)
            continue
        # The phase runs on from the start of each burst: each burst starts at zero.
        steps = [2 * math.pi * f / SAMPLE_RATE for f in cadence.frequencies]
        samples.extend(
            round(_COMPONENT_AMPLITUDE * sum(math.sin(step * n) for step in steps))
            for n in range(count)
        )
    return samples


def tone(cadence: Cadence, codec: Codec, name: str) -> PacketLoop:
    """A tone encoded for ``codec``."""
    return PacketLoop.from_samples(codec, cadence_samples(cadence), name)


def silence(codec: Codec) -> PacketLoop:
    """One packet of digital silence, looped."""
    return PacketLoop.from_samples(codec, [0] * FRAME_SAMPLES, "silence")


def wav_file(path: str, codec: Codec) -> PacketLoop:
    """
    A WAV file (8 kHz, mono, 16-bit PCM) encoded for ``codec``, padded with silence to a
    whole packet, to be looped.

    :raises MediaSourceError: the file cannot be read or is in another format; the message
        names the file and what is wrong.
    """
    try:
        with wave.open(path, "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            problems = []
            if w.getcomptype() != "NONE":
                problems.append(f"compression {w.getcomptype()}")
            if channels != 1:
                problems.append(f"{channels} channels")
            if width != 2:
                problems.append(f"{8 * width}-bit samples")
            if rate != SAMPLE_RATE:
                problems.append(f"{rate} Hz")
            if problems:
                raise MediaSourceError(
                    f"{path}: unsupported WAV format ({', '.join(problems)}); expected"
                    " 8000 Hz mono 16-bit PCM (sox IN -r 8000 -c 1 -b 16 OUT.wav)"
                )
            frames = w.getnframes()
            if frames > MAX_WAV_SECONDS * SAMPLE_RATE:
                raise MediaSourceError(
                    f"{path}: {frames / SAMPLE_RATE:.0f} s of audio; at most"
                    f" {MAX_WAV_SECONDS} s is accepted"
                )
            data = w.readframes(frames)
    except MediaSourceError:
        raise
    except (OSError, EOFError, wave.Error) as e:
        raise MediaSourceError(f"{path}: cannot read WAV file: {e}") from None
    pcm = array.array("h", data[: len(data) - len(data) % 2])
    if sys.byteorder == "big":
        pcm.byteswap()  # WAV samples are little-endian
    samples = pcm.tolist()
    if not samples:
        raise MediaSourceError(f"{path}: the WAV file holds no audio")
    samples += [0] * (-len(samples) % FRAME_SAMPLES)
    return PacketLoop.from_samples(codec, samples, f"file {path}")
