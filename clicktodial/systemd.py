"""
Running under systemd: readiness notification and journal priorities.

- :func:`sd_notify` sends a state line (``READY=1``, ``STOPPING=1``, ``RELOADING=1``,
  ``WATCHDOG=1``, ``STATUS=...``) to the socket named by ``$NOTIFY_SOCKET``, as
  ``sd_notify(3)`` does; without that variable (not started by systemd with ``Type=notify``)
  it does nothing. It is a datagram on a unix socket, so it never blocks.
- :class:`SystemdNotifier` is the service that says ``READY=1`` once the daemon's store and
  listeners are up, ``STOPPING=1`` when it stops, and pings the watchdog when systemd asked
  for one (``$WATCHDOG_USEC``).
- :func:`journal_line_prefix` gives the ``<N>`` syslog priority prefix that the journal reads
  off the start of a line written to a stream it collects (``$JOURNAL_STREAM`` is set), see
  ``sd-daemon(3)``: so ``journalctl -p warning`` shows our warnings and errors.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel

__all__ = [
    "SystemdNotifier",
    "journal_line_prefix",
    "journal_stream_is_stderr",
    "sd_notify",
]

log = Logger(namespace="clicktodial.systemd")

# syslog(3) priorities of our log levels (sd-daemon(3): "<3>" error, "<4>" warning, ...).
_PRIORITIES = {
    LogLevel.debug: 7,
    LogLevel.info: 6,
    LogLevel.warn: 4,
    LogLevel.error: 3,
    LogLevel.critical: 2,
}


def journal_line_prefix(level: object) -> str:
    """The ``<N>`` prefix for an event of ``level`` (info when it has none)."""
    return f"<{_PRIORITIES.get(level, 6)}>"


def journal_stream_is_stderr(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """
    Whether ``fd`` (standard error) is the stream systemd connected to the journal:
    ``$JOURNAL_STREAM`` is ``DEVICE:INODE`` of that stream (systemd.exec(5)), compared with
    ``fstat(fd)`` so that a redirected standard error is not mistaken for the journal.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        stat = os.fstat(fd)
    except OSError:
        return False
    return stat.st_dev == int(device) and stat.st_ino == int(inode)


def sd_notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """
    Send ``state`` (e.g. ``"READY=1"``) to systemd's notification socket.

    :returns: whether it was sent (``False`` without ``$NOTIFY_SOCKET``, or on a socket
        error, which is logged: a failed notification must never stop the daemon).
    """
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket (sd_notify(3))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as e:
        log.warn("cannot notify systemd ({state}): {error}", state=state, error=str(e))
        return False
    return True


class SystemdNotifier(Service):
    """
    Tells systemd how the daemon is doing (``Type=notify``).

    :param started: fires when the store and the listeners are up (``READY=1`` then);
        a failure sends nothing (systemd sees the process exit).
    :param environ: the environment to read ``NOTIFY_SOCKET``/``WATCHDOG_USEC`` from.
    """

    def __init__(
        self,
        clock: IReactorTime,
        started: Deferred[None],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.clock = clock
        self._started = started
        self._environ = dict(os.environ if environ is None else environ)
        self._watchdog: LoopingCall | None = None

    def notify(self, state: str) -> bool:
        """Send ``state`` to systemd (see :func:`sd_notify`)."""
        if state.startswith("RELOADING=1"):
            # systemd.service(5), Type=notify-reload: RELOADING=1 comes with the time.
            usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            state += f"\nMONOTONIC_USEC={usec}"
        return sd_notify(state, self._environ)

    def startService(self) -> None:
        super().startService()
        self._started.addCallbacks(self._ready, lambda _: None)

    def _ready(self, _: object) -> None:
        if not self.running:
            return
        self.notify("READY=1\nSTATUS=serving")
        usec = self._environ.get("WATCHDOG_USEC", "")
        pid = self._environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            # systemd.service(5): ping at least every half of WatchdogSec. The ping comes
            # from the reactor loop, so a stuck reactor stops pinging and gets restarted.
            self._watchdog = LoopingCall(self.notify, "WATCHDOG=1")
            self._watchdog.clock = self.clock
            self._watchdog.start(int(usec) / 2_000_000, now=False)

    def reloading(self) -> None:
        """``RELOADING=1`` (systemd then waits for the next ``READY=1``)."""
        self.notify("RELOADING=1")

    def reloaded(self, status: str) -> None:
        """``READY=1`` after a reload, with a one-line ``STATUS``."""
        self.notify(f"READY=1\nSTATUS={status}")

    def stopService(self) -> None:
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._watchdog = None
        self.notify("STOPPING=1")
        super().stopService()
