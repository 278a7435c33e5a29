"""The in-memory event bus and what every bus checks (the PostgreSQL bus: tests/interop)."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from clicktodial.cluster.bus import (
    CONNECTED,
    MAX_PAYLOAD,
    MemoryEventBus,
    MemoryHub,
    encode_message,
    libpq_conninfo,
)
from clicktodial.interfaces import IEventBus
from clicktodial.testing.fakes import success_result_of


def two_nodes() -> tuple[Clock, MemoryEventBus, MemoryEventBus]:
    clock, hub = Clock(), MemoryHub()
    one, two = MemoryEventBus(clock, "one", hub), MemoryEventBus(clock, "two", hub)
    one.startService()
    two.startService()
    clock.advance(0)
    return clock, one, two


def test_memory_bus_provides_the_interface() -> None:
    verifyObject(IEventBus, MemoryEventBus(Clock(), "one"))


def test_message_reaches_every_node_on_the_next_turn_with_the_publisher_named() -> None:
    clock, one, two = two_nodes()
    seen: list[tuple[str, dict[str, object]]] = []
    one.subscribe("calls", lambda m: seen.append(("one", m)))
    two.subscribe("calls", lambda m: seen.append(("two", m)))
    assert success_result_of(one.publish("calls", {"x": 1})) is True
    assert seen == []  # never re-entrant
    clock.advance(0)
    assert seen == [("one", {"x": 1, "node": "one"}), ("two", {"x": 1, "node": "one"})]


def test_messages_go_only_to_their_channel_and_keep_their_order() -> None:
    clock, one, two = two_nodes()
    seen: list[object] = []
    two.subscribe("calls", lambda m: seen.append(m["n"]))
    for n in range(3):
        one.publish("calls", {"n": n})
    one.publish("other", {"n": 99})
    clock.advance(0)
    assert seen == [0, 1, 2]


def test_unsubscribed_callback_gets_nothing_more() -> None:
    clock, one, _ = two_nodes()
    seen: list[object] = []
    unsubscribe = one.subscribe("calls", seen.append)
    unsubscribe()
    unsubscribe()  # twice is harmless
    one.publish("calls", {})
    clock.advance(0)
    assert seen == []


def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    clock, one, _ = two_nodes()
    seen: list[object] = []

    def broken(message: dict[str, object]) -> None:
        raise RuntimeError("boom")

    one.subscribe("calls", broken)
    one.subscribe("calls", seen.append)
    one.publish("calls", {})
    clock.advance(0)
    assert len(seen) == 1


def test_starting_tells_the_connected_subscribers() -> None:
    clock = Clock()
    bus = MemoryEventBus(clock, "one")
    seen: list[object] = []
    bus.subscribe(CONNECTED, seen.append)
    bus.startService()
    clock.advance(0)
    assert seen == [{"node": "one"}]


def test_a_stopped_bus_neither_sends_nor_receives() -> None:
    clock, one, two = two_nodes()
    seen: list[object] = []
    two.subscribe("calls", seen.append)
    two.stopService()
    assert success_result_of(one.publish("calls", {})) is True
    assert success_result_of(two.publish("calls", {})) is False
    clock.advance(0)
    assert seen == []


@pytest.mark.parametrize("channel", ["", "Calls", "1calls", "calls-x", "a" * 41, "ca ll"])
def test_bad_channel_names_are_refused(channel: str) -> None:
    bus = MemoryEventBus(Clock(), "one")
    with pytest.raises(ValueError, match="channel"):
        bus.subscribe(channel, print)
    with pytest.raises(ValueError, match="channel"):
        bus.publish(channel, {})


def test_payloads_at_the_notify_limit_or_not_json_are_refused() -> None:
    bus = MemoryEventBus(Clock(), "one")
    with pytest.raises(ValueError, match="NOTIFY limit"):
        bus.publish("calls", {"pad": "x" * MAX_PAYLOAD})
    with pytest.raises(ValueError, match="JSON"):
        bus.publish("calls", {"x": object()})
    with pytest.raises(ValueError, match="JSON"):
        bus.publish("calls", {"x": float("nan")})


def test_encoded_message_fits_exactly_up_to_the_limit() -> None:
    overhead = len(encode_message("n", {"p": ""}).encode())
    assert len(encode_message("n", {"p": "x" * (MAX_PAYLOAD - overhead)})) == MAX_PAYLOAD
    with pytest.raises(ValueError):
        encode_message("n", {"p": "x" * (MAX_PAYLOAD - overhead + 1)})


def test_libpq_conninfo_keeps_the_unix_socket_and_drops_the_driver() -> None:
    url = "postgresql+psycopg://postgres@/clicktodial?host=/var/run/postgresql"
    parsed = conninfo_to_dict(libpq_conninfo(url))
    assert parsed == {"user": "postgres", "dbname": "clicktodial", "host": "/var/run/postgresql"}
    with pytest.raises(ValueError, match="PostgreSQL"):
        libpq_conninfo("sqlite:///x.sqlite")
