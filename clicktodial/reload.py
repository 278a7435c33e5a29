"""
``SIGHUP``: re-read the configuration file and apply what can change while running.

What changes live: ``[log] level``, ``[limits]``, ``[daemon] shutdown_grace``, and whatever a
component applies in its reload hook (the call controller's ``reload(config)`` for the
``[calls]`` policy, its limits and timers: new calls follow them, calls in progress keep theirs).
Anything else that changed (listen addresses, the store, the SIP domain...) is named in a
warning: it takes effect at the next restart. Calls and registrations are untouched.

A configuration that does not load is logged with its one-line message and the running
configuration stays. So is one that loads but that a component refuses in its check (run
before any hook applies anything; e.g. a ``[calls] policy`` plugin that cannot be built with
the new settings): checks raise :class:`ReloadRefused` naming the section and key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
from twisted.logger import Logger
from zope.interface import Attribute, Interface

from clicktodial.config import (
    Config,
    ConfigError,
    ini_section_name,
    load_config,
    section_names,
)

__all__ = [
    "LIVE_SETTINGS",
    "ConfigReloader",
    "ICallsReload",
    "ReloadHook",
    "ReloadRefused",
    "changed_settings",
]

log = Logger(namespace="clicktodial.reload")

#: A component's reload hook: gets the new configuration, applies what it can.
ReloadHook = Callable[[Config], object]

#: Sections (or ``section.key``) applied live by the daemon's own hooks (``[dialplan]``: the
#: web's Dialler). ``[calls]`` keys are applied by the call controller's hook (``live`` of
#: ConfigReloader).
LIVE_SETTINGS = frozenset(["log.level", "limits", "daemon.shutdown_grace", "dialplan"])


class ICallsReload(Interface):
    """
    A call controller that applies ``[calls]`` on SIGHUP (its policy, limits and timers):
    :func:`clicktodial.operations.install_operations` adapts the controller to it and, when
    it is provided, checks the new policy can be built and registers :meth:`reload` as a hook.
    """

    RELOADED_SETTINGS = Attribute("The ``[calls]`` keys reload applies: frozenset[str].")

    def reload(config: Config) -> None:
        """Apply ``config``'s ``[calls]`` to new calls; raise and change nothing if it cannot."""


class ReloadRefused(Exception):
    """A reload check refuses the new configuration: ``[section] key: problem``."""

    def __init__(self, section: str, key: str | None, problem: str) -> None:
        super().__init__(section, key, problem)
        self.section = section
        self.key = key
        self.problem = problem


def changed_settings(old: Config, new: Config) -> list[str]:
    """Every ``section.key`` whose value differs between ``old`` and ``new``."""
    changed = []
    schema = set(section_names())
    for field in attrs.fields(Config):
        name = ini_section_name(field)
        if name not in schema:
            continue  # plugins, source: the plugin sections are compared below
        before, after = getattr(old, field.name), getattr(new, field.name)
        if before == after:
            continue
        for key in attrs.fields(type(before)):
            if getattr(before, key.name) != getattr(after, key.name):
                changed.append(f"{name}.{key.name}")
    # The [KIND:NAME] plugin sections, key by key: "policy:vip.max_vips".
    old_sections, new_sections = old.plugins.sections, new.plugins.sections
    for section in sorted(set(old_sections) | set(new_sections)):
        before_keys = old_sections.get(section, {})
        after_keys = new_sections.get(section, {})
        for key in sorted(set(before_keys) | set(after_keys)):
            if before_keys.get(key) != after_keys.get(key):
                changed.append(f"{section}.{key}")
    return changed


def _is_live(setting: str, live: frozenset[str]) -> bool:
    section = setting.split(".", 1)[0]
    # "policy:" in live: every [policy:NAME] section is
    return setting in live or section in live or section.split(":", 1)[0] + ":" in live


class ConfigReloader:
    """
    Reloads the configuration file at ``path`` and runs the ``hooks`` (see the module).

    :ivar config: the configuration in force.
    :param hooks: called in order with the new configuration; the list may grow after
        construction (components register in it).
    :param notify: optional ``(state) -> None`` to tell systemd (``RELOADING=1``/``READY=1``).
    :param checks: called with the new configuration before any hook; one raising
        :class:`ReloadRefused` keeps the running configuration (this list may grow too).
    """

    def __init__(
        self,
        path: str,
        config: Config,
        hooks: Sequence[ReloadHook],
        notify: Callable[[str], object] | None = None,
        live: frozenset[str] = LIVE_SETTINGS,
        checks: Sequence[ReloadHook] = (),
    ) -> None:
        self.path = path
        self.checks = checks
        self.config = config
        self.hooks = hooks
        self.notify = notify
        #: sections or section.key the hooks apply live (others are named as needing a restart)
        self.live = live

    def reload(self) -> bool:
        """Re-read the file and apply it: whether the new configuration is in force."""
        if self.notify is not None:
            self.notify("RELOADING=1")
        try:
            new = load_config(self.path)
            for check in self.checks:
                try:
                    check(new)
                except ReloadRefused as refused:
                    raise ConfigError(
                        self.path, refused.problem, refused.section, refused.key
                    ) from None
        except ConfigError as e:
            log.error(
                "SIGHUP: configuration not reloaded, the running one stays: {error}",
                error=str(e),
            )
            self._ready("reload failed: running configuration kept")
            return False
        changed = changed_settings(self.config, new)
        later = [s for s in changed if not _is_live(s, self.live)]
        for hook in self.hooks:
            try:
                hook(new)
            except Exception:
                log.failure("SIGHUP: a reload hook failed: {hook!r}", hook=hook)
        self.config = new
        log.info(
            "SIGHUP: configuration reloaded from {path}; changed: {changed}",
            path=self.path,
            changed=", ".join(changed) or "nothing",
        )
        if later:
            log.warn(
                "SIGHUP: these settings take effect at the next restart: {settings}",
                settings=", ".join(later),
            )
        self._ready("configuration reloaded")
        return True

    def _ready(self, status: str) -> None:
        if self.notify is not None:
            self.notify(f"READY=1\nSTATUS={status}")
