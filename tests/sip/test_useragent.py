"""
The user-agent core (RFC 3261 §8.2.2.2, §9, §12-§15) on a fake clock: one
core on a recording transport with the peer's messages fed by hand, and
pairs of cores on a fault-free in-memory network.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from clicktodial.sip.address import Destination, Source
from clicktodial.sip.dialog import DialogError, source_flow
from clicktodial.sip.digest import (
    DigestCredentials,
    compute_ha1,
    compute_response,
    parse_authorization,
)
from clicktodial.sip.headers import NameAddr
from clicktodial.sip.interfaces import (
    IClientCredentials,
    IIncomingCallHandler,
    ISessionHandler,
    ITransactionUser,
)
from clicktodial.sip.message import Request, Response, make_response, new_branch
from clicktodial.sip.parser import parse_message
from clicktodial.sip.sdp import Party as SDPParty
from clicktodial.sip.transactions import Timers
from clicktodial.sip.ua import (
    CallState,
    IncomingRequest,
    OutgoingCall,
    RequestPending,
    Session,
    UserAgent,
)
from clicktodial.sip.ua.auth import StaticCredentials
from clicktodial.sip.uri import URI
from clicktodial.testing.sipfakes import (
    FaultyNetwork,
    RecordingTransport,
    assert_quiescent,
    run_for,
    sip_request,
)
from clicktodial.testing.uafakes import Answer, EventLog, Party, ScriptedCallHandler, sdp

SDP_TYPE = ("Content-Type", "application/sdp")
DEFAULT_TIMERS = Timers()
PEER = Source("UDP", "127.0.0.2", 5060, "127.0.0.1", 5060)
BOB_URI = URI("sip", "bob", "127.0.0.2", 5060)
#: Long enough for every transaction and core timer to run out.
SETTLE = 80.0


def wire(message: Request | Response) -> Request | Response:
    """The message as the peer would receive it: serialized and parsed again."""
    return parse_message(message.serialize())


def transport_of(party: Party) -> RecordingTransport:
    assert isinstance(party.transport, RecordingTransport)
    return party.transport


def statuses(party: Party) -> list[int | None]:
    return [sent.status for sent in transport_of(party).responses()]


def sent_requests(party: Party, method: str) -> list[Request]:
    found = []
    for sent in transport_of(party).requests(method):
        assert isinstance(sent.message, Request)
        found.append(sent.message)
    return found


def last_response(party: Party) -> Response:
    message = transport_of(party).responses()[-1].message
    assert isinstance(message, Response)
    return message


def failure_statuses(log: EventLog) -> list[int]:
    found = []
    for event in log.of("failed"):
        response = event[2]
        assert isinstance(response, Response)
        found.append(response.status)
    return found


def assert_idle(clock: Clock, *parties: Party) -> None:
    run_for(clock, SETTLE)
    for party in parties:
        assert party.ua.active_count == 0
    assert_quiescent(clock, *(party.layer for party in parties))


# ---------------------------------------------------------------------------
# UAS side: bob on a recording transport, alice's messages fed by hand


class Callee:
    """bob's core, with alice (127.0.0.2) simulated by hand."""

    def __init__(
        self,
        answer: Answer | None = None,
        timers: Timers = DEFAULT_TIMERS,
        pin_flows: bool = False,
        contact: str = "<sip:alice@127.0.0.2:5060>",
    ) -> None:
        self.clock = Clock()
        self.bob = Party.recording(
            self.clock,
            "127.0.0.1",
            5060,
            "bob",
            timers=timers,
            answer=answer or Answer(),
            pin_flows=pin_flows,
        )
        self.contact = contact
        self.call_id = "call-1@127.0.0.2"
        self.alice_tag = "atag"

    def send(self, request: Request) -> None:
        parsed = wire(request)
        assert isinstance(parsed, Request)
        self.bob.layer.request_received(parsed, PEER)

    def request(
        self,
        method: str,
        cseq: int,
        *,
        to_tag: str | None = None,
        body: bytes = b"",
        branch: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Request:
        headers = (("Contact", self.contact),) + extra
        if body:
            headers += (SDP_TYPE,)
        return sip_request(
            method,
            "sip:bob@127.0.0.1:5060",
            call_id=self.call_id,
            cseq=cseq,
            from_tag=self.alice_tag,
            to_tag=to_tag,
            via=f"SIP/2.0/UDP 127.0.0.2:5060;branch={branch or new_branch()};rport",
            extra=headers,
            body=body,
        )

    def invite(self, body: bytes = b"", cseq: int = 1, branch: str | None = None) -> Request:
        request = self.request("INVITE", cseq, body=body, branch=branch)
        self.send(request)
        return request

    @property
    def log(self) -> EventLog:
        return self.bob.app.logs[-1]

    @property
    def bob_tag(self) -> str:
        tag = self.bob.app.calls[-1].local_tag
        return tag

    @property
    def session(self) -> Session:
        session = self.bob.app.calls[-1].session
        assert session is not None
        return session

    def ack(self, cseq: int = 1, body: bytes = b"") -> None:
        self.send(self.request("ACK", cseq, to_tag=self.bob_tag, body=body))

    def established(self, cseq: int = 1) -> Session:
        self.invite(sdp("alice"), cseq)
        self.ack(cseq)
        return self.session

    def in_dialog(self, method: str, cseq: int, body: bytes = b"") -> Request:
        request = self.request(method, cseq, to_tag=self.bob_tag, body=body)
        self.send(request)
        return request

    def response_times(self, status: int) -> list[float]:
        return transport_of(self.bob).times(status=status)


class TestUASAnswering:
    def test_providers_implement_their_interfaces(self) -> None:
        """The core is an ITransactionUser; the test handlers provide the app interfaces."""
        clock = Clock()
        bob = Party.recording(clock)
        assert verifyObject(ITransactionUser, bob.ua)
        assert verifyObject(IIncomingCallHandler, ScriptedCallHandler(clock))
        assert verifyObject(ISessionHandler, EventLog())

    def test_ringing_then_200_create_early_then_confirmed_dialog(self) -> None:
        """§12.1.1: 180 and 200 carry our tag, Contact and the copied Record-Route."""
        callee = Callee(Answer(ring=True, delay=1.0))
        invite = callee.request(
            "INVITE", 1, body=sdp("alice"), extra=(("Record-Route", "<sip:127.0.0.9;lr>"),)
        )
        callee.send(invite)
        ringing = last_response(callee.bob)
        assert ringing.status == 180
        assert ringing.to.tag == callee.bob_tag
        assert [str(c.uri) for c in ringing.contacts] == ["sip:bob@127.0.0.1:5060"]
        assert [str(r.uri) for r in ringing.record_routes] == ["sip:127.0.0.9;lr"]
        assert callee.session.state.value == "early"
        run_for(callee.clock, 1.0)
        ok = last_response(callee.bob)
        assert ok.status == 200 and ok.to.tag == callee.bob_tag
        assert ok.body == sdp("bob")
        assert callee.session.state.value == "confirmed"
        callee.ack()
        assert callee.log.names() == ["confirmed"]

    def test_2xx_is_retransmitted_at_t1_doubling_to_t2_until_the_ack(self) -> None:
        """§13.3.1.4: 200 resent after T1, 2T1, 4T1, ... capped at T2; the ACK stops it."""
        callee = Callee(Answer(ring=False))
        callee.invite(sdp("alice"))
        run_for(callee.clock, 20.0)
        times = callee.response_times(200)
        assert times == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5]
        callee.ack()
        run_for(callee.clock, 20.0)
        assert callee.response_times(200) == times
        assert callee.log.names() == ["confirmed"]
        callee.session.bye()
        bye = sent_requests(callee.bob, "BYE")[0]
        callee.bob.layer.response_received(wire(make_response(bye, 200)), PEER)  # type: ignore[arg-type]
        assert_idle(callee.clock, callee.bob)

    def test_no_ack_within_64_t1_ends_the_session_with_bye(self) -> None:
        """§13.3.1.4: after 64*T1 without ACK, stop retransmitting and send BYE."""
        callee = Callee(Answer(ring=False))
        callee.invite(sdp("alice"))
        run_for(callee.clock, 31.9)
        assert sent_requests(callee.bob, "BYE") == []
        run_for(callee.clock, 0.2)
        byes = sent_requests(callee.bob, "BYE")
        assert len(byes) == 1
        assert byes[0].to.tag == "atag" and byes[0].from_.tag == callee.bob_tag
        assert max(callee.response_times(200)) < 32.0
        assert [e[2] for e in callee.log.of("terminated")] == ["no-ack"]
        assert_idle(callee.clock, callee.bob)

    def test_the_2xx_timers_are_entries_of_the_layers_queues_firing_on_time(self) -> None:
        """§13.3.1.4 on the transaction layer's one reactor timer: the 2xx goes again at
        exactly T1, 2T1, 4T1, ... capped at T2, and the BYE at exactly 64*T1 after the
        first 2xx; the core starts no reactor timer of its own."""
        callee = Callee(Answer(ring=False))
        callee.clock.advance(0.375)  # the 2xx is first sent at 0.375, between T1 steps
        callee.invite(sdp("alice"))
        assert callee.response_times(200) == [0.375]
        assert len(callee.clock.getDelayedCalls()) == 1  # the layer's, for all its timers
        run_for(callee.clock, 32.0, step=0.125)
        times = [t - 0.375 for t in callee.response_times(200)]
        assert times == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        [bye] = transport_of(callee.bob).requests("BYE")
        assert bye.time - 0.375 == 32.0
        assert [e[2] for e in callee.log.of("terminated")] == ["no-ack"]

    def test_bye_by_callee_waits_for_the_ack(self) -> None:
        """§15: the callee must not send BYE before the ACK for its 2xx."""
        callee = Callee(Answer(ring=False))
        callee.invite(sdp("alice"))
        callee.session.bye()
        assert sent_requests(callee.bob, "BYE") == []
        assert callee.log.names() == ["terminated"]
        callee.ack()
        assert len(sent_requests(callee.bob, "BYE")) == 1
        assert_idle(callee.clock, callee.bob)

    def test_cancel_gets_487_and_tells_the_app(self) -> None:
        """§9.2: CANCEL of a pending INVITE: 200 to CANCEL, 487 to the INVITE."""
        callee = Callee(Answer(ring=True, sdp=None))
        invite = callee.invite(sdp("alice"))
        cancel = sip_request(
            "CANCEL",
            "sip:bob@127.0.0.1:5060",
            call_id=callee.call_id,
            cseq=1,
            from_tag="atag",
            via=invite.headers.get("Via"),
        )
        callee.send(cancel)
        assert statuses(callee.bob) == [180, 200, 487]
        assert callee.log.names() == ["cancelled"]
        assert callee.bob.app.calls[0].state is CallState.CANCELLED
        assert callee.bob.ua.sessions == []
        callee.send(callee.request("ACK", 1, to_tag=callee.bob_tag, branch=invite.top_via.branch))
        assert_idle(callee.clock, callee.bob)

    def test_callee_cannot_bye_an_early_dialog(self) -> None:
        """§15: the callee ends an early dialog by rejecting the INVITE, not with BYE."""
        callee = Callee(Answer(ring=True, sdp=None))
        callee.invite(sdp("alice"))
        with pytest.raises(DialogError):
            callee.session.bye()
        callee.bob.app.calls[0].reject(480)
        assert statuses(callee.bob) == [180, 480]
        assert callee.bob.ua.sessions == []

    def test_bye_on_early_dialog_gets_200_and_invite_487(self) -> None:
        """§15.1.2: a BYE for an early dialog ends it; the INVITE gets 487."""
        callee = Callee(Answer(ring=True, sdp=None))
        callee.invite(sdp("alice"))
        callee.in_dialog("BYE", 2)
        assert statuses(callee.bob) == [180, 200, 487]
        assert callee.bob.ua.sessions == []


