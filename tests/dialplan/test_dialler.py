"""The Dialler: directory first, then the plan; refusals recorded; the daily limit counted."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from clicktodial.config import parse_config
from clicktodial.dialplan.dialler import Dialler, utc_day
from clicktodial.dialplan.numbers import E164, InvalidNumber, LocalName
from clicktodial.dialplan.plan import DialDecision, DialRefused
from clicktodial.store.memory import MemoryStore
from clicktodial.store.values import UserChanges
from clicktodial.testing.fakes import InlineReactor, InlineThreadPool, success_result_of

CONFIG = """[sip]
domain = example.com
[dialplan]
country_code = 44
daily_limit = 1
routes = + main
"""


@attrs.define
class World:
    clock: InlineReactor
    store: MemoryStore

    def dialler(self, text: str = CONFIG, quota: bool = True) -> Dialler:
        plan = parse_config(text, "x.ini").dialplan.plan()
        return Dialler(
            self.clock, plan, self.store, self.store, self.store if quota else None, "example.com"
        )


@pytest.fixture
def world() -> World:
    clock = InlineReactor()
    clock.advance(1_765_000_000)  # 2025-12-06 05:46:40 UTC
    store = MemoryStore(clock, realm="example.com", hash_pool=InlineThreadPool())
    store.start()
    for name in ("alice", "1001", "gone"):
        success_result_of(store.add_user(name))
    success_result_of(store.update_user("gone", UserChanges(disabled=True)))
    return World(clock, store)


def failure(d: Deferred[Any]) -> BaseException:
    results: list[object] = []
    d.addBoth(results.append)
    assert results and isinstance(results[0], Failure), results
    return results[0].value


def resolve(dialler: Dialler, text: str, record: bool = True) -> Deferred[Any]:
    return Deferred.fromCoroutine(dialler.resolve("alice", text, record=record))


def test_utc_day() -> None:
    assert utc_day(1_765_000_000) == "2025-12-06"
    assert utc_day(1_765_065_599.9) == "2025-12-06"
    assert utc_day(1_765_065_600) == "2025-12-07"


def test_directory_names_and_extensions_are_local(world: World) -> None:
    dialler = world.dialler()
    assert success_result_of(resolve(dialler, "1001")) == LocalName("1001")
    assert success_result_of(resolve(dialler, "sip:alice@example.com")) == LocalName("alice")


def test_digits_no_user_has_are_a_number(world: World) -> None:
    assert success_result_of(resolve(world.dialler(), "02079460958")) == DialDecision(
        E164("442079460958"), "national", ("main",)
    )


def test_a_disabled_user_is_not_called_and_an_unknown_name_is_an_error(world: World) -> None:
    assert "no user gone" in str(failure(resolve(world.dialler(), "gone")))
    assert isinstance(failure(resolve(world.dialler(), "nobody")), InvalidNumber)


def test_a_refusal_is_recorded_only_when_asked(world: World) -> None:
    dialler = world.dialler()
    assert failure(resolve(dialler, "+33123456789", record=False)).reason == "class-not-allowed"
    assert success_result_of(world.store.list_calls("alice")) == []
    failure(resolve(dialler, "+33123456789"))
    [record] = success_result_of(world.store.list_calls("alice"))
    assert (
        record.caller,
        record.number,
        record.end_reason,
        record.who_hung_up,
        record.created_at,
        record.ended_at,
    ) == ("alice", "+33123456789", "refused", "system", 1_765_000_000, 1_765_000_000)


def test_the_daily_limit_is_counted_per_utc_day(world: World) -> None:
    dialler = world.dialler()
    decision = success_result_of(resolve(dialler, "+442079460958"))
    success_result_of(Deferred.fromCoroutine(dialler.admit("alice", decision)))
    refused = failure(Deferred.fromCoroutine(dialler.admit("alice", decision)))
    assert isinstance(refused, DialRefused) and refused.reason == "daily-limit"
    assert "(2025-12-06, UTC)" in refused.message
    assert success_result_of(world.store.outbound_calls("alice", "2025-12-06")) == 1
    world.clock.advance(65_600)  # 2025-12-07 00:00:00
    success_result_of(Deferred.fromCoroutine(dialler.admit("alice", decision)))


def test_a_limit_without_a_store_that_counts_refuses(world: World) -> None:
    dialler = world.dialler(quota=False)
    decision = success_result_of(resolve(dialler, "+442079460958"))
    refused = failure(Deferred.fromCoroutine(dialler.admit("alice", decision)))
    assert isinstance(refused, DialRefused) and refused.reason == "no-quota"
    unlimited = world.dialler(CONFIG.replace("daily_limit = 1", "daily_limit = 0"), quota=False)
    success_result_of(Deferred.fromCoroutine(unlimited.admit("alice", decision)))


def test_reload_applies_a_new_plan_to_new_calls(world: World) -> None:
    """SIGHUP: a class revoked from a user is refused from the next call on."""
    dialler = world.dialler(CONFIG + "allowed_classes = national, international\n")
    assert success_result_of(resolve(dialler, "+33123456789")).destination_class == (
        "international"
    )
    dialler.reload(parse_config(CONFIG, "x.ini"))
    assert failure(resolve(dialler, "+33123456789")).reason == "class-not-allowed"


def test_a_refunded_charge_frees_its_place_once_on_the_day_it_was_counted(world: World) -> None:
    """A call that reached no trunk is not counted (docs/dialplan.md, "The daily limit")."""
    dialler = world.dialler()
    decision = success_result_of(resolve(dialler, "+442079460958"))
    charge = success_result_of(Deferred.fromCoroutine(dialler.admit("alice", decision)))
    assert charge is not None and (charge.username, charge.day) == ("alice", "2025-12-06")
    world.clock.advance(65_600)  # past midnight: the refund is for the day it was counted
    charge.refund()
    charge.refund()
    assert charge.refunded
    assert success_result_of(world.store.outbound_calls("alice", "2025-12-06")) == 0
    assert success_result_of(world.store.outbound_calls("alice", "2025-12-07")) == 0


def test_no_limit_no_charge(world: World) -> None:
    unlimited = world.dialler(CONFIG.replace("daily_limit = 1", "daily_limit = 0"))
    decision = success_result_of(resolve(unlimited, "+442079460958"))
    assert success_result_of(Deferred.fromCoroutine(unlimited.admit("alice", decision))) is None
