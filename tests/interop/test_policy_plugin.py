"""
A call-control policy from another package: install the example policy plugin, select it by
name in ``[calls] policy`` and check what it allows.

Installed offline (``--no-deps --no-build-isolation --no-index``) into a scratch ``--target``
directory put on ``sys.path`` for this module's tests only (as tests/interop/test_store_plugin.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from plugintools import installed  # type: ignore[import-not-found]
from zope.interface.verify import verifyObject

from clicktodial.calls.policy import (
    CallRefused,
    CallRequest,
    available_policies,
    create_policy,
)
from clicktodial.config import parse_config
from clicktodial.interfaces import ICallPolicy
from clicktodial.store.values import User

pytestmark = pytest.mark.interop

MODULE = "clicktodial_policy_example"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example package, installed for the duration of this module's tests."""
    scratch = tmp_path_factory.mktemp("policy-plugin")
    with installed("clicktodial-policy-example", MODULE, scratch) as target:
        yield target


def request(caller: User, callee: User, total: int = 0) -> CallRequest:
    return CallRequest(caller, callee, caller_calls=0, callee_calls=0, total_calls=total)


def test_installed_policy_is_listed_and_chosen_by_name(installed_example: Path) -> None:
    assert "vip" in available_policies()
    config = parse_config("[sip]\ndomain = 127.0.0.1\n[calls]\npolicy = vip\n", "x.ini")
    policy = create_policy(config.calls)
    assert verifyObject(ICallPolicy, policy)
    assert policy.name == "vip"


def test_example_policy_lets_only_admins_call_vips_and_keeps_the_limits(
    installed_example: Path,
) -> None:
    config = parse_config(
        "[sip]\ndomain = 127.0.0.1\n[calls]\npolicy = vip\nmax_calls_total = 2\n", "x.ini"
    )
    policy = create_policy(config.calls)
    alice, boss, vip = User("alice"), User("boss", is_admin=True), User("vip-carol")
    with pytest.raises(CallRefused) as refused:
        policy.authorize(request(alice, vip))
    assert refused.value.reason == "forbidden"
    policy.authorize(request(boss, vip))
    policy.authorize(request(alice, boss))
    with pytest.raises(CallRefused) as limited:
        policy.authorize(request(boss, vip, total=2))
    assert limited.value.reason == "total-limit"


def test_a_policy_option_the_plugin_refuses_is_one_line_naming_its_section_and_key(
    installed_example: Path,
) -> None:
    """[policy:vip] reaches the plugin's factory; a key it refuses stops start-up with one
    line naming file, section and key."""
    from clicktodial.config import ConfigError
    from clicktodial.pluginconfig import build_policy

    config = parse_config(
        "[sip]\ndomain = 127.0.0.1\n[calls]\npolicy = vip\n[policy:vip]\nvips = carol\n", "x.ini"
    )
    with pytest.raises(ConfigError) as error:
        build_policy(config)
    assert str(error.value) == (
        "x.ini: [policy:vip] vips: unknown key (the vip policy has no options)"
    )
