"""
The location-backend plugin API, until clicktodial ships it.

``clicktodial.interfaces`` gains ``ILocationBackend``, ``ILocationBackendFactory`` and
``IBindingChangeNotifier`` with the ``[location] backend = NAME`` seam. Until a clicktodial with
them is installed, this module defines them here with exactly the same names and signatures, so
this package works before and after: once clicktodial has them, they are imported from there
and the local definitions below are never made.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from zope.interface import Interface

from clicktodial.interfaces import ILocationStore

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from clicktodial.store.plugins import StoreEnvironment

try:
    from clicktodial.interfaces import (  # type: ignore[attr-defined,unused-ignore]
        IBindingChangeNotifier,
        ILocationBackend,
        ILocationBackendFactory,
    )
except ImportError:  # until clicktodial ships them

    class ILocationBackend(ILocationStore):  # type: ignore[no-redef]
        """A location store with a lifecycle, built by an ILocationBackendFactory."""

        def start() -> Deferred[None]:
            """
            Start thread pools and check the storage is usable.

            :return: fires when the store can be used; fails with ``StoreUnavailable``.
            """

        def stop() -> Deferred[None]:
            """
            Release thread pools and connections (also while a start is in progress).

            :return: fires once stopped.
            """

    class ILocationBackendFactory(Interface):  # type: ignore[no-redef]
        """
        A named kind of location store: an entry point in the group
        ``clicktodial.location_backends``, chosen by ``[location] backend = NAME``.
        """

        def create(options: Mapping[str, str], environment: StoreEnvironment) -> ILocationBackend:
            """
            Build a (not yet started) location store.

            :param options: the ``[location:NAME]`` section's keys and values.
            :raises clicktodial.store.errors.StoreConfigError: for a missing, unknown or
                invalid option, naming the key.
            """

    class IBindingChangeNotifier(Interface):  # type: ignore[no-redef]
        """Tells of AORs whose bindings changed, by this daemon or another one."""

        def subscribe(listener: Callable[[str], object]) -> Callable[[], None]:
            """
            Call ``listener(aor)`` on the reactor thread whenever the bindings of ``aor``
            changed.

            :return: a function that unsubscribes ``listener``.
            """


__all__ = ["IBindingChangeNotifier", "ILocationBackend", "ILocationBackendFactory"]
