"""
Click-to-dial calls through the running daemon, with SIPp playing both phones.

The daemon runs as a subprocess (``twistd -n clicktodial``, SQLite store with the demo
users alice and bob, T1 = 0.1 s so 64*T1 = 6.4 s); each phone is a SIPp UAS on its own
port, registered with Digest from that port before SIPp starts; calls are placed and
hung up through the web API (``/api/v1/calls``, with an administrator's token), and the
outcome is read back from the call record. After every path,
``assert_no_leftovers`` checks that nothing of the call stays in the daemon: no call in
the controller, no SIP dialog, no SIP transaction (``/metrics``). Every wait is bounded;
every process is killed by PID at the end.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from calltools import CallsApi, SippPhone, daemon_ini, register, start_sipp_phone
from conftest import find_free_port, wait_until  # type: ignore[import-not-found]

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) not installed"),
]

SIPP_TIMEOUT = 60
#: How long the daemon may take to let go of a call: Timer D keeps an INVITE client
#: transaction that got a failure (486, 487, 603...) for 32 s over UDP whatever T1 is;
#: the rest (Timer J, L, M: 64*T1 = 6.4 s; K: T4) is shorter. Generous: shared machine.
LEFTOVER_TIMEOUT = 90
#: What ``assert_no_leftovers`` reads from ``/metrics`` (each must be 0 at the end).
HELD_METRICS = (
    "clicktodial_calls_in_progress",
    "clicktodial_sip_dialogs_active",
    "clicktodial_sip_ua_active",  # also INVITEs in progress and merge-detection entries
    "clicktodial_sip_transactions_active",
)


class Phones:
    """SIPp UAS phones, each registered for a user and running one scenario."""

    def __init__(self, tmp_path: Path, sip_port: int) -> None:
        self.tmp_path = tmp_path
        self.sip_port = sip_port
        self.phones: dict[str, SippPhone] = {}

    def start(self, user: str, scenario: str, delay_ms: int = 500) -> None:
        self.phones[user] = start_sipp_phone(
            self.tmp_path, user, self.sip_port, scenario, delay_ms=delay_ms, timeout=SIPP_TIMEOUT
        )

    def register_only(self, user: str) -> int:
        """Register a binding for ``user`` at a port nobody listens on (never to be rung)."""
        port = find_free_port()
        register(user, user, port, self.sip_port)
        return port

    def wait(self, user: str, timeout: float = SIPP_TIMEOUT + 10) -> int:
        """SIPp's exit status (0: the scenario ran to its end)."""
        return self.phones[user].wait(timeout)

    def messages(self, user: str) -> str:
        return self.phones[user].messages()

    def report(self, user: str) -> str:
        return self.phones[user].report()

    def kill(self) -> None:
        for phone in self.phones.values():
            phone.stop()


@pytest.fixture
def setup(
    tmp_path: Path, start_daemon: Callable[[str], Any]
) -> Iterator[Callable[..., tuple[Any, CallsApi, Phones]]]:
    phones_made: list[Phones] = []

    def make(policy: str = "flow4", **calls: str) -> tuple[Any, CallsApi, Phones]:
        sip_port, web_port = find_free_port(), find_free_port()
        text = daemon_ini(sip_port, web_port, str(tmp_path), policy, **calls)
        text = text.replace("[web]\n", "t1 = 0.1\nt2 = 0.8\nt4 = 1.0\n[web]\n", 1)
        daemon = start_daemon(text)
        daemon.wait_for_tcp(web_port)
        daemon.wait_for_log("created demo users")
        phones = Phones(tmp_path, sip_port)
        phones_made.append(phones)
        return daemon, CallsApi(web_port, daemon.config_path), phones

    yield make
    for phones in phones_made:
        phones.kill()


def final_record(control: CallsApi, call_id: str, timeout: float = 30) -> dict[str, Any]:
    """The call's record once it has ended."""
    records: list[dict[str, Any]] = []

    def ended() -> bool:
        record = control.get(call_id)
        if record.get("ended_at") is None:
            return False
        records.append(record)
        return True

    wait_until(ended, timeout, f"call {call_id} to end")
    return records[-1]


def callee_rung_at(tmp_path: Path, call_id: str) -> float | None:
    """The record's ``callee_rung_at`` (history the API does not show), from the store."""
    with closing(sqlite3.connect(tmp_path / "clicktodial.sqlite")) as db:
        row = db.execute(
            "SELECT callee_rung_at FROM calls WHERE call_id = ?", (call_id,)
        ).fetchone()
    assert row is not None, f"no record of call {call_id}"
    return None if row[0] is None else float(row[0])


def wait_state(control: CallsApi, call_id: str, state: str, timeout: float = 30) -> None:
    wait_until(
        lambda: control.get(call_id)["state"] == state, timeout, f"call {call_id} to be {state}"
    )


def outcome(record: dict[str, Any]) -> tuple[Any, ...]:
    """How the call ended: end reason, SIP status, who hung up, final state."""
    return (record["reason"], record.get("sip_status"), record["who_hung_up"], record["state"])


