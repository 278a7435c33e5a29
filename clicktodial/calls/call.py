"""
One click-to-dial call: a B2BUA running RFC 3725 third-party call control
between two legs, as an explicit state machine.

The caller's phones are INVITEd without SDP (all its bindings in parallel:
the first to answer wins, the others get CANCEL); its 2xx carries an offer.
Then the callee's phones are rung, and the media flow (:class:`IMediaFlow`: RFC
3725 Flow I or Flow IV) relays offers and answers until both phones talk to
each other directly.  Re-INVITEs from either phone are relayed to the other.

The whole life of a call is one table, :data:`Call._TABLE`: (phase, input) ->
(next phase, actions), in the form of the RFC 3261 §17 transactions'
``_TABLE``s (docs/design.md, "The call machine").  Every (phase, input) pair
has a row: a transition, a late event absorbed on purpose, or ``None`` for "no
transition here" -- an input that should not happen in that phase, logged
once per call and counted in ``clicktodial_call_unexpected_inputs``, never
dropped silently.  The table lives on the class; a call holds only its phase
and one timer slot, whose delay comes from the phase (:data:`PHASE_TIMERS`) and
which :meth:`Call._enter` cancels on every change of phase.  The terminal phases
``failed`` (never connected) and ``ended`` absorb every input; nothing of the
call stays in the UA core or on the clock once the UA core's own transactions
(CANCEL, BYE) are done.

The two RFC 3725 ladders, step by step, with the rows and the media-flow
objects (:class:`clicktodial.calls.policy.FlowI` / :class:`FlowIV <clicktodial.calls.policy.FlowIV>`
through :class:`IBridge`: this :class:`Call`, or :class:`clicktodial.calls.relay.RelayBridge`
in front of it when the media is relayed) that carry each step::

    RFC 3725 §4 Flow I              here
    --------------------------      -----------------------------------------------
    (1) INVITE caller, no SDP       Call.start -> Leg.ring           calling-caller
    (2) 200 offer1                  [calling-caller, caller-answered] -> calling-callee
                                      FlowI.caller_answered: 2xx left unACKed
                                      (Leg.pending_offer)
    (3) INVITE callee offer1        IBridge.invite_callee(offer1);
                                      [calling-callee, callee-targets] _ring_callee
    (4) 200 answer1                 [calling-callee, callee-answered] -> bridging
                                      FlowI.callee_answered
    (5) ACK callee                  the UA core (our INVITE carried the offer)
    (6) ACK caller answer1          IBridge.ack_caller(answer1)
    (7) RTP                         IBridge.bridged: [bridging, bridged] -> connected

    RFC 3725 §5 Flow IV             here
    --------------------------      -----------------------------------------------
    (1) INVITE caller, no SDP       Call.start -> Leg.ring           calling-caller
    (2) 200 offer1                  [calling-caller, caller-answered] -> calling-callee
                                      FlowIV.caller_answered
    (3) ACK caller answer1 (held)   IBridge.held_answer + IBridge.ack_caller
    (4) INVITE callee, no SDP       IBridge.invite_callee(None);
                                      [calling-callee, callee-targets] _ring_callee
    (5) 200 offer2                  [calling-callee, callee-answered] -> bridging
                                      FlowIV.callee_answered
    (6) re-INVITE caller offer2'    IBridge.reinvite_caller(offer2)
    (7) 200 answer2'                its ``answered`` callback (FlowIV.callee_answered)
    (8) ACK callee answer2          IBridge.ack_callee(answer2)
    (9) ACK caller                  the UA core (the re-INVITE's 2xx)
    (10) RTP                        IBridge.bridged: [bridging, bridged] -> connected

The callee leg goes to the callee's phones, or to a number through trunks: its route
(:class:`ICalleeRoute`; :class:`clicktodial.calls.outbound.TrunkHunt`) gives the targets of each
attempt, and a trunk failing with 408/5xx while another remains is [calling-callee, callee-reroute]:
the next trunk, in the same phase.  A callee 1xx with SDP is [calling-callee,
callee-early-media]: the far end's early media reaches the caller (docs/calls.md, "Early
media").

Any step failing ends in ``failed``: a leg's every fork refused ([*, caller-failed],
[calling-callee, callee-failed]), a phase timer, a phone's BYE ([*, caller-gone],
[*, callee-gone]), the offer/answer refused ([bridging, bridge-failed]: 488 when the
phones share no codec), the media relay refusing ([*, media-relay-failed]).
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from clicktodial.calls.events import CallInfo
from clicktodial.calls.policy import FlowIV
from clicktodial.calls.relay import CallRelay, RelayBridge, RelayFailed
from clicktodial.interfaces import IBridge, ICalleeRoute, IMediaFlow
from clicktodial.log import LOG_LEVELS
from clicktodial.netaddr import NetworkSet
from clicktodial.sip.address import Destination
from clicktodial.sip.dialog import (
    DialogError,
    destination_for_uri,
    flow_destination,
    shared_destination,
)
from clicktodial.sip.headers import HeaderParseError, NameAddr, parse_name_addr
from clicktodial.sip.interfaces import IClientCredentials, ISessionHandler
from clicktodial.sip.message import Response
from clicktodial.sip.sdp import (
    SDP_CONTENT_TYPE,
    OfferAnswerError,
    SDPParseError,
    held_answer,
    is_sdp,
    media_count,
    pad_media,
    relayed_to_leg,
    sent_media,
    truncate_media,
)
from clicktodial.sip.ua import (
    CallState,
    IncomingRequest,
    OutgoingCall,
    RequestPending,
    Session,
    SessionHandlerBase,
    UserAgent,
)
from clicktodial.sip.uri import URI, parse_uri
from clicktodial.sip.wirecache import BoundedCache
from clicktodial.store.values import Binding, CallChanges, User
from clicktodial.timers import Lingering, LingerQueue

if TYPE_CHECKING:
    from clicktodial.calls.trace import CallTracer
    from clicktodial.media.ringback import RingbackPlayer
    from clicktodial.media.rtp import RtpStream
    from clicktodial.sip.message import Request

__all__ = [
    "PHASE_TIMERS",
    "PUBLIC_STATE",
    "BindingsRoute",
    "Call",
    "CallObserver",
    "CallShared",
    "CallSettings",
    "Input",
    "Phase",
    "Target",
    "reason_header",
    "target_for_binding",
]

log = Logger(namespace="clicktodial.calls.call")


class Phase(enum.StrEnum):
    """Where a call is.  ``bridging`` shows as ``calling-callee`` outside."""

    CALLING_CALLER = "calling-caller"  # the caller's phones ring
    CALLING_CALLEE = "calling-callee"  # the caller answered; the callee's phones ring
    BRIDGING = "bridging"  # the callee answered; offer/answer being completed
    CONNECTED = "connected"  # both phones have each other's media
    ENDED = "ended"  # over, after having been connected
    FAILED = "failed"  # over, never connected


class Input(enum.StrEnum):
    """What can happen to a call (the columns of :data:`Call._TABLE`)."""

    CALLER_ANSWERED = "caller-answered"  # a caller phone's 2xx, with its offer
    CALLER_NO_OFFER = "caller-no-offer"  # a caller phone's 2xx without SDP: 3PCC needs its offer
    CALLER_FAILED = "caller-failed"  # every caller fork failed (or none exists)
    CALLEE_TARGETS = "callee-targets"  # the callee's bindings, looked up when it is rung
    CALLEE_ANSWERED = "callee-answered"  # a callee phone's 2xx (answer or offer)
    CALLEE_FAILED = "callee-failed"  # every callee fork failed, none exists, the look-up failed
    CALLEE_REROUTE = "callee-reroute"  # a trunk failed with 408/5xx: the next trunk is tried
    CALLEE_EARLY_MEDIA = "callee-early-media"  # a callee 1xx with SDP (RFC 3960 early media)
    BRIDGED = "bridged"  # the media flow completed offer/answer (IBridge.bridged)
    BRIDGE_FAILED = "bridge-failed"  # it failed (IBridge.bridge_failed)
    MEDIA_RELAY_FAILED = "media-relay-failed"  # [media:rtpengine] on_failure = fail
    OFFER = "offer"  # a phone's re-INVITE with an offer, to relay to the other
    CALLER_GONE = "caller-gone"  # the caller's session ended (BYE, timeout, 481)
    CALLEE_GONE = "callee-gone"
    HANG_UP = "hang-up"  # ICallController.hang_up
    TIMER = "timer"  # the current phase's timer ran out


_TERMINAL = (Phase.ENDED, Phase.FAILED)

#: The state each phase shows outside (:attr:`Call.public_state`), as plain text: a dict
#: look-up, where ``Phase.value`` is two Python calls (the enum's property).
PUBLIC_STATE: dict[Phase, str] = {phase: phase.value for phase in Phase}
PUBLIC_STATE[Phase.BRIDGING] = Phase.CALLING_CALLEE.value


@attrs.frozen
class CallSettings:
    """
    The timers of a call, in seconds (0: none), and how many of a user's
    phones one call rings at once (``[calls] max_forks``).
    """

    ring_timeout: float = 30.0
    callee_ring_timeout: float = 60.0
    bridge_timeout: float = 32.0
    max_duration: float = 0.0
    max_forks: int = 5


#: How long each phase may last (0: no limit), from the :class:`CallSettings`: the delay of
#: the timer :meth:`Call._enter` starts, whose expiry is the phase's ``timer`` input.
PHASE_TIMERS: dict[Phase, Callable[[CallSettings], float]] = {
    Phase.CALLING_CALLER: lambda settings: settings.ring_timeout,  # CANCEL the caller
    Phase.CALLING_CALLEE: lambda settings: settings.callee_ring_timeout,  # CANCEL the callee
    # Guard: the caller never answers the re-INVITE (64*T1 by default).
    Phase.BRIDGING: lambda settings: settings.bridge_timeout,
    Phase.CONNECTED: lambda settings: settings.max_duration,  # [calls] max_duration
}


@attrs.frozen
class Target:
    """
    Where one binding is called: the Request-URI (the stored contact,
    without URI headers), the pre-loaded route (stored Path) and the next hop.

    :ivar flow: the fixed next hop for every request of the dialogs the
        INVITE creates (the address the phone registered from, or the first
        hop of a trusted Path), whatever the phone's Contact and
        Record-Route say (docs/security.md).
    """

    uri: URI
    route: tuple[NameAddr, ...]
    destination: Destination
    flow: Destination
    #: Through a trunk (docs/trunks.md): its name, the From and To of the INVITE (the
    #: caller identity the trunk presents, the number), extra header fields
    #: (P-Asserted-Identity) and what answers the provider's 401/407.
    trunk: str | None = None
    from_: NameAddr | None = None
    to: NameAddr | None = None
    headers: tuple[tuple[str, str], ...] = ()
    credentials: IClientCredentials | None = None


def target_for_binding(binding: Binding, trusted_paths: NetworkSet) -> Target:
    """
    The :class:`Target` of ``binding`` (docs/registrar.md, "Binding trust"): a
    phone never chooses where the daemon's requests go.

    The stored contact is only the Request-URI: a URI header (``?Route=...``)
    never becomes a header field of ours (RFC 3261 §19.1.5 leaves that to the
    UA's choice), and its host, port, ``maddr`` and ``transport`` are not the
    next hop.  Requests go to the ``received`` address, the REGISTER's source
    (RFC 3261 §18.2.1 / RFC 3581; Kamailio's fix_nated_contact, Asterisk's
    rewrite_contact), for the whole dialog.  Only a binding registered
    through a trusted proxy (its ``received`` in ``trusted_paths``: the
    ``[registrar] trusted_proxies`` when ``path = trusted``, else empty) has
    its stored Path as the pre-loaded route (RFC 3327) -- checked here
    again, so a Path stored before the registrar checked its source, or by
    a daemon configured otherwise, steers nothing.

    :raises ValueError: the stored contact, Path or source does not parse, or
        the binding has no source address (not written by our registrar).
    """
    uri = parse_uri(binding.contact).without_headers()
    if not binding.received:
        raise ValueError("no source address recorded with the binding")
    received = parse_uri(binding.received)
    if binding.path and received.host in trusted_paths:
        route = tuple(parse_name_addr(hop) for hop in binding.path)
        # The trusted proxy routes the dialog's requests too: they all go to its first hop.
        hop = shared_destination(destination_for_uri(route[0].uri))
        return Target(uri, route, hop, hop)
    # A stream flow that is gone is reopened to the source host at the Contact's port
    # (never to a host the Contact names); an RFC 5626 flow is never reopened.
    outbound = binding.instance_id is not None and binding.reg_id is not None
    flow = shared_destination(flow_destination(received, uri, outbound))
    return Target(uri, (), flow, flow)


def reason_header(status: int, text: str | None = None) -> tuple[str, str]:
    """RFC 3326 ``Reason`` carrying a SIP status: why the call ended."""
    phrase = (text or Response(status).reason).replace("\\", "").replace('"', "")
    return ("Reason", f'SIP ;cause={status} ;text="{phrase}"')


def _sdp_of(message: Request | Response) -> bytes | None:
    body = message.body
    if body and is_sdp(message.headers.get("Content-Type"), body):
        return body
    return None


def _status_rank(status: int) -> int:
    # Which fork failure speaks for a leg (in the spirit of RFC 3261 §16.7
    # step 6): a global 6xx, then busy, then other refusals, then "no
    # answer", then "unreachable".
    if status >= 600:
        return 0
    if status == 486:
        return 1
    if status in (480, 487):
        return 3
    if status in (408, 503):
        return 4
    return 2


def _outcome(role: str, status: int) -> tuple[str, str]:
    """End reason and who hung up when every fork of a leg failed with ``status``."""
    if status in (486, 600):
        return f"{role}-busy", role
    if status in (408, 503):
        return f"{role}-unreachable", "system"
    if status in (480, 487):
        return f"{role}-no-answer", "system"
    return f"{role}-rejected", role


#: One action of a row: a method of :class:`Call` (or an :func:`_Ends`), given the input's payload.
_Action = Callable[["Call", Any], None]
#: A row of :data:`Call._TABLE`: the next phase (None: no transition for this input in this
#: phase -- logged once per call and counted), and the actions, run in order after
#: the phase changed.  A row whose next phase is its own keeps the phase and its timer.
_Row = tuple["Phase | None", tuple[_Action, ...]]


@attrs.frozen
class _Outcome:
    """Why a call ends: what its record says (payload of the ending inputs)."""

    reason: str
    status: int | None
    who: str | None


@attrs.frozen
class _Answer:
    """
    A 2xx to one of ``leg``'s INVITEs (payload of the ``*-answered`` inputs).

    :ivar target: the fork's :class:`Target` (None if it was no longer ringing).
    :ivar sdp: the 2xx's session description, or None (looked for once per 2xx).
    :ivar offer: the offer of the 2xx when our INVITE had none: it waits for our ACK.
    """

    leg: Leg
    target: Target | None
    session: Session
    response: Response
    sdp: bytes | None
    offer: bytes | None


@attrs.frozen
class _Offer:
    """A re-INVITE with an offer from ``leg``'s phone (payload of ``offer``)."""

    leg: Leg
    request: IncomingRequest


class _Ends:
    """
    An action of :data:`Call._TABLE`: the call ends with this outcome, whatever the input
    carried (a timer, a 2xx without offer, the media relay).
    """

    __slots__ = ("outcome",)

    def __init__(self, reason: str, status: int | None, who: str) -> None:
        self.outcome = _Outcome(reason, status, who)

    def __call__(self, call: Call, payload: object) -> None:
        call._record_end(self.outcome)

    def __repr__(self) -> str:
        return f"_Ends{attrs.astuple(self.outcome)!r}"


def _absorbing(
    phase: Phase, stray: _Action, offer: _Action, late: _Action
) -> dict[tuple[Phase, Input], _Row]:
    """
    The rows of a terminal ``phase``: it absorbs every input.  A phone's 2xx is ACKed and
    BYEd (``stray``), a re-INVITE answered as outside any call (``offer``); everything else
    is a late event (``late``: a timer, a look-up, a relay answer, a BYE after ours).
    """
    rows: dict[tuple[Phase, Input], _Row] = {(phase, event): (phase, (late,)) for event in Input}
    for event in (Input.CALLER_ANSWERED, Input.CALLER_NO_OFFER, Input.CALLEE_ANSWERED):
        rows[phase, event] = (phase, (stray,))
    rows[phase, Input.OFFER] = (phase, (offer,))
    return rows


class CallShared:
    """
    What every call a controller places shares, kept once: the same eight references in
    every held call would cost 56 bytes a call.

    :ivar clock: the injected clock.
    :ivar ua: the :class:`UserAgent` the legs are sessions of.
    :ivar settings: the ``[calls]`` timers and limits (:class:`CallSettings`).
    :ivar observer: what the calls report to (the controller).
    :ivar domain: our SIP domain (the From/To of the legs).
    :ivar media: ringback and failure tones to callers ([calls] ringback), or None.
    :ivar tracer: keeps the SIP messages of the calls' legs (docs/calls.md, "Call
        traces"), or None.
    :ivar long_timers: the queue of the timers of one delay (the phase timers: ring
        timeouts, the maximum duration), or None for a reactor timer each.
    :ivar phase_delays: the delay of each phase's timer (:data:`PHASE_TIMERS` of the
        settings; phases without one left out), worked out once.
    :ivar phase_queues: with ``long_timers``, the queue of each phase's timer.
    :ivar parties: the From/To of users (:meth:`Call._party`) by username, display name
        and domain, shared by their calls (a bounded cache), or None to make them per call.
    """

    __slots__ = (
        "clock",
        "ua",
        "settings",
        "observer",
        "domain",
        "media",
        "tracer",
        "long_timers",
        "phase_delays",
        "phase_queues",
        "parties",
    )

    def __init__(
        self,
        *,
        clock: IReactorTime,
        user_agent: UserAgent,
        settings: CallSettings,
        observer: CallObserver,
        domain: str,
        media: RingbackPlayer | None = None,
        tracer: CallTracer | None = None,
        long_timers: Callable[[float], LingerQueue] | None = None,
        parties: BoundedCache[tuple[str, str, str], NameAddr] | None = None,
    ) -> None:
        self.clock = clock
        self.ua = user_agent
        self.settings = settings
        self.observer = observer
        self.domain = domain
        self.media = media
        self.tracer = tracer
        self.long_timers = long_timers
        self.parties = parties
        delays = {phase: timeout(settings) for phase, timeout in PHASE_TIMERS.items()}
        self.phase_delays = {phase: delay for phase, delay in delays.items() if delay}
        self.phase_queues = (
            {phase: long_timers(delay) for phase, delay in self.phase_delays.items()}
            if long_timers is not None
            else {}
        )


@implementer(ICalleeRoute)
class BindingsRoute:
    """
    The callee's registered phones: one attempt, looked up when the callee is rung.

    Kept for the whole call: ``lookup`` is one function shared by every call (a bound
    method made once) and ``username`` the callee's name; a closure per call (function,
    cells and their tuple) cost ~0.35 KB a held call.
    """

    __slots__ = ("lookup", "username")

    trunk = None

    def __init__(self, lookup: Callable[[str], Deferred[list[Target]]], username: str) -> None:
        self.lookup = lookup
        self.username = username

    def targets(self) -> Deferred[list[Target]]:
        return self.lookup(self.username)

    def reroutes(self, status: int) -> bool:
        return False

    def unreachable(self) -> tuple[str, int]:
        return "callee-unreachable", 480

    def release(self) -> None:
        pass


class CallObserver(Protocol):
    """What a call reports to (the controller: records and events)."""

    def call_changed(self, call: Call, changes: CallChanges) -> None:
        """
        ``call`` changed; ``changes`` is what to write to its record (a dict made for this
        report: the observer may keep it).
        """

    def call_input_unexpected(self, call: Call, phase: Phase, event: Input) -> None:
        """``event`` has no transition in ``phase`` (:data:`Call._TABLE`): count it."""


#: The empty ``Leg.forks`` every leg shares (never written to: a leg that rings makes
#: its own dict).
_NO_FORKS: dict[OutgoingCall, Target] = {}


@implementer(ISessionHandler)
class Leg(SessionHandlerBase):
    """
    One side of the call (the caller's or the callee's phones): the INVITEs
    in progress to its bindings and, once one answered, its session.  It is the
    handler of the UA core's events for them (one object less per leg of a held call).

    :ivar pending_offer: the offer of a 2xx we still have to ACK (with the
        answer), or None.
    """

    # Per call, for as long as it is held: no per-instance __dict__ (also Call).
    __slots__ = (
        "call",
        "role",
        "user",
        "forks",
        "starting",
        "failures",
        "session",
        "pending_offer",
        "sent",
        "source",
    )

    def __init__(self, call: Call, role: str, user: User) -> None:
        self.call = call
        self.role = role
        self.user = user
        #: The INVITEs ringing, with their targets; the shared :data:`_NO_FORKS` when none
        #: (a held call would keep an empty dict of its own per leg: 64 bytes).
        self.forks: dict[OutgoingCall, Target] = _NO_FORKS
        #: True while the INVITEs go out (a fork may fail synchronously).
        self.starting = False
        self.failures: tuple[int, ...] = ()  # a shared empty tuple for the held call
        self.session: Session | None = None
        self.pending_offer: bytes | None = None
        #: The last description sent to this leg's phone, as :func:`relayed_to_leg`
        #: made it (None before the first): the origin it keeps seeing from us.
        self.sent: bytes | None = None
        #: The address the answering phone signals from (its NAT's, behind one); None
        #: before an answer, and behind a trusted proxy (a pre-loaded route), where that
        #: is the proxy's.  Only this of the binding's :class:`Target` is kept for the
        #: call (the target and its URIs cost ~0.35 KB a leg; the session has the flow).
        self.source: str | None = None

    @property
    def handler(self) -> Leg:
        """What the UA core tells about the leg's INVITEs and session: the leg itself."""
        return self

    def call_provisional(
        self, call: OutgoingCall, response: Response, session: Session | None
    ) -> None:
        # The caller's 1xx are not looked into (only the callee's early media matters).
        if self is self.call.callee and call in self.forks:
            sdp = _sdp_of(response)
            if sdp is not None:
                self.call._handle(Input.CALLEE_EARLY_MEDIA, sdp)

    def call_answered(self, call: OutgoingCall, session: Session, response: Response) -> None:
        self.call._answered(self, call, session, response)

    def call_failed(self, call: OutgoingCall, response: Response) -> None:
        self.call._fork_failed(self, call, response)

    def request_received(self, session: Session, request: IncomingRequest) -> None:
        if session is self.session:
            self.call._in_dialog_request(self, request)
        else:
            super().request_received(session, request)

    def session_terminated(self, session: Session, reason: str) -> None:
        if session is self.session:
            self.call._session_ended(self, reason)

    def answered_by(self, target: Target | None) -> None:
        """The phone of ``target`` answered: keep where it signals from (:attr:`source`)."""
        if target is None or target.flow is None or target.route:
            self.source = None
        else:
            self.source = sys.intern(target.flow.host)

    def outgoing(self, body: bytes) -> bytes:
        """``body`` as this leg's phone must see it (:func:`relayed_to_leg`), kept as sent."""
        relayed = relayed_to_leg(self.sent, body)
        if relayed is None:
            return body
        self.sent = relayed
        return relayed

    def ring(
        self,
        ua: UserAgent,
        targets: Sequence[Target],
        from_: NameAddr,
        to: NameAddr,
        offer: bytes | None,
    ) -> None:
        """INVITE every target in parallel (with ``offer``, or without SDP)."""
        body = self.outgoing(offer) if offer is not None else b""
        tracer = self.call.shared.tracer
        self.starting = True
        try:
            for target in targets:
                call_id = None
                if tracer is not None:
                    # Known before the INVITE goes out, so that it is in the trace.
                    call_id = ua.new_call_id()
                    tracer.watch(self.call.call_id, call_id, self.role)
                fork = ua.invite(
                    target.uri,
                    from_=target.from_ or from_,
                    to=target.to or to,
                    handler=self,
                    body=body,
                    headers=target.headers,
                    route=target.route,
                    destination=target.destination,
                    call_id=call_id,
                    flow=target.flow,
                    credentials=target.credentials,
                )
                if fork.state in (CallState.CALLING, CallState.PROCEEDING):
                    if self.forks is _NO_FORKS:
                        self.forks = {}
                    self.forks[fork] = target
        finally:
            self.starting = False

    def cancel_forks(self) -> None:
        """CANCEL every INVITE still ringing (a crossing 2xx gets ACK + BYE from the core)."""
        for fork in list(self.forks):
            fork.cancel()
        self.forks = _NO_FORKS

    def hang_up(self, headers: Sequence[tuple[str, str]] = ()) -> None:
        """CANCEL what rings, BYE what answered (ACKing an unACKed 2xx first)."""
        if self.forks:
            self.cancel_forks()
        session = self.session
        if session is None or session.is_terminated:
            return
        if self.pending_offer is not None:
            # RFC 3261 §13.2.2.4: the 2xx must be ACKed before the BYE; its
            # offer gets a hold answer rather than none.
            self.ack(held_answer_or_none(self.pending_offer))
        session.bye(headers)

    def ack(self, answer: bytes | None) -> None:
        """ACK the 2xx that carried our peer's offer, with ``answer`` (relayed)."""
        if self.pending_offer is None or self.session is None:
            return
        self.pending_offer = None
        if answer is None:
            self.session.ack()
        else:
            self.session.ack(self.outgoing(answer), SDP_CONTENT_TYPE)


def held_answer_or_none(offer: bytes) -> bytes | None:
    """:func:`held_answer` of ``offer``, or None if it is not SDP."""
    try:
        return held_answer(offer)
    except SDPParseError:
        return None


@implementer(IBridge)
class Call:
    """
    One click-to-dial call (see the module docstring).

    :ivar call_id: the call record's id.
    :ivar phase: the current :class:`Phase`.
    :ivar caller_offer: the offer of the caller's 2xx, once it answered (empty again once
        the call is connected).
    """

    __slots__ = (
        "call_id",
        "shared",
        "published",
        "_ringback",
        "flow",
        "caller",
        "callee",
        "phase",
        "_timer",
        "caller_offer",
        "_callee_offer",
        "_relayed",
        "created_at",
        "caller_answered_at",
        "callee_answered_at",
        "connected_at",
        "ended_at",
        "end_reason",
        "sip_status",
        "who_hung_up",
        "relay",
        "_bridge",
        "_unexpected_logged",
        "_route",
        "_early_media",
        "_early_offer",
        "_early_answer",
        "_early_waiter",
    )

    def __init__(
        self,
        *,
        call_id: str,
        caller: User,
        callee: User,
        shared: CallShared,
        flow: IMediaFlow,
        route: ICalleeRoute,
        created_at: float,
        relay: CallRelay | None = None,
    ) -> None:
        self.call_id = call_id
        #: Where the callee leg goes: the callee's phones (:class:`BindingsRoute`), or a
        #: number through trunks (:class:`clicktodial.calls.outbound.TrunkHunt`).
        self._route = route
        #: Whether the callee's early media (a 1xx with SDP) already reached the caller.
        self._early_media = False
        #: Flow IV early media: the callee's early SDP the caller was re-INVITEd with, the
        #: caller's answer to it, and who waits for that answer (the 2xx came first).
        self._early_offer: bytes | None = None
        self._early_answer: bytes | None = None
        self._early_waiter: Callable[[bytes], None] | None = None
        #: What every call of the controller shares (clock, user agent, settings, ...).
        self.shared = shared
        #: The public state the observer last published (None before the first): kept
        #: here for it, where an entry in a dict of the observer's costs more per call.
        self.published: str | None = None
        #: The media relay between the phones ([media] relay), or None.
        self.relay = relay
        #: What the media flow drives: this call, or the relay in front of it.
        self._bridge: IBridge = self if relay is None else RelayBridge(self, relay)
        self._ringback: RtpStream | None = None
        self.flow = flow
        self.caller = Leg(self, "caller", caller)
        self.callee = Leg(self, "callee", callee)
        self.phase = Phase.CALLING_CALLER
        self._timer: IDelayedCall | Lingering | None = None
        self.caller_offer = b""
        self._callee_offer: bytes | None = None
        self._relayed: tuple[IncomingRequest, ...] = ()  # shared when empty
        self.created_at = created_at
        self.caller_answered_at: float | None = None
        self.callee_answered_at: float | None = None
        self.connected_at: float | None = None
        self.ended_at: float | None = None
        self.end_reason: str | None = None
        self.sip_status: int | None = None
        self.who_hung_up: str | None = None
        #: Whether an input without transition was logged (once per call; all are counted).
        self._unexpected_logged = False

    def __repr__(self) -> str:
        return f"<Call {self.call_id} {self.phase.value}>"

    # -- the state machine ---------------------------------------------------

    @property
    def over(self) -> bool:
        """Whether the call has ended or failed."""
        return self.phase in _TERMINAL

    @property
    def public_state(self) -> str:
        """The state shown outside (:data:`clicktodial.calls.events.PUBLIC_STATES`)."""
        return PUBLIC_STATE[self.phase]

    def _handle(self, event: Input, payload: object = None) -> None:
        """Take the row of :data:`_TABLE` for ``event`` in the current phase."""
        phase = self.phase
        target, actions = self._TABLE.get((phase, event), _NO_TRANSITION)
        if target is None:
            self._no_transition(event)
        elif target is not phase:
            self._enter(target, event)
        elif LOG_LEVELS.debug:
            log.debug(
                "call {record}: {event} in {phase}",
                record=self.call_id,
                event=event,
                phase=phase,
            )
        for action in actions:
            action(self, payload)

    def _enter(self, phase: Phase, event: Input) -> None:
        """Leave the current phase (cancel its timer), enter ``phase``, start its timer."""
        timer = self._timer
        if timer is not None:
            if timer.active():
                timer.cancel()
            self._timer = None
        # The StrEnum members themselves (formatted as their values, and only when the
        # event is written): .value is two calls each, on every transition.
        if LOG_LEVELS.info:
            log.info(
                "call {record}: {old} --{event}--> {new}",
                record=self.call_id,
                old=self.phase,
                event=event,
                new=phase,
            )
        self.phase = phase
        self._start_timer()

    def _start_timer(self) -> None:
        shared = self.shared
        # One reactor timer for all calls per delay (LingerQueue): the maximum duration
        # is held for the whole call, and a DelayedCall per set-up phase (with its
        # bound method), cancelled when the phase ends, stays in the reactor's heap
        # until Twisted compacts it (~0.5 KB a call during the ramp, whose peak the
        # heap keeps); a cancelled queue entry is dropped sooner and costs less.
        queue = shared.phase_queues.get(self.phase)
        if queue is not None:
            self._timer = queue.call_later_on(self, Call._timer_fired)
            return
        delay = shared.phase_delays.get(self.phase)
        if delay and shared.long_timers is None:
            self._timer = shared.clock.callLater(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._handle(Input.TIMER)

    def _no_transition(self, event: Input) -> None:
        """An input that should not happen in this phase: logged once per call, counted."""
        self.shared.observer.call_input_unexpected(self, self.phase, event)
        if self._unexpected_logged:
            log.debug(
                "call {record}: {event} has no transition in {phase}",
                record=self.call_id,
                event=event.value,
                phase=self.phase.value,
            )
            return
        self._unexpected_logged = True
        log.warn(
            "call {record}: {event} has no transition in {phase}: ignored (further ones"
            " for this call are only counted, in clicktodial_call_unexpected_inputs)",
            record=self.call_id,
            event=event.value,
            phase=self.phase.value,
        )

    # -- actions of the table (each takes the input's payload) --------------------

    def _late_event(self, payload: object) -> None:
        """Absorb an input that can still arrive after the call moved on (a late event)."""

    def _take_answer(self, answer: _Answer) -> None:
        """The first phone of a leg to answer wins; the others are CANCELled (§16.7 style)."""
        leg = answer.leg
        leg.session = answer.session
        leg.pending_offer = answer.offer
        leg.answered_by(answer.target)
        leg.cancel_forks()

    def _hang_up_stray(self, answer: _Answer) -> None:
        """Another of the leg's phones answered first, or too late: ACK (hold answer) and BYE."""
        stray = Leg(self, answer.leg.role, answer.leg.user)
        stray.session, stray.pending_offer = answer.session, answer.offer
        stray.hang_up()

    def _record_caller_answer(self, answer: _Answer) -> None:
        sdp = answer.sdp
        assert sdp is not None  # caller-no-offer otherwise
        self.caller_offer = sdp
        now = self.caller_answered_at = self.shared.clock.seconds()
        self.shared.observer.call_changed(
            self, {"state": PUBLIC_STATE[self.phase], "caller_answered_at": now}
        )

    def _flow_caller_answered(self, answer: _Answer) -> None:
        """Flow I/IV step 2: the media flow ACKs the caller (IV) and rings the callee."""
        self.flow.caller_answered(self._bridge, self.caller_offer)

    def _refuse_answer_without_offer(self, answer: _Answer) -> None:
        log.warn("caller's 2xx has no offer", call_id=answer.response.call_id)
        self._record_end(_Outcome("error", 488, "system"))

    def _ring_callee(self, targets: list[Target]) -> None:
        """
        Flow I step 3 / Flow IV step 4: INVITE every binding of the callee, or the
        number through the trunk the route chose.
        """
        if targets:
            self.callee.ring(
                self.shared.ua,
                targets,
                from_=self._party(self.caller.user),
                to=self._party(self.callee.user),
                offer=self._callee_offer,
            )
        if not targets:
            reason, status = self._route.unreachable()
            self._handle(Input.CALLEE_FAILED, _Outcome(reason, status, "system"))
            return
        if not self.callee.forks:
            self._leg_failed(self.callee)
            return
        trunk = targets[0].trunk
        changes: CallChanges = {"callee_rung_at": self.shared.clock.seconds()}
        if trunk is not None:
            # The history names the trunk the call went out through (the last one tried).
            changes["trunk"] = trunk
        self.shared.observer.call_changed(self, changes)

    def _reroute_callee(self, status: int) -> None:
        """
        The trunk refused with 408/5xx or could not be reached (RFC 3261 §8.1.3.1: a
        transport error is a 503): the next trunk of the route gets the same INVITE.
        """
        log.info(
            "call {record}: trunk {trunk} failed ({status}), trying the next one",
            record=self.call_id,
            trunk=self._route.trunk,
            status=status,
        )
        self.callee.failures = ()
        if self._early_acked():
            # Flow I after early media: the caller's offer was answered with the failed
            # trunk's media. RFC 3725 §5 Flow IV from here on: the next trunk is INVITEd
            # without an offer and its offer re-INVITEs the caller (docs/calls.md).
            self._callee_offer = None
            self.flow = FlowIV()
        # Flow IV: the next trunk's early media or 2xx offer goes to the caller afresh.
        self._early_media = False
        self._early_offer = self._early_answer = None
        self._early_waiter = None
        self._route.targets().addCallbacks(self._callee_found, self._lookup_failed)

    def _early_acked(self) -> bool:
        """
        Flow I: the caller's 2xx was ACKed with a trunk's early answer, so the caller's
        media is bound to that trunk's: the caller has no offer left for another trunk
        (a fail-over continues as Flow IV, :meth:`_reroute_callee`).
        """
        return self._early_media and self._callee_offer is not None

    def _play_early_media(self, sdp: bytes) -> None:
        """
        RFC 3960 early media from the callee (a provider's ringback or announcement in a
        183 with SDP) reaches the caller instead of our own ringback (docs/calls.md,
        "Early media"), once per call.  Flow I: the 1xx answers the caller's offer and
        RFC 3261 §13.2.1 makes the 2xx carry the same answer, so the caller's 2xx is ACKed
        with it now.  Flow IV (our INVITE had no offer): the 1xx's SDP previews the offer
        the 2xx will carry (RFC 3960 §3.1, the gateway model); the caller is re-INVITEd
        with it now (our ringback stops) and its answer is kept for that 2xx (Flow IV steps
        6-7 done early).  Relayed media ([media] relay) waits for the 2xx as before.
        """
        caller = self.caller
        if self._early_media or self.relay is not None:
            return
        if caller.pending_offer is not None:  # Flow I
            self._early_media = True
            log.info(
                "call {record}: early media from the callee: the caller's ACK", record=self.call_id
            )
            self.ack_caller(sdp)
            return
        session = caller.session
        if self._callee_offer is not None or session is None or session.is_terminated:
            return
        body = caller.outgoing(pad_media(sdp, sent_media(caller.sent)))
        try:
            session.reinvite(body, SDP_CONTENT_TYPE, on_response=self._early_answered)
        except (RequestPending, OfferAnswerError, DialogError, SDPParseError) as e:
            log.info(
                "call {record}: early media not forwarded: {error}",
                record=self.call_id,
                error=str(e),
            )
            return
        self._early_media = True
        self._early_offer = sdp
        self._stop_ringback()
        log.info(
            "call {record}: early media from the callee: caller re-INVITEd", record=self.call_id
        )

    def _early_answered(self, response: Response) -> None:
        """The caller's answer to the early re-INVITE (Flow IV)."""
        if response.status < 200:
            return
        waiter, self._early_waiter = self._early_waiter, None
        answer = _sdp_of(response)
        if 200 <= response.status < 300 and answer is not None:
            self._early_answer = answer
            if waiter is not None and self.phase is Phase.BRIDGING:
                waiter(answer)
            return
        # Refused (glare, 488): the 2xx's offer goes to the caller as without early media.
        offer, self._early_offer = self._early_offer, None
        if waiter is not None and offer is not None and self.phase is Phase.BRIDGING:
            self.reinvite_caller(offer, waiter)

    def _release_route(self, payload: object) -> None:
        """The call is over: the route gives back what it holds (the trunk's ticket)."""
        self._route.release()

    def _record_callee_answer(self, answer: _Answer) -> None:
        now = self.callee_answered_at = self.shared.clock.seconds()
        self.shared.observer.call_changed(self, {"callee_answered_at": now})

    def _flow_callee_answered(self, answer: _Answer) -> None:
        """Flow I step 4 / Flow IV step 5: the media flow completes offer/answer."""
        self.flow.callee_answered(self._bridge, answer.sdp)

    def _record_connected(self, payload: object) -> None:
        # Only the set-up's steps (the media flow, the relay's decision) read the caller's
        # offer: a connected call lets go of it (the sessions keep what was agreed).
        self.caller_offer = b""
        now = self.connected_at = self.shared.clock.seconds()
        self.shared.observer.call_changed(
            self, {"state": PUBLIC_STATE[self.phase], "connected_at": now}
        )

    def _refuse_offer(self, offer: _Offer) -> None:
        """RFC 3261 §14.2: an offer while ours is being worked out gets 491."""
        self._respond(offer.request, 491)

    def _answer_locally(self, offer: _Offer) -> None:
        """The call is over: the re-INVITE is answered as outside any call."""
        session = offer.leg.session
        if session is not None:
            SessionHandlerBase.request_received(offer.leg, session, offer.request)

    def _record_end(self, outcome: _Outcome) -> None:
        """Why the call ended (the payload of caller-/callee-/bridge-failed, *-gone)."""
        self.ended_at = self.shared.clock.seconds()
        self.end_reason, self.sip_status, self.who_hung_up = (
            outcome.reason,
            outcome.status,
            outcome.who,
        )

    def _record_hang_up(self, who: str) -> None:
        """A connected call hung up from the web: by one of its parties, or by the system."""
        reason = f"{who}-hangup" if who != "system" else "cancelled"
        self._record_end(_Outcome(reason, None, who))

    def _record_cancel(self, who: str) -> None:
        """A call hung up from the web before it was connected."""
        self._record_end(_Outcome("cancelled", None, who))

    def _refuse_relayed(self, payload: object) -> None:
        """A re-INVITE we were relaying gets 487: its dialog is going away."""
        relayed, self._relayed = self._relayed, ()
        for request in relayed:
            self._respond(request, 487)

    def _hang_up_callee(self, payload: object) -> None:
        self.callee.hang_up()

    def _hang_up_caller(self, payload: object) -> None:
        if self._ringback is not None:
            self._stop_ringback()
        self.caller.hang_up()

    def _hang_up_caller_with_reason(self, payload: object) -> None:
        """RFC 3326: the caller learns why the callee could not be reached."""
        self._stop_ringback()
        self.caller.hang_up(self._reason())

    def _tone_then_hang_up_caller(self, payload: object) -> None:
        """While it hears ringback: a busy or failure tone, then the BYE with Reason."""
        headers = self._reason()
        stream = self._ringback
        if self.shared.media is not None and stream is not None:
            self.shared.media.fail(stream, self.sip_status, lambda: self.caller.hang_up(headers))
        else:
            self._stop_ringback()
            self.caller.hang_up(headers)

    def _reason(self) -> list[tuple[str, str]]:
        status = self.sip_status
        return [reason_header(status)] if status else []

    def _end_relay(self, payload: object) -> None:
        if self.relay is not None:
            self.relay.end()

    def _report_end(self, payload: object) -> None:
        changes: CallChanges = {"state": PUBLIC_STATE[self.phase]}
        # Only the fields set (a CallUpdate leaves None unchanged).
        if self.ended_at is not None:
            changes["ended_at"] = self.ended_at
        if self.end_reason is not None:
            changes["end_reason"] = self.end_reason
        if self.sip_status is not None:
            changes["sip_status"] = self.sip_status
        if self.who_hung_up is not None:
            changes["who_hung_up"] = self.who_hung_up
        self.shared.observer.call_changed(self, changes)

    # -- starting and stopping -----------------------------------------------

    def start(self, caller_targets: Sequence[Target]) -> None:
        """Flow I/IV step 1: ring the caller's phones (without SDP), or fail at once."""
        self._start_timer()  # the initial phase's (there is no transition into it)
        self.shared.observer.call_changed(self, {"state": PUBLIC_STATE[self.phase]})
        if not caller_targets:
            self._handle(Input.CALLER_FAILED, _Outcome("caller-unreachable", 480, "system"))
            return
        self.caller.ring(
            self.shared.ua,
            caller_targets,
            from_=self._party(self.callee.user),
            to=self._party(self.caller.user),
            offer=None,
        )
        if not self.caller.forks:
            self._leg_failed(self.caller)

    def fail_before_start(self, role: str) -> None:
        """The call cannot start: ``role``'s user has no binding."""
        self._handle(Input.CALLER_FAILED, _Outcome(f"{role}-unreachable", 480, "system"))

    def hang_up(self, by_username: str | None) -> bool:
        """Hang up at any stage (:meth:`ICallController.hang_up`); False if already over."""
        if self.over:
            return False
        if by_username == self.caller.user.username:
            who = "caller"
        elif by_username == self.callee.user.username:
            who = "callee"
        else:
            who = "system"
        self._handle(Input.HANG_UP, who)
        return True

    def _party(self, user: User) -> NameAddr:
        """
        A user as From/To shows them: display name, AOR.  Never changed once made (the UA
        core copies it to add a tag), so one is shared by the user's calls: its URI's text
        is then made once, not for every INVITE.
        """
        shared = self.shared
        parties = shared.parties
        if parties is None:
            return NameAddr(URI("sip", user.username, shared.domain), user.display_name or None)
        key = (user.username, user.display_name, shared.domain)
        party = parties.entries.get(key)
        if party is None:
            party = parties.remember(
                key,
                NameAddr(URI("sip", user.username, shared.domain), user.display_name or None),
            )
        return party

    # -- UA core events: classified into inputs ----------------------------------

    def _answered(self, leg: Leg, fork: OutgoingCall, session: Session, response: Response) -> None:
        target = leg.forks.pop(fork, None)
        # The 2xx waits for our ACK when it carried the offer (our INVITE had none).
        sdp = _sdp_of(response)
        offer = sdp if fork.offer is None else None
        answer = _Answer(leg, target, session, response, sdp, offer)
        if leg is self.callee:
            self._handle(Input.CALLEE_ANSWERED, answer)
        elif sdp is None:
            self._handle(Input.CALLER_NO_OFFER, answer)
        else:
            self._handle(Input.CALLER_ANSWERED, answer)

    def _fork_failed(self, leg: Leg, fork: OutgoingCall, response: Response) -> None:
        if leg.forks.pop(fork, None) is None and not leg.starting:
            return  # cancelled by us (another phone answered, or the call is over)
        leg.failures += (response.status,)
        if leg.starting or leg.forks or leg.session is not None:
            return
        self._leg_failed(leg)

    def _leg_failed(self, leg: Leg) -> None:
        """Every INVITE of ``leg`` failed: the best status speaks for the leg."""
        status = min(leg.failures or [503], key=_status_rank)
        if leg is self.callee and self._route.reroutes(status):
            self._handle(Input.CALLEE_REROUTE, status)
            return
        reason, who = _outcome(leg.role, status)
        event = Input.CALLER_FAILED if leg is self.caller else Input.CALLEE_FAILED
        self._handle(event, _Outcome(reason, status, who))

    def _session_ended(self, leg: Leg, reason: str) -> None:
        if leg is self.caller and self._ringback is not None:
            self._stop_ringback()  # also a failure tone the caller hung up on
        if reason == "local-bye":
            return  # ours: the call is already over
        event = Input.CALLER_GONE if leg is self.caller else Input.CALLEE_GONE
        if reason == "remote-bye":
            self._handle(event, _Outcome(f"{leg.role}-hangup", None, leg.role))
        else:
            # "timeout", "no-ack", "remote-481": the phone stopped answering
            # in-dialog requests (RFC 3261 §12.2.1.2).
            status = 481 if reason == "remote-481" else 408
            self._handle(event, _Outcome("timeout", status, "system"))

    # -- re-INVITEs from the phones --------------------------------------------

    def _other(self, leg: Leg) -> Leg:
        return self.callee if leg is self.caller else self.caller

    def _in_dialog_request(self, leg: Leg, request: IncomingRequest) -> None:
        if request.method != "INVITE" or request.offer is None:
            # Session refreshes (re-INVITE without offer: our last SDP),
            # INFO, OPTIONS...: answered locally.
            if leg.session is not None:
                SessionHandlerBase.request_received(leg, leg.session, request)
            return
        self._handle(Input.OFFER, _Offer(leg, request))

    def _relay_offer(self, incoming: _Offer) -> None:
        """A connected phone's re-INVITE (hold, resume, codecs) is relayed to the other."""
        leg, request = incoming.leg, incoming.request
        assert request.offer is not None
        other = self._other(leg)
        session = other.session
        if session is None or session.is_terminated:
            self._respond(request, 491)
            return
        offer_lines = media_count(request.offer)
        relay = self.relay

        def answered(answer: bytes) -> None:
            self._respond(request, 200, leg.outgoing(truncate_media(answer, offer_lines)))

        def relay_failed(failure: Failure) -> None:
            failure.trap(RelayFailed)
            self._respond(request, 500)

        def responded(response: Response) -> None:
            if response.status < 200:
                return
            if request in self._relayed:
                self._relayed = tuple(r for r in self._relayed if r is not request)
            answer = _sdp_of(response)
            if 200 <= response.status < 300 and answer is not None:
                if relay is None:
                    answered(answer)
                else:
                    d = relay.answer(other.role, answer, other.source)
                    d.addCallback(answered).addErrback(relay_failed)
                return
            if relay is not None:
                relay.open_offer = None
            if 200 <= response.status < 300:
                self._respond(request, 488)
            else:
                # 491 (glare on the other leg) goes back as 491: the phone retries.
                self._respond(request, response.status if response.status < 700 else 500)

        def forward(offer_sdp: bytes) -> None:
            session = other.session
            if self.over or request.responded or session is None or session.is_terminated:
                self._respond(request, 487 if self.over else 491)
                return
            offer = other.outgoing(pad_media(offer_sdp, sent_media(other.sent)))
            try:
                session.reinvite(offer, SDP_CONTENT_TYPE, on_response=responded, retry_on_491=False)
            except (RequestPending, OfferAnswerError, DialogError):
                self._respond(request, 491)
                return
            self._relayed += (request,)

        if relay is None:
            forward(request.offer)
        else:
            # Hold/resume and other re-offers go through the relay too (the phones only
            # ever see the relay's addresses once the call is relayed).
            relay.offer(leg.role, request.offer, leg.source).addCallback(forward).addErrback(
                relay_failed
            )

    def _respond(self, request: IncomingRequest, status: int, body: bytes = b"") -> None:
        if request.responded:
            return
        try:
            if body:
                request.respond(status, body=body, content_type=SDP_CONTENT_TYPE)
            else:
                request.respond(status)
        except (ValueError, OfferAnswerError, DialogError, HeaderParseError) as e:
            log.warn("cannot answer {method}: {error}", method=request.method, error=str(e))

    # -- IBridge (what the media flow drives) ------------------------------------

    def ack_caller(self, answer: bytes) -> None:
        """ACK the caller's 2xx with ``answer`` (relayed)."""
        self.caller.ack(answer)

    def held_answer(self, offer: bytes) -> bytes:
        """
        RFC 3725 Flow IV's answer1 to ``offer``: with ringback on ([calls] ringback),
        our answer from our own RTP stream playing it; otherwise (or when
        the offer has no stream we can send to) every stream held.
        """
        if self.shared.media is not None and self._ringback is None:
            # RTP only to the address the caller's phone signals from; behind a trusted
            # proxy that is the proxy's, so the offer is taken as it is (docs/security.md).
            started = self.shared.media.answer(offer, self.call_id, self.caller.source)
            if started is not None:
                answer, self._ringback = started
                return answer
        return held_answer(offer)

    def _stop_ringback(self, payload: object = None) -> None:
        stream, self._ringback = self._ringback, None
        if stream is not None and self.shared.media is not None:
            self.shared.media.stop(stream)

    def invite_callee(self, offer: bytes | None) -> None:
        """Look the callee's bindings up again and ring them all (or the route's trunk)."""
        self._callee_offer = offer
        self._route.targets().addCallbacks(self._callee_found, self._lookup_failed)

    def _callee_found(self, targets: list[Target]) -> None:
        self._handle(Input.CALLEE_TARGETS, targets)

    def _lookup_failed(self, failure: Failure) -> None:
        log.failure("callee binding lookup failed", failure, record=self.call_id)
        self._handle(Input.CALLEE_FAILED, _Outcome("error", 500, "system"))

    def ack_callee(self, answer: bytes | None) -> None:
        """ACK the callee's 2xx (with ``answer`` if it carried an offer)."""
        offer = self.callee.pending_offer
        if answer is not None and offer is not None:
            answer = truncate_media(answer, media_count(offer))
        self.callee.ack(answer)

    def reinvite_caller(self, offer: bytes, answered: Callable[[bytes], None]) -> None:
        """RFC 3725 Flow IV step 6: the callee's offer to the caller."""
        if self._early_offer is not None and offer == self._early_offer:
            # The caller has (or is being asked for) its answer to this very offer: the
            # callee's early media re-INVITE (_play_early_media).
            if self._early_answer is not None:
                answered(self._early_answer)
            else:
                self._early_waiter = answered
            return
        session = self.caller.session
        if session is None or session.is_terminated:
            self.bridge_failed(481)
            return
        body = self.caller.outgoing(pad_media(offer, sent_media(self.caller.sent)))

        def responded(response: Response) -> None:
            if response.status < 200 or self.phase is not Phase.BRIDGING:
                return
            answer = _sdp_of(response)
            if 200 <= response.status < 300 and answer is not None:
                answered(answer)
            else:
                self.bridge_failed(response.status if response.status >= 300 else 488)

        try:
            session.reinvite(body, SDP_CONTENT_TYPE, on_response=responded)
        except (RequestPending, OfferAnswerError, DialogError):
            self.bridge_failed(491)

    def bridged(self) -> None:
        """Both phones have each other's media."""
        self._handle(Input.BRIDGED)

    def media_relay_failed(self) -> None:
        """
        The media relay failed ([media:rtpengine] on_failure = fail): the call
        fails with ``media-relay-failed``.
        """
        self._handle(Input.MEDIA_RELAY_FAILED)

    def bridge_failed(self, status: int) -> None:
        """The offer/answer exchange failed: end the call."""
        log.warn(
            "call {record}: offer/answer between the phones failed ({status})",
            record=self.call_id,
            status=status,
        )
        reason = "timeout" if status in (408, 481) else "error"
        self._handle(Input.BRIDGE_FAILED, _Outcome(reason, status, "system"))

    # -- outside view ----------------------------------------------------------

    def info(self) -> CallInfo:
        """The call as listeners see it."""
        return CallInfo(
            call_id=self.call_id,
            caller=self.caller.user.username,
            callee=self.callee.user.username,
            state=PUBLIC_STATE[self.phase],
            created_at=self.created_at,
            caller_answered_at=self.caller_answered_at,
            callee_answered_at=self.callee_answered_at,
            connected_at=self.connected_at,
            ended_at=self.ended_at,
            end_reason=self.end_reason,
            sip_status=self.sip_status,
            who_hung_up=self.who_hung_up,
            media_relay=self.relay.state if self.relay is not None else "off",
        )

    # -- the table -----------------------------------------------------------------
    #
    # (phase, input): (next phase, actions).  None: no transition (the input should not
    # happen in that phase): logged once per call and counted; the actions still run.
    # Flow I / Flow IV step numbers are RFC 3725's (the module docstring has both ladders).

    _P, _I = Phase, Input
    _NO = None
    # The ways a call ends: record why (the row's first action), then hang up both legs.
    # The caller's BYE carries Reason (RFC 3326) when the callee could not be reached, after
    # a busy or failure tone when it was hearing ringback.
    # The callee route's trunk ticket is given back whichever way the call ends.
    _BYE_BOTH = (
        _refuse_relayed,
        _hang_up_callee,
        _hang_up_caller,
        _end_relay,
        _release_route,
        _report_end,
    )
    _BYE_BOTH_WITH_REASON = (
        _refuse_relayed,
        _hang_up_callee,
        _hang_up_caller_with_reason,
        _end_relay,
        _release_route,
        _report_end,
    )
    _BYE_BOTH_AFTER_TONE = (
        _refuse_relayed,
        _hang_up_callee,
        _tone_then_hang_up_caller,
        _end_relay,
        _release_route,
        _report_end,
    )

    _TABLE: ClassVar[dict[tuple[Phase, Input], _Row]] = {
        # calling-caller: the caller's phones ring (Flow I/IV step 1), timer ring_timeout.
        (_P.CALLING_CALLER, _I.CALLER_ANSWERED): (
            _P.CALLING_CALLEE,
            (_take_answer, _record_caller_answer, _flow_caller_answered),
        ),  # step 2
        (_P.CALLING_CALLER, _I.CALLER_NO_OFFER): (
            _P.FAILED,
            (_take_answer, _refuse_answer_without_offer, *_BYE_BOTH),
        ),
        (_P.CALLING_CALLER, _I.CALLER_FAILED): (_P.FAILED, (_record_end, *_BYE_BOTH)),
        (_P.CALLING_CALLER, _I.CALLEE_TARGETS): (_NO, ()),
        (_P.CALLING_CALLER, _I.CALLEE_ANSWERED): (_NO, (_hang_up_stray,)),
        (_P.CALLING_CALLER, _I.CALLEE_FAILED): (_NO, ()),
        (_P.CALLING_CALLER, _I.CALLEE_REROUTE): (_NO, ()),
        (_P.CALLING_CALLER, _I.CALLEE_EARLY_MEDIA): (_NO, ()),
        (_P.CALLING_CALLER, _I.BRIDGED): (_NO, ()),
        (_P.CALLING_CALLER, _I.BRIDGE_FAILED): (_NO, ()),
        (_P.CALLING_CALLER, _I.MEDIA_RELAY_FAILED): (_NO, ()),
        (_P.CALLING_CALLER, _I.OFFER): (_NO, (_refuse_offer,)),
        (_P.CALLING_CALLER, _I.CALLER_GONE): (_NO, ()),
        (_P.CALLING_CALLER, _I.CALLEE_GONE): (_NO, ()),
        (_P.CALLING_CALLER, _I.HANG_UP): (_P.FAILED, (_record_cancel, *_BYE_BOTH)),
        (_P.CALLING_CALLER, _I.TIMER): (
            _P.FAILED,
            (_Ends("caller-no-answer", 408, "system"), *_BYE_BOTH),
        ),  # CANCEL
        # calling-callee: the caller answered, the callee's phones are looked up and ring
        # (Flow I step 3 / Flow IV step 4), timer callee_ring_timeout.
        (_P.CALLING_CALLEE, _I.CALLER_ANSWERED): (_P.CALLING_CALLEE, (_hang_up_stray,)),
        (_P.CALLING_CALLEE, _I.CALLER_NO_OFFER): (_P.CALLING_CALLEE, (_hang_up_stray,)),
        (_P.CALLING_CALLEE, _I.CALLER_FAILED): (_NO, ()),
        (_P.CALLING_CALLEE, _I.CALLEE_TARGETS): (_P.CALLING_CALLEE, (_ring_callee,)),
        (_P.CALLING_CALLEE, _I.CALLEE_ANSWERED): (
            _P.BRIDGING,
            (_stop_ringback, _take_answer, _record_callee_answer, _flow_callee_answered),
        ),  # Flow I step 4 / Flow IV step 5
        (_P.CALLING_CALLEE, _I.CALLEE_FAILED): (_P.FAILED, (_record_end, *_BYE_BOTH_AFTER_TONE)),
        # A trunk failed with 408/5xx, another remains: the callee phase goes on with it
        # (timer kept: callee_ring_timeout covers the whole hunt).
        (_P.CALLING_CALLEE, _I.CALLEE_REROUTE): (_P.CALLING_CALLEE, (_reroute_callee,)),
        (_P.CALLING_CALLEE, _I.CALLEE_EARLY_MEDIA): (_P.CALLING_CALLEE, (_play_early_media,)),
        (_P.CALLING_CALLEE, _I.BRIDGED): (_NO, ()),
        (_P.CALLING_CALLEE, _I.BRIDGE_FAILED): (_NO, ()),
        (_P.CALLING_CALLEE, _I.MEDIA_RELAY_FAILED): (
            _P.FAILED,
            (_Ends("media-relay-failed", 500, "system"), *_BYE_BOTH_AFTER_TONE),
        ),
        (_P.CALLING_CALLEE, _I.OFFER): (_P.CALLING_CALLEE, (_refuse_offer,)),  # 491
        (_P.CALLING_CALLEE, _I.CALLER_GONE): (_P.FAILED, (_record_end, *_BYE_BOTH)),  # CANCEL
        (_P.CALLING_CALLEE, _I.CALLEE_GONE): (_NO, ()),
        (_P.CALLING_CALLEE, _I.HANG_UP): (_P.FAILED, (_record_cancel, *_BYE_BOTH)),
        (_P.CALLING_CALLEE, _I.TIMER): (
            _P.FAILED,
            (_Ends("callee-no-answer", 408, "system"), *_BYE_BOTH_AFTER_TONE),
        ),  # CANCEL + BYE with Reason 408
        # bridging: the callee answered; the media flow completes offer/answer (Flow I
        # steps 5-6 / Flow IV steps 6-9), timer bridge_timeout.  Shown as calling-callee.
        (_P.BRIDGING, _I.CALLER_ANSWERED): (_P.BRIDGING, (_hang_up_stray,)),
        (_P.BRIDGING, _I.CALLER_NO_OFFER): (_P.BRIDGING, (_hang_up_stray,)),
        (_P.BRIDGING, _I.CALLER_FAILED): (_NO, ()),
        (_P.BRIDGING, _I.CALLEE_TARGETS): (_NO, ()),
        (_P.BRIDGING, _I.CALLEE_ANSWERED): (_P.BRIDGING, (_hang_up_stray,)),
        (_P.BRIDGING, _I.CALLEE_FAILED): (_NO, ()),
        (_P.BRIDGING, _I.CALLEE_REROUTE): (_NO, ()),
        # Another fork's 1xx after one answered: late.
        (_P.BRIDGING, _I.CALLEE_EARLY_MEDIA): (_P.BRIDGING, (_late_event,)),
        (_P.BRIDGING, _I.BRIDGED): (_P.CONNECTED, (_record_connected,)),  # I 7 / IV 10
        (_P.BRIDGING, _I.BRIDGE_FAILED): (_P.FAILED, (_record_end, *_BYE_BOTH_WITH_REASON)),
        (_P.BRIDGING, _I.MEDIA_RELAY_FAILED): (
            _P.FAILED,
            (_Ends("media-relay-failed", 500, "system"), *_BYE_BOTH_WITH_REASON),
        ),
        (_P.BRIDGING, _I.OFFER): (_P.BRIDGING, (_refuse_offer,)),  # 491
        (_P.BRIDGING, _I.CALLER_GONE): (_P.FAILED, (_record_end, *_BYE_BOTH)),
        (_P.BRIDGING, _I.CALLEE_GONE): (_P.FAILED, (_record_end, *_BYE_BOTH)),
        (_P.BRIDGING, _I.HANG_UP): (_P.FAILED, (_record_cancel, *_BYE_BOTH)),
        (_P.BRIDGING, _I.TIMER): (_P.FAILED, (_Ends("timeout", 408, "system"), *_BYE_BOTH)),
        # connected: both phones have each other's media; re-INVITEs are relayed; timer
        # max_duration (on the calls' shared LingerQueue).
        (_P.CONNECTED, _I.CALLER_ANSWERED): (_P.CONNECTED, (_hang_up_stray,)),
        (_P.CONNECTED, _I.CALLER_NO_OFFER): (_P.CONNECTED, (_hang_up_stray,)),
        (_P.CONNECTED, _I.CALLER_FAILED): (_NO, ()),
        (_P.CONNECTED, _I.CALLEE_TARGETS): (_NO, ()),
        (_P.CONNECTED, _I.CALLEE_ANSWERED): (_P.CONNECTED, (_hang_up_stray,)),
        (_P.CONNECTED, _I.CALLEE_FAILED): (_NO, ()),
        (_P.CONNECTED, _I.CALLEE_REROUTE): (_NO, ()),
        (_P.CONNECTED, _I.CALLEE_EARLY_MEDIA): (_P.CONNECTED, (_late_event,)),
        (_P.CONNECTED, _I.BRIDGED): (_NO, ()),
        (_P.CONNECTED, _I.BRIDGE_FAILED): (_NO, ()),
        (_P.CONNECTED, _I.MEDIA_RELAY_FAILED): (_NO, ()),
        (_P.CONNECTED, _I.OFFER): (_P.CONNECTED, (_relay_offer,)),
        (_P.CONNECTED, _I.CALLER_GONE): (_P.ENDED, (_record_end, *_BYE_BOTH)),
        (_P.CONNECTED, _I.CALLEE_GONE): (_P.ENDED, (_record_end, *_BYE_BOTH)),
        (_P.CONNECTED, _I.HANG_UP): (_P.ENDED, (_record_hang_up, *_BYE_BOTH)),
        (_P.CONNECTED, _I.TIMER): (_P.ENDED, (_Ends("max-duration", None, "system"), *_BYE_BOTH)),
        # ended, failed: absorb everything.
        **_absorbing(_P.ENDED, _hang_up_stray, _answer_locally, _late_event),
        **_absorbing(_P.FAILED, _hang_up_stray, _answer_locally, _late_event),
    }
    del _P, _I, _NO, _BYE_BOTH, _BYE_BOTH_WITH_REASON, _BYE_BOTH_AFTER_TONE


#: The row of an input missing from :data:`Call._TABLE` (none is: tests/calls/test_call_table.py).
_NO_TRANSITION: _Row = (None, ())
