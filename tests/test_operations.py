"""
Running it for real: systemd notification and journal priorities, SIGHUP reload, admission
control (rate limit, overload, draining), the graceful stop, /metrics and /readyz.
"""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer

from clicktodial.admission import AdmissionControl, SourceRateLimiter
from clicktodial.config import Config, LimitsConfig, parse_config
from clicktodial.interfaces import IStoreLoad
from clicktodial.log import make_log_observer
from clicktodial.metrics import DaemonMetrics, MetricsResource, ReadinessResource
from clicktodial.reload import ConfigReloader, changed_settings
from clicktodial.service import build_service
from clicktodial.shutdown import CallsInProgress, GracefulStop
from clicktodial.sip.address import Source
from clicktodial.sip.interfaces import IMessageHandler
from clicktodial.sip.message import Request, Response
from clicktodial.systemd import SystemdNotifier, journal_line_prefix, sd_notify
from clicktodial.testing.sipfakes import (
    RecordingTransport,
    sip_request,
    unissued_nonce_authorization,
)
from clicktodial.testing.transport import FakeReactor

MINIMAL = "[sip]\ndomain = 127.0.0.1\n"


def source(host: str = "127.0.0.1", port: int = 5070) -> Source:
    return Source("UDP", host, port, "127.0.0.1", 5060)


def via(port: int = 5070) -> str:
    return f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{os.urandom(4).hex()};rport"


def limits(**values: Any) -> LimitsConfig:
    text = "".join(f"{k} = {v}\n" for k, v in values.items())
    return parse_config(MINIMAL + "[limits]\n" + text, "x.ini").limits


@implementer(IMessageHandler)
class Recorder:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.responses: list[Response] = []

    def request_received(self, request: Request, source: object) -> None:
        self.requests.append(request)

    def response_received(self, response: Response, source: object) -> None:
        self.responses.append(response)


# --- systemd -------------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Any:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield str(path), sock
    sock.close()


def test_sd_notify_sends_the_state_to_NOTIFY_SOCKET(notify_socket: Any) -> None:
    path, sock = notify_socket
    assert sd_notify("READY=1", {"NOTIFY_SOCKET": path})
    assert sock.recv(1024) == b"READY=1"


def test_sd_notify_without_NOTIFY_SOCKET_sends_nothing_and_says_so() -> None:
    assert not sd_notify("READY=1", {})


def test_sd_notify_to_a_missing_socket_is_logged_not_raised(tmp_path: Path) -> None:
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "none")})


def test_notifier_says_ready_once_the_daemon_started_and_stopping_on_stop(
    notify_socket: Any,
) -> None:
    path, sock = notify_socket
    started: Deferred[None] = Deferred()
    notifier = SystemdNotifier(Clock(), started, {"NOTIFY_SOCKET": path})
    notifier.startService()
    started.callback(None)
    assert sock.recv(1024) == b"READY=1\nSTATUS=serving"
    notifier.stopService()
    assert sock.recv(1024) == b"STOPPING=1"


def test_notifier_pings_the_watchdog_at_half_its_interval(notify_socket: Any) -> None:
    path, sock = notify_socket
    clock = Clock()
    environ = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = SystemdNotifier(clock, succeed(None), environ)
    notifier.startService()
    assert sock.recv(1024).startswith(b"READY=1")
    clock.pump([0.1] * 11)
    assert sock.recv(1024) == b"WATCHDOG=1"
    notifier.stopService()
    assert clock.getDelayedCalls() == []


def test_reloading_notification_carries_the_monotonic_time(notify_socket: Any) -> None:
    path, sock = notify_socket
    notifier = SystemdNotifier(Clock(), Deferred(), {"NOTIFY_SOCKET": path})
    notifier.notify("RELOADING=1")
    assert sock.recv(1024).startswith(b"RELOADING=1\nMONOTONIC_USEC=")


