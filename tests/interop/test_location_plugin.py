"""
A location backend from another package: install the example location plugin, keep
registrations in it with ``[location] backend = example`` (users stay in the memory store),
run the location store contract on it, and check its options are validated like the daemon's
own: one line naming file, section and key.

Installed offline into a scratch ``--target`` directory put on ``sys.path`` (as
``test_store_plugin.py`` does), without touching the environment other tests run in.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plugintools import installed  # type: ignore[import-not-found]

from clicktodial import cli
from clicktodial.config import ConfigError, parse_config
from clicktodial.interfaces import IBindingChangeNotifier, ILocationBackend
from clicktodial.pluginconfig import build_location_store, check_plugins
from clicktodial.store.plugins import StoreEnvironment, available_location_backends
from clicktodial.store.values import BindingChanges, ContactChange
from clicktodial.testing.contracts import LocationStoreContract
from clicktodial.testing.fakes import (
    InlineReactor,
    cheap_password_hasher,
    inline_thread_pool,
    success_result_of,
)

pytestmark = pytest.mark.interop

MODULE = "clicktodial_location_example"
BASE = "[sip]\ndomain = example.com\n[store]\nbackend = memory\n[location]\nbackend = example\n"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example package, installed for the duration of this module's tests."""
    scratch = tmp_path_factory.mktemp("location-plugin")
    with installed("clicktodial-location-example", MODULE, scratch) as target:
        yield target


def environment() -> StoreEnvironment:
    return StoreEnvironment(
        InlineReactor(), "example.com", inline_thread_pool, cheap_password_hasher()
    )


def test_installed_location_backend_is_listed_and_chosen_by_name(installed_example: Path) -> None:
    assert "example" in available_location_backends()
    config = parse_config(BASE + "[location:example]\nmax_aors = 2\n", "x.ini")
    store: Any = build_location_store(config, environment())
    assert type(store).__module__ == MODULE and store.max_aors == 2
    notices: list[str] = []
    IBindingChangeNotifier(store).subscribe(notices.append)
    success_result_of(store.start())
    success_result_of(
        store.update_bindings(
            "sip:alice@example.com",
            BindingChanges("c", 1, [ContactChange("sip:alice@127.0.0.1", 60)]),
            0.0,
        )
    )
    assert notices == ["sip:alice@example.com"]
    success_result_of(store.stop())


def test_a_bad_option_is_one_line_naming_file_section_and_key(
    installed_example: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = parse_config(BASE + "[location:example]\nmax_aors = none\n", "x.ini")
    with pytest.raises(ConfigError) as info:
        check_plugins(config, environment())
    assert str(info.value) == (
        "x.ini: [location:example] max_aors: max_aors must be an integer from 1 to"
        " 10000000, not 'none'"
    )
    path = tmp_path / "c.ini"
    path.write_text(BASE + "[location:example]\ncolour = red\n")
    assert cli.main(["--config", str(path), "check-config"]) == 2
    assert capsys.readouterr().err.startswith(
        f"{path}: [location:example] colour: unknown option 'colour'"
    )


class TestExampleLocationContract(LocationStoreContract):
    """The example plugin keeps the location store contract, on its own."""

    def make_location_store(
        self, environment: StoreEnvironment, request: pytest.FixtureRequest
    ) -> ILocationBackend:
        request.getfixturevalue("installed_example")
        config = parse_config(BASE, "x.ini")
        store = build_location_store(config, environment)
        assert store is not None
        return store
