"""``twistd clicktodial``: options, configuration errors, log observer hand-over, signals."""

import io
import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import Application, IServiceMaker, MultiService
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python import usage
from zope.interface import implementer

from clicktodial import tap
from clicktodial.config import parse_config
from clicktodial.log import make_log_observer


def test_twistd_plugin_names_the_tap_module() -> None:
    makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
    maker = makers["clicktodial"]
    assert maker.module == "clicktodial.tap"  # type: ignore[attr-defined]
    assert maker.options is tap.Options
    assert maker.makeService is tap.makeService


def test_config_option_is_required() -> None:
    with pytest.raises(usage.UsageError, match="--config FILE is required"):
        tap.Options().parseOptions([])


def test_config_option_long_and_short_forms() -> None:
    for argv in (["--config", "a.ini"], ["--config=a.ini"], ["-c", "a.ini"]):
        options = tap.Options()
        options.parseOptions(argv)
        assert options["config"] == "a.ini"


def test_help_documents_the_config_option() -> None:
    usage_text = str(tap.Options())
    assert "--config=" in usage_text
    assert "conf/example.ini" in usage_text


def test_bad_config_ends_twistd_with_the_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.ini"
    path.write_text("[sip]\ndomain = a\nlisten = 127.0.0.1:abc\n")
    options = tap.Options()
    options.parseOptions(["--config", str(path)])
    with pytest.raises(SystemExit) as info:
        tap.makeService(options)
    assert str(info.value) == (
        f"{path}: [sip] listen: invalid port 'abc' (expected host:port, IPv6 as [::1]:5060)"
    )


def test_missing_config_file_ends_twistd_naming_the_file(tmp_path: Path) -> None:
    options = tap.Options()
    options.parseOptions(["--config", str(tmp_path / "absent.ini")])
    with pytest.raises(SystemExit, match="absent.ini: cannot read"):
        tap.makeService(options)


def test_unopenable_log_file_ends_twistd_naming_log_file(tmp_path: Path) -> None:
    path = tmp_path / "c.ini"
    path.write_text(f"[sip]\ndomain = a\n[log]\nfile = {tmp_path}/no/such/dir/x.log\n")
    options = tap.Options()
    options.parseOptions(["--config", str(path)])
    with pytest.raises(SystemExit) as info:
        tap.makeService(options)
    assert str(info.value).startswith(f"{path}: [log] file: cannot open ")


def test_trace_on_without_a_trace_store_ends_twistd_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[calls] trace = on with a backend that keeps no traces: one line naming file, section
    and key, and the tracer's reason (which names the backend)."""
    from clicktodial.calls.trace import TraceUnavailable

    def build_service(config: Any, reactor: Any) -> Any:
        raise TraceUnavailable("trace = on, but the [store] backend 'x' keeps no call traces")

    monkeypatch.setattr(tap, "build_service", build_service)
    path = tmp_path / "c.ini"
    path.write_text("[sip]\ndomain = a\n[calls]\ntrace = on\n")
    options = tap.Options()
    options.parseOptions(["--config", str(path)])
    with pytest.raises(SystemExit) as info:
        tap.makeService(options)
    assert str(info.value) == (
        f"{path}: [calls] trace: trace = on, but the [store] backend 'x' keeps no call traces"
    )


# --- the log observer hand-over --------------------------------------------------------------


def test_twistd_root_gives_the_application_its_log_observer() -> None:
    """twistd uses an Application's ILogObserver component instead of its own observer."""
    observer = make_log_observer(parse_config("[sip]\ndomain = a\n", "x").log, io.StringIO())
    application = Application("clicktodial")
    root = tap.TwistdRoot(observer)
    root.setServiceParent(application)
    assert application.getComponent(ILogObserver) is observer
    assert root.parent is not None


def test_twistd_root_also_works_under_a_plain_service_collection() -> None:
    parent = MultiService()
    root = tap.TwistdRoot(make_log_observer(parse_config("[sip]\ndomain = a\n", "x").log))
    root.setServiceParent(parent)
    assert list(parent) == [root]


def _log_to(text: str, out: io.StringIO) -> ILogObserver:
    return make_log_observer(parse_config("[sip]\ndomain = a\n[log]\n" + text, "x").log, out)


def _event(level: LogLevel, text: str, **fields: Any) -> dict[str, Any]:
    return {
        "log_level": level,
        "log_format": text,
        "log_namespace": "test",
        "log_time": 0.0,
        **fields,
    }


def test_log_observer_drops_events_below_the_configured_level() -> None:
    out = io.StringIO()
    observer = _log_to("level = warn\n", out)
    observer(_event(LogLevel.info, "chatty"))
    observer(_event(LogLevel.warn, "worrying"))
    observer(_event(LogLevel.error, "broken"))
    assert "chatty" not in out.getvalue()
    assert "worrying" in out.getvalue()
    assert "broken" in out.getvalue()


def test_json_log_format_writes_one_object_per_line_with_named_fields() -> None:
    out = io.StringIO()
    observer = _log_to("format = json\n", out)
    observer(_event(LogLevel.info, "call {call_id} answered", call_id="abc@host"))
    observer(_event(LogLevel.info, "second"))
    lines = out.getvalue().split("\n")
    assert lines[-1] == ""
    records = [json.loads(line) for line in lines[:-1]]
    assert [r["log_format"] for r in records] == ["call {call_id} answered", "second"]
    assert records[0]["call_id"] == "abc@host"


