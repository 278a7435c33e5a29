"""
Calls to numbers through trunks (docs/trunks.md, "Calls through a trunk"): the callee leg
is the number through the decision's trunks, in fail-over order, in the call's own table.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer
from zope.interface.verify import verifyObject

from clicktodial.calls.call import Call, Input, Phase
from clicktodial.calls.outbound import TrunkHunt, fails_over
from clicktodial.calls.values import CallInfo
from clicktodial.dialplan.numbers import E164
from clicktodial.dialplan.plan import DialDecision
from clicktodial.interfaces import ICalleeRoute, IOutboundCalls, ITrunk, ITrunkRegistry
from clicktodial.sip.address import Destination
from clicktodial.sip.headers import parse_name_addr
from clicktodial.sip.message import Request
from clicktodial.sip.uri import URI, parse_uri
from clicktodial.testing.callfakes import CallWorld, Phone
from clicktodial.testing.uafakes import Answer, sdp
from clicktodial.trunks.limits import CallAdmission, CallTicket
from clicktodial.trunks.resolver import ResolutionFailed
from clicktodial.trunks.values import (
    CallerIdentity,
    Reachability,
    RegistrationState,
    RegistrationStatus,
    TrunkStatus,
)

NUMBER = "+442079460958"
DECISION = DialDecision(E164("442079460958"), "national", ("uk_main", "uk_backup"))


@implementer(ITrunk)
class FakeTrunk:
    """A trunk whose provider is a fake phone on the call world's network."""

    def __init__(
        self,
        world: CallWorld,
        name: str,
        host: str | None,
        *,
        max_calls: int = 10,
        more_hosts: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.host = host
        #: Further resolved destinations, after ``host`` (RFC 3263 order).
        self.more_hosts = more_hosts
        self.admission = CallAdmission(world.clock, name, max_calls, 100.0)

    def request_uri_for(self, e164: str) -> URI:
        return parse_uri(f"sip:{e164}@{self.host or 'nowhere.invalid'}")

    def destinations(self) -> Deferred[list[Destination]]:
        if self.host is None:
            return fail(ResolutionFailed("nowhere.invalid: no such name"))
        return succeed([Destination("UDP", h, 5060) for h in (self.host, *self.more_hosts)])

    def credentials_for(self, realm: str) -> tuple[str, str] | None:
        return ("acct", "secret")

    def caller_identity(self, username: str | None) -> CallerIdentity:
        uri = f"sip:+441632960001@{self.host}"
        return CallerIdentity(uri, f"<{uri}>")

    def admit(self) -> CallTicket:
        return self.admission.admit()

    def status(self) -> TrunkStatus:
        return TrunkStatus(
            self.name,
            str(self.host),
            RegistrationStatus(RegistrationState.OFF),
            Reachability.OFF,
            self.admission.active,
            0,
            0.0,
            0,
            0,
        )


@implementer(ITrunkRegistry)
class FakeRegistry:
    def __init__(self, *trunks: FakeTrunk) -> None:
        self.trunks = {trunk.name: trunk for trunk in trunks}

    def get(self, name: str) -> ITrunk | None:
        return self.trunks.get(name)

    def names(self) -> list[str]:
        return list(self.trunks)

    def statuses(self) -> list[TrunkStatus]:
        return [trunk.status() for trunk in self.trunks.values()]

    def screen_inbound(self, host: str) -> str | None:
        return None


class Outbound:
    """A call world with alice's phone, two providers and trunks uk_main, uk_backup."""

    def __init__(
        self,
        policy: str = "flow4",
        main: Answer | None = None,
        backup: Answer | None = None,
        *,
        main_host: str | None = "127.0.0.8",
        main_max_calls: int = 10,
        main_second: Answer | None = None,
        alice: Answer | None = None,
        **settings: object,
    ) -> None:
        self.registry = FakeRegistry()
        self.world = CallWorld(policy=policy, trunks=self.registry, **settings)
        self.alice = self.world.phone("alice", "127.0.0.2", answer=alice)
        self.main = self._provider("127.0.0.8", main)
        self.backup = self._provider("127.0.0.9", backup)
        # uk_main's second destination (127.0.0.10), when main_second is given.
        more: tuple[str, ...] = ()
        if main_second is not None:
            self.main_second = self._provider("127.0.0.10", main_second)
            more = ("127.0.0.10",)
        self.trunk_main = FakeTrunk(
            self.world, "uk_main", main_host, max_calls=main_max_calls, more_hosts=more
        )
        self.trunk_backup = FakeTrunk(self.world, "uk_backup", "127.0.0.9")
        self.registry.trunks.update(uk_main=self.trunk_main, uk_backup=self.trunk_backup)

    def _provider(self, host: str, answer: Answer | None) -> Phone:
        answer = answer or Answer(delay=1, sdp=sdp(f"pstn-{host}", host=host))
        return self.world.phone(f"pstn-{host}", host, answer=answer)

    def place(self, decision: DialDecision = DECISION, caller: str = "alice") -> CallInfo:
        results: list[object] = []
        IOutboundCalls(self.world.controller).place_outbound(caller, decision).addBoth(
            results.append
        )
        assert results and isinstance(results[0], CallInfo), results
        return results[0]

    def invites_to(self, host: str) -> list[Request]:
        seen: dict[tuple[str, int], Request] = {}
        for wire in self.world.wire:
            message = wire.message
            if isinstance(message, Request) and message.method == "INVITE" and wire.to[0] == host:
                seen.setdefault((message.call_id, message.cseq.seq), message)
        return list(seen.values())

    def state(self, call_id: str) -> str:
        info = self.world.controller.get_call(call_id)
        return info.state if info is not None else self.world.record(call_id).public_state


def test_the_trunk_hunt_is_a_callee_route() -> None:
    assert verifyObject(ICalleeRoute, TrunkHunt([], NUMBER, "alice"))
    assert [s for s in (404, 408, 486, 500, 503, 504, 603) if fails_over(s)] == [408, 500, 503, 504]


@pytest.mark.parametrize("policy", ["flow1", "flow4"])
def test_a_number_goes_out_through_the_first_trunk_with_its_identity(policy: str) -> None:
    o = Outbound(policy)
    info = o.place()
    o.world.run(5)
    assert o.state(info.call_id) == "connected"
    [invite] = o.invites_to("127.0.0.8")
    assert str(invite.uri) == f"sip:{NUMBER}@127.0.0.8"
    assert parse_name_addr(invite.headers.get("From") or "").uri.user == "+441632960001"
    assert parse_name_addr(invite.headers.get("To") or "").uri.user == NUMBER
    assert invite.headers.get("P-Asserted-Identity") == "<sip:+441632960001@127.0.0.8>"
    assert o.invites_to("127.0.0.9") == []
    assert o.trunk_main.admission.active == 1
    assert o.world.controller.hang_up(info.call_id, "alice")
    o.world.run(2)
    record = o.world.record(info.call_id)
    assert (
        record.trunk,
        record.number,
        record.destination_class,
        record.end_reason,
        record.who_hung_up,
    ) == ("uk_main", NUMBER, "national", "caller-hangup", "caller")
    assert o.trunk_main.admission.active == 0  # the ticket is given back
    o.world.assert_quiescent()


@pytest.mark.parametrize("policy", ["flow1", "flow4"])
@pytest.mark.parametrize("status", [503, 500, 408])
def test_a_trunk_failing_with_408_or_5xx_fails_over_to_the_next(policy: str, status: int) -> None:
    o = Outbound(policy, main=Answer(reject=status))
    info = o.place()
    o.world.run(5)
    assert o.state(info.call_id) == "connected"
    assert len(o.invites_to("127.0.0.8")) == 1 and len(o.invites_to("127.0.0.9")) == 1
    assert (o.trunk_main.admission.active, o.trunk_backup.admission.active) == (0, 1)
    # The callee phase went on: a transition of the table, not a side loop.
    assert Call._TABLE[Phase.CALLING_CALLEE, Input.CALLEE_REROUTE][0] is Phase.CALLING_CALLEE
    o.world.controller.hang_up(info.call_id, None)
    o.world.run(2)
    assert o.world.record(info.call_id).trunk == "uk_backup"
    assert o.trunk_backup.admission.active == 0


@pytest.mark.parametrize("status", [404, 486, 603])
def test_a_refusal_by_the_number_ends_the_call_without_fail_over(status: int) -> None:
    o = Outbound(main=Answer(reject=status))
    info = o.place()
    o.world.run(5)
    assert o.state(info.call_id) == "failed"
    assert o.invites_to("127.0.0.9") == []
    record = o.world.record(info.call_id)
    assert (record.trunk, record.sip_status) == ("uk_main", status)
    assert o.trunk_main.admission.active == 0


def test_the_last_trunk_failing_ends_the_call_with_its_status() -> None:
    o = Outbound(main=Answer(reject=503), backup=Answer(reject=503))
    info = o.place()
    o.world.run(5)
    record = o.world.record(info.call_id)
    assert (record.public_state, record.end_reason, record.sip_status, record.trunk) == (
        "failed",
        "callee-unreachable",
        503,
        "uk_backup",
    )
    assert (o.trunk_main.admission.active, o.trunk_backup.admission.active) == (0, 0)


def test_a_trunk_at_its_limit_or_unresolvable_is_skipped_without_an_invite() -> None:
    for o in (Outbound(main_max_calls=1), Outbound(main_host=None)):
        held = o.trunk_main.admission.admit() if o.trunk_main.host else None
        info = o.place()
        o.world.run(5)
        assert o.state(info.call_id) == "connected"
        assert o.invites_to("127.0.0.8") == []
        assert len(o.invites_to("127.0.0.9")) == 1
        if held is not None:
            held.release()


def test_no_trunk_taking_the_call_fails_it_as_no_trunk() -> None:
    o = Outbound(main_max_calls=1)
    o.registry.trunks.pop("uk_backup")
    held = o.trunk_main.admission.admit()
    info = o.place()
    o.world.run(5)
    record = o.world.record(info.call_id)
    assert (record.public_state, record.end_reason, record.trunk) == ("failed", "no-trunk", None)
    assert o.invites_to("127.0.0.8") == []
    held.release()


def test_hanging_up_while_the_number_rings_cancels_it_and_gives_the_ticket_back() -> None:
    o = Outbound(main=Answer(delay=30, sdp=sdp("pstn", host="127.0.0.8")))
    info = o.place()
    o.world.run(3)
    assert o.trunk_main.admission.active == 1
    # The history shows the number and its class while it rings.
    assert (
        o.world.record(info.call_id).number,
        o.world.record(info.call_id).destination_class,
    ) == (NUMBER, "national")
    o.world.controller.hang_up(info.call_id, "alice")
    o.world.run(3)
    record = o.world.record(info.call_id)
    assert (record.public_state, record.who_hung_up, record.trunk) == (
        "failed",
        "caller",
        "uk_main",
    )
    assert o.trunk_main.admission.active == 0
    assert any(
        w.message.method == "CANCEL"
        for w in o.world.wire  # type: ignore[union-attr]
        if isinstance(w.message, Request) and w.to[0] == "127.0.0.8"
    )


def test_the_number_hanging_up_ends_the_call_as_the_callee() -> None:
    o = Outbound()
    info = o.place()
    o.world.run(5)
    [session] = o.main.sessions
    session.bye()
    o.world.run(2)
    record = o.world.record(info.call_id)
    assert (record.public_state, record.end_reason, record.who_hung_up) == (
        "ended",
        "callee-hangup",
        "callee",
    )
    assert o.trunk_main.admission.active == 0


def test_flow1_early_media_acks_the_caller_with_the_providers_early_answer() -> None:
    """RFC 3960: the 183's answer is the 2xx's; the caller hears the provider at once."""
    early = sdp("pstn-early", host="127.0.0.8")
    o = Outbound("flow1", main=Answer(delay=10, sdp=early, early=early))
    info = o.place()
    o.world.run(3)
    assert o.state(info.call_id) == "calling-callee"
    acks = [
        w.message
        for w in o.world.wire
        if isinstance(w.message, Request) and w.message.method == "ACK" and w.to[0] == "127.0.0.2"
    ]
    assert acks and b"127.0.0.8" in acks[0].body
    o.world.run(10)
    assert o.state(info.call_id) == "connected"


def caller_invites(o: Outbound) -> list[Request]:
    return [
        w.message
        for w in o.world.wire
        if isinstance(w.message, Request)
        and w.message.method == "INVITE"
        and w.to[0] == "127.0.0.2"
    ]


def test_flow4_early_media_reinvites_the_caller_and_the_2xx_reuses_its_answer() -> None:
    """RFC 3960 gateway model: the 183's SDP previews the 2xx's offer; one re-INVITE."""
    early = sdp("pstn-early", host="127.0.0.8")
    o = Outbound("flow4", main=Answer(delay=10, sdp=early, early=early))
    info = o.place()
    o.world.run(3)
    assert o.state(info.call_id) == "calling-callee"
    invites = caller_invites(o)
    assert len(invites) == 2 and b"127.0.0.8" in invites[1].body  # the early re-INVITE
    o.world.run(10)
    assert o.state(info.call_id) == "connected"
    assert len(caller_invites(o)) == 2  # the 2xx carried the same offer: no second one
    acks = [
        w.message
        for w in o.world.wire
        if isinstance(w.message, Request) and w.message.method == "ACK" and w.to[0] == "127.0.0.8"
    ]
    assert acks and b"alice-127.0.0.2" in acks[-1].body  # the caller's answer


def test_flow4_a_2xx_with_another_offer_than_the_early_one_reinvites_again() -> None:
    o = Outbound(
        "flow4",
        main=Answer(
            delay=10,
            sdp=sdp("pstn-final", host="127.0.0.8"),
            early=sdp("pstn-early", host="127.0.0.8"),
        ),
    )
    info = o.place()
    o.world.run(15)
    assert o.state(info.call_id) == "connected"
    assert len(caller_invites(o)) == 3


def test_flow4_a_trunk_failing_after_early_media_still_fails_over() -> None:
    early = sdp("pstn-early", host="127.0.0.8")
    o = Outbound("flow4", main=Answer(delay=3, early=early, reject=503))
    info = o.place()
    o.world.run(10)
    assert o.state(info.call_id) == "connected"
    assert len(o.invites_to("127.0.0.9")) == 1
    # The backup's offer went to the caller in a re-INVITE of its own.
    assert b"127.0.0.9" in caller_invites(o)[-1].body


def test_flow1_a_trunk_failing_after_its_early_answer_was_acked_fails_over_as_flow4() -> None:
    """
    RFC 3725/3960: the caller's offer was answered (ACK) with the first trunk's early media;
    the next trunk is INVITEd without an offer and its offer re-INVITEs the caller (Flow IV).
    """
    early = sdp("pstn-early", host="127.0.0.8")
    o = Outbound("flow1", main=Answer(delay=3, early=early, reject=503))
    info = o.place()
    o.world.run(10)
    assert o.state(info.call_id) == "connected"
    [first] = o.invites_to("127.0.0.8")
    [second] = o.invites_to("127.0.0.9")
    assert b"alice-127.0.0.2" in first.body  # Flow I: the caller's offer
    assert second.body == b""  # Flow IV: no offer left to give
    assert b"127.0.0.9" in caller_invites(o)[-1].body  # the backup's offer to the caller
    acks = [
        w.message
        for w in o.world.wire
        if isinstance(w.message, Request) and w.message.method == "ACK" and w.to[0] == "127.0.0.9"
    ]
    assert acks and b"alice-127.0.0.2" in acks[-1].body  # the caller's answer
    assert (o.trunk_main.admission.active, o.trunk_backup.admission.active) == (0, 1)
    o.world.controller.hang_up(info.call_id, "alice")
    o.world.run(2)
    record = o.world.record(info.call_id)
    assert (record.public_state, record.trunk, record.end_reason) == (
        "ended",
        "uk_backup",
        "caller-hangup",
    )
    assert o.trunk_backup.admission.active == 0


def test_flow1_fail_over_after_early_media_plays_the_next_trunks_early_media_too() -> None:
    o = Outbound(
        "flow1",
        main=Answer(delay=3, early=sdp("pstn-early", host="127.0.0.8"), reject=503),
        backup=Answer(
            delay=5, early=sdp("pstn-b", host="127.0.0.9"), sdp=sdp("pstn-b", host="127.0.0.9")
        ),
    )
    info = o.place()
    o.world.run(6)
    assert o.state(info.call_id) == "calling-callee"
    assert b"127.0.0.9" in caller_invites(o)[-1].body  # the backup's early media, at once
    o.world.run(10)
    assert o.state(info.call_id) == "connected"
    assert len(caller_invites(o)) == 2  # the 2xx's offer was the early one: no second re-INVITE


@pytest.mark.parametrize("backup", [True, False])
def test_flow1_the_last_trunk_failing_after_early_media_ends_the_call_cleanly(
    backup: bool,
) -> None:
    early = sdp("pstn-early", host="127.0.0.8")
    o = Outbound(
        "flow1",
        main=Answer(delay=3, early=early, reject=503),
        backup=Answer(delay=1, early=sdp("b", host="127.0.0.9"), reject=503),
    )
    if not backup:
        o.registry.trunks.pop("uk_backup")
    info = o.place()
    o.world.run(10)
    record = o.world.record(info.call_id)
    assert (record.public_state, record.end_reason, record.sip_status, record.trunk) == (
        ("failed", "callee-unreachable", 503, "uk_backup")
        if backup
        else ("failed", "callee-unreachable", 503, "uk_main")
    )
    assert (o.trunk_main.admission.active, o.trunk_backup.admission.active) == (0, 0)
    byes = [
        w.message
        for w in o.world.wire
        if isinstance(w.message, Request) and w.message.method == "BYE" and w.to[0] == "127.0.0.2"
    ]
    assert byes and "cause=503" in (byes[0].headers.get("Reason") or "")  # RFC 3326
    o.world.run(10)
    o.world.assert_quiescent()


# -- RFC 3263 §4.3: a trunk's resolved destinations, in order ------------------------


@pytest.mark.parametrize("policy", ["flow1", "flow4"])
@pytest.mark.parametrize("status", [503, 408])
def test_a_destination_failing_with_503_or_408_hands_the_call_to_the_trunks_next_one(
    policy: str, status: int
) -> None:
    o = Outbound(
        policy,
        main=Answer(reject=status),
        main_second=Answer(delay=1, sdp=sdp("pstn-second", host="127.0.0.10")),
    )
    info = o.place()
    o.world.run(5)
    assert o.state(info.call_id) == "connected"
    assert len(o.invites_to("127.0.0.8")) == 1 and len(o.invites_to("127.0.0.10")) == 1
    assert o.invites_to("127.0.0.9") == []  # the backup trunk is not needed
    assert o.trunk_main.admission.active == 1  # one ticket for the trunk, whichever destination
    [invite] = o.invites_to("127.0.0.10")
    assert str(invite.uri) == f"sip:{NUMBER}@127.0.0.8"  # the same request, the next hop
    o.world.controller.hang_up(info.call_id, None)
    o.world.run(2)
    assert o.world.record(info.call_id).trunk == "uk_main"
    assert o.trunk_main.admission.active == 0


def test_a_500_from_a_destination_that_answered_moves_to_the_next_trunk() -> None:
    """RFC 3263 §4.3 moves to the next server on a timeout or 503 only: a 500 is the trunk's."""
    o = Outbound(
        main=Answer(reject=500), main_second=Answer(delay=1, sdp=sdp("x", host="127.0.0.10"))
    )
    info = o.place()
    o.world.run(5)
    assert o.state(info.call_id) == "connected"
    assert o.invites_to("127.0.0.10") == []
    assert len(o.invites_to("127.0.0.9")) == 1
    assert (o.trunk_main.admission.active, o.trunk_backup.admission.active) == (0, 1)


def test_every_destination_of_a_trunk_failing_moves_to_the_next_trunk() -> None:
    o = Outbound(main=Answer(reject=503), main_second=Answer(reject=408))
    info = o.place()
    o.world.run(5)
    assert o.state(info.call_id) == "connected"
    assert [len(o.invites_to(h)) for h in ("127.0.0.8", "127.0.0.10", "127.0.0.9")] == [1, 1, 1]
    o.world.controller.hang_up(info.call_id, None)
    o.world.run(2)
    assert o.world.record(info.call_id).trunk == "uk_backup"
    assert (o.trunk_main.admission.active, o.trunk_backup.admission.active) == (0, 0)


def test_the_numbers_own_refusal_at_the_first_destination_is_not_retried_elsewhere() -> None:
    o = Outbound(
        main=Answer(reject=486), main_second=Answer(delay=1, sdp=sdp("x", host="127.0.0.10"))
    )
    info = o.place()
    o.world.run(5)
    record = o.world.record(info.call_id)
    assert (record.public_state, record.sip_status) == ("failed", 486)
    assert o.invites_to("127.0.0.10") == [] and o.invites_to("127.0.0.9") == []


def test_the_hunt_records_the_destination_it_used() -> None:
    o = Outbound(
        main=Answer(reject=503), main_second=Answer(delay=1, sdp=sdp("x", host="127.0.0.10"))
    )
    hunt = TrunkHunt([o.trunk_main], NUMBER, "alice")
    assert hunt.reserve()
    [first] = hunt.targets().result  # type: ignore[attr-defined]
    assert (hunt.trunk, hunt.destination) == ("uk_main", Destination("UDP", "127.0.0.8", 5060))
    assert hunt.reroutes(503)
    [second] = hunt.targets().result  # type: ignore[attr-defined]
    assert hunt.destination == Destination("UDP", "127.0.0.10", 5060) == second.destination
    assert not hunt.reroutes(503)  # no destination nor trunk left
    hunt.release()
    assert o.trunk_main.admission.active == 0


# -- the trunk's limits are checked before the caller is rung -------------------------


def test_every_trunk_full_fails_the_call_at_once_without_ringing_the_caller() -> None:
    o = Outbound(main_max_calls=1)
    o.registry.trunks.pop("uk_backup")
    held = o.trunk_main.admission.admit()
    info = o.place()
    assert (info.state, info.end_reason) == ("failed", "no-trunk")
    o.world.run(5)
    assert caller_invites(o) == []  # alice's phone never rang
    assert o.invites_to("127.0.0.8") == []
    held.release()


def test_the_place_is_taken_while_the_caller_rings_and_given_back_if_they_never_answer() -> None:
    o = Outbound(alice=Answer(sdp=None), ring_timeout=20)  # alice's phone rings, unanswered
    info = o.place()
    o.world.run(1)
    assert o.state(info.call_id) == "calling-caller"
    assert o.trunk_main.admission.active == 1  # reserved before the caller answers
    o.world.run(25)
    record = o.world.record(info.call_id)
    assert (record.public_state, record.end_reason) == ("failed", "caller-no-answer")
    assert o.trunk_main.admission.active == 0
    assert o.invites_to("127.0.0.8") == []


def test_calls_placed_at_once_hold_exactly_the_trunks_limit() -> None:
    """12 callers at once on a trunk of 3 places: 3 calls, 9 refused before any phone rings."""
    o = Outbound(main_max_calls=3, main=Answer(delay=30, sdp=sdp("pstn", host="127.0.0.8")))
    o.registry.trunks.pop("uk_backup")
    callers = [f"user{i}" for i in range(12)]
    for i, name in enumerate(callers):
        o.world.phone(name, f"127.0.1.{i + 1}")
    placing = [
        IOutboundCalls(o.world.controller).place_outbound(name, DECISION) for name in callers
    ]
    infos: list[CallInfo] = [d.result for d in placing]  # type: ignore[attr-defined]
    assert o.trunk_main.admission.active == 3
    peak = 0
    for _ in range(100):
        o.world.run(0.1)
        peak = max(peak, o.trunk_main.admission.active)
    assert peak == 3
    failed = [i for i in infos if i.state == "failed"]
    assert len(failed) == 9 and {i.end_reason for i in failed} == {"no-trunk"}
    rung = {
        w.to[0]
        for w in o.world.wire
        if isinstance(w.message, Request) and w.message.method == "INVITE"
    }
    assert len(rung & {f"127.0.1.{i + 1}" for i in range(12)}) == 3
    assert len(o.invites_to("127.0.0.8")) == 3
    for info in infos:
        o.world.controller.hang_up(info.call_id, None)
    o.world.run(5)
    assert o.trunk_main.admission.active == 0


# -- the daily limit's count is given back when no INVITE reached a trunk -------------


def refunds_of(o: Outbound, caller_answer: Answer | None = None) -> tuple[CallInfo, list[str]]:
    refunds: list[str] = []
    results: list[object] = []
    IOutboundCalls(o.world.controller).place_outbound(
        "alice", DECISION, lambda: refunds.append("refund")
    ).addBoth(results.append)
    info = results[0]
    assert isinstance(info, CallInfo)
    return info, refunds


def test_a_call_that_reached_a_trunk_keeps_its_count_even_if_refused() -> None:
    o = Outbound(main=Answer(reject=486))
    info, refunds = refunds_of(o)
    o.world.run(5)
    assert o.state(info.call_id) == "failed"
    assert refunds == []


@pytest.mark.parametrize("case", ["full", "no-answer", "unresolvable"])
def test_a_call_that_sent_no_invite_to_a_trunk_gives_its_count_back(case: str) -> None:
    o = Outbound(
        alice=Answer(sdp=None) if case == "no-answer" else None,
        main_host=None if case == "unresolvable" else "127.0.0.8",
        ring_timeout=20,
    )
    if case != "no-answer":
        o.registry.trunks.pop("uk_backup")
    held = o.trunk_main.admission.admit() if case == "full" else None
    if case == "full":
        o.trunk_main.admission.max_calls = 1
    info, refunds = refunds_of(o)
    o.world.run(30)
    assert o.world.record(info.call_id).public_state == "failed"
    assert refunds == ["refund"]  # once
    if held is not None:
        held.release()
