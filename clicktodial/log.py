"""
Log observers built from the ``[log]`` section.

Under twistd, :mod:`clicktodial.tap` hands the observer to twistd in place of twistd's own
(``--logfile``/``--syslog``), so the ``[log]`` section alone decides what is logged and where,
including twistd's own start-up and shut-down lines.

Under systemd (``$JOURNAL_STREAM`` names our standard error, see
:func:`clicktodial.systemd.journal_stream_is_stderr`), text lines to standard error start with
the ``<N>`` syslog priority of their level and carry no timestamp (the journal stamps them):
``journalctl -u clicktodial -p warning`` then shows warnings and errors only. JSON lines are
left as they are (each has ``log_level``).

The level can change while the daemon runs (``SIGHUP`` reloads ``[log] level``):
:meth:`DaemonLogObserver.set_level`.
"""

import sys
from collections.abc import Mapping
from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    jsonFileLogObserver,
    textFileLogObserver,
)
from zope.interface import implementer

from clicktodial.config import LogConfig
from clicktodial.systemd import journal_line_prefix, journal_stream_is_stderr

__all__ = ["DaemonLogObserver", "JournalTextObserver", "make_log_observer"]


@implementer(ILogObserver)
class JournalTextObserver:
    """
    Writes each event as ``<N>namespace: message`` lines for the journal (a traceback's lines
    each get the prefix, so they stay together at the event's priority).
    """

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, event: LogEvent) -> None:
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            try:
                text += "\n" + failure.getTraceback()
            except Exception:  # a broken failure must not break logging
                pass
        if not text:
            return
        prefix = journal_line_prefix(event.get("log_level"))
        namespace = event.get("log_system") or event.get("log_namespace", "-")
        lines = text.rstrip("\n").split("\n")
        self.out.write("".join(f"{prefix}[{namespace}] {line}\n" for line in lines))
        self.out.flush()


@implementer(ILogObserver)
class DaemonLogObserver:
    """
    The daemon's observer: events at :attr:`level` or above go to the writer.

    :ivar level: the least severe level written.
    """

    def __init__(self, writer: ILogObserver, level: LogLevel) -> None:
        self._predicate = LogLevelFilterPredicate(defaultLogLevel=level)
        self._filter = FilteringLogObserver(writer, [self._predicate])
        self.level = level

    def set_level(self, level: LogLevel) -> None:
        """Write events at ``level`` or above from now on."""
        self._predicate.setLogLevelForNamespace("", level)
        self.level = level

    def __call__(self, event: LogEvent) -> None:
        self._filter(event)


def make_log_observer(
    config: LogConfig,
    stderr: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> DaemonLogObserver:
    """
    An observer writing events at ``config.level`` or above, in ``config.format``, to
    ``config.file`` (opened for appending) or to ``stderr`` (default: :data:`sys.stderr`).

    :param environ: where to look for ``$JOURNAL_STREAM`` (default :data:`os.environ`).
    :raises OSError: the log file cannot be opened.
    """
    out: IO[str]
    journal = False
    if config.file is None:
        out = sys.stderr if stderr is None else stderr
        try:
            fd = out.fileno()
        except (AttributeError, OSError, ValueError):
            fd = -1
        journal = fd >= 0 and journal_stream_is_stderr(environ, fd)
    else:
        # Line-buffered so a crash loses nothing already logged.
        out = open(config.file, "a", encoding="utf-8", buffering=1)
    writer: ILogObserver
    if config.format == "json":
        # JSON Lines, without jsonFileLogObserver's default RFC 7464 record separator (\x1e),
        # which line-based log shippers and plain jq stumble on.
        # twisted.logger.eventsFromJSONLogFile reads either form back.
        writer = jsonFileLogObserver(out, recordSeparator="")
    elif journal:
        writer = JournalTextObserver(out)
    else:
        writer = textFileLogObserver(out)
    return DaemonLogObserver(writer, config.level)
