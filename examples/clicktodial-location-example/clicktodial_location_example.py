"""
An example clicktodial location backend, installed as a separate package: registrations
(bindings) only, kept in a dictionary. Users and call records stay in the ``[store]`` backend::

    [location]
    backend = example

    [location:example]
    max_aors = 1000

A real backend would keep the bindings in its own storage (a Redis server, say), shared by
the daemons that name it, and run its blocking client on a thread pool of the environment.
The RFC 3261 §10.3 rules (CSeq order per Call-ID, expiry 0 removes, ``*`` removes all,
``max_bindings``) are :func:`clicktodial.store.bindings.plan_register`'s: a backend only has
to apply its plan atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from clicktodial.interfaces import (
    IBindingChangeNotifier,
    ILocationBackend,
    ILocationBackendFactory,
)
from clicktodial.store.bindings import plan_register, sort_bindings
from clicktodial.store.errors import StoreUnavailable
from clicktodial.store.plugins import StoreEnvironment, parse_int, reject_unknown_options
from clicktodial.store.values import Binding, BindingChanges

__all__ = ["ExampleLocationStore", "factory"]

log = Logger(namespace="clicktodial_location_example")


@implementer(ILocationBackend, IBindingChangeNotifier)
class ExampleLocationStore:
    """Bindings by AOR, then by key, in memory; tells subscribers of every change."""

    def __init__(self, max_aors: int) -> None:
        self.max_aors = max_aors
        self._bindings: dict[str, dict[str, Binding]] = {}
        self._listeners: list[Callable[[str], object]] = []
        self._running = False

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Deferred[None]:
        self._running = True
        return succeed(None)

    def stop(self) -> Deferred[None]:
        self._running = False
        return succeed(None)

    # -- ILocationStore ------------------------------------------------------------

    def get_bindings(self, aor: str, now: float) -> Deferred[list[Binding]]:
        return succeed(
            sort_bindings([b for b in self._bindings.get(aor, {}).values() if b.expires_at > now])
        )

    def update_bindings(
        self, aor: str, changes: BindingChanges, now: float
    ) -> Deferred[list[Binding]]:
        if aor not in self._bindings and len(self._bindings) >= self.max_aors:
            return fail(StoreUnavailable(f"more than {self.max_aors} AORs"))
        stored = self._bindings.get(aor, {})
        try:
            plan = plan_register(aor, stored, changes, now)
        except Exception:
            return fail()  # OutOfOrderRegistration, TooManyBindings: nothing changed
        updated = {key: b for key, b in stored.items() if key not in plan.delete}
        updated.update(plan.write)
        if updated:
            self._bindings[aor] = updated
        else:
            self._bindings.pop(aor, None)
        self._changed(aor)
        return succeed(list(plan.result))

    def remove_all(self, aor: str) -> Deferred[int]:
        removed = len(self._bindings.pop(aor, {}))
        if removed:
            self._changed(aor)
        return succeed(removed)

    def purge_expired(self, now: float) -> Deferred[int]:
        purged = 0
        for aor, bindings in list(self._bindings.items()):
            live = {key: b for key, b in bindings.items() if b.expires_at > now}
            purged += len(bindings) - len(live)
            if live:
                self._bindings[aor] = live
            else:
                del self._bindings[aor]
        return succeed(purged)

    def registered_aors(self, now: float) -> Deferred[list[str]]:
        return succeed(
            sorted(
                aor
                for aor, bindings in self._bindings.items()
                if any(b.expires_at > now for b in bindings.values())
            )
        )

    def all_bindings(self, now: float) -> Deferred[list[Binding]]:
        return succeed(
            sort_bindings(
                [
                    b
                    for bindings in self._bindings.values()
                    for b in bindings.values()
                    if b.expires_at > now
                ]
            )
        )

    # -- IBindingChangeNotifier ----------------------------------------------------

    def subscribe(self, listener: Callable[[str], object]) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _changed(self, aor: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(aor)
            except Exception:
                log.failure("binding change listener failed", aor=aor)


@implementer(ILocationBackendFactory)
class ExampleLocationFactory:
    """Builds :class:`ExampleLocationStore`; one option, ``max_aors`` (default 10000)."""

    def create(self, options: Mapping[str, str], environment: StoreEnvironment) -> ILocationBackend:
        # Validate every option here and raise StoreConfigError(message, key=KEY): the daemon
        # prints "FILE: [location:example] KEY: message" and does not start.
        reject_unknown_options(options, frozenset({"max_aors"}), "example")
        return ExampleLocationStore(parse_int(options, "max_aors", 10_000, 1, 10_000_000))


#: What the entry point names.
factory = ExampleLocationFactory()
