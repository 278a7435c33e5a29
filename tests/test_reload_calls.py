"""SIGHUP on the whole daemon (built on a fake reactor): the [calls] policy is reloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.logger import LogLevel, globalLogPublisher

from clicktodial.calls import policy as policy_module
from clicktodial.config import load_config
from clicktodial.reload import LIVE_SETTINGS, ConfigReloader
from clicktodial.service import DaemonService, build_service
from clicktodial.testing.transport import FakeReactor

BASE = "[sip]\ndomain = 127.0.0.1\n[store]\nbackend = memory\n"


def daemon(tmp_path: Path, text: str) -> tuple[DaemonService, ConfigReloader, Path]:
    """The daemon and its reloader, composed as clicktodial.tap composes them."""
    path = tmp_path / "daemon.ini"
    path.write_text(text)
    config = load_config(str(path))
    root = build_service(config, FakeReactor())
    operations = root.operations
    assert operations is not None
    reloader = ConfigReloader(
        str(path),
        config,
        root.reload_hooks,
        live=LIVE_SETTINGS | operations.live_settings,
        checks=operations.reload_checks,
    )
    return root, reloader, path


def reload_logged(reloader: ConfigReloader) -> tuple[bool, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        result = reloader.reload()
    finally:
        globalLogPublisher.removeObserver(events.append)
    return result, events


def controller(root: DaemonService) -> Any:
    return root.getServiceNamed("calls").controller  # type: ignore[attr-defined]


def test_sighup_swaps_the_calls_policy_and_names_only_restart_settings(tmp_path: Path) -> None:
    root, reloader, path = daemon(tmp_path, BASE)
    assert controller(root).policy.settings.max_calls_total == 0
    path.write_text(
        BASE + "[calls]\npolicy = flow1\nmax_calls_total = 1\nring_timeout = 20\nringback = us\n"
    )
    ok, events = reload_logged(reloader)
    assert ok
    policy = controller(root).policy
    assert (policy.name, policy.settings.max_calls_total) == ("flow1", 1)
    assert controller(root).settings.ring_timeout == 20
    [later] = [e for e in events if "next restart" in e.get("log_format", "")]
    assert later["settings"] == "calls.ringback"


def test_a_policy_refused_on_reload_keeps_the_whole_running_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new configuration that loads but whose [calls] policy cannot be built is refused
    before anything is applied: one line naming file, section and key; the old policy and
    the old [limits] stay."""
    root, reloader, path = daemon(tmp_path, BASE)
    old_policy = controller(root).policy
    operations = root.operations
    assert operations is not None
    old_limits = operations.admission.limits
    real_create = policy_module.create_policy

    def refuse_flow1(settings: Any, options: Any = None) -> Any:
        if settings.policy == "flow1":
            raise ValueError("flow1 is switched off here")
        return real_create(settings, options)

    monkeypatch.setattr(policy_module, "create_policy", refuse_flow1)
    path.write_text(BASE + "[calls]\npolicy = flow1\n[limits]\nretry_after = 17\n")
    ok, events = reload_logged(reloader)
    assert not ok
    [error] = [e for e in events if e.get("log_level") == LogLevel.error]
    assert error["error"] == (
        f"{path}: [calls] policy: cannot build policy 'flow1': flow1 is switched off here"
    )
    assert controller(root).policy is old_policy
    assert operations.admission.limits is old_limits
    assert reloader.config.calls.policy == "flow4"
