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
- liblinphone looks for its local address every 5 s (it connects a UDP socket to
  87.98.157.38, never sending anything, and reads the source address) and calls the
  network *down* when that is 127.0.0.1: it then drops its registration and resets its
  transports, mid-call too. In a namespace with only ``lo`` that happens 5 s after start.
  ``auto_net_state_mon=0`` is no way out (linphonec then never brings the network up), so
  :func:`let_linphone_see_a_network` routes that one address to ``lo`` with source
  127.0.0.2: liblinphone's check compares the string with "127.0.0.1" only. Its SIP and
  media addresses still come from the daemon's address (127.0.0.1).
- No sound card: ``soundcard use files`` makes each call play ``play FILE`` (a 60 s wav
  of a tone) as the microphone and record what it receives to ``record FILE``.
- Its rc file sets the UDP or the TCP port (the others off: port 0), the RTP port, the
  account (``[proxy_0]`` and ``[auth_info_0]``: Digest with the demo password) and the
  codecs: every ``[audio_codec_N]`` section listed comes first in that order, and a codec
  that is not listed is added back *enabled* if liblinphone enables it by default, so
  each one it enables by default is listed, disabled unless asked for.
"""

from __future__ import annotations

import math
import os
import pty
import shutil
import socket
import struct
import subprocess
import wave
from pathlib import Path

import pytest
from conftest import find_free_port, stop_process, wait_until  # type: ignore[import-not-found]

needs_linphone = pytest.mark.skipif(
    shutil.which("linphonec") is None, reason="linphonec (Debian linphone-cli) is not installed"
)

#: The audio codecs liblinphone 5.1 enables by default (``codec list`` on a fresh rc),
#: as (mime type, clock rate, channels).
DEFAULT_CODECS = [
    ("PCMU", 8000, 1),
    ("PCMA", 8000, 1),
    ("opus", 48000, 2),
    ("speex", 16000, 1),
    ("speex", 8000, 1),
    ("G729", 8000, 1),
]

#: The address liblinphone (bctoolbox) connects a UDP socket to, to learn its local address.
LOCAL_ADDRESS_PROBE = "87.98.157.38"

#: Sample rate of the tone files (G.711's).
TONE_RATE = 8000


def write_tone(path: Path, frequency: float, seconds: float = 60.0) -> None:
    """A mono 16-bit wav of a ``frequency`` Hz sine, at half of full scale."""
    count = int(seconds * TONE_RATE)
    samples = (int(16000 * math.sin(2 * math.pi * frequency * i / TONE_RATE)) for i in range(count))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(TONE_RATE)
        out.writeframes(struct.pack(f"<{count}h", *samples))


def let_linphone_see_a_network() -> None:
    """
    In a network namespace with only ``lo`` (``unshare -n``), route liblinphone's local
    address probe to ``lo`` with source 127.0.0.2, so that its network monitor does not
    take the network down (see the module's docstring). Nothing is sent to that address;
    anywhere else (a real network) nothing is changed.
    """
    if [name for _, name in socket.if_nameindex()] != ["lo"]:
        return
    result = subprocess.run(
        ["ip", "route", "replace", f"{LOCAL_ADDRESS_PROBE}/32", "dev", "lo", "src", "127.0.0.2"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if result.returncode != 0:
        pytest.skip(f"linphonec needs a route in this namespace: {result.stderr.strip()}")


def linphone_rc(
    port: int,
    rtp_port: int,
    user: str,
    password: str,
    sip_port: int,
    codecs: tuple[str, ...],
    keepalive_ms: int,
    expires: int,
    transport: str,
) -> str:
    """
    The rc file of a phone registering ``user`` for ``expires`` s with the daemon on
    ``sip_port`` over ``transport`` (``udp`` or ``tcp``: it listens on ``port`` with it).
    """
    udp_port, tcp_port = (port, 0) if transport == "udp" else (0, port)
    lines = [
        "[sip]",
        f"sip_port={udp_port}",
        f"sip_tcp_port={tcp_port}",
        "sip_tls_port=0",
        "default_proxy=0",
        f"keepalive_period={keepalive_ms}",
        "[rtp]",
        f"audio_rtp_port={rtp_port}",
        "[sound]",
        "echocancellation=0",
        "[proxy_0]",
        f"reg_proxy=<sip:127.0.0.1:{sip_port};transport={transport}>",
        f"reg_identity=sip:{user}@127.0.0.1",
        f"reg_expires={expires}",
        "reg_sendregister=1",
        "publish=0",
        "[auth_info_0]",
        f"username={user}",
        f"passwd={password}",
    ]
    for index, (mime, rate, channels) in enumerate(DEFAULT_CODECS):
        lines += [
            f"[audio_codec_{index}]",
            f"mime={mime}",
            f"rate={rate}",
            f"channels={channels}",
            f"enabled={int(mime in codecs)}",
        ]
    return "".join(line + "\n" for line in lines)


class Linphone:
    """
    One headless linphonec in its own folder ``directory`` (its ``HOME``), listening on a
    free port of 127.0.0.1 (``transport``: ``udp`` or ``tcp``) and registering demo user
    ``name`` for ``expires`` s with the daemon on ``sip_port`` (password = ``name`` unless
    given). It plays a ``tone`` Hz sine as its microphone and records what it receives in
    :attr:`received`; with ``auto_answer`` it answers every call at once (``-a``); it
    sends a CRLFCRLF keep-alive to the daemon every ``keepalive_ms`` (liblinphone's
    default: 30 s). Its console goes to ``directory/output.txt``, the liblinphone log (SIP
    messages included) to ``directory/linphone.log``.
    """

    def __init__(
        self,
        directory: Path,
        name: str,
        sip_port: int,
        *,
        tone: float = 440.0,
        codecs: tuple[str, ...] = ("PCMU",),
        auto_answer: bool = True,
        password: str | None = None,
        keepalive_ms: int = 30000,
        expires: int = 600,
        transport: str = "udp",
    ) -> None:
        let_linphone_see_a_network()
        self.name = name
        self.port = find_free_port()
        self.directory = directory
        home = directory / "home"
        (home / ".local" / "share" / "linphone").mkdir(parents=True)
        rc = directory / "linphonerc"
        rc.write_text(
            linphone_rc(
                self.port,
                find_free_port(),
                name,
                name if password is None else password,
                sip_port,
                codecs,
                keepalive_ms,
                expires,
                transport,
            )
        )
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
                self.process = subprocess.Popen(
                    argv, stdin=follower, stdout=output, stderr=subprocess.STDOUT, env=env
                )
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
