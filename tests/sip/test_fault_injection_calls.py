"""
Whole calls between two user-agent cores over the seeded fault-injection
network (20% loss, 10% duplication, 10% reordering): whatever is lost, both
sides end in the same final state and nothing (dialog, transaction, timer)
is left.

Each scenario runs 300 seeds; a failure names the seed, and the same seed
replays the same run.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from clicktodial.sip.message import Response
from clicktodial.sip.ua import CallState, IncomingRequest, OutgoingCall, Session
from clicktodial.testing.sipfakes import FaultyNetwork, run_for
from clicktodial.testing.uafakes import Answer, EventLog, Party, sdp

SEEDS = range(300)
LOSS = 0.2
DUPLICATE = 0.1
REORDER = 0.1
#: Long enough for every timer of a call to run out (Timer D is 32 s, the
#: 2xx retransmission and fork window 64*T1).
SETTLE = 120.0


class Run:
    """One seeded call from alice (UAC) to bob (UAS)."""

    def __init__(self, seed: int, answer: Answer) -> None:
        self.seed = seed
        self.clock = Clock()
        self.net = FaultyNetwork(
            self.clock, seed=seed, loss=LOSS, duplicate=DUPLICATE, reorder=REORDER
        )
        self.alice = Party.on_network(self.clock, self.net, "127.0.0.1", 5060, "alice", seed=seed)
        self.bob = Party.on_network(
            self.clock, self.net, "127.0.0.2", 5060, "bob", answer=answer, seed=seed + 10_000
        )

    @property
    def bob_log(self) -> EventLog:
        assert len(self.bob.app.logs) == 1, f"seed {self.seed}: bob saw {len(self.bob.app.logs)}"
        return self.bob.app.logs[0]

    def bob_session(self) -> Session:
        session = self.bob.app.calls[0].session
        assert session is not None, f"seed {self.seed}"
        return session

    def settle(self) -> None:
        run_for(self.clock, SETTLE)

    def assert_nothing_left(self) -> None:
        where = f"seed {self.seed}"
        assert self.alice.ua.active_count == 0, where
        assert self.bob.ua.active_count == 0, where
        assert self.alice.layer.active_count == 0, where
        assert self.bob.layer.active_count == 0, where
        assert self.clock.getDelayedCalls() == [], where


def terminated_reasons(log: EventLog) -> list[object]:
    return [event[2] for event in log.of("terminated")]


def caller_hangs_up(seed: int) -> tuple[Run, OutgoingCall, EventLog]:
    run = Run(seed, Answer(ring=True, delay=0.5, sdp=sdp("bob")))
    call, log = run.alice.call(run.bob, offer=sdp("alice"))

    def answered(call: OutgoingCall, session: Session, response: Response) -> None:
        run.clock.callLater(1.0, session.bye)

    log.on_answered = answered
    run.settle()
    return run, call, log


def test_call_with_offer_in_invite_ends_terminated_on_both_sides() -> None:
    """
    INVITE(offer)/180/200(answer)/ACK, alice BYEs 1 s later: on every seed
    both sides end terminated (alice local-bye, bob remote-bye) with the
    same offer and answer, and nothing is left.
    """
    lost = 0
    for seed in SEEDS:
        run, call, log = caller_hangs_up(seed)
        where = f"seed {seed}"
        assert call.state is CallState.ANSWERED, where
        assert log.names()[-2:] == ["answered", "terminated"], (where, log.names())
        assert terminated_reasons(log) == ["local-bye"], where
        # If every ACK copy is lost the BYE still ends bob's session (no
        # "confirmed" event then).
        assert terminated_reasons(run.bob_log) == ["remote-bye"], (where, run.bob_log.names())
        assert call.session is not None
        alice_oa = call.session.dialog.offer_answer
        bob_oa = run.bob_session().dialog.offer_answer
        assert (alice_oa.local_sdp, alice_oa.remote_sdp) == (sdp("alice"), sdp("bob")), where
        assert (bob_oa.remote_sdp, bob_oa.local_sdp) == (sdp("alice"), sdp("bob")), where
        run.assert_nothing_left()
        lost += run.net.lost
    assert lost > 0  # the faults really happened


def callee_hangs_up_late_offer(seed: int) -> tuple[Run, OutgoingCall, EventLog]:
    run = Run(seed, Answer(ring=False, delay=0.2, sdp=sdp("bob")))
    call, log = run.alice.call(run.bob)

    def answered(call: OutgoingCall, session: Session, response: Response) -> None:
        session.ack(sdp("alice"), "application/sdp")

    log.on_answered = answered

    def hang_up_once_answered() -> None:
        # The INVITE may take several retransmissions to get through.
        calls = run.bob.app.calls
        if calls and calls[0].session is not None:
            calls[0].session.bye()
        else:
            run.clock.callLater(0.5, hang_up_once_answered)

    run.clock.callLater(3.0, hang_up_once_answered)
    run.settle()
    return run, call, log


def test_late_offer_call_bye_from_callee_ends_on_both_sides() -> None:
    """
    INVITE without SDP, offer in the 200, answer in the ACK, bob BYEs after
    3 s: both sides end terminated; when an ACK got through, bob holds
    alice's answer; nothing is left.
    """
    for seed in SEEDS:
        run, call, log = callee_hangs_up_late_offer(seed)
        where = f"seed {seed}"
        assert call.state is CallState.ANSWERED, where
        assert terminated_reasons(log) == ["remote-bye"], (where, log.names())
        assert terminated_reasons(run.bob_log) == ["local-bye"], (where, run.bob_log.names())
        if run.bob_log.of("confirmed"):
            assert run.bob_session().dialog.offer_answer.remote_sdp == sdp("alice"), where
        run.assert_nothing_left()


def test_cancelled_call_ends_without_session_on_both_sides() -> None:
    """
    alice CANCELs 1 s into ringing while bob answers at 1.05 s: either the
    CANCEL wins (487; bob reports call_cancelled) or the 2xx crosses it
    (alice ACKs and BYEs it); alice always reports one 487 failure and never
    an answer, and nothing is left.
    """
    outcomes = {CallState.CANCELLED: 0, CallState.ANSWERED: 0}
    for seed in SEEDS:
        run = Run(seed, Answer(ring=True, delay=1.05, sdp=sdp("bob")))
        call, log = run.alice.call(run.bob, offer=sdp("alice"))
        run.clock.callLater(1.0, call.cancel)
        run.settle()
        where = f"seed {seed}"
        assert call.state is CallState.CANCELLED, (where, log.names())
        failed = log.of("failed")
        assert len(failed) == 1, where
        response = failed[0][2]
        assert isinstance(response, Response) and response.status == 487, where
        assert "answered" not in log.names(), where
        incoming = run.bob.app.calls[0]
        outcomes[incoming.state] += 1
        if incoming.state is CallState.CANCELLED:
            assert run.bob_log.names() == ["cancelled"], where
        else:
            assert terminated_reasons(run.bob_log) == ["remote-bye"], where
        run.assert_nothing_left()
    assert outcomes[CallState.CANCELLED] > 0


def reinvite_then_hang_up(seed: int) -> tuple[Run, OutgoingCall, EventLog, list[int]]:
    run = Run(seed, Answer(ring=False, delay=0.2, sdp=sdp("bob")))

    def answer_offer(session: Session, request: IncomingRequest) -> None:
        request.respond(200, body=sdp("bob", 2), content_type="application/sdp")

    run.bob.app.on_request = answer_offer
    call, log = run.alice.call(run.bob, offer=sdp("alice"))
    finals: list[int] = []

    def answered(call: OutgoingCall, session: Session, response: Response) -> None:
        def reinvite() -> None:
            session.reinvite(sdp("alice", 2), on_response=lambda r: finals.append(r.status))

        run.clock.callLater(1.0, reinvite)
        run.clock.callLater(20.0, session.bye)

    log.on_answered = answered
    run.settle()
    return run, call, log, finals


def test_reinvite_under_loss_updates_both_sides_then_the_call_ends() -> None:
    """
    alice re-INVITEs with a new offer 1 s into the call and BYEs at 20 s:
    the re-INVITE completes with 200 (ACKed with the same ACK for every 2xx
    copy), both sides hold the new offer and answer, and both end terminated.
    """
    for seed in SEEDS:
        run, call, log, finals = reinvite_then_hang_up(seed)
        where = f"seed {seed}"
        assert finals == [200], (where, finals)
        assert call.session is not None
        alice_oa = call.session.dialog.offer_answer
        bob_oa = run.bob_session().dialog.offer_answer
        assert (alice_oa.local_sdp, alice_oa.remote_sdp) == (sdp("alice", 2), sdp("bob", 2)), where
        assert (bob_oa.remote_sdp, bob_oa.local_sdp) == (sdp("alice", 2), sdp("bob", 2)), where
        assert terminated_reasons(log) == ["local-bye"], where
        assert terminated_reasons(run.bob_log) == ["remote-bye"], where
        run.assert_nothing_left()
