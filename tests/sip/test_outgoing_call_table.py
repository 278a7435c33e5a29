"""
:class:`OutgoingCall`'s transition table: total over (state, response input), RFC names,
one pending timer, and an input without a row logged once and counted, never lost.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from clicktodial.sip.ua.uac import OutgoingCall, UACState
from clicktodial.sip.uri import URI
from clicktodial.testing.transport import LogCapture
from clicktodial.testing.uafakes import EventLog, Party, ScriptedCallHandler

STATES = {
    "calling",
    "cancel pending",
    "proceeding",
    "cancelling",
    "accepted",
    "terminated",
    "failed",
    "cancelled",
}


def test_every_response_input_in_every_state_has_a_transition() -> None:
    """The table is total over (state, response input); timers only where they run."""
    table = OutgoingCall._TABLE
    assert {state.value for state in UACState} == STATES
    message_rows = {key for key in table if key[1] in OutgoingCall.MESSAGE_INPUTS}
    assert message_rows == {
        (state, event) for state in UACState for event in OutgoingCall.MESSAGE_INPUTS
    }
    assert {event for _, event in table} == set(OutgoingCall.INPUTS)
    timer_rows = {key for key in table if key[1] in ("CANCEL timeout", "fork window end")}
    assert timer_rows == {
        (UACState.CANCELLING, "CANCEL timeout"),
        (UACState.ACCEPTED, "fork window end"),
    }
    # The application may call cancel() in any state.
    assert all((state, "cancel") in table for state in UACState)


def test_terminal_states_never_go_back() -> None:
    """failed, cancelled and terminated only lead to themselves."""
    for (state, _event), (next_state, _actions) in OutgoingCall._TABLE.items():
        if state in (UACState.FAILED, UACState.CANCELLED, UACState.TERMINATED):
            assert next_state is state


def test_the_call_is_lean() -> None:
    """A leg keeps its OutgoingCall for the whole call: __slots__, no per-instance dict."""
    instance: object = object.__new__(OutgoingCall)
    assert not hasattr(instance, "__dict__")


def test_an_input_without_a_row_is_logged_once_and_counted() -> None:
    """A timer that fires where it has no transition is not dropped silently."""
    clock = Clock()
    alice = Party.recording(clock)
    assert isinstance(alice.app, ScriptedCallHandler)
    call, log = alice.call(URI("sip", "bob", "127.0.0.2", 5060), handler=EventLog())
    assert call.machine_state is UACState.CALLING
    # The fork window's timer firing in "calling" (it cannot be pending there).
    with LogCapture() as capture:
        call._fork_window_end()
        call._fork_window_end()
    assert len(list(capture.with_field("machine"))) == 1
    assert alice.ua.unexpected_inputs == {"OutgoingCall calling/fork window end": 2}
    assert call.machine_state is UACState.CALLING and log.names() == []
