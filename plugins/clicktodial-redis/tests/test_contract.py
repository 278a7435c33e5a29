"""The location store contract, on a real Redis server."""

from __future__ import annotations

from typing import Any

import pytest
from zope.interface.verify import verifyObject

from clicktodial.interfaces import ILocationStore, IStoreLoad
from clicktodial.store.plugins import StoreEnvironment
from clicktodial.testing.contracts import LocationStoreContract
from clicktodial_redis import factory
from clicktodial_redis._compat import IBindingChangeNotifier, ILocationBackend

pytestmark = pytest.mark.interop


class TestRedisLocationStore(LocationStoreContract):
    """The Redis location store keeps the ILocationStore contract."""

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str, key_prefix: str) -> None:
        self.redis_url = redis_url
        self.key_prefix = key_prefix

    def make_store(self, environment: StoreEnvironment, request: pytest.FixtureRequest) -> Any:
        return factory.create({"url": self.redis_url, "key_prefix": self.key_prefix}, environment)

    def test_provides_the_backend_interfaces(self, store: Any) -> None:
        """It is a location backend (store + lifecycle) with change notifications."""
        assert verifyObject(ILocationBackend, store)
        assert verifyObject(ILocationStore, store)
        assert verifyObject(IBindingChangeNotifier, store)

    def test_reports_its_load(self, store: Any) -> None:
        """Admission control sees how many commands wait for a thread (none when idle)."""
        assert verifyObject(IStoreLoad, store)
        assert store.pending() == 0