def held(control: CallsApi) -> dict[str, float]:
    """What the daemon holds now: calls in the controller, dialogs, transactions."""
    metrics = control.metrics()
    missing = [name for name in HELD_METRICS if name not in metrics]
    assert not missing, f"/metrics lacks {missing}"
    values = {name: metrics[name] for name in HELD_METRICS}
    values["clicktodial_calls_active"] = metrics.get("clicktodial_calls_active", 0.0)
    values["calls in progress"] = float(len(control.active()))
    return values


def assert_no_leftovers(control: CallsApi, timeout: float = LEFTOVER_TIMEOUT) -> None:
    """
    Within ``timeout`` s the daemon holds nothing of any call: no call in the
    controller (``GET /api/v1/calls?active=true``, ``clicktodial_calls_active``,
    ``..._in_progress``), no SIP dialog, nothing else in the UA core (INVITEs in
    progress, merge-detection entries) and no SIP transaction (their timers go with
    them). The calls' own timers are checked on a fake clock by the unit tests
    (``assert_quiescent``).
    """
    deadline = time.monotonic() + timeout
    while True:
        values = held(control)
        if not any(values.values()):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout} s the daemon still holds {values}")
        time.sleep(0.5)


@pytest.mark.parametrize("policy", ["flow4", "flow1"])
def test_callee_busy_gives_the_caller_bye_with_reason_486(setup: Any, policy: str) -> None:
    daemon, control, phones = setup(policy)
    phones.start("alice", "call_phone_answer.xml", 300)
    phones.start("bob", "call_phone_busy.xml", 300)
    call = control.place("alice", "bob")
    record = final_record(control, call["id"])
    assert (record["reason"], record.get("sip_status"), record["state"]) == (
        "callee-busy",
        486,
        "failed",
    )
    assert phones.wait("alice") == 0, phones.report("alice")
    assert phones.wait("bob") == 0, phones.report("bob")
    assert "Reason: SIP ;cause=486" in phones.messages("alice")
    assert_no_leftovers(control)


def test_caller_not_answering_is_cancelled_after_the_ring_timeout(setup: Any) -> None:
    daemon, control, phones = setup(ring_timeout="2")
    phones.start("alice", "call_phone_ring.xml")
    phones.register_only("bob")
    started = time.monotonic()
    call = control.place("alice", "bob")
    record = final_record(control, call["id"])
    assert phones.wait("alice") == 0, phones.report("alice")
    assert time.monotonic() - started >= 2
    assert (record["reason"], record["who_hung_up"]) == ("caller-no-answer", "system")
    assert_no_leftovers(control)


def test_caller_rejecting_fails_the_call_with_its_status(setup: Any, tmp_path: Path) -> None:
    daemon, control, phones = setup()
    phones.start("alice", "call_phone_decline.xml", 300)
    phones.register_only("bob")  # never rung
    call = control.place("alice", "bob")
    record = final_record(control, call["id"])
    assert phones.wait("alice") == 0, phones.report("alice")
    assert (record["reason"], record.get("sip_status")) == ("caller-rejected", 603)
    assert callee_rung_at(tmp_path, call["id"]) is None
    assert_no_leftovers(control)


def test_flow4_survives_a_callee_answering_after_the_callers_2xx_window(setup: Any) -> None:
    """64*T1 is 6.4 s here: the callee answers after 8 s and the call still connects."""
    daemon, control, phones = setup("flow4")
    phones.start("alice", "call_phone_answer.xml", 300)
    phones.start("bob", "call_phone_answer.xml", 8000)
    call = control.place("alice", "bob")
    wait_state(control, call["id"], "connected", 30)
    assert control.hang_up(call["id"], "alice")
    record = final_record(control, call["id"])
    assert (record["reason"], record["who_hung_up"]) == ("caller-hangup", "caller")
    assert phones.wait("alice") == 0, phones.report("alice")
    assert phones.wait("bob") == 0, phones.report("bob")
    assert_no_leftovers(control)


def test_caller_hanging_up_while_callee_rings_cancels_the_callee(setup: Any) -> None:
    daemon, control, phones = setup()
    phones.start("alice", "call_phone_hangup.xml", 1500)
    phones.start("bob", "call_phone_ring.xml")
    call = control.place("alice", "bob")
    record = final_record(control, call["id"])
    assert phones.wait("alice") == 0, phones.report("alice")
    assert phones.wait("bob") == 0, phones.report("bob")
    assert (record["reason"], record["who_hung_up"], record["state"]) == (
        "caller-hangup",
        "caller",
        "failed",
    )
    assert_no_leftovers(control)


def test_reinvite_from_a_phone_is_relayed_to_the_other(setup: Any) -> None:
    daemon, control, phones = setup("flow4")
    phones.start("alice", "call_phone_reinvite.xml", 1000)
    phones.start("bob", "call_phone_answer.xml", 300)
    call = control.place("alice", "bob")
    wait_until(
        lambda: "a=sendonly" in phones.messages("bob"), 30, "the hold re-INVITE to reach bob"
    )
    wait_until(
        lambda: "SIP/2.0 200 OK" in phones.messages("alice").split("a=sendonly", 1)[-1],
        30,
        "the relayed answer to reach alice",
    )
    assert control.hang_up(call["id"])
    record = final_record(control, call["id"])
    assert (record["reason"], record["who_hung_up"], record["state"]) == (
        "cancelled",
        "system",
        "ended",
    )
    assert phones.wait("alice") == 0, phones.report("alice")
    assert phones.wait("bob") == 0, phones.report("bob")
    assert_no_leftovers(control)


