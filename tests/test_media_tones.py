"""Tone and WAV sources: whole packets, exact cadence lengths, clear errors for bad files."""

import math
import struct
import wave
from pathlib import Path

import pytest

from clicktodial.media.codecs import Codec, decode
from clicktodial.media.tones import (
    BUSY,
    CONGESTION,
    FRAME_SAMPLES,
    RINGBACK,
    MediaSourceError,
    PacketLoop,
    cadence_samples,
    silence,
    tone,
    wav_file,
)


@pytest.mark.parametrize(
    ("plan", "region"), [(p, r) for p in (RINGBACK, BUSY, CONGESTION) for r in ("us", "uk", "eu")]
)
def test_tone_loops_are_whole_periods_of_whole_packets(plan: dict, region: str) -> None:
    """A tone loop is a whole number of cadence periods and of 160-sample packets."""
    cadence = plan[region]
    loop = tone(cadence, Codec.PCMU, region)
    assert all(len(p) == FRAME_SAMPLES for p in loop.packets)
    periods = loop.duration / cadence.period
    assert periods == pytest.approx(round(periods)) and round(periods) >= 1


def test_uk_busy_period_is_repeated_to_whole_packets() -> None:
    """0.75 s (37.5 packets) is played twice per loop, so the wrap keeps the cadence."""
    loop = tone(BUSY["uk"], Codec.PCMA, "busy")
    assert loop.duration == pytest.approx(1.5)


def test_cadence_samples_are_silent_when_off() -> None:
    """The off parts are digital silence, the on parts are not, within 16 bits."""
    samples = cadence_samples(RINGBACK["us"])
    assert len(samples) == 6 * 8000
    assert set(samples[16000:]) == {0}
    assert max(abs(s) for s in samples[:16000]) > 10000
    assert max(abs(s) for s in samples) < 32768


def test_silence_encodes_as_codec_zero() -> None:
    """Silence is 0xFF in µ-law and 0xD5 in A-law."""
    assert silence(Codec.PCMU).packets == (b"\xff" * 160,)
    assert silence(Codec.PCMA).packets == (b"\xd5" * 160,)


def test_packet_loop_rejects_bad_packets() -> None:
    """A loop needs audio, in 160-byte packets."""
    with pytest.raises(MediaSourceError, match="no audio"):
        PacketLoop(Codec.PCMU, (), "x")
    with pytest.raises(MediaSourceError, match="160 samples"):
        PacketLoop(Codec.PCMU, (b"\xff" * 80,), "x")


def write_wav(
    path: Path, samples: list[int], *, rate: int = 8000, channels: int = 1, width: int = 2
) -> str:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 2:
            w.writeframes(struct.pack(f"<{len(samples)}h", *samples))
        else:
            w.writeframes(bytes(len(samples) * width))
    return str(path)


def test_wav_file_is_encoded_and_padded_to_whole_packets(tmp_path: Path) -> None:
    """An 8 kHz mono 16-bit file is encoded sample for sample, padded with silence."""
    samples = [round(8000 * math.sin(2 * math.pi * 1000 * n / 8000)) for n in range(1000)]
    loop = wav_file(write_wav(tmp_path / "a.wav", samples), Codec.PCMU)
    assert len(loop.packets) == 7  # 1000 samples → 6.25 packets → 7
    decoded = decode(Codec.PCMU, b"".join(loop.packets))
    assert all(abs(a - b) <= 8000 / 16 + 16 for a, b in zip(samples, decoded, strict=False))
    assert set(decoded[1000:]) == {0}
    assert loop.name.endswith("a.wav")


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"rate": 16000}, "16000 Hz"),
        ({"channels": 2}, "2 channels"),
        ({"width": 1}, "8-bit samples"),
    ],
)
def test_wav_in_another_format_is_refused_naming_the_file(
    tmp_path: Path, kwargs: dict, problem: str
) -> None:
    """Anything but 8 kHz mono 16-bit PCM is a MediaSourceError naming the file and the fault."""
    path = write_wav(tmp_path / "bad.wav", [0] * 800, **kwargs)
    with pytest.raises(MediaSourceError, match=problem) as info:
        wav_file(path, Codec.PCMU)
    assert str(info.value).startswith(path)


def test_missing_or_broken_wav_is_refused(tmp_path: Path) -> None:
    """A missing file, a non-WAV file and an empty one give a MediaSourceError naming them."""
    with pytest.raises(MediaSourceError, match="missing.wav: cannot read"):
        wav_file(str(tmp_path / "missing.wav"), Codec.PCMU)
    (tmp_path / "text.wav").write_text("not a wav")
    with pytest.raises(MediaSourceError, match="text.wav: cannot read"):
        wav_file(str(tmp_path / "text.wav"), Codec.PCMU)
    with pytest.raises(MediaSourceError, match="empty.wav: the WAV file holds no audio"):
        wav_file(write_wav(tmp_path / "empty.wav", []), Codec.PCMU)
