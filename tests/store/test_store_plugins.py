"""Choosing a store backend by name: built-ins, entry-point plugins, clear errors."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest

from clicktodial import plugins as plugin_loader
from clicktodial.interfaces import IStoreBackend
from clicktodial.store import plugins
from clicktodial.store.errors import StoreConfigError, UnknownBackend
from clicktodial.store.memory import MemoryStore
from clicktodial.store.plugins import (
    ENTRY_POINT_GROUP,
    MemoryBackendFactory,
    StoreEnvironment,
    available_backends,
    create_store,
    load_backend,
    store_from_config,
)
from clicktodial.store.sql import SQLStore
from clicktodial.testing.fakes import InlineReactor, cheap_password_hasher, inline_thread_pool


@pytest.fixture
def environment() -> StoreEnvironment:
    return StoreEnvironment(
        InlineReactor(), "example.com", inline_thread_pool, cheap_password_hasher()
    )


class WrappedMemoryFactory:
    """A plugin factory (provides IStoreBackendFactory through MemoryBackendFactory)."""

    def create(self, options: Any, environment: StoreEnvironment) -> IStoreBackend:
        return MemoryBackendFactory().create(options, environment)


def with_plugins(monkeypatch: pytest.MonkeyPatch, **targets: str) -> None:
    """Pretend installed packages declare these entry points."""
    points = [EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in targets.items()]
    monkeypatch.setattr(
        plugin_loader, "entry_points", lambda group: [p for p in points if p.group == group]
    )


good_factory = MemoryBackendFactory()
not_a_factory = object()


def test_builtin_backends() -> None:
    """memory and sql exist without any package metadata."""
    assert {"memory", "sql"} <= set(available_backends())
    assert isinstance(load_backend("memory"), MemoryBackendFactory)


def test_unknown_backend_lists_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown backend name fails naming every backend that exists, plugins included."""
    with_plugins(monkeypatch, example=f"{__name__}:good_factory")
    with pytest.raises(UnknownBackend) as error:
        load_backend("mongo")
    message = str(error.value)
    assert "'mongo'" in message and "example, memory, sql" in message
    assert error.value.key == "backend"


def test_plugin_loaded_by_name(
    monkeypatch: pytest.MonkeyPatch, environment: StoreEnvironment
) -> None:
    """A backend registered as an entry point is found by its name and verified."""
    with_plugins(monkeypatch, example=f"{__name__}:good_factory")
    assert "example" in available_backends()
    assert load_backend("example") is good_factory
    assert isinstance(create_store("example", {}, environment), MemoryStore)


def test_plugin_that_is_not_a_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry point whose object does not provide IStoreBackendFactory is refused."""
    with_plugins(monkeypatch, broken=f"{__name__}:not_a_factory")
    with pytest.raises(StoreConfigError, match="IStoreBackendFactory"):
        load_backend("broken")


def test_plugin_that_fails_to_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin whose module cannot be imported fails with its name and the reason."""
    with_plugins(monkeypatch, gone="clicktodial_no_such_module:factory")
    with pytest.raises(StoreConfigError, match="'gone'.*failed to load"):
        load_backend("gone")


def test_plugin_cannot_replace_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin registered under a built-in name is ignored."""
    with_plugins(monkeypatch, sql=f"{__name__}:not_a_factory")
    assert load_backend("sql") is plugins.BUILTIN_BACKENDS["sql"]


def test_store_must_provide_backend_interface(
    monkeypatch: pytest.MonkeyPatch, environment: StoreEnvironment
) -> None:
    """A factory whose store lacks part of IStoreBackend is refused at creation."""

    class Incomplete:
        def create(self, options: Any, environment: StoreEnvironment) -> Any:
            return object()

    from zope.interface import directlyProvides

    from clicktodial.interfaces import IStoreBackendFactory

    factory = Incomplete()
    directlyProvides(factory, IStoreBackendFactory)
    monkeypatch.setattr(plugins, "load_backend", lambda name: factory)
    with pytest.raises(StoreConfigError, match="IStoreBackend"):
        create_store("incomplete", {}, environment)


def test_memory_backend_options(environment: StoreEnvironment) -> None:
    """The memory backend ignores url and refuses any other option, naming it."""
    assert isinstance(create_store("memory", {"url": "sqlite:///x"}, environment), MemoryStore)
    with pytest.raises(StoreConfigError) as error:
        create_store("memory", {"size": "3"}, environment)
    assert error.value.key == "size"


def test_sql_backend_options(environment: StoreEnvironment, tmp_path: Any) -> None:
    """The sql backend needs a url and checks threads and auto_upgrade."""
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    assert isinstance(
        create_store("sql", {"url": url, "threads": "2", "auto_upgrade": "yes"}, environment),
        SQLStore,
    )
    for options, key in [
        ({}, "url"),
        ({"url": url, "threads": "0"}, "threads"),
        ({"url": url, "threads": "many"}, "threads"),
        ({"url": url, "auto_upgrade": "perhaps"}, "auto_upgrade"),
        ({"url": url, "pool": "1"}, "pool"),
    ]:
        with pytest.raises(StoreConfigError) as error:
            create_store("sql", options, environment)
        assert error.value.key == key


def test_store_from_config(tmp_path: Any) -> None:
    """The parsed configuration picks the backend, its url and the realm ([sip] domain)."""
    from clicktodial.config import parse_config

    config = parse_config(
        "[sip]\ndomain = Example.org\n[store]\nbackend = sql\n"
        f"url = sqlite:///{tmp_path / 'c.sqlite'}\n",
        "test.ini",
    )
    store = store_from_config(config, InlineReactor(), inline_thread_pool, cheap_password_hasher())
    assert isinstance(store, SQLStore)
    assert store.realm == config.sip.domain
