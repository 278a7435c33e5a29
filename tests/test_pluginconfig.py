"""
Plugin configuration: [KIND:NAME] sections handed to the chosen plugin, the [location] seam,
and the one-line errors naming file, section and key (at start-up and in check-config).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from zope.interface import implementer

from clicktodial import cli
from clicktodial.config import Config, ConfigError, parse_config
from clicktodial.interfaces import IBindingChangeNotifier
from clicktodial.pluginconfig import (
    build_location_store,
    build_policy,
    build_store,
    check_plugins,
    store_options,
)
from clicktodial.service import CALLS_SERVICE_NAME, build_service
from clicktodial.sip.digest import compute_ha1, compute_response, parse_auth_params
from clicktodial.sip.message import Response
from clicktodial.sip.parser import parse_message
from clicktodial.store import admin
from clicktodial.store.memory import MemoryStore
from clicktodial.store.plugins import StoreEnvironment
from clicktodial.store.sql import SQLStore
from clicktodial.store.values import BindingChanges, ContactChange
from clicktodial.testing.fakes import (
    InlineReactor,
    InlineThreadPool,
    cheap_password_hasher,
    inline_thread_pool,
    success_result_of,
)
from clicktodial.testing.transport import FakeReactor

BASE = "[sip]\ndomain = example.com\n"


def config(text: str) -> Config:
    return parse_config(BASE + text, "x.ini")


@pytest.fixture
def environment() -> StoreEnvironment:
    return StoreEnvironment(
        InlineReactor(), "example.com", inline_thread_pool, cheap_password_hasher()
    )


def one_line_error(build: Callable[[], object]) -> str:
    with pytest.raises(ConfigError) as info:
        build()
    message = str(info.value)
    assert "\n" not in message
    return message


# -- [store] and [store:NAME] ---------------------------------------------------------------


def test_older_store_url_reaches_the_sql_backend_as_its_url(tmp_path: Path) -> None:
    """[store] url (the older way) is [store:sql] url: existing configurations keep working."""
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    assert store_options(config(f"[store]\nurl = {url}\n")) == {"url": url}


def test_store_sql_section_gives_url_and_threads(
    tmp_path: Path, environment: StoreEnvironment
) -> None:
    """[store:sql] carries every option of the sql backend, threads included."""
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    parsed = config(f"[store:sql]\nurl = {url}\nthreads = 2\nauto_upgrade = yes\n")
    assert str(parsed.store.url) == url and parsed.store.auto_upgrade
    assert store_options(parsed) == {"url": url, "threads": "2", "auto_upgrade": "yes"}
    assert isinstance(build_store(parsed, environment), SQLStore)


def test_url_in_both_store_and_store_sql_is_refused() -> None:
    assert (
        one_line_error(
            lambda: config("[store]\nurl = sqlite:///a\n[store:sql]\nurl = sqlite:///b\n")
        )
        == "x.ini: [store] url: also given in [store:sql]: keep one of the two"
    )


def test_a_bad_store_option_names_the_plugin_section_and_key(environment: StoreEnvironment) -> None:
    parsed = config("[store:sql]\nthreads = 0\n")
    assert one_line_error(lambda: build_store(parsed, environment)) == (
        "x.ini: [store:sql] threads: threads must be an integer from 1 to 64, not '0'"
    )
    parsed = config("[store]\nbackend = memory\n[store:memory]\nsize = 3\n")
    assert one_line_error(lambda: build_store(parsed, environment)).startswith(
        "x.ini: [store:memory] size: unknown option 'size'"
    )


def test_an_unknown_store_backend_names_the_choosing_key(environment: StoreEnvironment) -> None:
    parsed = config("[store]\nbackend = mongo\n")
    message = one_line_error(lambda: build_store(parsed, environment))
    assert message.startswith("x.ini: [store] backend: unknown store backend 'mongo'")
    assert "memory, sql" in message


def test_a_bad_plugin_section_name_stops_parsing() -> None:
    assert one_line_error(lambda: config("[sore:sql]\n")) == (
        "x.ini: [sore:sql]: unknown plugin kind 'sore' (one of store, location, policy, trunk)"
    )


# -- [location] -----------------------------------------------------------------------------


def test_location_defaults_to_the_store(environment: StoreEnvironment) -> None:
    """Without [location] backend the store keeps the registrations: no second store."""
    assert build_location_store(config("[store]\nbackend = memory\n"), environment) is None


def test_location_backend_is_a_store_of_its_own(environment: StoreEnvironment) -> None:
    parsed = config("[store]\nbackend = memory\n[location]\nbackend = memory\n")
    location = build_location_store(parsed, environment)
    assert isinstance(location, MemoryStore)
    assert location is not build_store(parsed, environment)


def test_location_options_come_from_its_section(
    tmp_path: Path, environment: StoreEnvironment
) -> None:
    url = f"sqlite:///{tmp_path / 'loc.sqlite'}"
    parsed = config(
        f"[store]\nbackend = memory\n[location]\nbackend = sql\n"
        f"[location:sql]\nurl = {url}\nthreads = 2\n"
    )
    assert isinstance(build_location_store(parsed, environment), SQLStore)


def test_a_bad_location_option_names_its_section_and_key(environment: StoreEnvironment) -> None:
    parsed = config(
        "[location]\nbackend = memory\n[location:memory]\nurl = redis://x\ncolour = red\n"
    )
    assert one_line_error(lambda: build_location_store(parsed, environment)).startswith(
        "x.ini: [location:memory] colour: unknown option 'colour'"
    )
    parsed = config("[location]\nbackend = sql\n")
    assert one_line_error(lambda: build_location_store(parsed, environment)) == (
        "x.ini: [location:sql] url: the sql store needs a url"
    )


def test_an_unknown_location_backend_lists_the_choices(environment: StoreEnvironment) -> None:
    parsed = config("[location]\nbackend = nosuch\n")
    message = one_line_error(lambda: build_location_store(parsed, environment))
    assert message.startswith(
        "x.ini: [location] backend: unknown location backend 'nosuch' (available: memory, "
    )
    assert ", sql" in message  # and any installed plugin (redis...)


# -- [policy:NAME] --------------------------------------------------------------------------


def test_policy_options_come_from_its_section() -> None:
    assert build_policy(config("[calls]\npolicy = flow1\n")).flow.name == "flow1"
    parsed = config("[policy:flow4]\nvip_only = yes\n")
    assert one_line_error(lambda: build_policy(parsed)).startswith(
        "x.ini: [policy:flow4] vip_only: unknown key"
    )


def test_an_unknown_policy_is_found_at_start_up_not_by_the_parser() -> None:
    """Checking a policy's name is a start-up check (no config -> calls.policy import)."""
    parsed = config("[calls]\npolicy = flow9\n")
    assert one_line_error(lambda: build_policy(parsed)).startswith(
        "x.ini: [calls] policy: unknown call policy 'flow9' (available: flow1, flow4"
    )