@pytest.mark.parametrize("policy", ["flow4", "flow1"])
def test_callee_not_answering_is_cancelled_and_the_caller_gets_bye_408(
    setup: Any, policy: str, tmp_path: Path
) -> None:
    # Below the caller's 64*T1 (6.4 s): Flow I leaves the caller's 2xx unACKed meanwhile.
    daemon, control, phones = setup(policy, callee_ring_timeout="3")
    phones.start("alice", "call_phone_answer.xml", 300)
    phones.start("bob", "call_phone_ring.xml")
    call = control.place("alice", "bob")
    record = final_record(control, call["id"])
    assert outcome(record) == ("callee-no-answer", 408, "system", "failed")
    assert callee_rung_at(tmp_path, call["id"]) is not None
    assert phones.wait("bob") == 0, phones.report("bob")  # CANCEL, 487, ACK
    assert phones.wait("alice") == 0, phones.report("alice")
    assert "CANCEL sip:bob@" in phones.messages("bob")
    assert "Reason: SIP ;cause=408" in phones.messages("alice")
    assert_no_leftovers(control)


def test_callee_declining_gives_the_caller_bye_with_reason_603(setup: Any) -> None:
    daemon, control, phones = setup()
    phones.start("alice", "call_phone_answer.xml", 300)
    phones.start("bob", "call_phone_decline.xml", 300)
    call = control.place("alice", "bob")
    record = final_record(control, call["id"])
    assert outcome(record) == ("callee-rejected", 603, "callee", "failed")
    assert phones.wait("bob") == 0, phones.report("bob")
    assert phones.wait("alice") == 0, phones.report("alice")
    assert "Reason: SIP ;cause=603" in phones.messages("alice")
    assert_no_leftovers(control)


def test_unreachable_callee_gives_the_caller_bye_with_its_status(setup: Any) -> None:
    """bob's binding is a port nobody listens on: Timer B (64*T1 = 6.4 s) or an ICMP error."""
    daemon, control, phones = setup("flow4", callee_ring_timeout="60")
    phones.start("alice", "call_phone_answer.xml", 300)
    phones.register_only("bob")
    call = control.place("alice", "bob")
    record = final_record(control, call["id"], timeout=45)
    assert (record["reason"], record["who_hung_up"], record["state"]) == (
        "callee-unreachable",
        "system",
        "failed",
    )
    assert record.get("sip_status") in (408, 503), record
    assert phones.wait("alice") == 0, phones.report("alice")
    assert f"Reason: SIP ;cause={record.get('sip_status')}" in phones.messages("alice")
    assert_no_leftovers(control)


#: The caller's phone that hangs up a connected call: Flow IV re-INVITEs it first.
CALLER_HANGUP = {"flow4": "call_phone_reinvited_hangup.xml", "flow1": "call_phone_hangup.xml"}


@pytest.mark.parametrize("policy", ["flow4", "flow1"])
def test_caller_hanging_up_a_connected_call_gives_the_callee_bye(setup: Any, policy: str) -> None:
    daemon, control, phones = setup(policy)
    phones.start("alice", CALLER_HANGUP[policy], 1500)
    phones.start("bob", "call_phone_answer.xml", 300)
    call = control.place("alice", "bob")
    record = final_record(control, call["id"])
    assert outcome(record) == ("caller-hangup", None, "caller", "ended")
    assert phones.wait("alice") == 0, phones.report("alice")  # its BYE got 200
    assert phones.wait("bob") == 0, phones.report("bob")
    assert "BYE sip:bob@" in phones.messages("bob")
    assert_no_leftovers(control)


@pytest.mark.parametrize("policy", ["flow4", "flow1"])
def test_callee_hanging_up_a_connected_call_gives_the_caller_bye(setup: Any, policy: str) -> None:
    daemon, control, phones = setup(policy)
    phones.start("alice", "call_phone_answer.xml", 300)
    phones.start("bob", "call_phone_hangup.xml", 5000)
    call = control.place("alice", "bob")
    wait_state(control, call["id"], "connected")
    # While connected the daemon holds the call and both dialogs (what must go after).
    during = held(control)
    assert (during["calls in progress"], during["clicktodial_sip_dialogs_active"]) == (1, 2), during
    assert during["clicktodial_sip_ua_active"] >= 2, during
    record = final_record(control, call["id"])
    assert outcome(record) == ("callee-hangup", None, "callee", "ended")
    assert phones.wait("bob") == 0, phones.report("bob")  # its BYE got 200
    assert phones.wait("alice") == 0, phones.report("alice")
    assert "BYE sip:alice@" in phones.messages("alice")
    assert_no_leftovers(control)