class TestUASRequestChecks:
    def test_request_for_unknown_dialog_gets_481(self) -> None:
        """§12.2.2: a request with a To tag matching no dialog gets 481."""
        callee = Callee()
        callee.send(callee.request("INFO", 5, to_tag="nosuchtag"))
        assert statuses(callee.bob) == [481]

    def test_bye_outside_a_dialog_gets_481(self) -> None:
        """§15.1.2: a BYE without To tag matches no dialog: 481."""
        callee = Callee()
        callee.send(callee.request("BYE", 5))
        assert statuses(callee.bob) == [481]
        assert last_response(callee.bob).to.tag is not None

    def test_merged_request_gets_482(self) -> None:
        """§8.2.2.2: same From tag, Call-ID, CSeq, no To tag, other branch: 482."""
        callee = Callee(Answer(ring=True, sdp=None))
        callee.invite(sdp("alice"), branch="z9hG4bKpath1")
        callee.invite(sdp("alice"), branch="z9hG4bKpath2")
        assert statuses(callee.bob) == [180, 482]
        assert len(callee.bob.app.calls) == 1

    def test_out_of_order_cseq_gets_500(self) -> None:
        """§12.2.2: a CSeq lower than the remote sequence number gets 500."""
        callee = Callee(Answer(ring=False))
        callee.established(cseq=5)
        callee.in_dialog("INFO", 7)
        callee.in_dialog("INFO", 6)
        assert statuses(callee.bob)[-2:] == [200, 500]

    def test_in_dialog_request_goes_to_the_session_handler(self) -> None:
        """Requests inside a dialog reach ISessionHandler.request_received."""
        callee = Callee(Answer(ring=False))
        callee.established()
        callee.in_dialog("INFO", 2)
        assert callee.log.names() == ["confirmed", "request"]
        assert statuses(callee.bob)[-1] == 200

    def test_bye_ends_the_session_and_later_requests_get_481(self) -> None:
        """§15.1.2: BYE gets 200 and ends the session; the dialog is then unknown."""
        callee = Callee(Answer(ring=False))
        callee.established()
        callee.in_dialog("BYE", 2)
        assert statuses(callee.bob)[-1] == 200
        assert [e[2] for e in callee.log.of("terminated")] == ["remote-bye"]
        callee.in_dialog("INFO", 3)
        assert statuses(callee.bob)[-1] == 481
        assert_idle(callee.clock, callee.bob)

    def test_out_of_dialog_request_goes_to_the_call_handler(self) -> None:
        """Non-INVITE requests outside dialogs reach IIncomingCallHandler.request_received."""
        callee = Callee()
        callee.send(callee.request("OPTIONS", 1))
        assert statuses(callee.bob) == [200]
        assert last_response(callee.bob).to.tag is not None
        assert [r.method for r in callee.bob.app.out_of_dialog] == ["OPTIONS"]

    def test_precheck_rejection_is_sent_and_nothing_else_happens(self) -> None:
        """A configured §8.2 precheck answers before any dialog processing."""
        callee = Callee()
        callee.bob.ua.precheck = lambda request: make_response(request, 420, to_tag="x")
        callee.invite(sdp("alice"))
        assert statuses(callee.bob) == [420]
        assert callee.bob.app.calls == []