# -- sections of plugins not chosen ---------------------------------------------------------


def test_the_section_of_an_installed_plugin_not_chosen_is_checked(
    environment: StoreEnvironment,
) -> None:
    parsed = config("[store]\nbackend = memory\n[store:sql]\nthreads = many\n")
    assert one_line_error(lambda: check_plugins(parsed, environment)).startswith(
        "x.ini: [store:sql] threads:"
    )


def test_the_section_of_a_plugin_not_installed_is_ignored_with_a_warning(
    environment: StoreEnvironment,
) -> None:
    parsed = config("[store]\nbackend = memory\n[location:nosuch]\nurl = nosuch://x\n")
    [warning] = check_plugins(parsed, environment)
    assert warning.startswith(
        "x.ini: [location:nosuch]: ignored: no location backend"
        " 'nosuch' is installed (available: memory, "
    )


# -- check-config and start-up --------------------------------------------------------------


def test_check_config_runs_the_plugins_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.ini"
    path.write_text(
        BASE + "[store]\nbackend = memory\n[location]\nbackend = memory\n"
        "[location:memory]\ncolour = red\n"
    )
    assert cli.main(["--config", str(path), "check-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: [location:memory] colour: unknown option")
    assert err.count("\n") == 1


def test_check_config_warns_of_sections_of_absent_plugins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.ini"
    path.write_text(BASE + "[store]\nbackend = memory\n[location:nosuch]\nurl = nosuch://x\n")
    assert cli.main(["--config", str(path), "check-config"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"OK: {path}\n"
    assert "[location:nosuch]: ignored" in captured.err


def test_a_bad_plugin_option_stops_the_daemon_with_one_line(tmp_path: Path) -> None:
    from clicktodial.tap import Options, makeService

    path = tmp_path / "d.ini"
    path.write_text(
        BASE + "[store]\nbackend = memory\n[location]\nbackend = memory\n"
        "[location:memory]\ncolour = red\n"
    )
    options = Options()
    options.parseOptions(["--config", str(path)])
    with pytest.raises(SystemExit) as info:
        makeService(options)
    assert str(info.value).startswith(f"{path}: [location:memory] colour: unknown option")


# -- the daemon with users in one store, registrations in another -----------------------------


@implementer(IBindingChangeNotifier)
class NotifyingLocations(MemoryStore):
    """A second location backend that tells of changes (as one shared by daemons would)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listeners: list[Callable[[str], object]] = []

    def subscribe(self, listener: Callable[[str], object]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)


def memory_store(reactor: Any, cls: type[MemoryStore] = MemoryStore) -> Any:
    return cls(
        reactor, realm="example.com", hash_pool=InlineThreadPool(), hasher=cheap_password_hasher()
    )


DAEMON = (
    "[sip]\ndomain = example.com\nlisten = 127.0.0.1:5060\ntransports = udp\n"
    "[web]\nlisten = tcp:8181:interface=127.0.0.1\n"
    "[store]\nbackend = memory\n[location]\nbackend = memory\n"
    "[registrar]\ndigest_algorithms = MD5\n"
)


def test_the_daemon_builds_starts_and_stops_the_location_backend() -> None:
    root = build_service(parse_config(DAEMON, "d.ini"), FakeReactor())
    assert isinstance(root.location, MemoryStore) and root.location is not root.store
    root.startService()
    assert root.started.called
    stopped: list[object] = []
    root.stopService().addCallback(stopped.append)
    assert len(stopped) == 1


def register(cseq: int, authorization: str = "") -> bytes:
    return (
        "REGISTER sip:example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bK-r{cseq}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=f1\r\n"
        "To: <sip:alice@example.com>\r\nCall-ID: reg-1@127.0.0.1\r\n"
        f"CSeq: {cseq} REGISTER\r\nContact: <sip:alice@127.0.0.1:5070>;expires=600\r\n"
        f"{authorization}Content-Length: 0\r\n\r\n"
    ).encode()


def answer(challenge: Response) -> str:
    [first, *_] = challenge.headers.get_all("WWW-Authenticate")
    params = parse_auth_params(first[len("Digest ") :])
    ha1 = compute_ha1("alice", params["realm"], "a-secret", params["algorithm"])
    digest = compute_response(
        ha1,
        params["nonce"],
        "00000001",
        "cn",
        "auth",
        "REGISTER",
        "sip:example.com",
        params["algorithm"],
    )
    return (
        f'Authorization: Digest username="alice", realm="{params["realm"]}",'
        f' nonce="{params["nonce"]}", uri="sip:example.com", response="{digest}",'
        f' algorithm={params["algorithm"]}, cnonce="cn", nc=00000001, qop=auth\r\n'
    )


def test_users_in_the_store_registrations_in_the_location_backend() -> None:
    """A phone authenticates against the [store] users; its binding goes to the [location]
    backend only, which `user list` reads; the daemon subscribes to the location backend's
    change notices (IBindingChangeNotifier) for the web's presence."""
    reactor = FakeReactor()
    reactor.advance(1_700_000_000)
    users = memory_store(reactor)
    locations = memory_store(reactor, NotifyingLocations)
    root = build_service(parse_config(DAEMON, "d.ini"), reactor, store=users, location=locations)
    root.startService()
    success_result_of(users.add_user("alice", sip_password="a-secret"))
    [udp] = reactor.udp_ports

    def send(datagram: bytes) -> Response:
        udp.receive(datagram, "127.0.0.1", 5070)
        [sent] = udp.take()
        response = parse_message(sent[0])
        assert isinstance(response, Response)
        return response

    challenge = send(register(1))
    assert challenge.status == 401
    assert send(register(2, answer(challenge))).status == 200
    now = reactor.seconds()
    [binding] = success_result_of(locations.get_bindings("sip:alice@example.com", now))
    assert binding.contact == "sip:alice@127.0.0.1:5070"
    assert success_result_of(users.all_bindings(now)) == []
    [listing] = success_result_of(admin.list_users(users, now, locations))
    assert [b.contact for b in listing.bindings] == ["sip:alice@127.0.0.1:5070"]
    # The call controller's directory and the web's presence listen to the location store.
    assert len(locations.listeners) == 2
    directory = root.getServiceNamed(CALLS_SERVICE_NAME).controller.locations
    aor = "sip:alice@example.com"
    assert len(success_result_of(directory.get_bindings(aor, now))) == 1
    # Another daemon sharing the location store de-registers alice: the notice drops the
    # directory's cached bindings at once (not after [calls] lookup_cache_seconds).
    success_result_of(locations.remove_all(aor))
    assert len(success_result_of(directory.get_bindings(aor, now))) == 1  # cached
    for listener in locations.listeners:
        listener(aor)
    assert success_result_of(directory.get_bindings(aor, now)) == []
    root.stopService()


def test_a_location_change_notice_refreshes_web_presence_at_once() -> None:
    """RegistrationMonitor.aor_changed reads that AOR's bindings and publishes the change."""
    from clicktodial.web.events import RegistrationMonitor

    reactor = InlineReactor()
    reactor.advance(1_000)
    locations = memory_store(reactor)
    success_result_of(locations.start())
    monitor = RegistrationMonitor(reactor, locations, "example.com", interval=60)
    seen: list[Any] = []
    monitor.subscribe(seen.append)
    # Another daemon sharing the location store registers alice.
    success_result_of(
        locations.update_bindings(
            "sip:alice@example.com",
            BindingChanges("c", 1, [ContactChange("sip:alice@192.0.2.1", 600)]),
            reactor.seconds(),
        )
    )
    assert seen == []
    monitor.aor_changed("sip:alice@example.com")
    [registration] = seen
    assert registration.username == "alice" and registration.registered


def test_reload_names_changed_plugin_options_key_by_key() -> None:
    """SIGHUP compares the [KIND:NAME] sections too: each changed key is named."""
    from clicktodial.reload import changed_settings

    old = config("[location]\nbackend = memory\n[policy:vip]\nlevel = 1\n")
    new = config(
        "[location]\nbackend = sql\n[location:sql]\nurl = sqlite:///x\n[policy:vip]\nlevel = 2\n"
    )
    assert changed_settings(old, new) == [
        "location.backend",
        "location:sql.url",
        "policy:vip.level",
    ]


def test_a_location_backend_that_cannot_start_stops_the_daemon_and_both_stores() -> None:
    from twisted.internet.defer import fail

    from clicktodial.store.errors import StoreUnavailable

    class Unreachable(MemoryStore):
        stopped = False

        def start(self) -> Any:
            return fail(StoreUnavailable("no route to the location store"))

        def stop(self) -> Any:
            self.stopped = True
            return super().stop()

    reactor = FakeReactor()
    users = memory_store(reactor)
    locations = memory_store(reactor, Unreachable)
    root = build_service(parse_config(DAEMON, "d.ini"), reactor, store=users, location=locations)
    root.startService()
    failures: list[Any] = []
    root.started.addErrback(failures.append)
    assert [f.value.args for f in failures] == [("no route to the location store",)]
    assert reactor.udp_ports == []  # the SIP stack never started
    root.stopService()
    assert locations.stopped


def test_db_upgrade_migrates_the_backends_that_declare_a_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`db upgrade`/`db check` use ISchemaManagement: here the [location] sql database of its
    own beside a memory [store]; a configuration with no schema at all is a usage error."""
    url = f"sqlite:///{tmp_path / 'loc.sqlite'}"
    path = tmp_path / "c.ini"
    path.write_text(
        BASE + "[store]\nbackend = memory\n[location]\nbackend = sql\n"
        f"[location:sql]\nurl = {url}\n"
    )
    assert cli.main(["--config", str(path), "db", "check"]) == 1
    assert cli.main(["--config", str(path), "db", "upgrade"]) == 0
    assert cli.main(["--config", str(path), "db", "check"]) == 0
    capsys.readouterr()
    path.write_text(BASE + "[store]\nbackend = memory\n")
    assert cli.main(["--config", str(path), "db", "upgrade"]) == 2
    assert "the 'memory' store backend has no schema to manage" in capsys.readouterr().err


def test_older_store_url_still_reaches_a_store_plugin() -> None:
    """Before [store:NAME], every backend got [store] url: a plugin chosen with it keeps
    getting it (unless its own section gives one)."""
    parsed = config("[store]\nbackend = example\nurl = example://here\n")
    assert parsed.plugins.options("store", "example") == {"url": "example://here"}
    assert store_options(parsed) == {"url": "example://here"}
    parsed = config(
        "[store]\nbackend = example\nurl = example://here\n[store:example]\nurl = example://there\n"
    )
    assert store_options(parsed) == {"url": "example://there"}


def test_check_config_finds_a_cluster_bus_the_store_cannot_carry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.ini"
    path.write_text(BASE + "[store]\nbackend = memory\n[cluster]\nbus = postgres\n")
    assert cli.main(["--config", str(path), "check-config"]) == 2
    assert capsys.readouterr().err == (
        f"{path}: [cluster] bus: postgres needs a store backend providing IClusterStorage"
        " (the sql backend on PostgreSQL); [store] backend = memory does not\n"
    )


def test_a_config_with_plugin_sections_stays_frozen_and_hashable() -> None:
    parsed = config("[store:sql]\nthreads = 2\n")
    assert hash(parsed) == hash(config("[store:sql]\nthreads = 3\n"))  # equal hashes allowed
    assert parsed != config("[store:sql]\nthreads = 3\n")
    with pytest.raises(TypeError):
        parsed.plugins.sections["store:sql"]["threads"] = "9"  # type: ignore[index]


def test_a_plugin_failing_in_create_is_one_line_naming_its_section(
    monkeypatch: pytest.MonkeyPatch, environment: StoreEnvironment
) -> None:
    from clicktodial import pluginconfig

    class Broken:
        def create(self, options: Any, environment: Any) -> Any:
            raise KeyError("host")

    monkeypatch.setattr(pluginconfig, "load_location_backend", lambda name: Broken())
    parsed = config("[location]\nbackend = broken\n")
    assert one_line_error(lambda: build_location_store(parsed, environment)) == (
        "x.ini: [location:broken]: the plugin failed to build: KeyError: 'host'"
    )
