"""
A headless Linphone softphone for the interop tests: Debian ``linphone-cli``'s
``linphonec`` (liblinphone 5.1, belle-sip, mediastreamer2), a second SIP stack next to
baresip (phones differ, and each finds bugs the others don't).

How it is made headless, found by trying (linphonec 5.1.65):

- Its own ``HOME`` in the phone's folder, with ``~/.local/share/linphone`` created:
  without that folder liblinphone cannot open its SQLite database and the core never
  starts (it neither listens nor registers, and says nothing on the console).
- Commands go to its standard input through a pseudo-terminal: with a pipe, linphonec's
  readline blocks in ``read()`` and the core is not iterated between commands (nothing
  happens while it waits); on a terminal readline's idle hook iterates the core. The
  ``--pipe`` mode is no way out: its socket is ``/tmp/linphonec-UID``, one per user.
- No sound card: ``soundcard use files`` makes each call play ``play FILE`` (a wav of a
  tone, looped) as the microphone and record what it receives to ``record FILE``.
- Its rc file sets the UDP port (TCP and TLS off: port 0), the RTP port, the account
  (``[proxy_0]`` and ``[auth_info_0]``: Digest with the demo password) and the codecs:
  every ``[audio_codec_N]`` section listed comes first in that order, and a codec that is
  not listed is added back *enabled* if liblinphone enables it by default, so each one it
  enables by default is listed, disabled unless asked for.
"""

from __future__ import annotations

import math
import os
import pty
import shutil
import struct
import subprocess
import wave
from pathlib import Path

import pytest
from conftest import find_free_port, stop_process, wait_until  # type: ignore[import-not-found]

needs_linphone = pytest.mark.skipif(shutil.which("linphonec") is None,
                                    reason="linphonec (Debian linphone-cli) is not installed")

#: The audio codecs liblinphone 5.1 enables by default (``codec list`` on a fresh rc),
#: as (mime type, clock rate, channels).
DEFAULT_CODECS = [("PCMU", 8000, 1), ("PCMA", 8000, 1), ("opus", 48000, 2),
                  ("speex", 16000, 1), ("speex", 8000, 1), ("G729", 8000, 1)]

#: Sample rate of the tone files (G.711's).
TONE_RATE = 8000


def write_tone(path: Path, frequency: float, seconds: float = 60.0) -> None:
    """A mono 16-bit wav of a ``frequency`` Hz sine, at half of full scale."""
    count = int(seconds * TONE_RATE)
    samples = (int(16000 * math.sin(2 * math.pi * frequency * i / TONE_RATE))
               for i in range(count))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(TONE_RATE)
        out.writeframes(struct.pack(f"<{count}h", *samples))


def linphone_rc(port: int, rtp_port: int, user: str, password: str, sip_port: int,
                codecs: tuple[str, ...], keepalive_ms: int) -> str:
    """The rc file of a phone registering ``user`` with the daemon on ``sip_port``."""
    lines = [
        "[sip]", f"sip_port={port}", "sip_tcp_port=0", "sip_tls_port=0", "default_proxy=0",
        f"keepalive_period={keepalive_ms}",
        "[rtp]", f"audio_rtp_port={rtp_port}",
        "[sound]", "echocancellation=0",
        "[proxy_0]", f"reg_proxy=<sip:127.0.0.1:{sip_port}>",
        f"reg_identity=sip:{user}@127.0.0.1", "reg_expires=600", "reg_sendregister=1",
        "publish=0",
        "[auth_info_0]", f"username={user}", f"passwd={password}",
    ]
    for index, (mime, rate, channels) in enumerate(DEFAULT_CODECS):
        lines += [f"[audio_codec_{index}]", f"mime={mime}", f"rate={rate}",
                  f"channels={channels}", f"enabled={int(mime in codecs)}"]
    return "".join(line + "\n" for line in lines)


class Linphone:
    """
    One headless linphonec in its own folder ``directory`` (its ``HOME``), listening on a
    free UDP port of 127.0.0.1 and registering demo user ``name`` with the daemon on
    ``sip_port`` (password = ``name`` unless given). It plays a ``tone`` Hz sine as its
    microphone and records what it receives in :attr:`received`; with ``auto_answer`` it
    answers every call at once (``-a``); it sends a CRLFCRLF keep-alive to the daemon
    every ``keepalive_ms`` (liblinphone's default: 30 s). Its console goes to
    ``directory/output.txt``, the liblinphone log (SIP messages included) to
    ``directory/linphone.log``.
    """

    def __init__(self, directory: Path, name: str, sip_port: int, *, tone: float = 440.0,
                 codecs: tuple[str, ...] = ("PCMU",), auto_answer: bool = True,
                 password: str | None = None, keepalive_ms: int = 30000) -> None:
        self.name = name
        self.port = find_free_port()
        self.directory = directory
        home = directory / "home"
        (home / ".local" / "share" / "linphone").mkdir(parents=True)
        rc = directory / "linphonerc"
        rc.write_text(linphone_rc(self.port, find_free_port(), name,
                                  name if password is None else password, sip_port, codecs,
                                  keepalive_ms))
        self.tone = directory / "tone.wav"
        write_tone(self.tone, tone)
        self.received = directory / "received.wav"
        self.output_path = directory / "output.txt"
        self.log_path = directory / "linphone.log"
        self._terminal, follower = pty.openpty()
        argv = ["linphonec", "-c", str(rc), "-d", "6", "-l", str(self.log_path)]
        if auto_answer:
            argv.append("-a")
        env = dict(os.environ, HOME=str(home))
        try:
            with self.output_path.open("wb") as output:
                self.process = subprocess.Popen(argv, stdin=follower, stdout=output,
                                                stderr=subprocess.STDOUT, env=env)
        finally:
            os.close(follower)
        for command in ("soundcard use files", f"play {self.tone}", f"record {self.received}"):
            self.command(command)
        self.wait_for_output("Using wav files instead of soundcard")

    def command(self, command: str) -> None:
        """Type ``command`` at linphonec's prompt."""
        os.write(self._terminal, command.encode() + b"\n")

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def log(self) -> str:
        """liblinphone's log: every SIP message it sent and received is in it."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        """Wait until linphonec printed ``text`` (it must stay up meanwhile)."""

        def seen() -> bool:
            assert self.process.poll() is None, f"linphonec {self.name} exited:\n{self.output()}"
            return text in self.output()

        wait_until(seen, timeout, f"{text!r} from linphonec {self.name}")

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 15 s (by PID); closes its terminal."""
        stop_process(self.process)
        if self._terminal >= 0:
            os.close(self._terminal)
            self._terminal = -1