class TestUASReinvite:
    def test_reinvite_with_offer_is_answered_and_its_2xx_retransmitted_until_ack(self) -> None:
        """§14.2: a re-INVITE's 2xx is retransmitted like the INVITE's until ACKed."""
        callee = Callee(Answer(ring=False))
        session = callee.established()

        def answer(session: Session, request: IncomingRequest) -> None:
            request.respond(200, body=sdp("bob", 2), content_type="application/sdp")

        callee.log.on_request = answer
        callee.in_dialog("INVITE", 2, body=sdp("alice", 2))
        run_for(callee.clock, 2.0)
        # The INVITE's 200 (ACKed at once), then the re-INVITE's at 0, T1, 3*T1.
        assert callee.response_times(200) == [0.0, 0.0, 0.5, 1.5]
        callee.ack(2)
        assert callee.log.names() == ["confirmed", "request", "confirmed"]
        oa = session.dialog.offer_answer
        assert (oa.local_sdp, oa.remote_sdp) == (sdp("bob", 2), sdp("alice", 2))

    def test_reinvite_while_ours_is_pending_gets_491(self) -> None:
        """§14.2: an INVITE arriving while our re-INVITE is in progress gets 491."""
        callee = Callee(Answer(ring=False))
        session = callee.established()
        session.reinvite(sdp("bob", 2))
        callee.in_dialog("INVITE", 2, body=sdp("alice", 2))
        assert statuses(callee.bob)[-1] == 491

    def test_second_reinvite_before_first_is_answered_gets_500_with_retry_after(self) -> None:
        """§14.2: a second INVITE before the first got its final response: 500 + Retry-After."""
        callee = Callee(Answer(ring=False))
        callee.established()
        held: list[IncomingRequest] = []
        callee.log.on_request = lambda session, request: held.append(request)
        callee.in_dialog("INVITE", 2, body=sdp("alice", 2))
        callee.in_dialog("INVITE", 3)
        response = last_response(callee.bob)
        assert response.status == 500
        retry_after = response.headers.get("Retry-After")
        assert retry_after is not None and 0 <= int(retry_after) <= 10
        held[0].respond(488)
        assert statuses(callee.bob)[-1] == 488

    def test_offer_while_our_offer_is_outstanding_gets_491(self) -> None:
        """RFC 3264 §4 / §14.2: a new offer before our 2xx offer is answered gets 491."""
        callee = Callee(Answer(ring=False, sdp=sdp("bob")))
        callee.invite()  # no offer: our 200 carries one, the ACK will answer
        callee.in_dialog("UPDATE", 2, body=sdp("alice"))
        assert statuses(callee.bob)[-1] == 491
        callee.ack(1, body=sdp("alice"))
        oa = callee.session.dialog.offer_answer
        assert (oa.local_sdp, oa.remote_sdp) == (sdp("bob"), sdp("alice"))

    def test_failed_reinvite_leaves_the_session_unchanged(self) -> None:
        """§14.2: a rejected re-INVITE offer is withdrawn; the old SDP stays."""
        callee = Callee(Answer(ring=False))
        session = callee.established()
        callee.log.on_request = lambda session, request: request.respond(488)
        callee.in_dialog("INVITE", 2, body=sdp("alice", 2))
        oa = session.dialog.offer_answer
        assert not oa.offer_outstanding
        assert oa.remote_sdp == sdp("alice")

    def test_reinvite_2xx_without_answer_is_refused(self) -> None:
        """§13.3.1.4/§14.2: the 2xx to an offer must carry the answer."""
        callee = Callee(Answer(ring=False))
        callee.established()
        held: list[IncomingRequest] = []
        callee.log.on_request = lambda session, request: held.append(request)
        callee.in_dialog("INVITE", 2, body=sdp("alice", 2))
        with pytest.raises(ValueError):
            held[0].respond(200)

    def test_cancelled_reinvite_gets_487(self) -> None:
        """§9.2: a CANCEL of a pending re-INVITE gets it answered 487."""
        callee = Callee(Answer(ring=False))
        session = callee.established()
        held: list[IncomingRequest] = []
        callee.log.on_request = lambda session, request: held.append(request)
        reinvite = callee.in_dialog("INVITE", 2, body=sdp("alice", 2))
        cancel = sip_request(
            "CANCEL",
            "sip:bob@127.0.0.1:5060",
            call_id=callee.call_id,
            cseq=2,
            from_tag="atag",
            to_tag=callee.bob_tag,
            via=reinvite.headers.get("Via"),
        )
        callee.send(cancel)
        assert statuses(callee.bob)[-2:] == [200, 487]
        assert not session.invite_pending
        assert not session.dialog.offer_answer.offer_outstanding
        with pytest.raises(ValueError):
            held[0].respond(200, body=sdp("bob", 2), content_type="application/sdp")


# ---------------------------------------------------------------------------
# UAC side: alice on a recording transport, bob's responses fed by hand


