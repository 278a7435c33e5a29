"""
The one plugin loader, for every kind of plugin.

A kind (:class:`PluginKind`) is an INI section prefix, an ``importlib.metadata`` entry point
group, the zope interface the entry point's object must provide, and the built-in plugins that
exist without any package metadata (they cannot be replaced by a plugin of the same name):

=========  ===============================  =========================  ======================
kind       entry point group                object provides            chosen by
=========  ===============================  =========================  ======================
store      ``clicktodial.store_backends``     ``IStoreBackendFactory``     ``[store] backend``
location   ``clicktodial.location_backends``  ``ILocationBackendFactory``  ``[location] backend``
policy     ``clicktodial.call_policies``      ``ICallPolicyFactory``       ``[calls] policy``
=========  ===============================  =========================  ======================

The kinds themselves are declared next to their built-ins (:mod:`clicktodial.store.plugins`,
:mod:`clicktodial.calls.policy`). A plugin's options are the keys of its ``[KIND:NAME]``
section (:class:`clicktodial.config.PluginSections`). Loading verifies the object with
``verifyObject``; a plugin that fails to import or to verify is reported by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points

import attrs
from twisted.logger import Logger
from zope.interface.exceptions import Invalid
from zope.interface.interface import InterfaceClass
from zope.interface.verify import verifyObject

__all__ = ["PluginKind", "PluginLoadError", "UnknownPlugin", "load_plugin", "plugin_names"]

log = Logger(namespace="clicktodial.plugins")


@attrs.frozen
class PluginKind:
    """
    One kind of plugin.

    :ivar kind: the INI section prefix (``store`` for ``[store:sql]``).
    :ivar description: what one is called in messages (``store backend``).
    :ivar group: the entry point group plugins of this kind register in.
    :ivar interface: what the entry point's object provides (a factory).
    :ivar builtins: the plugins that exist without package metadata, by name.
    """

    kind: str
    description: str
    group: str
    interface: InterfaceClass
    builtins: Mapping[str, object]


class UnknownPlugin(ValueError):
    """No plugin of a kind has the name; the message lists those that exist."""

    def __init__(self, kind: PluginKind, name: str, available: list[str]) -> None:
        super().__init__(
            f"unknown {kind.description} {name!r} (available: {', '.join(available) or 'none'})"
        )
        self.kind = kind
        self.name = name
        self.available = available


class PluginLoadError(ValueError):
    """A plugin exists but fails to import, or its object does not provide the interface."""

    def __init__(self, kind: PluginKind, name: str, problem: str) -> None:
        super().__init__(f"{kind.description} {name!r} {problem}")
        self.kind = kind
        self.name = name


def _entry_points(kind: PluginKind) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for entry_point in entry_points(group=kind.group):
        if entry_point.name in kind.builtins:
            log.warn(
                "ignoring {description} plugin {value}: the name {name} is built in",
                description=kind.description,
                value=entry_point.value,
                name=entry_point.name,
            )
            continue
        found[entry_point.name] = entry_point
    return found


def plugin_names(kind: PluginKind) -> list[str]:
    """The names a plugin of ``kind`` may be chosen by, sorted: built-ins and installed."""
    return sorted(set(kind.builtins) | set(_entry_points(kind)))


def load_plugin(kind: PluginKind, name: str) -> object:
    """
    The object (a factory providing ``kind.interface``) of the plugin ``name``.

    :raises UnknownPlugin: there is none.
    :raises PluginLoadError: it fails to import or does not provide ``kind.interface``.
    """
    if name in kind.builtins:
        return kind.builtins[name]
    plugins = _entry_points(kind)
    if name not in plugins:
        raise UnknownPlugin(kind, name, plugin_names(kind))
    entry_point = plugins[name]
    try:
        factory = entry_point.load()
    except Exception as e:
        raise PluginLoadError(kind, name, f"({entry_point.value}) failed to load: {e}") from e
    verify_provides(kind, name, factory, kind.interface, f"({entry_point.value})")
    return factory


def verify_provides(
    kind: PluginKind, name: str, candidate: object, interface: InterfaceClass, what: str
) -> None:
    """
    :raises PluginLoadError: ``candidate`` (``what``, e.g. "the store it built") does not
        provide ``interface``.
    """
    try:
        verifyObject(interface, candidate)
    except Invalid as e:
        raise PluginLoadError(
            kind, name, f"{what} does not provide {interface.__name__}: {e}"
        ) from e
