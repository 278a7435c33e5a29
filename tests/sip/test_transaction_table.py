"""
Every machine's transition table covers every message input in every state
(RFC 3261 §17: an input that can arrive in a state has a defined transition).
"""

from __future__ import annotations

from typing import Any

import pytest

from clicktodial.sip.transactions import (
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    State,
)

MACHINES = {
    InviteClientTransaction: (
        {"calling", "proceeding", "completed", "accepted", "terminated"},
        {"1xx", "2xx", "300-699"},
    ),
    NonInviteClientTransaction: (
        {"trying", "proceeding", "completed", "terminated"},
        {"1xx", "200-699"},
    ),
    InviteServerTransaction: (
        {"proceeding", "completed", "confirmed", "accepted", "terminated"},
        {"INVITE again", "ACK", "TU 1xx", "TU 2xx", "TU 300-699"},
    ),
    NonInviteServerTransaction: (
        {"trying", "proceeding", "completed", "terminated"},
        {"request again", "TU 1xx", "TU 200-699"},
    ),
}


@pytest.mark.parametrize("machine", list(MACHINES), ids=lambda m: m.__name__)
def test_every_message_input_in_every_state_has_a_transition(machine: Any) -> None:
    """The table is total over (state, message input) and names only RFC states."""
    states, inputs = MACHINES[machine]
    table = machine._TABLE
    assert {(State(s), i) for s in states for i in inputs} == set(table)
    assert set(inputs) <= set(machine.INPUTS)


@pytest.mark.parametrize("machine", list(MACHINES), ids=lambda m: m.__name__)
def test_machines_are_lean(machine: type) -> None:
    """Machines use __slots__ (thousands of transactions a second): no per-instance dict."""
    instance: object = object.__new__(machine)
    assert not hasattr(instance, "__dict__")
