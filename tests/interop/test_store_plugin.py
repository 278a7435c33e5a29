"""
A store backend from another package: install the example plugin package, select it by name
and run the store contracts on it.

The package is pip-installed offline (``--no-deps --no-build-isolation --no-index``) into a
scratch ``--target`` directory put on ``sys.path``; removing that directory from ``sys.path``
afterwards uninstalls it, without touching the environment other tests run in.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from plugintools import installed  # type: ignore[import-not-found]

from clicktodial.interfaces import IStoreBackend
from clicktodial.store.plugins import StoreEnvironment, available_backends, create_store
from clicktodial.testing.contracts import LocationStoreContract, UserStoreContract
from clicktodial.testing.fakes import InlineReactor, inline_thread_pool, success_result_of

pytestmark = pytest.mark.interop

MODULE = "clicktodial_store_example"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example package, installed for the duration of this module's tests."""
    scratch = tmp_path_factory.mktemp("store-plugin")
    with installed("clicktodial-store-example", MODULE, scratch) as target:
        yield target


def test_plugin_is_listed_once_installed(installed_example: Path) -> None:
    """An installed package's entry point adds its backend name to the choices."""
    assert "example" in available_backends()
    assert {"memory", "sql"} <= set(available_backends())


def test_config_selects_plugin_by_name(installed_example: Path) -> None:
    """[store] backend = example builds the plugin's store, which then serves REGISTERs."""
    from clicktodial.config import parse_config
    from clicktodial.store.plugins import store_from_config
    from clicktodial.store.values import BindingChanges, ContactChange

    config = parse_config("[sip]\ndomain = example.com\n[store]\nbackend = example\n", "t.ini")
    store = store_from_config(config, InlineReactor(), inline_thread_pool)
    assert type(store).__module__ == MODULE
    success_result_of(store.start())
    success_result_of(
        store.update_bindings(
            "sip:alice@example.com",
            BindingChanges("c", 1, [ContactChange("sip:alice@127.0.0.1", 60)]),
            0.0,
        )
    )
    assert store.registers == 1  # type: ignore[attr-defined]
    success_result_of(store.stop())


class TestExamplePluginContract(UserStoreContract, LocationStoreContract):
    """The example plugin keeps the user and location store contracts."""

    def make_store(
        self, environment: StoreEnvironment, request: pytest.FixtureRequest
    ) -> IStoreBackend:
        request.getfixturevalue("installed_example")
        return create_store("example", {}, environment)