def test_log_file_is_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "daemon.log"
    path.write_text("earlier line\n")
    observer = _log_to(f"file = {path}\n", io.StringIO())
    observer(_event(LogLevel.info, "later line"))
    assert path.read_text().startswith("earlier line\n")
    assert "later line" in path.read_text()


# --- signals ---------------------------------------------------------------------------------


@implementer(IReactorFromThreads)
class ThreadCallRecordingReactor(MemoryReactorClock):
    """
    A MemoryReactorClock that keeps running once started (MemoryReactor.run stops at once)
    and records callFromThread calls instead of running them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: list[Callable[[], object]] = []

    def run(self) -> None:
        self.running = True
        self.hasRun = True
        for f, args, kwargs in self.whenRunningHooks:
            f(*args, **kwargs)

    def callFromThread(self, f: Callable[..., object], *args: object, **kw: object) -> None:
        self.from_threads.append(lambda: f(*args, **kw))

    def run_thread_calls(self) -> None:
        calls, self.from_threads = self.from_threads, []
        for call in calls:
            call()


def _raise_not_running() -> None:
    raise ReactorNotRunning("Can't stop reactor that isn't running.")


@pytest.fixture
def saved_signal_handlers() -> Iterator[None]:
    """Put SIGHUP and SIGTERM handling back as it was, whatever the test did."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("saved_signal_handlers")
class TestDaemonSignals:
    def start(self) -> tuple[ThreadCallRecordingReactor, tap.DaemonSignals, list[str]]:
        reactor = ThreadCallRecordingReactor()
        reloads: list[str] = []
        service = tap.DaemonSignals(reactor, lambda: reloads.append("reload"))
        service.startService()
        return reactor, service, reloads

    def test_handlers_are_installed_only_once_the_reactor_runs(self) -> None:
        """The reactor installs its own SIGTERM handler when it starts: ours must come after."""
        before = signal.getsignal(signal.SIGTERM)
        reactor, service, _ = self.start()
        assert signal.getsignal(signal.SIGTERM) is before
        reactor.run()
        assert signal.getsignal(signal.SIGTERM) is not before
        service.stopService()

    def test_sighup_calls_reload_on_the_reactor_thread(self) -> None:
        reactor, service, reloads = self.start()
        reactor.run()
        handler = signal.getsignal(signal.SIGHUP)
        assert callable(handler)
        handler(signal.SIGHUP, None)
        assert reloads == []
        reactor.run_thread_calls()
        assert reloads == ["reload"]
        assert not reactor.hasStopped
        service.stopService()

    def test_sigterm_stops_the_reactor_and_logs_it(self) -> None:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        try:
            reactor, service, _ = self.start()
            reactor.run()
            handler = signal.getsignal(signal.SIGTERM)
            assert callable(handler)
            handler(signal.SIGTERM, None)
            reactor.run_thread_calls()
        finally:
            globalLogPublisher.removeObserver(events.append)
        assert reactor.hasStopped
        assert "Received SIGTERM, shutting down." in [e.get("log_format") for e in events]
        service.stopService()

    def test_second_sigterm_while_stopping_is_harmless(self) -> None:
        reactor, service, _ = self.start()
        reactor.run()
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        handler(signal.SIGTERM, None)
        handler(signal.SIGTERM, None)
        reactor.stop = _raise_not_running  # type: ignore[method-assign]
        reactor.run_thread_calls()
        service.stopService()

    def test_previous_handlers_come_back_on_stop(self) -> None:
        before = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM)}
        reactor, service, _ = self.start()
        reactor.run()
        service.stopService()
        assert {s: signal.getsignal(s) for s in before} == before

    def test_stopped_before_the_reactor_runs_installs_nothing(self) -> None:
        before = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM)}
        reactor, service, _ = self.start()
        service.stopService()
        reactor.run()
        assert {s: signal.getsignal(s) for s in before} == before

    def test_sigterm_before_the_reactor_runs_is_held_then_stops_it_cleanly(self) -> None:
        """Between loading the configuration and running the reactor, SIGTERM must not kill
        the process (exit status "killed by a signal"): it is held, and once the reactor
        runs the daemon stops as on any SIGTERM."""
        before = signal.getsignal(signal.SIGTERM)
        reactor = ThreadCallRecordingReactor()
        service = tap.DaemonSignals(reactor, lambda: None)
        service.hold_sigterm()
        held = signal.getsignal(signal.SIGTERM)
        assert callable(held) and held is not before
        held(signal.SIGTERM, None)
        service.startService()
        assert not reactor.hasStopped
        reactor.run()
        reactor.run_thread_calls()
        assert reactor.hasStopped
        service.stopService()
        assert signal.getsignal(signal.SIGTERM) is before

    def test_held_sigterm_handler_is_removed_when_stopped_before_the_reactor_runs(self) -> None:
        before = signal.getsignal(signal.SIGTERM)
        reactor = ThreadCallRecordingReactor()
        service = tap.DaemonSignals(reactor, lambda: None)
        service.hold_sigterm()
        service.startService()
        service.stopService()
        reactor.run()
        assert signal.getsignal(signal.SIGTERM) is before
        assert reactor.from_threads == []
