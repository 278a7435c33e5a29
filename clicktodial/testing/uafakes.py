"""
Test helpers for the user-agent core (L{clicktodial.sip.ua}): a
session handler that records every event, a scriptable incoming-call
handler, and a L{Party} bundling transport + transaction layer + UA core.

Typical use::

    clock = Clock()
    net = FaultyNetwork(clock, seed=1)
    alice = Party.on_network(clock, net, "127.0.0.1", 5060)
    bob = Party.on_network(clock, net, "127.0.0.2", 5060, answer=Answer(ring=True))
    call = alice.call(bob, sdp=OFFER)
    run_for(clock, 2)
    ...
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs
from twisted.internet.task import Clock
from zope.interface import implementer

from clicktodial.sip.headers import NameAddr
from clicktodial.sip.interfaces import (
    IClientCredentials,
    IIncomingCallHandler,
    ISessionHandler,
    ISIPTransport,
)
from clicktodial.sip.message import Request, Response
from clicktodial.sip.sdp import SDP_CONTENT_TYPE
from clicktodial.sip.transaction import Timers, TransactionLayer
from clicktodial.sip.ua import (
    IncomingCall,
    IncomingRequest,
    OutgoingCall,
    Session,
    SessionHandlerBase,
    UserAgent,
)
from clicktodial.sip.uri import URI
from clicktodial.testing.sipfakes import FaultyNetwork, RecordingTransport

__all__ = ["Answer", "EventLog", "Party", "ScriptedCallHandler", "sdp"]

DEFAULT_TIMERS = Timers()


def sdp(owner: str, version: int = 1, host: str = "127.0.0.1", port: int = 40000) -> bytes:
    """A small valid audio session description."""
    return (
        f"v=0\r\no={owner} 1 {version} IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\n"
        f"t=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
    ).encode()


@implementer(ISessionHandler)
class EventLog(SessionHandlerBase):
    """
    An L{ISessionHandler} recording C{(event, *args)} tuples in C{events},
    answering in-dialog requests as L{SessionHandlerBase} does unless
    C{on_request} is set.  C{on_answered} runs after C{call_answered} is
    recorded (e.g. to L{Session.ack} a late offer).
    """

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []
        self.on_request: Callable[[Session, IncomingRequest], object] | None = None
        self.on_answered: Callable[[OutgoingCall, Session, Response], None] | None = None

    def names(self) -> list[str]:
        """The event names, in order."""
        return [str(event[0]) for event in self.events]

    def of(self, name: str) -> list[tuple[object, ...]]:
        """The events called ``name``."""
        return [event for event in self.events if event[0] == name]

    def call_provisional(
        self, call: OutgoingCall, response: Response, session: Session | None
    ) -> None:
        self.events.append(("provisional", call, response, session))

    def call_answered(self, call: OutgoingCall, session: Session, response: Response) -> None:
        self.events.append(("answered", call, session, response))
        if self.on_answered is not None:
            self.on_answered(call, session, response)

    def call_failed(self, call: OutgoingCall, response: Response) -> None:
        self.events.append(("failed", call, response))

    def call_cancelled(self, call: IncomingCall) -> None:
        self.events.append(("cancelled", call))

    def session_confirmed(self, session: Session, ack: Request) -> None:
        self.events.append(("confirmed", session, ack))

    def request_received(self, session: Session, request: IncomingRequest) -> None:
        self.events.append(("request", session, request))
        if self.on_request is not None:
            self.on_request(session, request)
        else:
            super().request_received(session, request)

    def session_terminated(self, session: Session, reason: str) -> None:
        self.events.append(("terminated", session, reason))


@attrs.define
class Answer:
    """
    How a L{ScriptedCallHandler} answers a new INVITE: optionally a 180
    first, then after ``delay`` seconds a 2xx with ``sdp`` (answer or, for an
    INVITE without offer, offer), or ``reject`` with that status; ``None``
    for both leaves the call unanswered.  ``headers`` go into the 180 and the
    2xx (a Record-Route of the phone's choosing, say).
    """

    ring: bool = True
    delay: float = 0.0
    sdp: bytes | None = attrs.field(factory=lambda: sdp("bob"))
    reject: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    #: Early media (RFC 3960): a 183 with this SDP instead of the 180.
    early: bytes | None = None


@implementer(IIncomingCallHandler)
class ScriptedCallHandler:
    """
    An L{IIncomingCallHandler} answering INVITEs as ``answer`` says, giving
    each call an L{EventLog} (in C{logs}); out-of-dialog OPTIONS get 200,
    other methods 405.
    """

    def __init__(self, clock: Clock, answer: Answer | None = None) -> None:
        self.clock = clock
        self.answer = answer or Answer()
        self.calls: list[IncomingCall] = []
        self.logs: list[EventLog] = []
        self.out_of_dialog: list[IncomingRequest] = []
        #: Given to each new call's L{EventLog} as its C{on_request}.
        self.on_request: Callable[[Session, IncomingRequest], object] | None = None

    def incoming_call(self, call: IncomingCall) -> ISessionHandler:
        self.calls.append(call)
        log = EventLog()
        log.on_request = self.on_request
        self.logs.append(log)
        answer = self.answer
        if answer.early is not None:
            call.provisional(183, body=answer.early, content_type=SDP_CONTENT_TYPE,
                             headers=answer.headers)
        elif answer.ring:
            call.provisional(180, headers=answer.headers)

        def respond() -> None:
            if not call.is_pending:
                return
            if answer.reject is not None:
                call.reject(answer.reject, headers=answer.headers)
            elif answer.sdp is not None:
                call.accept(answer.sdp, SDP_CONTENT_TYPE, headers=answer.headers)

        if answer.reject is not None or answer.sdp is not None:
            if answer.delay:
                self.clock.callLater(answer.delay, respond)
            else:
                respond()
        return log

    def request_received(self, request: IncomingRequest) -> None:
        self.out_of_dialog.append(request)
        request.respond(200 if request.method == "OPTIONS" else 405)


class Party:
    """One user agent: transport, transaction layer, UA core, call handler."""

    def __init__(
        self,
        clock: Clock,
        transport: ISIPTransport,
        host: str,
        port: int,
        user: str,
        timers: Timers,
        answer: Answer | None,
        seed: int,
        *,
        pin_flows: bool = False,
    ) -> None:
        self.clock = clock
        self.transport = transport
        self.host = host
        self.port = port
        self.user = user
        self.app = ScriptedCallHandler(clock, answer)
        self.ua = UserAgent(
            clock,
            self.app,
            contact=URI("sip", user, host, port),
            rng=random.Random(seed),
            pin_flows=pin_flows,
        )
        self.layer = TransactionLayer(clock, transport, self.ua, timers)
        self.ua.attach(self.layer)

    @classmethod
    def on_network(
        cls,
        clock: Clock,
        network: FaultyNetwork,
        host: str,
        port: int,
        user: str = "alice",
        timers: Timers = DEFAULT_TIMERS,
        answer: Answer | None = None,
        seed: int = 0,
        *,
        pin_flows: bool = False,
    ) -> Party:
        """A party on a L{FaultyNetwork} endpoint at ``host``:``port``."""
        endpoint = network.endpoint(host, port)
        party = cls(clock, endpoint, host, port, user, timers, answer, seed, pin_flows=pin_flows)
        endpoint.attach(party.layer)
        return party

    @classmethod
    def recording(
        cls,
        clock: Clock,
        host: str = "127.0.0.1",
        port: int = 5060,
        user: str = "alice",
        timers: Timers = DEFAULT_TIMERS,
        answer: Answer | None = None,
        seed: int = 0,
        *,
        pin_flows: bool = False,
    ) -> Party:
        """A party on a L{RecordingTransport}: messages to it are fed by hand."""
        return cls(
            clock, RecordingTransport(clock, host, port), host, port, user, timers, answer, seed,
            pin_flows=pin_flows,
        )

    @property
    def uri(self) -> URI:
        """This party's address-of-record (and contact)."""
        return URI("sip", self.user, self.host, self.port)

    def call(
        self,
        callee: Party | URI,
        offer: bytes | None = None,
        handler: EventLog | None = None,
        credentials: IClientCredentials | None = None,
    ) -> tuple[OutgoingCall, EventLog]:
        """INVITE ``callee`` (with ``offer`` as SDP, or none); returns the call and its log."""
        target = callee.uri if isinstance(callee, Party) else callee
        log = handler or EventLog()
        call = self.ua.invite(
            target,
            from_=NameAddr(self.uri),
            to=NameAddr(target),
            handler=log,
            body=offer or b"",
            credentials=credentials,
        )
        return call, log

    @property
    def active(self) -> int:
        """UA-core entries plus transactions still alive."""
        return self.ua.active_count + self.layer.active_count
