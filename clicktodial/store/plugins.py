"""
Store and location backends chosen by name: ``[store] backend = NAME`` and
``[location] backend = NAME``, their options from ``[store:NAME]`` and
``[location:NAME]`` (:mod:`clicktodial.pluginconfig` builds them from a configuration).

The built-in backends are ``memory`` and ``sql`` (for both kinds). Other packages add
backends by declaring an entry point whose value is an object providing
:class:`IStoreBackendFactory` (group ``clicktodial.store_backends``) or
:class:`ILocationBackendFactory` (group ``clicktodial.location_backends``), for example in
``pyproject.toml``::

    [project.entry-points."clicktodial.store_backends"]
    example = "clicktodial_store_example:factory"

They are loaded by the one plugin loader (:mod:`clicktodial.plugins`). An unknown store
backend fails with :class:`UnknownBackend`, which lists the names that exist. Factories and
the stores they build are checked with ``verifyObject`` when loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from argon2 import PasswordHasher
from twisted.internet.interfaces import IReactorTime
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer
from zope.interface.interface import InterfaceClass

from clicktodial.interfaces import (
    ILocationBackend,
    ILocationBackendFactory,
    IStoreBackend,
    IStoreBackendFactory,
)
from clicktodial.plugins import (
    PluginKind,
    PluginLoadError,
    UnknownPlugin,
    load_plugin,
    plugin_names,
    verify_provides,
)
from clicktodial.store.environment import StoreEnvironment, default_thread_pool
from clicktodial.store.errors import StoreConfigError, UnknownBackend

#: The entry point group third-party store backends register in.
ENTRY_POINT_GROUP = "clicktodial.store_backends"

#: The entry point group third-party location backends register in.
LOCATION_ENTRY_POINT_GROUP = "clicktodial.location_backends"


def reject_unknown_options(options: Mapping[str, str], known: frozenset[str], backend: str) -> None:
    """
    :raises StoreConfigError: naming the first key not in ``known``.
    """
    for key in sorted(options):
        if key not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise StoreConfigError(
                f"unknown option {key!r} for store backend {backend!r} (allowed: {allowed})",
                key=key,
            )


def parse_bool(options: Mapping[str, str], key: str, default: bool) -> bool:
    """Read a yes/no option; raise :class:`StoreConfigError` naming ``key``."""
    value = options.get(key)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in ("yes", "true", "on", "1"):
        return True
    if lowered in ("no", "false", "off", "0"):
        return False
    raise StoreConfigError(f"{key} must be yes or no, not {value!r}", key=key)


def parse_int(options: Mapping[str, str], key: str, default: int, lowest: int, highest: int) -> int:
    """Read a bounded integer option; raise :class:`StoreConfigError`."""
    value = options.get(key)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = lowest - 1
    if not lowest <= number <= highest:
        raise StoreConfigError(
            f"{key} must be an integer from {lowest} to {highest}, not {value!r}", key=key
        )
    return number


@implementer(IStoreBackendFactory, ILocationBackendFactory)
class MemoryBackendFactory:
    """
    ``backend = memory``: nothing survives a restart. Its only option, ``url``, is
    ignored (the configuration always has one).
    """

    def create(self, options: Mapping[str, str], environment: StoreEnvironment) -> IStoreBackend:
        from clicktodial.store.memory import MemoryStore

        reject_unknown_options(options, frozenset({"url"}), "memory")
        return MemoryStore(
            environment.reactor,
            realm=environment.realm,
            hash_pool=environment.hash_pool(),
            hasher=environment.password_hasher,
        )


@implementer(IStoreBackendFactory, ILocationBackendFactory)
class SQLBackendFactory:
    """
    ``backend = sql``. Options:
      - ``url`` (required): an SQLAlchemy URL, ``sqlite:///PATH`` or
        ``postgresql+psycopg://USER@HOST/DB``;
      - ``threads``: database threads and connections (default 4), besides the one
        thread and connection of the group commit's batches;
      - ``auto_upgrade``: apply pending migrations at start-up instead of
        refusing to start (default no).
    """

    def create(self, options: Mapping[str, str], environment: StoreEnvironment) -> IStoreBackend:
        from clicktodial.store.sql import SQLStore

        reject_unknown_options(options, frozenset({"url", "threads", "auto_upgrade"}), "sql")
        url = options.get("url", "").strip()
        if not url:
            raise StoreConfigError("the sql store needs a url", key="url")
        threads = parse_int(options, "threads", 4, 1, 64)
        return SQLStore(
            environment.reactor,
            url,
            threadpool=environment.make_thread_pool("clicktodial-db", threads),
            batch_thread=environment.batch_thread("clicktodial-db-batch"),
            hash_pool=environment.hash_pool(),
            realm=environment.realm,
            hasher=environment.password_hasher,
            pool_size=threads,
            auto_upgrade=parse_bool(options, "auto_upgrade", False),
        )


#: Backends that exist without any package metadata (also in a source
#: checkout that was never installed). Plugins cannot replace them.
BUILTIN_BACKENDS: Mapping[str, IStoreBackendFactory] = {
    "memory": MemoryBackendFactory(),
    "sql": SQLBackendFactory(),
}

#: ``[store] backend = NAME``, options from ``[store:NAME]``.
STORE_BACKENDS = PluginKind(
    kind="store",
    description="store backend",
    group=ENTRY_POINT_GROUP,
    interface=IStoreBackendFactory,
    builtins=BUILTIN_BACKENDS,
)

#: The built-in location backends: the built-in store backends, keeping only bindings (a
#: store of their own, e.g. ``[location] backend = memory`` beside ``[store] backend = sql``).
BUILTIN_LOCATION_BACKENDS: Mapping[str, ILocationBackendFactory] = {
    "memory": MemoryBackendFactory(),
    "sql": SQLBackendFactory(),
}

#: ``[location] backend = NAME``, options from ``[location:NAME]``.
LOCATION_BACKENDS = PluginKind(
    kind="location",
    description="location backend",
    group=LOCATION_ENTRY_POINT_GROUP,
    interface=ILocationBackendFactory,
    builtins=BUILTIN_LOCATION_BACKENDS,
)


def available_backends() -> list[str]:
    """The names ``[store] backend`` may take, sorted."""
    return plugin_names(STORE_BACKENDS)


def available_location_backends() -> list[str]:
    """The names ``[location] backend`` may take, sorted."""
    return plugin_names(LOCATION_BACKENDS)


def _load(kind: PluginKind, name: str) -> object:
    try:
        return load_plugin(kind, name)
    except UnknownPlugin as e:
        if kind is STORE_BACKENDS:
            raise UnknownBackend(name, e.available) from None
        raise StoreConfigError(str(e), key="backend") from None
    except PluginLoadError as e:
        raise StoreConfigError(str(e), key="backend") from e


def load_backend(name: str) -> IStoreBackendFactory:
    """
    Find the backend factory called ``name``.

    :raises UnknownBackend: if there is none (listing those that exist).
    :raises StoreConfigError: if the plugin fails to load or does not
        provide :class:`IStoreBackendFactory`.
    """
    return cast(IStoreBackendFactory, _load(STORE_BACKENDS, name))


def load_location_backend(name: str) -> ILocationBackendFactory:
    """
    Find the location backend factory called ``name``.

    :raises StoreConfigError: (key ``backend``) there is none (listing those that exist),
        or it fails to load or does not provide :class:`ILocationBackendFactory`.
    """
    return cast(ILocationBackendFactory, _load(LOCATION_BACKENDS, name))


def create_location_store(
    name: str, options: Mapping[str, str], environment: StoreEnvironment
) -> ILocationBackend:
    """
    Build the (not yet started) location store ``[location] backend = name`` asks for.

    :param options: the ``[location:NAME]`` section.
    :raises StoreConfigError: for an unknown backend or a bad option.
    """
    store = load_location_backend(name).create(options, environment)
    verify_location_store(name, store)
    return store


def create_store(
    name: str, options: Mapping[str, str], environment: StoreEnvironment
) -> IStoreBackend:
    """
    Build the (not yet started) store the ``[store]`` section asks for.

    :param name: the ``backend`` value.
    :param options: the section's other keys.
    :raises StoreConfigError: for an unknown backend or a bad option.
    """
    factory = load_backend(name)
    store = factory.create(options, environment)
    verify_store(name, store)
    return store


def verify_store(name: str, store: object) -> None:
    """:raises StoreConfigError: the store built by backend ``name`` lacks IStoreBackend."""
    _verify(STORE_BACKENDS, name, IStoreBackend, store)


def verify_location_store(name: str, store: object) -> None:
    """:raises StoreConfigError: the store built by location backend ``name`` lacks
    ILocationBackend."""
    _verify(LOCATION_BACKENDS, name, ILocationBackend, store)


def _verify(kind: PluginKind, name: str, interface: InterfaceClass, candidate: object) -> None:
    try:
        verify_provides(kind, name, candidate, interface, "built a store that")
    except PluginLoadError as e:
        raise StoreConfigError(str(e), key="backend") from e


def store_from_config(
    config: Any,
    reactor: IReactorTime,
    make_thread_pool: Callable[[str, int], ThreadPool] = default_thread_pool,
    password_hasher: PasswordHasher | None = None,
) -> IStoreBackend:
    """
    Build the (not yet started) store a parsed configuration (:class:`clicktodial.config.Config`)
    asks for: backend ``config.store.backend``, realm ``config.sip.domain``.

    :raises StoreConfigError: for an unknown backend or a bad option.
    """
    from clicktodial.pluginconfig import store_options

    environment = StoreEnvironment(
        reactor=reactor,
        realm=config.sip.domain,
        make_thread_pool=make_thread_pool,
        password_hasher=password_hasher,
    )
    return create_store(config.store.backend, store_options(config), environment)
