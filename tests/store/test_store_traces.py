"""The call trace values (clicktodial.store.traces): packing for the SQL store, bounds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clicktodial.store.traces import (
    TracedMessage,
    TraceLimits,
    fit_messages,
    pack_messages,
    unpack_messages,
)
from clicktodial.testing.contracts import traced

messages = st.builds(
    TracedMessage,
    at_ms=st.integers(0, 2**53),
    direction=st.sampled_from(["in", "out"]),
    transport=st.sampled_from(["UDP", "TCP", "TLS"]),
    local_host=st.text(max_size=40),
    local_port=st.integers(0, 65535),
    remote_host=st.text(max_size=40),
    remote_port=st.integers(0, 65535),
    leg=st.sampled_from(["caller", "callee"]),
    sip_call_id=st.text(max_size=80),
    retransmission=st.booleans(),
    data=st.binary(max_size=300),
)


@given(st.lists(messages, max_size=8))
def test_packed_messages_come_back_whole(values: list[TracedMessage]) -> None:
    """Any fields and octets (newlines, NULs, non-ASCII) survive a pack and unpack."""
    assert unpack_messages(pack_messages(values)) == values


def test_packing_keeps_binary_octets_after_the_header() -> None:
    blob = pack_messages([traced(0, b"a\nb\x00"), traced(1, b"\r\n\r\n")])
    assert blob.count(b"\n") >= 3 and blob.endswith(b"a\nb\x00\r\n\r\n")


def test_fit_keeps_a_prefix() -> None:
    kept, dropped = fit_messages(
        1, 10, 0, [traced(0, b"x" * 5), traced(1, b"y" * 50), traced(2, b"z")], TraceLimits(10, 40)
    )
    assert ([m.data for m in kept], dropped) == ([b"x" * 5], 2)
    assert fit_messages(0, 0, 3, [traced(0)], TraceLimits()) == ([], 1)


def test_a_traced_message_is_a_named_tuple() -> None:
    """The tracer makes one for every message of a traced call, on the reactor thread: a
    named tuple costs a fraction of an attrs instance, and packs as it is."""
    message = traced(0)
    assert isinstance(message, tuple)
    assert message[-1] == message.data
    assert message == TracedMessage(*message)


def test_unpacking_refuses_an_unknown_direction() -> None:
    """What the store gives back is checked: a direction is ``in`` or ``out``."""
    blob = pack_messages([traced(0)._replace(direction="sideways")])
    with pytest.raises(ValueError, match="direction must be 'in' or 'out'"):
        unpack_messages(blob)
