"""
The text and journal log formats escape control characters in every field
(clicktodial.log.escape_control): a value a phone or a web user chose cannot forge a log line
or send a terminal sequence to whoever reads the log.
"""

from __future__ import annotations

import io
import json
import re

from twisted.logger import LogLevel
from twisted.python.failure import Failure

from clicktodial.config import parse_config
from clicktodial.log import LevelGate, escape_control, format_text_event, make_log_observer

#: What a phone or a web user may put in a header value, a user name, a path.
HOSTILE = "alice\r\n2026-12-06T20:00:00+0000 [forged] admin logged in\x1b[2J\x1b]0;x\x07\x7f\x9b"

#: A control character that is not a line's own ending or a traceback's continuation tab.
_RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]|\n(?!\t|$)|(?<!\n)\t")


def _observer(text: str, out: io.StringIO, environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    config = parse_config("[sip]\ndomain = a\n[log]\n" + text, "x").log
    return make_log_observer(config, out, environ=environ)


def _hostile_event() -> dict[str, object]:
    return {
        "log_level": LogLevel.info,
        "log_format": "Authentication failed for {username} ({why}) ua={ua}",
        "log_namespace": "clicktodial.sip\x1b[31m",
        "log_time": 0.0,
        "username": HOSTILE,
        "why": b"bytes\r\n",
        "ua": HOSTILE,
    }


def test_escape_control_shows_every_c0_del_and_c1_character_escaped() -> None:
    text = "".join(chr(c) for c in range(0xA0))
    escaped = escape_control(text)
    assert not re.search("[\x00-\x1f\x7f-\x9f]", escaped)
    assert escape_control("a\r\nb\tc\x1b[2J\x85é") == "a\\r\\nb\\tc\\x1b[2J\\x85é"
    assert escape_control("plain text, ünïcode") == "plain text, ünïcode"


def test_text_format_writes_a_hostile_value_as_one_line_with_no_control_character() -> None:
    out = io.StringIO()
    observer = _observer("", out)
    observer(_hostile_event())
    written = out.getvalue()
    assert written.count("\n") == 1 and written.endswith("\n")
    assert not _RAW_CONTROL.search(written)
    assert "alice\\r\\n2026-12-06T20:00:00+0000 [forged]" in written
    assert "\\x1b[2J" in written


def test_journal_format_escapes_every_field_too() -> None:
    out = io.StringIO()
    out.fileno = lambda: 2  # type: ignore[method-assign]
    import os

    stat = os.fstat(2)
    observer = _observer("", out, environ={"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"})
    event = _hostile_event()
    event["log_system"] = "sys\x1b[2J"
    observer(event)
    written = out.getvalue()
    assert written.startswith("<6>[sys\\x1b[2J] ")
    assert written.count("\n") == 1
    assert not _RAW_CONTROL.search(written)


def test_a_traceback_keeps_its_lines_each_escaped() -> None:
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        failure = Failure()
    event = _hostile_event()
    event["log_failure"] = failure
    line = format_text_event(event)
    assert line is not None
    assert not _RAW_CONTROL.search(line)
    assert "\n\tTraceback (most recent call last):" in line
    assert "ValueError: alice\\r\\n2026" in line


def test_json_format_stays_json_with_the_value_intact() -> None:
    out = io.StringIO()
    _observer("format = json\n", out)(_hostile_event())
    assert not _RAW_CONTROL.search(out.getvalue())
    assert json.loads(out.getvalue())["username"] == HOSTILE


def test_a_web_login_with_a_hostile_user_name_is_logged_without_control_characters() -> None:
    """The name is not echoed (malformed: "?"), and the line holds no control character."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.defer import Deferred
    from twisted.web.test.requesthelper import DummyRequest

    from clicktodial.testing.transport import LogCapture
    from clicktodial.testing.webfakes import web_world

    world = web_world()
    request = DummyRequest([b"login"])
    request.client = IPv4Address("TCP", "192.0.2.7", 40000)
    request.getCookie = lambda name: None  # type: ignore[method-assign]
    with LogCapture() as log:
        login = Deferred.fromCoroutine(world.app.login(request, HOSTILE, "guess"))
        login.addErrback(lambda failure: None)
        world.clock.advance(10)
    lines = [format_text_event(event) or "" for event in log.events]
    assert any("web login failed for ? from 192.0.2.7" in line for line in lines), lines
    assert not any(_RAW_CONTROL.search(line) for line in lines)


def test_a_level_gate_follows_the_observer_level_and_its_reloads() -> None:
    """A LevelGate handed to the daemon's observer says whether debug and info events would
    be written, at start and after set_level (SIGHUP); a gate no observer follows lets
    everything through."""
    gate = LevelGate()
    assert (gate.debug, gate.info) == (True, True)
    config = parse_config("[sip]\ndomain = example.com\n[log]\nlevel = warn\n", "x.ini")
    observer = make_log_observer(config.log, stderr=io.StringIO(), gate=gate)
    assert (gate.debug, gate.info) == (False, False)
    observer.set_level(LogLevel.info)
    assert (gate.debug, gate.info) == (False, True)
    observer.set_level(LogLevel.debug)
    assert (gate.debug, gate.info) == (True, True)
    make_log_observer(config.log, stderr=io.StringIO())
    assert (gate.debug, gate.info) == (True, True)
