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

Text and journal lines are escaped (:func:`escape_control`): a phone or a web user chooses
much of what is logged (header values, URIs, user names, paths), and a CR, LF or ESC in them
would forge log lines or drive the terminal of whoever reads the log. JSON escapes by itself.

The level can change while the daemon runs (``SIGHUP`` reloads ``[log] level``):
:meth:`DaemonLogObserver.set_level`.

Code on the message path asks :data:`LOG_LEVELS` before building an event the observer would
drop (``if LOG_LEVELS.debug: log.debug(...)``, ``if LOG_LEVELS.info: log.info(...)``): a
Twisted ``Logger`` builds the event, sorts the levels and reaches the filter before the level
is compared, about 15 Python calls for nothing at ``[log] level = warn``.  The events of every
call (placed, INVITEs sent and received, the call's transitions, its end) are gated so.
"""

import sys
from collections.abc import Mapping
from typing import IO

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatTime,
    jsonFileLogObserver,
)
from twisted.python.reflect import safe_str
from zope.interface import implementer

from clicktodial.config import LogConfig
from clicktodial.systemd import journal_line_prefix, journal_stream_is_stderr

__all__ = [
    "LOG_LEVELS",
    "DaemonLogObserver",
    "LevelGate",
    "JournalTextObserver",
    "escape_control",
    "format_text_event",
    "make_log_observer",
]

#: C0 controls (all of them, TAB and LF included), DEL and C1 controls, and how each is shown.
_CONTROL_ESCAPES = {
    code: {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}.get(code, f"\\x{code:02x}")
    for code in [*range(0x20), *range(0x7F, 0xA0)]
}


def escape_control(text: str) -> str:
    """
    ``text`` with every control character (C0, DEL, C1) shown as ``\\n``, ``\\r``,
    ``\\t`` or ``\\xNN``: one log line stays one line, and nothing in it reaches the
    terminal as a control sequence. Every text formatter of this module uses it on every
    field it writes.
    """
    return text.translate(_CONTROL_ESCAPES)


def _event_lines(event: LogEvent) -> list[str]:
    """
    The event's message and, if any, its traceback, as escaped lines (the message is one
    line whatever it holds; a traceback keeps its line breaks, each line escaped).
    """
    lines = [escape_control(formatEvent(event))]
    failure = event.get("log_failure")
    if failure is not None:
        try:
            traceback = failure.getTraceback()
            # The exception's message is data too (a phone's header quoted in a ValueError):
            # its line breaks are not the traceback's.
            message = safe_str(failure.value)
            traceback = traceback.replace(message, escape_control(message))
        except Exception:  # a broken failure must not break logging
            traceback = ""
        lines.extend(escape_control(line) for line in traceback.rstrip("\n").split("\n"))
    return lines if any(lines) else []


def _event_system(event: LogEvent) -> str:
    """The event's ``log_system``, else ``namespace#level`` (as Twisted's text format)."""
    system = event.get("log_system")
    if system is None:
        level = event.get("log_level")
        return escape_control(
            f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
        )
    try:
        return escape_control(str(system))
    except Exception:
        return "UNFORMATTABLE"


def format_text_event(event: LogEvent) -> str | None:
    """
    ``TIME [SYSTEM] MESSAGE``, Twisted's classic text line, every field escaped; the lines
    of a traceback follow, each indented by a tab.
    """
    lines = _event_lines(event)
    if not lines:
        return None
    stamp = formatTime(event.get("log_time"))
    return f"{stamp} [{_event_system(event)}] " + "\n\t".join(lines) + "\n"


@implementer(ILogObserver)
class JournalTextObserver:
    """
    Writes each event as ``<N>namespace: message`` lines for the journal (a traceback's lines
    each get the prefix, so they stay together at the event's priority).
    """

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, event: LogEvent) -> None:
        lines = _event_lines(event)
        if not lines:
            return
        prefix = journal_line_prefix(event.get("log_level"))
        namespace = escape_control(str(event.get("log_system") or event.get("log_namespace", "-")))
        self.out.write("".join(f"{prefix}[{namespace}] {line}\n" for line in lines))
        self.out.flush()


_LEVEL_ORDER = {level: i for i, level in enumerate(LogLevel.iterconstants())}


class LevelGate:
    """
    Whether events of the least severe levels would be written, as plain attributes: one
    attribute read in front of a ``log.debug(...)`` skips building an event that would be
    dropped.

    Both are ``True`` until a :class:`DaemonLogObserver` given this gate says otherwise (so
    tests that capture events see every one); the daemon hands :data:`LOG_LEVELS` to its
    observer, which keeps it in step with ``[log] level`` (reloads included).

    :ivar debug: whether ``debug`` events are written.
    :ivar info: whether ``info`` events are written.
    """

    __slots__ = ("debug", "info")

    def __init__(self) -> None:
        self.debug = True
        self.info = True

    def reset(self) -> None:
        """Open the gate again (both ``True``), as no observer had said otherwise."""
        self.debug = True
        self.info = True

    def follow(self, level: LogLevel) -> None:
        """Say what an observer writing ``level`` and above writes."""
        least = _LEVEL_ORDER[level]
        self.debug = least <= _LEVEL_ORDER[LogLevel.debug]
        self.info = least <= _LEVEL_ORDER[LogLevel.info]


#: The daemon's gate (:class:`LevelGate`): ``if LOG_LEVELS.debug: log.debug(...)``.
LOG_LEVELS = LevelGate()


@implementer(ILogObserver)
class DaemonLogObserver:
    """
    The daemon's observer: events at :attr:`level` or above go to the writer.

    :ivar level: the least severe level written.
    :ivar gate: the :class:`LevelGate` kept in step with :attr:`level`, if any.
    """

    def __init__(
        self, writer: ILogObserver, level: LogLevel, gate: LevelGate | None = None
    ) -> None:
        self._predicate = LogLevelFilterPredicate(defaultLogLevel=level)
        self._filter = FilteringLogObserver(writer, [self._predicate])
        self.level = level
        self._below = _levels_below(level)
        self.gate = gate
        if gate is not None:
            gate.follow(level)

    def set_level(self, level: LogLevel) -> None:
        """Write events at ``level`` or above from now on."""
        self._predicate.setLogLevelForNamespace("", level)
        self.level = level
        self._below = _levels_below(level)
        if self.gate is not None:
            self.gate.follow(level)

    def __call__(self, event: LogEvent) -> None:
        # The common case first: an event below the level (info and debug at "warn") is
        # dropped with one set look-up; the predicate costs a dozen calls an event.
        if event.get("log_level") in self._below:
            return
        self._filter(event)


def _levels_below(level: LogLevel) -> frozenset[LogLevel]:
    return frozenset(other for other in LogLevel.iterconstants() if other < level)


def make_log_observer(
    config: LogConfig,
    stderr: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
    gate: LevelGate | None = None,
) -> DaemonLogObserver:
    """
    An observer writing events at ``config.level`` or above, in ``config.format``, to
    ``config.file`` (opened for appending) or to ``stderr`` (default: :data:`sys.stderr`).

    :param environ: where to look for ``$JOURNAL_STREAM`` (default :data:`os.environ`).
    :param gate: the :class:`LevelGate` to keep in step with the level (the daemon's
        :data:`LOG_LEVELS`).
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
        writer = FileLogObserver(out, format_text_event)
    return DaemonLogObserver(writer, config.level, gate)
