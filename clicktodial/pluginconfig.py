"""
The plugins a configuration chooses, built at start-up: the ``[store]`` backend, the
``[location]`` backend and the ``[calls]`` policy, each with the options of its ``[KIND:NAME]``
section. The daemon (:mod:`clicktodial.service`), the administration commands and
``check-config`` build them here, so they validate a configuration the same way.

The plugin validates its options (a factory raises
:class:`~clicktodial.errors.PluginConfigError`, or
:class:`~clicktodial.store.errors.StoreConfigError`, naming the key); this module turns that
into the one-line :class:`~clicktodial.config.ConfigError` ``FILE: [KIND:NAME] KEY: PROBLEM``.
An unknown plugin name is reported on the key choosing it (``[store] backend``,
``[location] backend``, ``[calls] policy``) with the names that exist.

A ``[KIND:NAME]`` section of a plugin that is not chosen is validated all the same when that
plugin exists (a typo is found before the day it is chosen); one whose plugin does not exist
(not installed here) is ignored with a warning, so one file can serve machines with different
plugins installed.

``[store] url`` and ``auto_upgrade`` are the ``sql`` backend's ``url`` and ``auto_upgrade``
given the older way: they reach the ``sql`` backend as if given in ``[store:sql]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.logger import Logger

from clicktodial.calls.policy import CALL_POLICIES, UnknownPolicy, load_policy
from clicktodial.config import Config, ConfigError
from clicktodial.errors import PluginConfigError
from clicktodial.interfaces import ICallPolicy, ILocationBackend, IStoreBackend
from clicktodial.plugins import PluginKind, plugin_names
from clicktodial.store.plugins import (
    LOCATION_BACKENDS,
    STORE_BACKENDS,
    StoreEnvironment,
    load_backend,
    load_location_backend,
    verify_location_store,
    verify_store,
)
from clicktodial.trunks.config import trunk_configs

__all__ = [
    "build_location_store",
    "build_policy",
    "build_store",
    "check_plugins",
    "check_unchosen_sections",
    "log_plugin_warnings",
    "store_options",
]

log = Logger(namespace="clicktodial.pluginconfig")

F = TypeVar("F")
T = TypeVar("T")

#: What chooses a plugin of each kind: (section, key).
_CHOSEN_BY = {
    "store": ("store", "backend"),
    "location": ("location", "backend"),
    "policy": ("calls", "policy"),
}


def store_options(config: Config, name: str | None = None) -> dict[str, str]:
    """
    The options the store backend ``name`` (default: ``[store] backend``) gets: its
    ``[store:NAME]`` section; for ``sql``, with ``url`` and ``auto_upgrade`` of ``[store]``.
    """
    if name is None:
        name = config.store.backend
    options = config.plugins.options("store", name)
    if name == "sql":
        url = config.store.url
        options["url"] = url.render_as_string(hide_password=False)
        options.pop("auto_upgrade", None)
        if config.store.auto_upgrade:
            options["auto_upgrade"] = "yes"
    return options


def _option_error(config: Config, kind: str, name: str, error: PluginConfigError) -> ConfigError:
    key = error.key
    section = f"{kind}:{name}"
    if (
        (kind, name) == ("store", "sql")
        and key in ("url", "auto_upgrade")
        and (key not in config.plugins.options("store", "sql"))
    ):
        section = "store"  # given the older way
    return ConfigError(config.source, str(error), section, key)


def _chosen_error(config: Config, kind: str, error: Exception) -> ConfigError:
    section, key = _CHOSEN_BY[kind]
    return ConfigError(config.source, str(error), section, key)


def _build(
    config: Config,
    kind: str,
    name: str,
    load: Callable[[str], F],
    create: Callable[[F], T],
    verify: Callable[[str, T], None] | None = None,
    *,
    chosen: bool = True,
) -> T:
    """
    Load plugin ``name`` of ``kind``, build it with its options, verify what it built. A
    plugin that is unknown, fails to load or builds the wrong thing is reported on the key
    choosing it (``chosen``) or on its own section; a refused option on its section and key.
    """
    try:
        factory = load(name)
    except (UnknownPolicy, PluginConfigError) as e:
        if chosen:
            raise _chosen_error(config, kind, e) from None
        raise ConfigError(config.source, str(e), f"{kind}:{name}") from None
    try:
        built = create(factory)
    except PluginConfigError as e:
        raise _option_error(config, kind, name, e) from None
    except Exception as e:
        # A bug in the plugin, not in the file: still one line, naming the plugin.
        raise ConfigError(
            config.source,
            f"the plugin failed to build: {type(e).__name__}: {e}",
            f"{kind}:{name}",
        ) from e
    if verify is not None:
        try:
            verify(name, built)
        except PluginConfigError as e:
            raise _chosen_error(config, kind, e) from None
    return built


def build_store(config: Config, environment: StoreEnvironment) -> IStoreBackend:
    """
    The (not yet started) store ``[store] backend`` names, with its options.

    :raises ConfigError: an unknown backend, one that fails to load, or a bad option.
    """
    name = config.store.backend
    return _build(
        config,
        "store",
        name,
        load_backend,
        lambda factory: factory.create(store_options(config, name), environment),
        verify_store,
    )


def build_location_store(config: Config, environment: StoreEnvironment) -> ILocationBackend | None:
    """
    The (not yet started) location store ``[location] backend`` names, with the options of
    ``[location:NAME]``; :data:`None` when it names none (the store keeps the bindings).

    :raises ConfigError: an unknown backend, one that fails to load, or a bad option.
    """
    name = config.location.backend
    if not name:
        return None
    options = config.plugins.options("location", name)
    return _build(
        config,
        "location",
        name,
        load_location_backend,
        lambda factory: factory.create(options, environment),
        verify_location_store,
    )


def build_policy(config: Config) -> ICallPolicy:
    """
    The policy ``[calls] policy`` names, built with ``[calls]`` and ``[policy:NAME]``.

    :raises ConfigError: an unknown policy, one that fails to load, or a bad option.
    """
    name = config.calls.policy
    options = config.plugins.options("policy", name)
    return _build(
        config, "policy", name, load_policy, lambda factory: factory.create(config.calls, options)
    )


def _installed(kind: PluginKind, name: str) -> bool:
    return name in plugin_names(kind)


def check_plugins(config: Config, environment: StoreEnvironment) -> list[str]:
    """
    Validate every plugin choice and every ``[KIND:NAME]`` section of an existing plugin (and
    every ``[trunk:NAME]``), and
    that the store provides what ``[cluster] bus = postgres`` needs, by building the plugins
    (nothing is started: building connects to nothing) and dropping them. ``check-config``
    runs this; the daemon builds the same plugins at start-up.

    :return: warnings, one line each: sections of plugins that do not exist here.
    :raises ConfigError: the first problem.
    """
    from clicktodial.cluster.service import cluster_storage

    cluster_storage(config, build_store(config, environment))
    build_location_store(config, environment)
    build_policy(config)
    trunk_configs(config)  # the [trunk:NAME] sections (clicktodial.trunks)
    return check_unchosen_sections(config, environment)


def check_unchosen_sections(config: Config, environment: StoreEnvironment) -> list[str]:
    """
    Validate the ``[KIND:NAME]`` sections of the plugins not chosen (see the module).

    :return: warnings, one line each: sections of plugins that do not exist here.
    :raises ConfigError: the first problem.
    """
    warnings = []
    kinds = {"store": STORE_BACKENDS, "location": LOCATION_BACKENDS, "policy": CALL_POLICIES}
    chosen = {
        "store": config.store.backend,
        "location": config.location.backend,
        "policy": config.calls.policy,
    }
    for kind_name, kind in kinds.items():
        for name in config.plugins.names(kind_name):
            if name == chosen[kind_name]:
                continue  # built above
            if not _installed(kind, name):
                warnings.append(
                    f"{config.source}: [{kind_name}:{name}]: ignored: no {kind.description}"
                    f" {name!r} is installed (available: {', '.join(plugin_names(kind))})"
                )
                continue
            _check_unchosen(config, kind_name, name, environment)
    return warnings


def _check_unchosen(config: Config, kind: str, name: str, environment: StoreEnvironment) -> None:
    options = config.plugins.options(kind, name)
    if kind == "store":
        _build(
            config,
            kind,
            name,
            load_backend,
            lambda factory: factory.create(store_options(config, name), environment),
            chosen=False,
        )
    elif kind == "location":
        _build(
            config,
            kind,
            name,
            load_location_backend,
            lambda factory: factory.create(options, environment),
            chosen=False,
        )
    else:
        _build(
            config,
            kind,
            name,
            load_policy,
            lambda factory: factory.create(config.calls, options),
            chosen=False,
        )


def log_plugin_warnings(warnings: list[str]) -> None:
    """Log what :func:`check_plugins` warned about (the daemon at start-up)."""
    for warning in warnings:
        log.warn("{warning}", warning=warning)
