"""
One click-to-dial call: a B2BUA running RFC 3725 third-party call control
between two legs, as an explicit state machine.

The caller's phones are INVITEd without SDP (all its bindings in parallel:
the first to answer wins, the others get CANCEL); its 2xx carries an offer.
Then the callee's phones are rung, and the media flow (L{IMediaFlow}: RFC
3725 Flow I or Flow IV) relays offers and answers until both phones talk to
each other directly.  Re-INVITEs from either phone are relayed to the other.

The whole life of a call is the table L{TRANSITIONS}: (phase, input) -> next
phase.  An input that has no entry for the current phase is ignored (a late
event).  Each phase owns at most one timer (L{PHASE_TIMERS}), started on
entry and cancelled by every transition out of it.  The terminal phases
C{failed} (never connected) and C{ended} hang up both legs; nothing of the
call stays in the UA core or on the clock once the UA core's own
transactions (CANCEL, BYE) are done.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from clicktodial.calls.events import CallInfo
from clicktodial.calls.relay import CallRelay, RelayBridge, RelayFailed
from clicktodial.interfaces import IBridge, IMediaFlow
from clicktodial.netaddr import NetworkSet
from clicktodial.sip.address import Destination
from clicktodial.sip.dialog import DialogError, destination_for_uri, flow_destination
from clicktodial.sip.headers import HeaderParseError, NameAddr, parse_name_addr
from clicktodial.sip.interfaces import ISessionHandler
from clicktodial.sip.message import Response
from clicktodial.sip.sdp import (
    SDP_CONTENT_TYPE,
    LegOrigin,
    OfferAnswerError,
    SDPParseError,
    held_answer,
    is_sdp,
    media_count,
    pad_media,
    truncate_media,
)
from clicktodial.sip.transactions.base import Lingering, LingerQueue
from clicktodial.sip.uri import URI, parse_uri
from clicktodial.sip.useragent import (
    CallState,
    IncomingRequest,
    OutgoingCall,
    RequestPending,
    Session,
    SessionHandlerBase,
    UserAgent,
)
from clicktodial.store.values import Binding, CallUpdate, User

if TYPE_CHECKING:
    from clicktodial.calls.trace import CallTracer
    from clicktodial.media.ringback import RingbackPlayer
    from clicktodial.media.rtp import RtpStream
    from clicktodial.sip.message import Request

__all__ = [
    "PHASE_TIMERS",
    "TRANSITIONS",
    "Call",
    "CallObserver",
    "CallSettings",
    "Input",
    "Phase",
    "Target",
    "reason_header",
    "target_for_binding",
]

log = Logger(namespace="clicktodial.calls.call")


class Phase(enum.StrEnum):
    """Where a call is.  C{bridging} shows as C{calling-callee} outside."""

    CALLING_CALLER = "calling-caller"  # the caller's phones ring
    CALLING_CALLEE = "calling-callee"  # the caller answered; the callee's phones ring
    BRIDGING = "bridging"  # the callee answered; offer/answer being completed
    CONNECTED = "connected"  # both phones have each other's media
    ENDED = "ended"  # over, after having been connected
    FAILED = "failed"  # over, never connected


class Input(enum.StrEnum):
    """What can happen to a call."""

    CALLER_ANSWERED = "caller-answered"
    CALLER_FAILED = "caller-failed"  # every caller fork failed (or none exists)
    CALLEE_ANSWERED = "callee-answered"
    CALLEE_FAILED = "callee-failed"
    BRIDGED = "bridged"
    BRIDGE_FAILED = "bridge-failed"
    CALLER_GONE = "caller-gone"  # the caller's session ended (BYE, timeout, 481)
    CALLEE_GONE = "callee-gone"
    HANG_UP = "hang-up"  # ICallController.hang_up
    TIMER = "timer"  # the current phase's timer ran out


_P, _I = Phase, Input

#: The state machine: every legal (phase, input) and the phase it leads to.
TRANSITIONS: dict[tuple[Phase, Input], Phase] = {
    (_P.CALLING_CALLER, _I.CALLER_ANSWERED): _P.CALLING_CALLEE,
    (_P.CALLING_CALLER, _I.CALLER_FAILED): _P.FAILED,
    (_P.CALLING_CALLER, _I.TIMER): _P.FAILED,  # ring timeout: CANCEL
    (_P.CALLING_CALLER, _I.HANG_UP): _P.FAILED,
    (_P.CALLING_CALLEE, _I.CALLEE_ANSWERED): _P.BRIDGING,
    (_P.CALLING_CALLEE, _I.CALLEE_FAILED): _P.FAILED,  # BYE + Reason to the caller
    (_P.CALLING_CALLEE, _I.CALLER_GONE): _P.FAILED,  # CANCEL to the callee
    (_P.CALLING_CALLEE, _I.TIMER): _P.FAILED,  # callee ring timeout
    (_P.CALLING_CALLEE, _I.HANG_UP): _P.FAILED,
    (_P.BRIDGING, _I.BRIDGED): _P.CONNECTED,
    (_P.BRIDGING, _I.BRIDGE_FAILED): _P.FAILED,
    (_P.BRIDGING, _I.CALLER_GONE): _P.FAILED,
    (_P.BRIDGING, _I.CALLEE_GONE): _P.FAILED,
    (_P.BRIDGING, _I.TIMER): _P.FAILED,  # guard: the caller never answers the re-INVITE
    (_P.BRIDGING, _I.HANG_UP): _P.FAILED,
    (_P.CONNECTED, _I.CALLER_GONE): _P.ENDED,
    (_P.CONNECTED, _I.CALLEE_GONE): _P.ENDED,
    (_P.CONNECTED, _I.TIMER): _P.ENDED,  # maximum call duration
    (_P.CONNECTED, _I.HANG_UP): _P.ENDED,
}

#: The timer each phase runs (a L{CallSettings} attribute), if any.
PHASE_TIMERS: dict[Phase, str] = {
    Phase.CALLING_CALLER: "ring_timeout",
    Phase.CALLING_CALLEE: "callee_ring_timeout",
    Phase.BRIDGING: "bridge_timeout",
    Phase.CONNECTED: "max_duration",
}

_TERMINAL = (Phase.ENDED, Phase.FAILED)


@attrs.frozen
class CallSettings:
    """
    The timers of a call, in seconds (0: none), and how many of a user's
    phones one call rings at once (C{[calls] max_forks}).
    """

    ring_timeout: float = 30.0
    callee_ring_timeout: float = 60.0
    bridge_timeout: float = 32.0
    max_duration: float = 0.0
    max_forks: int = 5


@attrs.frozen
class Target:
    """
    Where one binding is called: the Request-URI (the stored contact,
    without URI headers), the pre-loaded route (stored Path) and the next hop.

    @ivar flow: the fixed next hop for every request of the dialogs the
        INVITE creates (the address the phone registered from, or the first
        hop of a trusted Path), whatever the phone's Contact and
        Record-Route say (docs/security.md).
    """

    uri: URI
    route: tuple[NameAddr, ...]
    destination: Destination
    flow: Destination


def target_for_binding(binding: Binding, trusted_paths: NetworkSet) -> Target:
    """
    The L{Target} of ``binding`` (docs/registrar.md, "Binding trust"): a
    phone never chooses where the daemon's requests go.

    The stored contact is only the Request-URI: a URI header (C{?Route=...})
    never becomes a header field of ours (RFC 3261 §19.1.5 leaves that to the
    UA's choice), and its host, port, C{maddr} and C{transport} are not the
    next hop.  Requests go to the C{received} address, the REGISTER's source
    (RFC 3261 §18.2.1 / RFC 3581; Kamailio's fix_nated_contact, Asterisk's
    rewrite_contact), for the whole dialog.  Only a binding registered
    through a trusted proxy (its C{received} in ``trusted_paths``: the
    C{[registrar] trusted_proxies} when C{path = trusted}, else empty) has
    its stored Path as the pre-loaded route (RFC 3327) -- checked here
    again, so a Path stored before the registrar checked its source, or by
    a daemon configured otherwise, steers nothing.

    @raise ValueError: the stored contact, Path or source does not parse, or
        the binding has no source address (not written by our registrar).
    """
    uri = parse_uri(binding.contact).without_headers()
    if not binding.received:
        raise ValueError("no source address recorded with the binding")
    received = parse_uri(binding.received)
    if binding.path and received.host in trusted_paths:
        route = tuple(parse_name_addr(hop) for hop in binding.path)
        # The trusted proxy routes the dialog's requests too: they all go to its first hop.
        hop = destination_for_uri(route[0].uri)
        return Target(uri, route, hop, hop)
    # A stream flow that is gone is reopened to the source host at the Contact's port
    # (never to a host the Contact names); an RFC 5626 flow is never reopened.
    outbound = binding.instance_id is not None and binding.reg_id is not None
    flow = flow_destination(received, uri, outbound)
    return Target(uri, (), flow, flow)


def reason_header(status: int, text: str | None = None) -> tuple[str, str]:
    """RFC 3326 C{Reason} carrying a SIP status: why the call ended."""
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


class CallObserver(Protocol):
    """What a call reports to (the controller: records and events)."""

    def call_changed(self, call: Call, update: CallUpdate) -> None:
        """``call`` changed; ``update`` is what to write to its record."""


class Leg:
    """
    One side of the call (the caller's or the callee's phones): the INVITEs
    in progress to its bindings and, once one answered, its session.

    @ivar pending_offer: the offer of a 2xx we still have to ACK (with the
        answer), or None.
    """

    # Per call, for as long as it is held: no per-instance __dict__ (also Call, _LegHandler).
    __slots__ = (
        "call", "role", "user", "handler", "forks", "starting", "failures", "session",
        "pending_offer", "origin", "target",
    )

    def __init__(self, call: Call, role: str, user: User) -> None:
        self.call = call
        self.role = role
        self.user = user
        self.handler = _LegHandler(call, self)
        self.forks: dict[OutgoingCall, Target] = {}
        #: True while the INVITEs go out (a fork may fail synchronously).
        self.starting = False
        self.failures: list[int] = []
        self.session: Session | None = None
        self.pending_offer: bytes | None = None
        self.origin = LegOrigin()
        #: The binding's L{Target} whose phone answered (its session's flow).
        self.target: Target | None = None

    @property
    def source(self) -> str | None:
        """
        The address the answering phone signals from (its NAT's, behind one); None
        behind a trusted proxy (a pre-loaded route), where that is the proxy's.
        """
        target = self.target
        if target is None or target.flow is None or target.route:
            return None
        return target.flow.host

    def ring(
        self,
        ua: UserAgent,
        targets: Sequence[Target],
        from_: NameAddr,
        to: NameAddr,
        offer: bytes | None,
    ) -> None:
        """INVITE every target in parallel (with ``offer``, or without SDP)."""
        body = self.origin.outgoing(offer) if offer is not None else b""
        tracer = self.call.tracer
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
                    from_=from_,
                    to=to,
                    handler=self.handler,
                    body=body,
                    route=target.route,
                    destination=target.destination,
                    call_id=call_id,
                    flow=target.flow,
                )
                if fork.state in (CallState.CALLING, CallState.PROCEEDING):
                    self.forks[fork] = target
        finally:
            self.starting = False

    def cancel_forks(self) -> None:
        """CANCEL every INVITE still ringing (a crossing 2xx gets ACK + BYE from the core)."""
        for fork in list(self.forks):
            fork.cancel()
        self.forks.clear()

    def hang_up(self, headers: Sequence[tuple[str, str]] = ()) -> None:
        """CANCEL what rings, BYE what answered (ACKing an unACKed 2xx first)."""
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
            self.session.ack(self.origin.outgoing(answer), SDP_CONTENT_TYPE)


def held_answer_or_none(offer: bytes) -> bytes | None:
    """L{held_answer} of ``offer``, or None if it is not SDP."""
    try:
        return held_answer(offer)
    except SDPParseError:
        return None


@implementer(ISessionHandler)
class _LegHandler(SessionHandlerBase):
    """The UA core's events for one leg, handed to its call."""

    __slots__ = ("call", "leg")

    def __init__(self, call: Call, leg: Leg) -> None:
        self.call = call
        self.leg = leg

    def call_answered(self, call: OutgoingCall, session: Session, response: Response) -> None:
        self.call._answered(self.leg, call, session, response)

    def call_failed(self, call: OutgoingCall, response: Response) -> None:
        self.call._fork_failed(self.leg, call, response)

    def request_received(self, session: Session, request: IncomingRequest) -> None:
        if session is self.leg.session and not self.call.over:
            self.call._in_dialog_request(self.leg, request)
        else:
            super().request_received(session, request)

    def session_terminated(self, session: Session, reason: str) -> None:
        if session is self.leg.session:
            self.call._session_ended(self.leg, reason)


@implementer(IBridge)
class Call:
    """
    One click-to-dial call (see the module docstring).

    @ivar call_id: the call record's id.
    @ivar phase: the current L{Phase}.
    @ivar caller_offer: the offer of the caller's 2xx, once it answered.
    """

    __slots__ = (
        "call_id", "media", "_ringback", "clock", "ua", "flow", "settings", "observer", "domain",
        "_callee_targets", "caller", "callee", "phase", "_timer", "caller_offer", "_callee_offer",
        "_relayed", "_long_timers", "created_at", "caller_answered_at", "callee_answered_at",
        "connected_at", "ended_at", "end_reason", "sip_status", "who_hung_up", "tracer", "relay",
        "_bridge",
    )

    def __init__(
        self,
        *,
        call_id: str,
        caller: User,
        callee: User,
        domain: str,
        clock: IReactorTime,
        user_agent: UserAgent,
        flow: IMediaFlow,
        settings: CallSettings,
        observer: CallObserver,
        callee_targets: Callable[[], Deferred[list[Target]]],
        created_at: float,
        media: RingbackPlayer | None = None,
        long_timers: Callable[[float], LingerQueue] | None = None,
        tracer: CallTracer | None = None,
        relay: CallRelay | None = None,
    ) -> None:
        self.call_id = call_id
        #: Keeps the SIP messages of the call's legs (docs/calls.md, "Call traces"), or None.
        self.tracer = tracer
        #: The media relay between the phones ([media] relay), or None.
        self.relay = relay
        #: What the media flow drives: this call, or the relay in front of it.
        self._bridge: IBridge = self if relay is None else RelayBridge(self, relay)
        #: Our own RTP to the caller (docs/media.md): ringback while the callee rings.
        self.media = media
        self._ringback: RtpStream | None = None
        self.clock = clock
        self.ua = user_agent
        self.flow = flow
        self.settings = settings
        self.observer = observer
        self.domain = domain
        self._callee_targets = callee_targets
        self.caller = Leg(self, "caller", caller)
        self.callee = Leg(self, "callee", callee)
        self.phase = Phase.CALLING_CALLER
        self._timer: IDelayedCall | Lingering | None = None
        #: Where the maximum duration timer of a connected call goes: one reactor timer
        #: for all calls (a DelayedCall each is ~0.5 KB a held call; see LingerQueue).
        self._long_timers = long_timers
        self.caller_offer = b""
        self._callee_offer: bytes | None = None
        self._relayed: list[IncomingRequest] = []
        self.created_at = created_at
        self.caller_answered_at: float | None = None
        self.callee_answered_at: float | None = None
        self.connected_at: float | None = None
        self.ended_at: float | None = None
        self.end_reason: str | None = None
        self.sip_status: int | None = None
        self.who_hung_up: str | None = None

    def __repr__(self) -> str:
        return f"<Call {self.call_id} {self.phase.value}>"

    # -- the state machine ---------------------------------------------------

    @property
    def over(self) -> bool:
        """Whether the call has ended or failed."""
        return self.phase in _TERMINAL

    @property
    def public_state(self) -> str:
        """The state shown outside (L{clicktodial.calls.events.PUBLIC_STATES})."""
        if self.phase is Phase.BRIDGING:
            return Phase.CALLING_CALLEE.value
        return self.phase.value

    def _move(self, event: Input) -> bool:
        """Take the transition for ``event``; False (nothing done) if it has none."""
        target = TRANSITIONS.get((self.phase, event))
        if target is None:
            log.debug(
                "call {record}: {event} ignored in {phase}",
                record=self.call_id,
                event=event.value,
                phase=self.phase.value,
            )
            return False
        self._cancel_timer()
        log.info(
            "call {record}: {old} --{event}--> {new}",
            record=self.call_id,
            old=self.phase.value,
            event=event.value,
            new=target.value,
        )
        self.phase = target
        if target is Phase.BRIDGING:
            self._stop_ringback()
        delay = getattr(self.settings, PHASE_TIMERS.get(target, ""), 0.0)
        if delay:
            if target is Phase.CONNECTED and self._long_timers is not None:
                self._timer = self._long_timers(delay).call_later(self._timer_fired)
            else:
                self._timer = self.clock.callLater(delay, self._timer_fired)
        return True

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timer_fired(self) -> None:
        self._timer = None
        phase = self.phase
        if phase is Phase.CALLING_CALLER:
            self._end(Input.TIMER, "caller-no-answer", 408, "system")
        elif phase is Phase.CALLING_CALLEE:
            self._end(Input.TIMER, "callee-no-answer", 408, "system", tell_caller=True)
        elif phase is Phase.BRIDGING:
            self._end(Input.TIMER, "timeout", 408, "system")
        elif phase is Phase.CONNECTED:
            self._end(Input.TIMER, "max-duration", None, "system")

    def _end(
        self,
        event: Input,
        reason: str,
        status: int | None,
        who: str | None,
        tell_caller: bool = False,
    ) -> None:
        """Move to a terminal phase for ``event``; hang up both legs; record why."""
        ringing_back = self.phase is Phase.CALLING_CALLEE and self._ringback is not None
        if not self._move(event):
            return
        self.ended_at = self.clock.seconds()
        self.end_reason, self.sip_status, self.who_hung_up = reason, status, who
        for request in self._relayed:
            # A re-INVITE we were relaying: its dialog is going away.
            self._respond(request, 487)
        self._relayed.clear()
        self.callee.hang_up()
        # RFC 3326: the caller learns why the callee could not be reached.
        headers = [reason_header(status)] if tell_caller and status else []
        stream = self._ringback
        if ringing_back and tell_caller and self.media is not None and stream is not None:
            # The caller hears a busy or failure tone, then gets the BYE.
            self.media.fail(stream, status, lambda: self.caller.hang_up(headers))
        else:
            self._stop_ringback()
            self.caller.hang_up(headers)
        if self.relay is not None:
            self.relay.end()
        self.observer.call_changed(
            self,
            CallUpdate(
                state=self.phase.value,
                ended_at=self.ended_at,
                end_reason=reason,
                sip_status=status,
                who_hung_up=who,
            ),
        )

    # -- starting and stopping -----------------------------------------------

    def start(self, caller_targets: Sequence[Target]) -> None:
        """Ring the caller's phones (without SDP), or fail at once if it has none."""
        self._move_in()
        if not caller_targets:
            self._end(Input.CALLER_FAILED, "caller-unreachable", 480, "system")
            return
        self.caller.ring(
            self.ua,
            caller_targets,
            from_=self._party(self.callee.user),
            to=self._party(self.caller.user),
            offer=None,
        )
        if not self.caller.forks:
            self._leg_failed(self.caller)

    def _move_in(self) -> None:
        # The initial phase's timer (there is no transition into it).
        delay = self.settings.ring_timeout
        if delay:
            self._timer = self.clock.callLater(delay, self._timer_fired)
        self.observer.call_changed(self, CallUpdate(state=self.phase.value))

    def fail_before_start(self, role: str) -> None:
        """The call cannot start: ``role``'s user has no binding."""
        self._end(Input.CALLER_FAILED, f"{role}-unreachable", 480, "system")

    def hang_up(self, by_username: str | None) -> bool:
        """Hang up at any stage (L{ICallController.hang_up}); False if already over."""
        if self.over:
            return False
        if by_username == self.caller.user.username:
            who = "caller"
        elif by_username == self.callee.user.username:
            who = "callee"
        else:
            who = "system"
        if self.phase is Phase.CONNECTED and who != "system":
            reason = f"{who}-hangup"
        else:
            reason = "cancelled"
        self._end(Input.HANG_UP, reason, None, who)
        return True

    def _party(self, user: User) -> NameAddr:
        """A user as From/To shows them: display name, AOR."""
        return NameAddr(URI("sip", user.username, self.domain), user.display_name or None)

    # -- UA core events --------------------------------------------------------

    def _answered(self, leg: Leg, fork: OutgoingCall, session: Session, response: Response) -> None:
        target = leg.forks.pop(fork, None)
        expected = Phase.CALLING_CALLER if leg is self.caller else Phase.CALLING_CALLEE
        # The 2xx waits for our ACK when it carried the offer (our INVITE had none).
        offer = _sdp_of(response) if fork.offer is None else None
        if self.phase is not expected or leg.session is not None:
            # Another of its phones answered first, or too late: ACK (with a
            # hold answer if it offered) and BYE.
            stray = Leg(self, leg.role, leg.user)
            stray.session, stray.pending_offer = session, offer
            stray.hang_up()
            return
        leg.session = session
        leg.pending_offer = offer
        leg.target = target
        # The first phone to answer wins; the others are cancelled (RFC 3261 §16.7 style).
        leg.cancel_forks()
        sdp = _sdp_of(response)
        now = self.clock.seconds()
        if leg is self.caller:
            if sdp is None:
                log.warn("caller's 2xx has no offer", call_id=response.call_id)
                self._end(Input.CALLER_FAILED, "error", 488, "system")
                return
            self.caller_offer = sdp
            self.caller_answered_at = now
            self._move(Input.CALLER_ANSWERED)
            self.observer.call_changed(
                self, CallUpdate(state=self.public_state, caller_answered_at=now)
            )
            self.flow.caller_answered(self._bridge, sdp)
        else:
            self.callee_answered_at = now
            self._move(Input.CALLEE_ANSWERED)
            self.observer.call_changed(self, CallUpdate(callee_answered_at=now))
            self.flow.callee_answered(self._bridge, sdp)

    def _fork_failed(self, leg: Leg, fork: OutgoingCall, response: Response) -> None:
        if leg.forks.pop(fork, None) is None and not leg.starting:
            return  # cancelled by us (another phone answered, or the call is over)
        leg.failures.append(response.status)
        if leg.starting or leg.forks or leg.session is not None:
            return
        self._leg_failed(leg)

    def _leg_failed(self, leg: Leg) -> None:
        """Every INVITE of ``leg`` failed: the best status speaks for the leg."""
        status = min(leg.failures or [503], key=_status_rank)
        reason, who = _outcome(leg.role, status)
        if leg is self.caller:
            self._end(Input.CALLER_FAILED, reason, status, who)
        else:
            self._end(Input.CALLEE_FAILED, reason, status, who, tell_caller=True)

    def _session_ended(self, leg: Leg, reason: str) -> None:
        if leg is self.caller:
            self._stop_ringback()  # also a failure tone the caller hung up on
        if self.over or reason == "local-bye":
            return
        event = Input.CALLER_GONE if leg is self.caller else Input.CALLEE_GONE
        if reason == "remote-bye":
            self._end(event, f"{leg.role}-hangup", None, leg.role)
        else:
            # "timeout", "no-ack", "remote-481": the phone stopped answering
            # in-dialog requests (RFC 3261 §12.2.1.2).
            self._end(event, "timeout", 481 if reason == "remote-481" else 408, "system")

    # -- re-INVITEs from the phones --------------------------------------------

    def _other(self, leg: Leg) -> Leg:
        return self.callee if leg is self.caller else self.caller

    def _in_dialog_request(self, leg: Leg, request: IncomingRequest) -> None:
        if request.method != "INVITE" or request.offer is None:
            # Session refreshes (re-INVITE without offer: our last SDP),
            # INFO, OPTIONS...: answered locally.
            if leg.session is not None:
                SessionHandlerBase.request_received(leg.handler, leg.session, request)
            return
        other = self._other(leg)
        session = other.session
        if self.phase is not Phase.CONNECTED or session is None or session.is_terminated:
            # RFC 3261 §14.2: an offer while ours is being worked out.
            self._respond(request, 491)
            return
        offer_lines = media_count(request.offer)
        relay = self.relay

        def answered(answer: bytes) -> None:
            self._respond(request, 200, leg.origin.outgoing(truncate_media(answer, offer_lines)))

        def relay_failed(failure: Failure) -> None:
            failure.trap(RelayFailed)
            self._respond(request, 500)

        def responded(response: Response) -> None:
            if response.status < 200:
                return
            if request in self._relayed:
                self._relayed.remove(request)
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
            offer = other.origin.outgoing(pad_media(offer_sdp, other.origin.media))
            try:
                session.reinvite(offer, SDP_CONTENT_TYPE, on_response=responded, retry_on_491=False)
            except (RequestPending, OfferAnswerError, DialogError):
                self._respond(request, 491)
                return
            self._relayed.append(request)

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
        if self.media is not None and self._ringback is None:
            # RTP only to the address the caller's phone signals from; behind a trusted
            # proxy that is the proxy's, so the offer is taken as it is (docs/security.md).
            started = self.media.answer(offer, self.call_id, self.caller.source)
            if started is not None:
                answer, self._ringback = started
                return answer
        return held_answer(offer)

    def _stop_ringback(self) -> None:
        stream, self._ringback = self._ringback, None
        if stream is not None and self.media is not None:
            self.media.stop(stream)

    def invite_callee(self, offer: bytes | None) -> None:
        """Look the callee's bindings up again and ring them all."""
        self._callee_offer = offer
        self._callee_targets().addCallbacks(self._ring_callee, self._lookup_failed)

    def _ring_callee(self, targets: list[Target]) -> None:
        if self.phase is not Phase.CALLING_CALLEE:
            return
        if targets:
            self.callee.ring(
                self.ua,
                targets,
                from_=self._party(self.caller.user),
                to=self._party(self.callee.user),
                offer=self._callee_offer,
            )
        if not targets:
            self._end(Input.CALLEE_FAILED, "callee-unreachable", 480, "system", tell_caller=True)
            return
        if not self.callee.forks:
            self._leg_failed(self.callee)
            return
        self.observer.call_changed(self, CallUpdate(callee_rung_at=self.clock.seconds()))

    def _lookup_failed(self, failure: Failure) -> None:
        log.failure("callee binding lookup failed", failure, record=self.call_id)
        if self.phase is Phase.CALLING_CALLEE:
            self._end(Input.CALLEE_FAILED, "error", 500, "system", tell_caller=True)

    def ack_callee(self, answer: bytes | None) -> None:
        """ACK the callee's 2xx (with ``answer`` if it carried an offer)."""
        offer = self.callee.pending_offer
        if answer is not None and offer is not None:
            answer = truncate_media(answer, media_count(offer))
        self.callee.ack(answer)

    def reinvite_caller(self, offer: bytes, answered: Callable[[bytes], None]) -> None:
        """RFC 3725 Flow IV step 6: the callee's offer to the caller."""
        session = self.caller.session
        if session is None or session.is_terminated:
            self.bridge_failed(481)
            return
        body = self.caller.origin.outgoing(pad_media(offer, self.caller.origin.media))

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
        if self._move(Input.BRIDGED):
            self.connected_at = self.clock.seconds()
            self.observer.call_changed(
                self, CallUpdate(state=self.public_state, connected_at=self.connected_at))

    def media_relay_failed(self) -> None:
        """
        The media relay failed ([media:rtpengine] on_failure = fail): the call
        fails with C{media-relay-failed}.
        """
        event = Input.CALLEE_FAILED if self.phase is Phase.CALLING_CALLEE else Input.BRIDGE_FAILED
        self._end(event, "media-relay-failed", 500, "system", tell_caller=True)

    def bridge_failed(self, status: int) -> None:
        """The offer/answer exchange failed: end the call."""
        log.warn(
            "call {record}: offer/answer between the phones failed ({status})",
            record=self.call_id,
            status=status,
        )
        reason = "timeout" if status in (408, 481) else "error"
        self._end(Input.BRIDGE_FAILED, reason, status, "system", tell_caller=True)

    # -- outside view ----------------------------------------------------------

    def info(self) -> CallInfo:
        """The call as listeners see it."""
        return CallInfo(
            call_id=self.call_id,
            caller=self.caller.user.username,
            callee=self.callee.user.username,
            state=self.public_state,
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
