"""
Start-up loads what the configuration names (clicktodial.startup): the ringback WAV file,
the endpoint types of the web listeners; a failure is the one-line ConfigError naming file,
section and key, raised by build_service before anything listens.
"""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import pytest

from clicktodial.config import ConfigError, parse_config
from clicktodial.service import build_service
from clicktodial.startup import load_named_resources, server_endpoint_types
from clicktodial.testing.transport import FakeReactor

MINIMAL = "[sip]\ndomain = 127.0.0.1\n[store]\nbackend = memory\n"


def write_wav(path: Path, samples: int, *, rate: int = 8000, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{samples * channels}h", *([0] * samples * channels)))
    return path


def load_error(text: str) -> ConfigError:
    config = parse_config(text, "conf/x.ini")  # parsing opens nothing: it succeeds
    with pytest.raises(ConfigError) as info:
        load_named_resources(config)
    return info.value


def test_a_good_ringback_file_and_known_endpoint_types_load(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "ring.wav", 800)
    config = parse_config(
        MINIMAL + f"[calls]\nringback = file:{path}\n"
        "[web]\nlisten = tcp6:8080:interface=\\:\\:1\nmetrics_listen = unix:/tmp/m.sock\n",
        "conf/x.ini",
    )
    load_named_resources(config)


def test_a_missing_ringback_file_names_file_section_and_key(tmp_path: Path) -> None:
    missing = tmp_path / "missing.wav"
    error = load_error(MINIMAL + f"[calls]\nringback = file:{missing}\n")
    assert (error.filename, error.section, error.key) == ("conf/x.ini", "calls", "ringback")
    assert str(error).startswith(f"conf/x.ini: [calls] ringback: {missing}: cannot read")
    assert "\n" not in str(error)


def test_a_ringback_file_in_another_format_says_what_is_wrong(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "stereo.wav", 800, rate=44100, channels=2)
    error = load_error(MINIMAL + f"[calls]\nringback = file:{path}\n")
    assert str(error).startswith(f"conf/x.ini: [calls] ringback: {path}: unsupported WAV")
    assert "2 channels" in error.problem and "44100 Hz" in error.problem


@pytest.mark.parametrize(
    ("section_text", "key"),
    [
        ("[web]\nlisten = udp:5060\n", "listen"),
        ("[web]\nmetrics_listen = nosuchtype:9100\n", "metrics_listen"),
    ],
)
def test_an_unknown_endpoint_type_names_the_key_and_the_types(section_text: str, key: str) -> None:
    error = load_error(MINIMAL + section_text)
    assert (error.section, error.key) == ("web", key)
    assert "unknown endpoint type" in error.problem
    assert "tcp" in error.problem.split("types:")[1]


def test_installed_endpoint_parsers_are_found_at_start_up() -> None:
    """tcp6 and systemd are Twisted's endpoint parser plugins, found by discovery."""
    assert {"tcp", "tcp6", "unix", "systemd"} <= set(server_endpoint_types())


def test_build_service_loads_them_before_anything_is_built(tmp_path: Path) -> None:
    """A bad ringback file stops build_service with its ConfigError: nothing listens."""
    reactor = FakeReactor()
    config = parse_config(MINIMAL + f"[calls]\nringback = file:{tmp_path}/no.wav\n", "x.ini")
    with pytest.raises(ConfigError, match=r"^x\.ini: \[calls\] ringback: "):
        build_service(config, reactor)
    assert reactor.tcpServers == [] and reactor.udp_ports == []