class Caller:
    """alice's core calling bob (127.0.0.2), bob simulated by hand."""

    def __init__(
        self,
        offer: bytes | None = None,
        timers: Timers = DEFAULT_TIMERS,
        pin_flows: bool = False,
        credentials: IClientCredentials | None = None,
    ) -> None:
        self.clock = Clock()
        self.alice = Party.recording(
            self.clock, "127.0.0.1", 5060, "alice", timers=timers, pin_flows=pin_flows
        )
        self.call, self.log = self.alice.call(BOB_URI, offer=offer, credentials=credentials)
        self.invite = sent_requests(self.alice, "INVITE")[0]

    def respond(
        self,
        status: int,
        tag: str | None = "b1",
        body: bytes = b"",
        request: Request | None = None,
        contact: str = "<sip:bob@127.0.0.2:5060>",
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Response:
        response = make_response(request or self.invite, status, to_tag=tag)
        if status > 100:
            response.headers.add("Contact", contact)
        for name, value in extra:
            response.headers.add(name, value)
        if body:
            response.headers.add(*SDP_TYPE)
            response.body = body
        parsed = wire(response)
        assert isinstance(parsed, Response)
        self.alice.layer.response_received(parsed, PEER)
        return response

    def acks(self) -> list[bytes]:
        return [sent.data for sent in transport_of(self.alice).requests("ACK")]

    @property
    def session(self) -> Session:
        assert self.call.session is not None
        return self.call.session


class TestUACInvite:
    def test_invite_has_contact_offer_and_goes_to_the_request_uri(self) -> None:
        """§8.1.1/§13.2.1: the INVITE carries From tag, Contact, CSeq 1, the offer."""
        caller = Caller(offer=sdp("alice"))
        invite = caller.invite
        assert str(invite.uri) == "sip:bob@127.0.0.2:5060"
        assert invite.from_.tag and invite.to.tag is None
        assert [str(c.uri) for c in invite.contacts] == ["sip:alice@127.0.0.1:5060"]
        assert invite.cseq.seq == 1 and invite.body == sdp("alice")
        assert transport_of(caller.alice).requests("INVITE")[0].where == Destination(
            "UDP", "127.0.0.2", 5060
        )

    def test_1xx_with_tag_creates_early_dialog_that_the_2xx_confirms(self) -> None:
        """§12.1.2/§13.2.2.4: 180 with a tag: early session; its 200 confirms the same one."""
        caller = Caller(offer=sdp("alice"))
        caller.respond(100, tag=None)
        caller.respond(180)
        provisional = caller.log.of("provisional")
        assert [p[3] is None for p in provisional] == [True, False]
        early = provisional[1][3]
        assert isinstance(early, Session) and early.state.value == "early"
        caller.respond(200, body=sdp("bob"))
        assert caller.session is early and early.state.value == "confirmed"
        assert caller.call.state is CallState.ANSWERED
        assert early.dialog.offer_answer.remote_sdp == sdp("bob")

    def test_every_2xx_copy_gets_the_same_ack_also_after_timer_m(self) -> None:
        """§13.2.2.4/RFC 6026: each 2xx retransmission, even a stray one, gets the same ACK
        for 64*T1 + T4 (the UAS's retransmissions, then their time in the network); the
        ACK is then forgotten (a held call does not keep it) and a later copy gets none."""
        caller = Caller(offer=sdp("alice"))
        caller.respond(200, body=sdp("bob"))
        caller.respond(200, body=sdp("bob"))
        run_for(caller.clock, 36.0)  # Timer M and the fork window are over
        caller.respond(200, body=sdp("bob"))  # stray now
        run_for(caller.clock, 1.5)
        assert caller.session._ack is None
        caller.respond(200, body=sdp("bob"))  # too late: no ACK kept
        acks = caller.acks()
        assert len(acks) == 3 and len(set(acks)) == 1
        ack = parse_message(acks[0])
        assert isinstance(ack, Request)
        assert ack.cseq.seq == 1 and ack.cseq.method == "ACK"
        assert ack.to.tag == "b1"
        assert str(ack.uri) == "sip:bob@127.0.0.2:5060"

    def test_forked_2xx_are_each_acked_and_the_extra_dialog_byed(self) -> None:
        """§13.2.2.4: a second 2xx from another fork is ACKed, then BYEd; the app sees one."""
        caller = Caller(offer=sdp("alice"))
        caller.respond(180, tag="b1")
        caller.respond(180, tag="b2", contact="<sip:bob@127.0.0.3:5060>")
        caller.respond(200, tag="b1", body=sdp("bob"))
        caller.respond(200, tag="b2", body=sdp("bob2"), contact="<sip:bob@127.0.0.3:5060>")
        acks = [parse_message(data) for data in caller.acks()]
        assert [a.to.tag for a in acks] == ["b1", "b2"]
        byes = sent_requests(caller.alice, "BYE")
        assert [b.to.tag for b in byes] == ["b2"]
        assert str(byes[0].uri) == "sip:bob@127.0.0.3:5060"
        assert caller.log.names().count("answered") == 1
        assert "terminated" not in caller.log.names()
        assert caller.alice.ua.sessions == [caller.session]

    def test_caller_bye_on_early_dialog_then_2xx_is_acked_and_byed(self) -> None:
        """§15: the caller may BYE an early dialog; a 2xx for it later is ACKed and BYEd."""
        caller = Caller(offer=sdp("alice"))
        caller.respond(180)
        early = caller.log.of("provisional")[0][3]
        assert isinstance(early, Session)
        early.bye()
        assert len(sent_requests(caller.alice, "BYE")) == 1
        caller.respond(200, body=sdp("bob"))
        assert len(caller.acks()) == 1
        assert len(sent_requests(caller.alice, "BYE")) == 2
        assert "answered" not in caller.log.names()
        assert [e[2] for e in caller.log.of("terminated")] == ["local-bye"]
        assert failure_statuses(caller.log) == [487]
        assert caller.alice.ua.active_count == 0

    def test_failure_ends_the_call_and_its_early_dialogs(self) -> None:
        """§13.2.2.3: a 300-699 ends the INVITE and every early dialog."""
        caller = Caller(offer=sdp("alice"))
        caller.respond(180)
        caller.respond(486)
        assert caller.call.state is CallState.FAILED
        assert caller.log.names() == ["provisional", "failed"]
        assert caller.alice.ua.sessions == []
        assert_idle(caller.clock, caller.alice)

    def test_timeout_is_reported_as_408(self) -> None:
        """§17.1.1.2 via §13.2.2.3: no answer at all: the call fails with 408."""
        caller = Caller(offer=sdp("alice"))
        run_for(caller.clock, 33.0)
        assert failure_statuses(caller.log) == [408]
        assert_idle(caller.clock, caller.alice)

    def test_late_offer_is_acked_by_the_app_with_the_answer(self) -> None:
        """§13.2.1: no offer in the INVITE: the 2xx offers, the ACK answers."""
        caller = Caller(offer=None)
        caller.respond(200, body=sdp("bob"))
        assert caller.acks() == []
        assert caller.session.dialog.offer_answer.expects_answer_from(SDPParty.LOCAL)
        caller.session.ack(sdp("alice"), "application/sdp")
        caller.respond(200, body=sdp("bob"))
        acks = caller.acks()
        assert len(acks) == 2 and acks[0] == acks[1]
        ack = parse_message(acks[0])
        assert ack.body == sdp("alice")
        oa = caller.session.dialog.offer_answer
        assert (oa.local_sdp, oa.remote_sdp) == (sdp("alice"), sdp("bob"))

    def test_bye_uses_the_route_set_from_record_route(self) -> None:
        """§12.1.2/§12.2.1.1: the BYE goes through the reversed Record-Route."""
        caller = Caller(offer=sdp("alice"))
        caller.respond(
            200,
            body=sdp("bob"),
            extra=(("Record-Route", "<sip:127.0.0.8:5080;lr>, <sip:127.0.0.9:5090;lr>"),),
        )
        caller.session.bye()
        sent = transport_of(caller.alice).requests("BYE")[0]
        bye = sent.message
        assert isinstance(bye, Request)
        assert [str(r.uri) for r in bye.routes] == [
            "sip:127.0.0.9:5090;lr",
            "sip:127.0.0.8:5080;lr",
        ]
        assert str(bye.uri) == "sip:bob@127.0.0.2:5060"
        assert sent.where == Destination("UDP", "127.0.0.9", 5090)
        assert bye.cseq.seq == 2


TRAP_CONTACT = "<sip:bob@127.0.0.9:5099;transport=tcp>"
TRAP_ROUTE = ("Record-Route", "<sip:127.0.0.9:5099;lr;transport=tcp>")


def destinations(party: Party, method: str) -> list[object]:
    return [sent.where for sent in transport_of(party).requests(method)]


class TestPinnedFlows:
    """
    With ``pin_flows`` (the daemon's core), a peer's Contact and Record-Route build the
    Request-URI and Route of §12.2.1.1 but never choose the next hop: every request of a
    dialog goes where its INVITE went, or back to where the peer's INVITE came from
    (docs/security.md, "What a phone can steer: nothing").
    """

    INVITED = Destination("UDP", "127.0.0.2", 5060)

    def test_ack_and_bye_go_where_the_invite_went_not_to_contact_or_record_route(self) -> None:
        caller = Caller(offer=sdp("alice"), pin_flows=True)
        caller.respond(200, body=sdp("bob"), contact=TRAP_CONTACT, extra=(TRAP_ROUTE,))
        caller.session.bye()
        assert destinations(caller.alice, "ACK") == [self.INVITED]
        assert destinations(caller.alice, "BYE") == [self.INVITED]
        bye = sent_requests(caller.alice, "BYE")[0]
        # The peer still sees the request §12.2.1.1 builds.
        assert str(bye.uri) == "sip:bob@127.0.0.9:5099;transport=tcp"
        assert [str(route.uri) for route in bye.routes] == ["sip:127.0.0.9:5099;lr;transport=tcp"]

    def test_reinvite_and_its_ack_go_where_the_invite_went(self) -> None:
        caller = Caller(offer=sdp("alice"), pin_flows=True)
        caller.respond(200, body=sdp("bob"), contact=TRAP_CONTACT, extra=(TRAP_ROUTE,))
        caller.session.reinvite(sdp("alice", 2))
        reinvite = sent_requests(caller.alice, "INVITE")[1]
        caller.respond(200, body=sdp("bob", 2), request=reinvite, contact=TRAP_CONTACT)
        assert destinations(caller.alice, "INVITE") == [self.INVITED, self.INVITED]
        assert destinations(caller.alice, "ACK") == [self.INVITED, self.INVITED]

    def test_an_early_dialogs_bye_goes_where_the_invite_went(self) -> None:
        caller = Caller(offer=sdp("alice"), pin_flows=True)
        caller.respond(180, contact=TRAP_CONTACT, extra=(TRAP_ROUTE,))
        early = caller.log.of("provisional")[0][3]
        assert isinstance(early, Session)
        early.bye()
        assert destinations(caller.alice, "BYE") == [self.INVITED]

    def test_another_forks_2xx_is_acked_and_byed_where_the_invite_went(self) -> None:
        """A late fork (§13.2.2.4): its ACK and BYE too, whatever its Contact/Record-Route."""
        caller = Caller(offer=sdp("alice"), pin_flows=True)
        caller.respond(200, tag="b1", body=sdp("bob"))
        caller.respond(200, tag="b2", body=sdp("bob2"), contact=TRAP_CONTACT, extra=(TRAP_ROUTE,))
        assert destinations(caller.alice, "ACK") == [self.INVITED, self.INVITED]
        assert destinations(caller.alice, "BYE") == [self.INVITED]
        assert str(sent_requests(caller.alice, "BYE")[0].uri) == (
            "sip:bob@127.0.0.9:5099;transport=tcp"
        )

    def test_the_flow_given_to_invite_is_the_next_hop_of_every_request(self) -> None:
        clock = Clock()
        alice = Party.recording(clock, "127.0.0.1", 5060, "alice", pin_flows=True)
        proxy = Destination("UDP", "127.0.0.7", 5070)
        log = EventLog()
        alice.ua.invite(
            BOB_URI,
            from_=NameAddr(alice.uri),
            to=NameAddr(BOB_URI),
            handler=log,
            body=sdp("alice"),
            flow=proxy,
        )
        invite = sent_requests(alice, "INVITE")[0]
        response = make_response(invite, 200, to_tag="b1")
        response.headers.add("Contact", TRAP_CONTACT)
        response.headers.add(*SDP_TYPE)
        response.body = sdp("bob")
        parsed = wire(response)
        assert isinstance(parsed, Response)
        alice.layer.response_received(parsed, PEER)
        [session] = alice.ua.sessions
        session.bye()
        assert destinations(alice, "ACK") == [proxy]
        assert destinations(alice, "BYE") == [proxy]

    def test_without_pinning_contact_and_record_route_are_the_next_hop(self) -> None:
        """A core among peers it trusts (pin_flows off) follows §12.2.1.1 with §8.1.2."""
        caller = Caller(offer=sdp("alice"))
        caller.respond(200, body=sdp("bob"), contact=TRAP_CONTACT, extra=(TRAP_ROUTE,))
        assert destinations(caller.alice, "ACK") == [Destination("TCP", "127.0.0.9", 5099)]

    def test_a_callers_dialog_goes_back_to_its_invites_source(self) -> None:
        """A peer INVITEs us with a Contact and Record-Route naming somewhere else: our BYE
        goes back to the INVITE's source (PEER), with §12.2.1.1's Request-URI and Route."""
        callee = Callee(Answer(ring=False), pin_flows=True, contact=TRAP_CONTACT)
        callee.send(callee.request("INVITE", 1, body=sdp("alice"), extra=(TRAP_ROUTE,)))
        callee.ack(1)
        callee.session.bye()
        assert destinations(callee.bob, "BYE") == [PEER.reply_destination()]
        bye = sent_requests(callee.bob, "BYE")[0]
        assert str(bye.uri) == "sip:bob@127.0.0.9:5099;transport=tcp"
        assert [str(route.uri) for route in bye.routes] == ["sip:127.0.0.9:5099;lr;transport=tcp"]

    def test_a_callers_stream_flow_is_reopened_at_its_contact_port_on_its_host(self) -> None:
        source = Source("TCP", "127.0.0.2", 40000, "127.0.0.1", 5060, 7)
        contact = URI("sip", "alice", "127.0.0.9", 5099, {"transport": "tcp"})
        assert source_flow(source, contact) == Destination("TCP", "127.0.0.2", 40000, 7, 5099)


class TestUACCancel:
    def test_cancel_waits_for_a_provisional_response(self) -> None:
        """§9.1: no CANCEL before a provisional; sent as soon as one arrives."""
        caller = Caller(offer=sdp("alice"))
        assert caller.call.cancel()
        assert sent_requests(caller.alice, "CANCEL") == []
        caller.respond(100, tag=None)
        cancels = sent_requests(caller.alice, "CANCEL")
        assert len(cancels) == 1
        assert cancels[0].top_via.branch == caller.invite.top_via.branch
        assert cancels[0].cseq.seq == 1
        caller.respond(487)
        assert caller.call.state is CallState.CANCELLED
        assert failure_statuses(caller.log) == [487]
        caller.respond(200, request=cancels[0])
        assert_idle(caller.clock, caller.alice)

    def test_2xx_crossing_the_cancel_is_acked_then_byed(self) -> None:
        """§9.1/§15: a 2xx after our CANCEL is ACKed and the session ended with BYE."""
        caller = Caller(offer=sdp("alice"))
        caller.respond(180)
        caller.call.cancel()
        caller.respond(200, body=sdp("bob"))
        assert len(caller.acks()) == 1
        assert len(sent_requests(caller.alice, "BYE")) == 1
        assert caller.call.state is CallState.CANCELLED
        assert caller.log.names() == ["provisional", "failed"]
        assert caller.alice.ua.sessions == []

    def test_cancel_after_answer_does_nothing(self) -> None:
        """A call already answered cannot be cancelled (use BYE)."""
        caller = Caller(offer=sdp("alice"))
        caller.respond(200, body=sdp("bob"))
        assert not caller.call.cancel()
        assert sent_requests(caller.alice, "CANCEL") == []


class TestUACInDialog:
    def answered(self, offer: bytes = sdp("alice")) -> Caller:
        caller = Caller(offer=offer)
        caller.respond(200, body=sdp("bob"))
        return caller

    def test_491_to_reinvite_is_retried_after_2_1_to_4_seconds(self) -> None:
        """§14.1: the Call-ID owner retries a 491'd re-INVITE after 2.1-4 s."""
        caller = self.answered()
        finals: list[int] = []
        caller.session.reinvite(sdp("alice", 2), on_response=lambda r: finals.append(r.status))
        first = sent_requests(caller.alice, "INVITE")[-1]
        caller.respond(491, request=first)
        assert finals == []
        run_for(caller.clock, 2.0)
        assert len(sent_requests(caller.alice, "INVITE")) == 2
        run_for(caller.clock, 2.1)
        retry = sent_requests(caller.alice, "INVITE")[-1]
        assert retry is not first and retry.cseq.seq == first.cseq.seq + 1
        assert retry.body == sdp("alice", 2)
        caller.respond(200, request=retry, body=sdp("bob", 2))
        assert finals == [200]
        oa = caller.session.dialog.offer_answer
        assert (oa.local_sdp, oa.remote_sdp) == (sdp("alice", 2), sdp("bob", 2))
        # The transaction ACKed the 491 (CSeq 2); the core ACKed the 200s.
        acked = [parse_message(data).cseq.seq for data in caller.acks()]
        assert acked == [1, 2, 3]

    def test_491_is_reported_when_retry_is_off(self) -> None:
        """§14.1: without automatic retry the 491 goes to the application."""
        caller = self.answered()
        finals: list[int] = []
        caller.session.reinvite(
            sdp("alice", 2), on_response=lambda r: finals.append(r.status), retry_on_491=False
        )
        caller.respond(491, request=sent_requests(caller.alice, "INVITE")[-1])
        assert finals == [491]
        assert not caller.session.dialog.offer_answer.offer_outstanding

    def test_second_reinvite_while_one_is_pending_is_refused_locally(self) -> None:
        """§14.1: no new INVITE transaction while one is in progress."""
        caller = self.answered()
        caller.session.reinvite(sdp("alice", 2))
        with pytest.raises(RequestPending):
            caller.session.reinvite(sdp("alice", 3))

    def test_2xx_to_reinvite_refreshes_the_target(self) -> None:
        """§12.2.1.2: the Contact of a re-INVITE's 2xx becomes the remote target."""
        caller = self.answered()
        caller.session.reinvite(sdp("alice", 2))
        reinvite = sent_requests(caller.alice, "INVITE")[-1]
        assert reinvite.to.tag == "b1" and reinvite.cseq.seq == 2
        caller.respond(
            200, request=reinvite, body=sdp("bob", 2), contact="<sip:bob@127.0.0.4:5062>"
        )
        caller.session.bye()
        assert transport_of(caller.alice).requests("BYE")[0].where == Destination(
            "UDP", "127.0.0.4", 5062
        )

    def test_481_to_in_dialog_request_ends_the_session(self) -> None:
        """§12.2.1.2: a 481 to a request inside the dialog terminates it."""
        caller = self.answered()
        caller.session.request("INFO")
        caller.respond(481, request=sent_requests(caller.alice, "INFO")[-1])
        assert [e[2] for e in caller.log.of("terminated")] == ["remote-481"]
        assert caller.alice.ua.sessions == []
        assert sent_requests(caller.alice, "BYE") == []

    def test_update_offer_and_answer(self) -> None:
        """RFC 3311: an UPDATE with SDP is an offer, its 2xx the answer."""
        caller = self.answered()
        caller.session.request("UPDATE", sdp("alice", 3), "application/sdp")
        with pytest.raises(Exception, match="outstanding"):
            caller.session.request("UPDATE", sdp("alice", 4), "application/sdp")
        update = sent_requests(caller.alice, "UPDATE")[-1]
        caller.respond(200, request=update, body=sdp("bob", 3))
        oa = caller.session.dialog.offer_answer
        assert (oa.local_sdp, oa.remote_sdp) == (sdp("alice", 3), sdp("bob", 3))


# ---------------------------------------------------------------------------
# Two cores on a fault-free network


class Pair:
    def __init__(self, answer: Answer | None = None, seed: int = 1) -> None:
        self.clock = Clock()
        self.net = FaultyNetwork(self.clock, seed=seed)
        self.alice = Party.on_network(self.clock, self.net, "127.0.0.1", 5060, "alice", seed=seed)
        self.bob = Party.on_network(
            self.clock, self.net, "127.0.0.2", 5060, "bob", answer=answer, seed=seed + 1
        )

    def call(self) -> tuple[OutgoingCall, EventLog, Session, Session]:
        call, log = self.alice.call(self.bob, offer=sdp("alice"))
        run_for(self.clock, 1.0)
        bob_session = self.bob.app.calls[0].session
        assert call.session is not None and bob_session is not None
        return call, log, call.session, bob_session


def test_full_call_leaves_nothing_behind() -> None:
    """INVITE/180/200/ACK/BYE/200 between two cores; afterwards no dialog, transaction or timer."""
    pair = Pair(Answer(ring=True))
    call, log, alice_session, bob_session = pair.call()
    assert log.names() == ["provisional", "answered"]
    assert pair.bob.app.logs[0].names() == ["confirmed"]
    assert alice_session.id.call_id == bob_session.id.call_id
    assert alice_session.id.local_tag == bob_session.id.remote_tag
    alice_session.bye()
    run_for(pair.clock, 1.0)
    assert pair.bob.app.logs[0].names() == ["confirmed", "terminated"]
    assert_idle(pair.clock, pair.alice, pair.bob)


def test_reinvite_glare_resolves_by_491_and_randomized_retry() -> None:
    """§14.1/§14.2: simultaneous re-INVITEs both get 491; the retries both succeed."""
    pair = Pair(Answer(ring=False))
    call, log, alice_session, bob_session = pair.call()
    results: dict[str, list[int]] = {"alice": [], "bob": []}

    def accept_offer(session: Session, request: IncomingRequest) -> None:
        owner = session.dialog.local_uri.user or ""
        request.respond(200, body=sdp(owner, 3), content_type="application/sdp")

    log.on_request = accept_offer
    pair.bob.app.logs[0].on_request = accept_offer
    alice_session.reinvite(sdp("alice", 2), on_response=lambda r: results["alice"].append(r.status))
    bob_session.reinvite(sdp("bob", 2), on_response=lambda r: results["bob"].append(r.status))
    run_for(pair.clock, 10.0)
    assert results == {"alice": [200], "bob": [200]}
    # Each side sent its re-INVITE twice: the first got 491.
    assert alice_session.dialog.local_seq == 3
    for session in (alice_session, bob_session):
        assert not session.dialog.offer_answer.offer_outstanding
        assert session.dialog.offer_answer.completed_exchanges == 3
    alice_session.bye()
    assert_idle(pair.clock, pair.alice, pair.bob)


def test_core_without_timers_uses_the_transaction_layers() -> None:
    """A core built without timers takes the transaction layer's."""
    clock = Clock()
    ua = UserAgent(clock, ScriptedCallHandler(clock))
    with pytest.raises(RuntimeError):
        ua.timers  # noqa: B018
    party = Party.recording(clock, timers=Timers(t1=0.1))
    assert party.ua.timers == Timers(t1=0.1)


def test_default_precheck_rejects_unknown_methods_and_required_extensions() -> None:
    """§8.2.1/§8.2.2.3: the core runs the §8.2 checks: 501 + Allow, 420 + Unsupported."""
    callee = Callee()
    callee.send(callee.request("PUBLISH", 1))
    callee.send(callee.request("INVITE", 2, extra=(("Require", "100rel"),)))
    assert statuses(callee.bob) == [501, 420]
    not_implemented, bad_extension = (sent.message for sent in transport_of(callee.bob).responses())
    assert "INVITE" in (not_implemented.headers.get("Allow") or "")
    assert bad_extension.headers.get("Unsupported") == "100rel"
    assert callee.bob.app.calls == []


def test_invite_without_contact_gets_400() -> None:
    """§8.1.1.8/§12.1.1: an INVITE must name its remote target in Contact."""
    callee = Callee()
    invite = callee.request("INVITE", 1, body=sdp("alice"))
    invite.headers.remove("Contact")
    callee.send(invite)
    assert statuses(callee.bob) == [400]
    assert last_response(callee.bob).reason == "Bad Request (Missing Contact)"
    assert callee.bob.app.calls == []


def test_new_reinvite_2xx_replaces_the_unacked_one() -> None:
    """A re-INVITE's 2xx supersedes an unACKed earlier 2xx: only the newest is retransmitted."""
    callee = Callee(Answer(ring=False))
    callee.invite(sdp("alice"))  # 200 sent, its ACK lost

    def answer(session: Session, request: IncomingRequest) -> None:
        request.respond(200, body=sdp("bob", 2), content_type="application/sdp")

    callee.log.on_request = answer
    callee.in_dialog("INVITE", 2, body=sdp("alice", 2))
    callee.ack(2)
    run_for(callee.clock, 40.0)
    assert sent_requests(callee.bob, "BYE") == []
    assert [sent.message.cseq.seq for sent in transport_of(callee.bob).responses(200)] == [1, 2]


def test_cancel_without_final_response_gives_up_after_64_t1() -> None:
    """§9.1: no final response 64*T1 after the CANCEL: the call is reported failed (487)."""
    caller = Caller(offer=sdp("alice"))
    caller.respond(180)
    caller.call.cancel()
    run_for(caller.clock, 31.0)
    assert caller.log.names() == ["provisional"]
    run_for(caller.clock, 1.5)
    assert failure_statuses(caller.log) == [487]
    assert caller.call.state is CallState.CANCELLED
    assert caller.alice.ua.active_count == 0


def test_the_cancel_gives_up_exactly_64_t1_after_it_was_sent() -> None:
    """§9.1's 64*T1 after the CANCEL is an entry of the layer's queues: it ends the call
    on the very clock step 64*T1 after the CANCEL went, not before."""
    caller = Caller(offer=sdp("alice"))
    caller.respond(180)
    caller.clock.advance(0.375)
    caller.call.cancel()
    [cancel] = transport_of(caller.alice).requests("CANCEL")
    run_for(caller.clock, 32.0 - 0.125, step=0.125)
    assert caller.log.names() == ["provisional"]
    caller.clock.advance(0.125)
    assert caller.clock.seconds() - cancel.time == 32.0
    assert failure_statuses(caller.log) == [487]
    assert caller.call.state is CallState.CANCELLED


# ---------------------------------------------------------------------------
# UAC digest authentication (RFC 3261 §22.2, RFC 7616, RFC 8760)

REALM = "sip.example"
MD5_CHALLENGE = f'Digest realm="{REALM}", nonce="n1", qop="auth", algorithm=MD5, opaque="op"'


def challenge(nonce: str, algorithm: str = "MD5", stale: bool = False) -> str:
    value = f'Digest realm="{REALM}", nonce="{nonce}", qop="auth", algorithm={algorithm}'
    return value + (", stale=true" if stale else "")


def checked_answer(request: Request, header: str, password: str = "secret") -> DigestCredentials:
    """The request's digest answer, verified the way a server verifies it."""
    value = request.headers.get(header)
    assert value is not None, f"no {header} in the {request.method}"
    answer = parse_authorization(value)
    ha1 = compute_ha1(answer.username, answer.realm, password, answer.algorithm)
    expected = compute_response(
        ha1,
        answer.nonce,
        answer.nc,
        answer.cnonce,
        answer.qop,
        request.method,
        answer.uri,
        answer.algorithm,
    )
    assert answer.response == expected
    assert answer.uri == str(request.uri)
    return answer


CREDENTIALS = StaticCredentials("alice-auth", "secret")


class TestUACDigest:
    def test_static_credentials_provide_the_interface(self) -> None:
        """StaticCredentials is an IClientCredentials; realms limit where it answers."""
        assert verifyObject(IClientCredentials, CREDENTIALS)
        limited = StaticCredentials("u", "p", frozenset({REALM}))
        assert limited.credentials_for(REALM) == ("u", "p")
        assert limited.credentials_for("other") is None

    def test_407_to_invite_is_answered_once_with_proxy_authorization(self) -> None:
        """§22.2/§22.3: a 407 gets the INVITE again, CSeq+1, same Call-ID and From tag,
        with Proxy-Authorization (qop=auth, nc 00000001, a cnonce, opaque echoed)."""
        caller = Caller(offer=sdp("alice"), credentials=CREDENTIALS)
        caller.respond(407, extra=(("Proxy-Authenticate", MD5_CHALLENGE),))
        invites = sent_requests(caller.alice, "INVITE")
        assert len(invites) == 2
        first, retry = invites
        assert retry.cseq.seq == first.cseq.seq + 1
        assert retry.call_id == first.call_id and retry.from_.tag == first.from_.tag
        assert retry.top_via.branch != first.top_via.branch
        assert retry.body == first.body
        answer = checked_answer(retry, "Proxy-Authorization")
        assert (answer.username, answer.realm, answer.nonce) == ("alice-auth", REALM, "n1")
        assert (answer.qop, answer.nc, answer.algorithm, answer.opaque) == (
            "auth",
            "00000001",
            "MD5",
            "op",
        )
        assert len(answer.cnonce) >= 16
        # The 407 was ACKed by its transaction (CSeq 1); the application saw nothing.
        assert [parse_message(ack).cseq.seq for ack in caller.acks()] == [1]
        assert caller.log.names() == []
        caller.respond(200, body=sdp("bob"), request=retry)
        assert caller.call.state is CallState.ANSWERED
        assert [parse_message(ack).cseq.seq for ack in caller.acks()] == [1, 2]
        assert caller.session.dialog.local_seq == 2

    def test_sha_256_is_chosen_when_offered(self) -> None:
        """RFC 8760 §2.4: of MD5 and SHA-256 challenges for one realm, answer SHA-256."""
        caller = Caller(credentials=CREDENTIALS)
        caller.respond(
            401,
            extra=(
                ("WWW-Authenticate", challenge("m", "MD5")),
                ("WWW-Authenticate", challenge("s", "SHA-256")),
            ),
        )
        retry = sent_requests(caller.alice, "INVITE")[1]
        answer = checked_answer(retry, "Authorization")
        assert (answer.algorithm, answer.nonce) == ("SHA-256", "s")
        assert "Proxy-Authorization" not in retry.headers

    def test_a_second_challenge_without_stale_is_the_final_answer(self) -> None:
        """RFC 7616 §3.3: challenged again after answering: the credentials were refused."""
        caller = Caller(credentials=CREDENTIALS)
        caller.respond(407, extra=(("Proxy-Authenticate", challenge("n1")),))
        retry = sent_requests(caller.alice, "INVITE")[1]
        caller.respond(407, request=retry, extra=(("Proxy-Authenticate", challenge("n2")),))
        assert len(sent_requests(caller.alice, "INVITE")) == 2
        assert failure_statuses(caller.log) == [407]
        assert caller.call.state is CallState.FAILED
        assert_idle(caller.clock, caller.alice)

    def test_stale_allows_one_more_retry_with_the_new_nonce(self) -> None:
        """RFC 7616 §3.3: stale=true: answer again with the new nonce, once."""
        caller = Caller(credentials=CREDENTIALS)
        caller.respond(401, extra=(("WWW-Authenticate", challenge("n1")),))
        retry = sent_requests(caller.alice, "INVITE")[1]
        stale = (("WWW-Authenticate", challenge("n2", stale=True)),)
        caller.respond(401, request=retry, extra=stale)
        invites = sent_requests(caller.alice, "INVITE")
        assert len(invites) == 3 and invites[2].cseq.seq == 3
        assert checked_answer(invites[2], "Authorization").nonce == "n2"
        caller.respond(
            401, request=invites[2], extra=(("WWW-Authenticate", challenge("n3", stale=True)),)
        )
        assert len(sent_requests(caller.alice, "INVITE")) == 3
        assert failure_statuses(caller.log) == [401]

    def test_without_credentials_the_407_is_the_final_answer(self) -> None:
        """No credentials for the call: the 407 goes to the application as it is."""
        caller = Caller()
        caller.respond(407, extra=(("Proxy-Authenticate", MD5_CHALLENGE),))
        assert len(sent_requests(caller.alice, "INVITE")) == 1
        assert failure_statuses(caller.log) == [407]

    def test_without_credentials_for_the_realm_the_401_is_the_final_answer(self) -> None:
        """Credentials for another realm do not answer this one."""
        caller = Caller(credentials=StaticCredentials("a", "b", frozenset({"elsewhere"})))
        caller.respond(401, extra=(("WWW-Authenticate", MD5_CHALLENGE),))
        assert len(sent_requests(caller.alice, "INVITE")) == 1
        assert failure_statuses(caller.log) == [401]

    def test_a_challenged_bye_is_sent_again_with_credentials(self) -> None:
        """§22.2 in a dialog: a 401 to our BYE: the BYE again, next CSeq, Authorization."""
        caller = Caller(offer=sdp("alice"), credentials=CREDENTIALS)
        caller.respond(200, body=sdp("bob"))
        caller.session.bye()
        bye = sent_requests(caller.alice, "BYE")[0]
        caller.respond(401, request=bye, extra=(("WWW-Authenticate", MD5_CHALLENGE),))
        byes = sent_requests(caller.alice, "BYE")
        assert len(byes) == 2
        assert byes[1].cseq.seq == bye.cseq.seq + 1 and byes[1].call_id == bye.call_id
        assert byes[1].to.tag == bye.to.tag == "b1"
        checked_answer(byes[1], "Authorization")
        caller.respond(200, request=byes[1])
        assert caller.log.names().count("terminated") == 1
        assert_idle(caller.clock, caller.alice)

    def test_a_challenged_reinvite_is_sent_again_and_its_2xx_acked_with_its_cseq(self) -> None:
        """§22.2/§14.1: a 407 to our re-INVITE: sent again with credentials; the ACK of
        its 2xx carries the new CSeq."""
        caller = Caller(offer=sdp("alice"), credentials=CREDENTIALS)
        caller.respond(200, body=sdp("bob"))
        answers: list[int] = []
        caller.session.reinvite(sdp("alice", 2), on_response=lambda r: answers.append(r.status))
        reinvite = sent_requests(caller.alice, "INVITE")[1]
        caller.respond(407, request=reinvite, extra=(("Proxy-Authenticate", MD5_CHALLENGE),))
        again = sent_requests(caller.alice, "INVITE")[2]
        assert again.cseq.seq == reinvite.cseq.seq + 1
        checked_answer(again, "Proxy-Authorization")
        assert caller.session.invite_pending
        caller.respond(200, request=again, body=sdp("bob", 2))
        assert answers == [200]
        assert parse_message(caller.acks()[-1]).cseq.seq == again.cseq.seq
        assert not caller.session.invite_pending