def test_journal_priorities_follow_the_syslog_levels() -> None:
    assert journal_line_prefix(LogLevel.error) == "<3>"
    assert journal_line_prefix(LogLevel.warn) == "<4>"
    assert journal_line_prefix(LogLevel.info) == "<6>"
    assert journal_line_prefix(LogLevel.debug) == "<7>"
    assert journal_line_prefix(None) == "<6>"


def test_log_lines_to_the_journal_start_with_their_priority(tmp_path: Path) -> None:
    """When $JOURNAL_STREAM names standard error, each line starts with <N>."""
    path = tmp_path / "stderr"
    with path.open("w") as out:
        stat = os.fstat(out.fileno())
        environ = {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        config = parse_config(MINIMAL, "x").log
        observer = make_log_observer(config, out, environ)
        observer({"log_level": LogLevel.warn, "log_namespace": "t", "log_format": "careful"})
        observer({"log_level": LogLevel.info, "log_namespace": "t", "log_format": "a\nb"})
    # A line break in a message is data (escaped: clicktodial.log.escape_control).
    assert path.read_text() == "<4>[t] careful\n<6>[t] a\\nb\n"


def test_log_lines_not_to_the_journal_have_no_priority_prefix() -> None:
    out = io.StringIO()
    observer = make_log_observer(parse_config(MINIMAL, "x").log, out, {"JOURNAL_STREAM": "1:2"})
    observer({"log_level": LogLevel.warn, "log_namespace": "t", "log_format": "careful"})
    assert "careful" in out.getvalue() and not out.getvalue().startswith("<")


# --- SIGHUP reload -------------------------------------------------------------------------


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_reload_applies_the_new_log_level_and_runs_the_hooks(tmp_path: Path) -> None:
    path = write(tmp_path / "a.ini", MINIMAL)
    config = parse_config(MINIMAL, path)
    out = io.StringIO()
    observer = make_log_observer(config.log, out)
    seen: list[Config] = []
    hooks = [lambda new: observer.set_level(new.log.level), seen.append]
    reloader = ConfigReloader(path, config, hooks)
    write(tmp_path / "a.ini", MINIMAL + "[log]\nlevel = error\n[limits]\nretry_after = 9\n")
    assert reloader.reload()
    observer({"log_level": LogLevel.warn, "log_namespace": "t", "log_format": "hidden"})
    assert "hidden" not in out.getvalue()
    assert seen[0].limits.retry_after == 9
    assert reloader.config is seen[0]


def test_a_bad_config_on_reload_is_logged_in_one_line_and_the_old_one_stays(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "a.ini", MINIMAL)
    config = parse_config(MINIMAL, path)
    seen: list[Config] = []
    states: list[str] = []
    reloader = ConfigReloader(path, config, [seen.append], notify=states.append)
    write(tmp_path / "a.ini", MINIMAL + "[limits]\nretry_after = soon\n")
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        assert not reloader.reload()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert seen == [] and reloader.config is config
    errors = [e for e in events if e.get("log_level") == LogLevel.error]
    assert "[limits] retry_after: invalid number 'soon'" in errors[0]["error"]
    assert states[0] == "RELOADING=1" and states[1].startswith("READY=1")


def test_settings_that_need_a_restart_are_named_on_reload() -> None:
    old = parse_config(MINIMAL, "x")
    new = parse_config(MINIMAL + "listen = 127.0.0.1:5070\n[log]\nlevel = debug\n", "x")
    assert changed_settings(old, new) == ["sip.listen", "log.level"]


def test_a_changed_media_rtpengine_key_is_named_by_its_ini_section() -> None:
    old = parse_config(MINIMAL, "x")
    new = parse_config(MINIMAL + "[media:rtpengine]\nng = 127.0.0.1:2223\n", "x")
    assert changed_settings(old, new) == ["media:rtpengine.ng"]


# --- admission control -----------------------------------------------------------------------


def test_rate_limit_bans_a_source_past_the_limit_then_forgives_it() -> None:
    clock = Clock()
    limiter = SourceRateLimiter(clock, window=2.0, max_requests=10, ban_seconds=60.0)
    assert all(limiter.allow("10.0.0.1") for _ in range(10))
    assert not limiter.allow("10.0.0.1")
    assert limiter.allow("10.0.0.2"), "another source is not affected"
    clock.pump([1.0] * 59)
    assert not limiter.allow("10.0.0.1")
    clock.pump([1.0] * 2)
    assert limiter.allow("10.0.0.1")


def test_rate_limit_window_slides_a_steady_rate_under_the_limit_passes() -> None:
    clock = Clock()
    limiter = SourceRateLimiter(clock, window=2.0, max_requests=10, ban_seconds=60.0)
    for _ in range(200):  # 4 per second = 8 per window: under 10
        assert limiter.allow("10.0.0.1")
        clock.advance(0.25)


def test_rate_limit_exempts_listed_sources_and_is_off_at_zero() -> None:
    clock = Clock()
    limiter = SourceRateLimiter(clock, 2.0, 1, 60.0, exempt=("10.0.0.9",))
    assert all(limiter.allow("10.0.0.9") for _ in range(50))
    limiter.configure(2.0, 0, 60.0, ())
    assert all(limiter.allow("10.0.0.1") for _ in range(50))


def test_rate_limit_memory_is_bounded() -> None:
    limiter = SourceRateLimiter(Clock(), 2.0, 5, 60.0, max_tracked=100)
    for n in range(1000):
        limiter.allow(f"10.0.{n // 256}.{n % 256}")
    assert len(limiter) == 100


def admission(**values: Any) -> tuple[AdmissionControl, Recorder, RecordingTransport, Clock]:
    clock = Clock()
    handler, transport = Recorder(), RecordingTransport(clock)
    control = AdmissionControl(clock, handler, transport, limits(**values))
    return control, handler, transport, clock


def test_while_draining_new_requests_get_503_with_retry_after() -> None:
    control, handler, transport, _ = admission(retry_after=7)
    control.start_draining()
    for method in ("REGISTER", "INVITE", "OPTIONS"):
        control.request_received(sip_request(method, via=via()), source())
    assert handler.requests == []
    statuses = [(s.message.status, s.message.headers.get("Retry-After")) for s in transport.sent]
    assert statuses == [(503, "7")] * 3


def test_while_draining_requests_of_calls_in_progress_go_through() -> None:
    """BYE, re-INVITE (To tag), ACK and CANCEL reach the transaction layer."""
    control, handler, transport, _ = admission()
    control.start_draining()
    requests = [
        sip_request("BYE", via=via(), to_tag="abc"),
        sip_request("INVITE", via=via(), to_tag="abc"),
        sip_request("ACK", via=via(), to_tag="abc"),
        sip_request("ACK", via=via()),
        sip_request("CANCEL", via=via()),
    ]
    for request in requests:
        control.request_received(request, source())
    assert handler.requests == requests
    assert transport.sent == []


def test_overloaded_by_transactions_new_requests_but_options_get_503() -> None:
    control, handler, transport, _ = admission(max_transactions=10)
    control.transactions_active = lambda: 10
    control.request_received(sip_request("REGISTER", via=via()), source())
    control.request_received(sip_request("OPTIONS", via=via()), source())
    assert [r.method for r in handler.requests] == ["OPTIONS"]
    assert [s.message.status for s in transport.sent] == [503]
    assert control.counts.overload == 1


def test_overloaded_store_refuses_register_and_invite_only() -> None:
    control, handler, transport, _ = admission(max_store_pending=5)
    control.store_pending = lambda: 5
    for method in ("REGISTER", "INVITE", "OPTIONS", "MESSAGE"):
        control.request_received(sip_request(method, via=via()), source())
    assert [r.method for r in handler.requests] == ["OPTIONS", "MESSAGE"]
    assert len(transport.responses(503)) == 2


def test_the_503_to_a_retransmission_has_the_same_to_tag() -> None:
    control, _, transport, _ = admission()
    control.start_draining()
    request = sip_request("REGISTER", via=via())
    control.request_received(request, source())
    control.request_received(request, source())
    first, second = (s.message.to.tag for s in transport.sent)
    assert first == second


def test_responses_always_go_through() -> None:
    control, handler, _, _ = admission(rate_max_requests=1)
    control.start_draining()
    response = Response(200, None, [("Via", via()), ("CSeq", "1 OPTIONS")])
    control.response_received(response, source())
    assert handler.responses == [response]


# --- graceful stop -------------------------------------------------------------------------


class Calls:
    def __init__(self, count: int) -> None:
        self.left = count
        self.ended = 0

    def view(self) -> CallsInProgress:
        def end_all() -> None:
            self.ended += 1
            self.left = 0

        return CallsInProgress(lambda: self.left, end_all)


def test_graceful_stop_waits_for_calls_to_end_by_themselves() -> None:
    clock = Clock()
    control, _, _, _ = admission()
    calls = Calls(2)
    done: list[object] = []
    GracefulStop(clock, control, calls.view(), grace=30).run().addCallback(done.append)
    assert control.draining
    clock.pump([0.1] * 50)
    assert done == []
    calls.left = 0
    clock.pump([0.1] * 3)
    assert done == [None] and calls.ended == 0


def test_graceful_stop_ends_the_calls_left_after_the_grace_period() -> None:
    clock = Clock()
    calls = Calls(1)
    done: list[object] = []
    GracefulStop(clock, None, calls.view(), grace=5).run().addCallback(done.append)
    clock.pump([0.1] * 49)
    assert calls.ended == 0
    clock.pump([0.1] * 5)
    assert calls.ended == 1
    clock.pump([0.1] * 5)
    assert done == [None]
    assert clock.getDelayedCalls() == []


def test_graceful_stop_without_calls_is_immediate_and_can_be_joined() -> None:
    clock = Clock()
    stop = GracefulStop(clock, None, Calls(0).view(), grace=30)
    first: list[object] = []
    stop.run().addCallback(first.append)
    second: list[object] = []
    stop.run().addCallback(second.append)
    assert first == [None] and second == [None]


# --- metrics and readiness -----------------------------------------------------------------


def render(resource: Any, path: bytes) -> tuple[int, bytes]:
    request = DummyRequest([path])
    result = resource.render(request)
    if isinstance(result, bytes):
        request.write(result)
        request.finish()
    return request.responseCode or 200, b"".join(request.written)


def test_metrics_use_their_own_registry_not_the_global_one() -> None:
    metrics = DaemonMetrics()
    metrics.register_answered(200, True, 0.01)
    assert metrics.registry is not REGISTRY
    sample = REGISTRY.get_sample_value("clicktodial_register_responses_total", {"status": "200"})
    assert sample is None


def test_metrics_count_register_outcomes_and_auth_failures() -> None:
    metrics = DaemonMetrics()
    metrics.register_answered(401, False, 0.001)  # a challenge is not a failure
    metrics.register_answered(401, True, 0.001)
    metrics.register_answered(200, True, 0.002)
    metrics.register_answered(599, True, 0.002)
    _, body = render(MetricsResource(metrics.registry), b"metrics")
    text = body.decode()
    assert 'clicktodial_register_responses_total{status="401"} 2.0' in text
    assert 'clicktodial_register_responses_total{status="5xx"} 1.0' in text
    assert "clicktodial_auth_failures_total 1.0" in text
    assert 'clicktodial_store_latency_seconds_count{operation="register"} 4.0' in text


def test_scrape_after_a_register_through_the_daemon_shows_it_and_the_gauges() -> None:
    """Calls are not wired into the daemon yet: a scripted REGISTER drives the metrics."""
    reactor = FakeReactor()
    config = parse_config(MINIMAL + "[store]\nbackend = memory\n", "x.ini")
    root = build_service(config, reactor)
    root.startService()
    operations = root.operations
    assert operations is not None
    sip = root.getServiceNamed("sip")
    # One REGISTER without credentials (challenged statelessly: no transaction), one with
    # a nonce we never issued (challenged again, in a server transaction).
    register = sip_request("REGISTER", "sip:127.0.0.1", via=via())
    sip.transport.handler.request_received(register, source())
    register = sip_request(
        "REGISTER", "sip:127.0.0.1", via=via(), extra=(unissued_nonce_authorization(),)
    )
    sip.transport.handler.request_received(register, source())
    reactor.pump([0.1] * 5)
    _, body = render(MetricsResource(operations.metrics.registry), b"metrics")
    text = body.decode()
    assert 'clicktodial_register_responses_total{status="401"} 2.0' in text
    assert "clicktodial_sip_transactions_active 1.0" in text
    assert "clicktodial_sip_dialogs_active 0.0" in text
    assert "clicktodial_sip_ua_active 0.0" in text
    assert 'clicktodial_sip_requests_refused{reason="draining"} 0.0' in text
    root.stopService()


class Store:
    def __init__(self, answer: Deferred[Any]) -> None:
        self.answer = answer

    def get_user(self, username: str) -> Deferred[Any]:
        return self.answer


def test_readyz_is_200_when_the_store_answers() -> None:
    resource = ReadinessResource(Clock(), Store(succeed(None)))  # type: ignore[arg-type]
    assert render(resource, b"readyz") == (200, b"ready")


def test_readyz_is_503_when_the_store_does_not_answer_in_time() -> None:
    clock = Clock()
    resource = ReadinessResource(clock, Store(Deferred()), timeout=2.0)  # type: ignore[arg-type]
    request = DummyRequest([b"readyz"])
    resource.render(request)
    clock.pump([0.1] * 21)
    assert request.responseCode == 503
    assert b"".join(request.written) == b"store unreachable"


def test_readyz_is_503_while_stopping() -> None:
    resource = ReadinessResource(
        Clock(),
        Store(succeed(None)),
        draining=lambda: True,  # type: ignore[arg-type]
    )
    assert render(resource, b"readyz") == (503, b"stopping")


class FakeController:
    def __init__(self, states: list[str]) -> None:
        self.calls = [type("Info", (), {"state": s})() for s in states]
        self.listeners: list[Any] = []
        self.hung_up = 0
        self.relay = None  # [media] relay = off
        self.unexpected_inputs = {"calling-callee/bridged": 2}

    def active_calls(self) -> list[Any]:
        return self.calls

    def hang_up_all(self) -> int:
        self.hung_up += 1
        count = len(self.calls)
        self.calls = []
        return count

    def subscribe(self, listener: Any) -> Any:
        self.listeners.append(listener)
        return lambda: None


def test_with_a_call_controller_the_stop_hangs_up_its_calls_and_metrics_show_them() -> None:
    reactor = FakeReactor()
    text = MINIMAL + "[store]\nbackend = memory\n[daemon]\nshutdown_grace = 1\n"
    config = parse_config(text, "x")
    root = build_service(config, reactor)
    operations = root.operations
    assert operations is not None
    controller = FakeController(["connected", "connected", "calling-callee"])
    operations.use_call_controller(controller)
    _, body = render(MetricsResource(operations.metrics.registry), b"metrics")
    assert 'clicktodial_calls_active{state="connected"} 2.0' in body.decode()
    assert (
        'clicktodial_call_unexpected_inputs_total{phase_input="calling-callee/bridged"} 2.0'
        in body.decode()
    )
    ended = type(
        "Info", (), {"state": "ended", "end_reason": "caller-hangup", "media_relay": "off"}
    )()
    controller.listeners[0].call_state_changed(ended)
    _, body = render(MetricsResource(operations.metrics.registry), b"metrics")
    assert 'clicktodial_calls_ended_total{outcome="caller-hangup"} 1.0' in body.decode()
    done: list[object] = []
    operations.graceful_stop.run().addCallback(done.append)
    reactor.pump([0.1] * 12)
    assert controller.hung_up == 1
    reactor.pump([0.1] * 3)
    assert done == [None]


@implementer(IStoreLoad)
class LoadedStore:
    """A store backend declaring its load (IStoreLoad), with no thread pool of ours."""

    def __init__(self, waiting: int) -> None:
        self.waiting = waiting

    def pending(self) -> int:
        return self.waiting


def test_admission_control_reads_the_load_a_store_declares() -> None:
    """The pending work is what IStoreLoad says (no probing for a private thread pool), summed
    over the [store] and [location] backends; a store without IStoreLoad counts 0."""
    from clicktodial.operations import store_pending

    assert store_pending(LoadedStore(3))() == 3
    assert store_pending(LoadedStore(3), LoadedStore(4))() == 7
    assert store_pending(object(), None)() == 0
    users, locations = LoadedStore(0), LoadedStore(0)
    pending = store_pending(users, locations)
    locations.waiting = 9
    assert pending() == 9


def test_the_sql_store_declares_its_load(tmp_path: Path) -> None:
    from zope.interface.verify import verifyObject

    from clicktodial.store.sql import SQLStore
    from clicktodial.testing.fakes import InlineThreadPool

    store = SQLStore(
        Clock(),
        f"sqlite:///{tmp_path / 'x.sqlite'}",
        InlineThreadPool(),
        InlineThreadPool(),
        realm="127.0.0.1",
    )
    load = IStoreLoad(store, None)
    assert load is not None and verifyObject(IStoreLoad, load)
    assert load.pending() == 0


class Locations:
    def __init__(self, answer: Deferred[Any]) -> None:
        self.answer = answer
        self.asked: list[str] = []

    def get_bindings(self, aor: str, now: float) -> Deferred[Any]:
        self.asked.append(aor)
        return self.answer


def test_readyz_asks_a_separate_location_backend_too() -> None:
    """With [location] backend set, /readyz is ready only when both stores answer."""
    from twisted.internet.defer import fail

    locations = Locations(succeed([]))
    resource = ReadinessResource(Clock(), Store(succeed(None)), locations=locations)  # type: ignore[arg-type]
    assert render(resource, b"readyz") == (200, b"ready")
    assert locations.asked == ["\x00readyz"]
    down = ReadinessResource(
        Clock(),
        Store(succeed(None)),  # type: ignore[arg-type]
        locations=Locations(fail(ConnectionRefusedError("redis down"))),  # type: ignore[arg-type]
    )
    assert render(down, b"readyz") == (503, b"store unreachable")


def test_metrics_show_the_media_relay_commands_and_relayed_calls() -> None:
    from clicktodial.calls.relay import RelaySettings
    from clicktodial.media.rtpengine import NgClient, RtpEngineRelay
    from clicktodial.testing.transport import FakeDatagramPort

    root = build_service(parse_config(MINIMAL + "[store]\nbackend = memory\n", "x"), FakeReactor())
    operations = root.operations
    assert operations is not None
    client = NgClient(Clock(), [("127.0.0.1", 22222)])
    port = FakeDatagramPort(client, "127.0.0.1", 40000)
    client.command("ping")
    port.receive(port.written[0][0].split(b" ")[0] + b" d6:result4:ponge", "127.0.0.1", 22222)
    controller = FakeController([])
    controller.relay = RelaySettings(RtpEngineRelay(client))  # type: ignore[assignment]
    operations.use_call_controller(controller)
    ended = type(
        "Info", (), {"state": "ended", "end_reason": "caller-hangup", "media_relay": "relayed"}
    )()
    controller.listeners[0].call_state_changed(ended)
    _, body = render(MetricsResource(operations.metrics.registry), b"metrics")
    text = body.decode()
    assert 'clicktodial_media_relay_commands_total{result="sent"} 1.0' in text
    assert 'clicktodial_media_relay_commands_total{result="error"} 0.0' in text
    assert "clicktodial_media_relay_round_trip_count 1.0" in text
    assert 'clicktodial_calls_media_relay_total{relay="relayed"} 1.0' in text
