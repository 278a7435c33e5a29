"""The store contracts, run against the memory store and the SQL store on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from clicktodial.interfaces import ICallRecordStore, ILocationStore, IStoreBackend, IUserStore
from clicktodial.store.plugins import MemoryBackendFactory, SQLBackendFactory, StoreEnvironment
from clicktodial.store.sql import upgrade_schema
from clicktodial.testing.contracts import (
    CallRecordStoreContract,
    CallTraceStoreContract,
    LocationStoreContract,
    OutboundQuotaContract,
    StoreContract,
    UserStoreContract,
)


class TestMemoryStore(StoreContract, CallTraceStoreContract, OutboundQuotaContract):
    """The memory store keeps the contract (and keeps call traces)."""

    def make_store(
        self, environment: StoreEnvironment, request: pytest.FixtureRequest
    ) -> IStoreBackend:
        return MemoryBackendFactory().create({}, environment)


class TestSQLiteStore(StoreContract, CallTraceStoreContract, OutboundQuotaContract):
    """The SQL store on a SQLite file keeps the contract (and keeps call traces)."""

    def make_store(
        self, environment: StoreEnvironment, request: pytest.FixtureRequest
    ) -> IStoreBackend:
        tmp_path: Path = request.getfixturevalue("tmp_path")
        url = f"sqlite:///{tmp_path / 'store.sqlite'}"
        upgrade_schema(url)
        return SQLBackendFactory().create({"url": url}, environment)


class TestMemoryLocationStoreAlone(LocationStoreContract):
    """A suite runs on its own, with only its own fixture method defined (no make_store)."""

    def make_location_store(
        self, environment: StoreEnvironment, request: pytest.FixtureRequest
    ) -> ILocationStore:
        return MemoryBackendFactory().create({}, environment)


class TestMemoryUserStoreAlone(UserStoreContract):
    """The user store suite on its own."""

    def make_user_store(
        self, environment: StoreEnvironment, request: pytest.FixtureRequest
    ) -> IUserStore:
        return MemoryBackendFactory().create({}, environment)


class TestMemoryCallRecordStoreAlone(CallRecordStoreContract):
    """The call record store suite on its own."""

    def make_call_record_store(
        self, environment: StoreEnvironment, request: pytest.FixtureRequest
    ) -> ICallRecordStore:
        return MemoryBackendFactory().create({}, environment)
