"""
An example clicktodial store backend, installed as a separate package.

It keeps everything in memory, like the built-in ``memory`` backend, and counts the REGISTER
updates it applied: a real backend would talk to its own storage instead. Select it with::

    [store]
    backend = example
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet.defer import Deferred
from zope.interface import implementer

from clicktodial.interfaces import IStoreBackend, IStoreBackendFactory
from clicktodial.store.memory import MemoryStore
from clicktodial.store.plugins import StoreEnvironment, reject_unknown_options
from clicktodial.store.values import Binding, BindingChanges


@implementer(IStoreBackend)
class ExampleStore(MemoryStore):
    """The memory store, counting applied REGISTERs."""

    registers = 0

    def update_bindings(
        self, aor: str, changes: BindingChanges, now: float
    ) -> Deferred[list[Binding]]:
        def count(bindings: list[Binding]) -> list[Binding]:
            self.registers += 1
            return bindings

        return super().update_bindings(aor, changes, now).addCallback(count)


@implementer(IStoreBackendFactory)
class ExampleBackendFactory:
    """Builds :class:`ExampleStore` from ``[store:example]``: it accepts (and ignores) a
    ``url`` option only; any other key stops start-up naming it."""

    def create(self, options: Mapping[str, str], environment: StoreEnvironment) -> IStoreBackend:
        reject_unknown_options(options, frozenset({"url"}), "example")
        return ExampleStore(
            environment.reactor,
            realm=environment.realm,
            hash_pool=environment.hash_pool(),
            hasher=environment.password_hasher,
        )


#: What the entry point names.
factory = ExampleBackendFactory()
