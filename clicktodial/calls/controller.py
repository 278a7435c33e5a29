"""
The call controller: takes "caller X calls callee Y", checks the policy,
finds both users' bindings, records the call and runs it (:class:`Call`); keeps
the call records up to date and publishes call state changes.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from clicktodial.calls.call import (
    PUBLIC_STATE,
    BindingsRoute,
    Call,
    CallSettings,
    CallShared,
    Input,
    Phase,
    Target,
    target_for_binding,
)
from clicktodial.calls.directory import CachedDirectory, UserLookup
from clicktodial.calls.events import CallEvents, CallInfo
from clicktodial.calls.outbound import TrunkHunt
from clicktodial.calls.policy import CallRefused, CallRequest, create_policy
from clicktodial.calls.relay import LostCalls, RelaySettings
from clicktodial.calls.trace import CallTracer
from clicktodial.config import CallsConfig, Config
from clicktodial.dialplan.plan import DialDecision
from clicktodial.interfaces import (
    ICallController,
    ICallEventListener,
    ICallPolicy,
    ICallRecordStore,
    ICallRecordWrites,
    IKnownLookups,
    ILocationStore,
    IOutboundCalls,
    IStoreBackend,
    ITrunkRegistry,
)
from clicktodial.log import LOG_LEVELS
from clicktodial.media.ringback import RingbackPlayer
from clicktodial.netaddr import NetworkSet
from clicktodial.reload import ICallsReload
from clicktodial.sip.headers import NameAddr
from clicktodial.sip.ua import UserAgent
from clicktodial.sip.wirecache import BoundedCache
from clicktodial.store.values import Binding, CallChanges, CallUpdate, User, user_aor
from clicktodial.timers import LingerQueue

__all__ = [
    "CallController",
    "CallService",
    "build_call_service",
    "settings_from_config",
    "trusted_paths",
]

log = Logger(namespace="clicktodial.calls.controller")


#: The states at which a call's record is written (besides its creation): the steps in
#: between are merged into these writes.
_WRITE_AT = frozenset({"connected", "ended", "failed"})


def settings_from_config(config: CallsConfig, transaction_timeout: float = 32.0) -> CallSettings:
    """The timers of calls, from ``[calls]`` (and 64*T1 for the bridging guard)."""
    return CallSettings(
        ring_timeout=config.ring_timeout,
        callee_ring_timeout=config.callee_ring_timeout,
        bridge_timeout=transaction_timeout,
        max_duration=config.max_duration,
        max_forks=config.max_forks,
    )


def trusted_paths(config: Config) -> NetworkSet:
    """The sources whose stored Path is a route: ``[registrar] trusted_proxies`` if ``path =
    trusted``, else none."""
    registrar = config.registrar
    return registrar.trusted_proxies if registrar.path == "trusted" else NetworkSet()


def _targets(bindings: list[Binding], max_forks: int, trusted: NetworkSet) -> list[Target]:
    """
    The targets of ``bindings``: at most ``max_forks``, highest q first, then the most
    recently registered (latest expiry); unusable stored contacts are skipped.
    """
    targets: list[Target] = []
    ordered = (
        sorted(bindings, key=lambda b: (-(b.q if b.q is not None else 1.0), -b.expires_at))
        if len(bindings) > 1
        else bindings
    )
    for binding in ordered:
        if len(targets) == max_forks:
            # One click must not fan out into as many INVITEs as a user has bindings.
            log.info(
                "{aor}: {count} binding(s), only {max_forks} rung ([calls] max_forks)",
                aor=binding.aor,
                count=len(bindings),
                max_forks=max_forks,
            )
            break
        try:
            targets.append(target_for_binding(binding, trusted))
        except ValueError as e:
            log.warn(
                "unusable binding {contact} of {aor}: {error}",
                contact=binding.contact,
                aor=binding.aor,
                error=str(e),
            )
    return targets


def _usable(user: User | None, username: str) -> User:
    """``user`` if a call may involve them.

    :raises CallRefused: no such user, or a disabled one.
    """
    if user is None:
        raise CallRefused("unknown-user", f"no user {username!r}")
    if user.disabled:
        raise CallRefused("disabled-user", f"user {username!r} is disabled")
    return user


class _Placing:
    """A call being placed, between its authorization and its record (one per call: the
    state the record's callbacks carry, where a coroutine's frame did)."""

    __slots__ = (
        "caller",
        "callee",
        "now",
        "decision",
        "hunt",
        "caller_bindings",
        "callee_bindings",
    )

    def __init__(
        self,
        caller: User,
        callee: User,
        now: float,
        decision: DialDecision | None,
        hunt: TrunkHunt | None,
    ) -> None:
        self.caller = caller
        self.callee = callee
        self.now = now
        #: The dial plan's decision when the callee is a number, else None.
        self.decision = decision
        self.hunt = hunt
        self.caller_bindings: list[Binding] = []
        #: (empty for a number: its leg goes through the trunks of ``hunt``)
        self.callee_bindings: list[Binding] = []


@implementer(ICallController, IOutboundCalls, ICallsReload)
class CallController:
    """
    :class:`ICallController` on a :class:`UserAgent`: every call is a :class:`Call` whose legs
    are UAC sessions of that user agent.

    :ivar events: the :class:`CallEvents` listeners subscribe to.
    """

    def __init__(
        self,
        clock: IReactorTime,
        user_agent: UserAgent,
        *,
        users: UserLookup,
        locations: ILocationStore,
        records: ICallRecordStore,
        policy: ICallPolicy,
        settings: CallSettings,
        domain: str,
        node: str | None = None,
        media: RingbackPlayer | None = None,
        trusted_paths: NetworkSet | None = None,
        tracer: CallTracer | None = None,
        relay: RelaySettings | None = None,
        trunks: ITrunkRegistry | None = None,
    ) -> None:
        self.clock = clock
        #: The SIP trunks calls to numbers go out through ([trunk:NAME]), or None.
        self.trunks = trunks
        #: Keeps the SIP messages of calls (docs/calls.md, "Call traces"), or None (off).
        self.tracer = tracer
        #: The media relay between the phones ([media] relay), or None.
        self.relay = relay
        #: Sources whose stored Path routes our requests (:func:`target_for_binding`).
        self.trusted_paths = trusted_paths if trusted_paths is not None else NetworkSet()
        #: Ringback and failure tones to callers ([calls] ringback), or None.
        self.media = media
        self.user_agent = user_agent
        self.users = users
        self.locations = locations
        #: What the users and locations answer from memory at once (CachedDirectory), if
        #: they can: placing a call then makes no Deferred for its look-ups.
        self._known_users = IKnownLookups(users, None)
        self._known_locations = IKnownLookups(locations, None)
        self.records = records
        #: The records' writes without reading back (ICallRecordWrites), if they have them.
        self._record_writes = ICallRecordWrites(records, None)
        self.policy = policy
        self.settings = settings
        self.domain = domain
        self.node = node
        self.events = CallEvents()
        self._calls: dict[str, Call] = {}
        #: Calls authorized but not yet started, per username (policy limits).
        self._reserved: dict[str, int] = {}
        #: Calls in self._calls per username (caller or callee).
        self._running: dict[str, int] = {}
        #: Calls whose record is being written, and the fields to write next.
        self._writing: set[str] = set()
        self._queued: dict[str, CallChanges] = {}
        #: The fields changed since the last write, per call (written at the next _WRITE_AT).
        self._unwritten: dict[str, CallChanges] = {}
        self._reserved_total = 0
        #: Same-length timers of all calls (phase timers), one queue per length.
        self._timer_queues: dict[float, LingerQueue] = {}
        #: ... bound once: every call keeps it (a bound method made per call is 64 bytes).
        self._long_timers_of_calls = self._long_timers
        self._lookup_of_calls = self._lookup
        #: The route to a user's phones, one per callee for all their calls (the same
        #: immutable value: 48 bytes a held call each; a BoundedCache named for this controller).
        self._routes: BoundedCache[str, BindingsRoute] = BoundedCache(
            f"callee routes of controller {id(self):x}"
        )
        #: The From/To of the users of calls (:meth:`Call._party`), shared by their calls.
        self._parties: BoundedCache[tuple[str, str, str], NameAddr] = BoundedCache(
            f"call parties of controller {id(self):x}"
        )
        #: What the calls share (:func:`_shared`), one object for all of them.
        self._shared_by_calls: CallShared | None = None
        #: Inputs a call got in a phase where they have no transition, since start, by
        #: "phase/input" (/metrics: clicktodial_call_unexpected_inputs).
        self.unexpected_inputs: dict[str, int] = {}

    def _shared(self) -> CallShared:
        """What the calls placed now share; made again when any of it changed (reload)."""
        shared = self._shared_by_calls
        if (
            shared is None
            or shared.settings is not self.settings
            or shared.media is not self.media
            or shared.tracer is not self.tracer
            or shared.domain != self.domain
        ):
            shared = self._shared_by_calls = CallShared(
                clock=self.clock,
                user_agent=self.user_agent,
                settings=self.settings,
                observer=self,
                domain=self.domain,
                media=self.media,
                tracer=self.tracer,
                long_timers=self._long_timers_of_calls,
                parties=self._parties,
            )
        return shared

    def _bindings_route(self, username: str) -> BindingsRoute:
        """The route to ``username``'s registered phones (shared by their calls)."""
        route = self._routes.entries.get(username)
        if route is None:
            route = self._routes.remember(username, BindingsRoute(self._lookup_of_calls, username))
        return route

    def _long_timers(self, delay: float) -> LingerQueue:
        """The queue for ``delay``-second timers: one reactor timer for all calls."""
        queue = self._timer_queues.get(delay)
        if queue is None:
            # On the SIP stack's reactor timer (in queues of their own): the timers of
            # the calls' transactions keep it set, so a phase timer cancelled last does
            # not leave a cancelled DelayedCall on the reactor's heap for its length.
            timers = self.user_agent.transactions.linger_timers.sibling()
            queue = self._timer_queues[delay] = timers.queue(delay)
        return queue

    # -- ICallController -------------------------------------------------------

    def place_call(self, caller_username: str, callee_username: str) -> Deferred[CallInfo]:
        """See :meth:`ICallController.place_call`."""
        # Plain callbacks while both users are in memory (IKnownLookups: the usual case):
        # no coroutine per call. A user the store must be asked for goes through _place.
        try:
            caller = self._known_user(caller_username)
            callee = self._known_user(callee_username) if caller is not None else None
        except CallRefused:
            return fail()
        if caller is None or callee is None:
            return Deferred.fromCoroutine(self._place(caller_username, callee_username))
        return self._run(caller, callee)

    async def _place(self, caller_name: str, callee_name: str) -> CallInfo:
        caller = await self._user(caller_name)
        callee = await self._user(callee_name)
        return await self._run(caller, callee)

    def _run(
        self,
        caller: User,
        callee: User,
        decision: DialDecision | None = None,
        hunt: TrunkHunt | None = None,
    ) -> Deferred[CallInfo]:
        """
        Authorize, record and start a call to ``callee`` (a number when ``decision``).
        Fails with :class:`CallRefused` (the policy), or the store's error (the record).
        Plain callbacks on the record's Deferred when both users' bindings are in memory;
        a look-up to wait for, or a number's record, goes through :meth:`_record`.
        """
        caller_name, callee_name = caller.username, callee.username
        request = CallRequest(
            caller=caller,
            callee=callee,
            caller_calls=self._count(caller_name),
            callee_calls=self._count(callee_name),
            total_calls=len(self._calls) + self._reserved_total,
        )
        try:
            self.policy.authorize(request)
        except Exception:
            return fail()
        # Count the call from now on: the lookups and the record let other requests in.
        for name in (caller_name, callee_name):
            self._reserved[name] = self._reserved.get(name, 0) + 1
        self._reserved_total += 1
        placing = _Placing(caller, callee, self.clock.seconds(), decision, hunt)
        try:
            # isinstance of list, not of Deferred (an ABC: a Python-level check).
            found = self._bindings(caller_name, placing.now)
            if decision is None and isinstance(found, list):
                placing.caller_bindings = found
                callee_found = self._bindings(callee_name, placing.now)
                if isinstance(callee_found, list):
                    placing.callee_bindings = callee_found
                    recorded = self.records.create_call(
                        caller_name, callee_name, placing.now, self.node
                    )
                else:
                    recorded = Deferred.fromCoroutine(self._record(placing, found, callee_found))
            else:
                recorded = Deferred.fromCoroutine(self._record(placing, found, None))
        except BaseException:
            self._unreserve(placing)
            return fail()
        return recorded.addCallbacks(
            self._start,
            self._not_recorded,
            callbackArgs=(placing,),
            errbackArgs=(placing,),
        )

    async def _record(
        self,
        placing: _Placing,
        caller_found: list[Binding] | Deferred[list[Binding]],
        callee_found: list[Binding] | Deferred[list[Binding]] | None,
    ) -> str:
        """The record of a call that waits for a look-up of bindings (``callee_found`` None:
        not started yet), or of a call to a number; fires with its id."""
        caller_name, callee_name = placing.caller.username, placing.callee.username
        now, decision = placing.now, placing.decision
        placing.caller_bindings = (
            caller_found if isinstance(caller_found, list) else await caller_found
        )
        if decision is None:
            if callee_found is None:
                callee_found = self._bindings(callee_name, now)
            placing.callee_bindings = (
                callee_found if isinstance(callee_found, list) else await callee_found
            )
        call_id = await self.records.create_call(caller_name, callee_name, now, self.node)
        if decision is not None:
            # A call to a number shows its number and class from the start (history,
            # the call page), not only once connected.
            await self.records.update_call(
                call_id,
                CallUpdate(number=callee_name, destination_class=decision.destination_class),
            )
        return call_id

    def _unreserve(self, placing: _Placing) -> None:
        self._reserved_total -= 1
        for name in (placing.caller.username, placing.callee.username):
            self._reserved[name] -= 1
            if not self._reserved[name]:
                del self._reserved[name]

    def _not_recorded(self, failure: Failure, placing: _Placing) -> Failure:
        self._unreserve(placing)
        return failure

    def _start(self, call_id: str, placing: _Placing) -> CallInfo:
        """The call is recorded as ``call_id``: run it."""
        self._unreserve(placing)
        caller, callee, hunt = placing.caller, placing.callee, placing.hunt
        caller_name, callee_name = caller.username, callee.username
        if hunt is not None:
            hunt.call_id = call_id
        call = Call(
            call_id=call_id,
            caller=caller,
            callee=callee,
            shared=self._shared(),
            flow=self.policy.flow,
            route=hunt if hunt is not None else self._bindings_route(callee_name),
            created_at=placing.now,
            relay=self.relay.for_call(call_id) if self.relay is not None else None,
        )
        self._calls[call_id] = call
        for name in {caller_name, callee_name}:
            self._running[name] = self._running.get(name, 0) + 1
        caller_bindings = placing.caller_bindings
        if LOG_LEVELS.info:
            log.info(
                "call {record}: {caller} calls {callee} ({count} caller binding(s))",
                record=call_id,
                caller=caller_name,
                callee=callee_name,
                count=len(caller_bindings),
            )
        if placing.decision is None and not placing.callee_bindings:
            # Do not ring the caller for a callee who cannot be reached.
            call.fail_before_start("callee")
        else:
            call.start(self._targets(caller_bindings))
        return call.info()

    # -- IOutboundCalls --------------------------------------------------------

    def place_outbound(
        self,
        caller_username: str,
        decision: DialDecision,
        refund_untried: Callable[[], object] | None = None,
    ) -> Deferred[CallInfo]:
        """See :meth:`IOutboundCalls.place_outbound`."""
        return Deferred.fromCoroutine(
            self._place_outbound(caller_username, decision, refund_untried)
        )

    async def _place_outbound(
        self,
        caller_name: str,
        decision: DialDecision,
        refund_untried: Callable[[], object] | None,
    ) -> CallInfo:
        caller = await self._user(caller_name)
        number = str(decision.number)
        registry = self.trunks
        trunks = [
            trunk
            for trunk in (
                registry.get(name) if registry is not None else None for name in decision.trunks
            )
            if trunk is not None
        ]
        # A place on a trunk is taken before the caller's phone rings (docs/trunks.md).
        hunt = TrunkHunt(trunks, number, caller_name, refund_untried=refund_untried)
        if hunt.reserve():
            # The callee leg is the number through the trunks, in fail-over order (the
            # call's table: docs/calls.md, "Calls through a trunk").
            try:
                return await self._run(caller, User(username=number), decision, hunt)
            except BaseException:
                hunt.release()
                raise
        hunt.release()
        # None of the routed trunks exists or has room: the call fails before any SIP
        # leaves, recorded with its number and class.
        now = self.clock.seconds()
        call_id = await self.records.create_call(caller_name, number, now, self.node)
        await self.records.update_call(
            call_id,
            CallUpdate(
                state="failed",
                ended_at=now,
                end_reason="no-trunk",
                who_hung_up="system",
                number=number,
                destination_class=decision.destination_class,
            ),
        )
        log.warn(
            "call {record}: {caller} calls {number}: no trunk configured or with room ({trunks})",
            record=call_id,
            caller=caller_name,
            number=number,
            trunks=", ".join(decision.trunks),
        )
        return CallInfo(
            call_id=call_id,
            caller=caller_name,
            callee=number,
            state="failed",
            created_at=now,
            ended_at=now,
            end_reason="no-trunk",
            who_hung_up="system",
        )

    async def _user(self, username: str) -> User:
        user = self._known_user(username)
        if user is None:
            user = _usable(await self.users.get_user(username), username)
        return user

    def _known_user(self, username: str) -> User | None:
        """``username`` from memory (IKnownLookups), else None (ask the store).

        :raises CallRefused: a disabled user.
        """
        known = self._known_users
        user = known.known_user(username) if known is not None else None
        return _usable(user, username) if user is not None else None

    def _bindings(self, username: str, now: float) -> list[Binding] | Deferred[list[Binding]]:
        """``username``'s bindings: at once from memory when kept, else the locations'
        Deferred."""
        aor = user_aor(username, self.domain)
        known = self._known_locations
        bindings = known.known_bindings(aor, now) if known is not None else None
        return bindings if bindings is not None else self.locations.get_bindings(aor, now)

    def _count(self, username: str) -> int:
        return self._running.get(username, 0) + self._reserved.get(username, 0)

    def _lookup(self, username: str) -> Deferred[list[Target]]:
        found = self._bindings(username, self.clock.seconds())
        if isinstance(found, list):
            return succeed(self._targets(found))
        return found.addCallback(self._targets)

    def _targets(self, bindings: list[Binding]) -> list[Target]:
        return _targets(bindings, self.settings.max_forks, self.trusted_paths)

    def hang_up(self, call_id: str, by_username: str | None = None) -> bool:
        """See :meth:`ICallController.hang_up`."""
        call = self._calls.get(call_id)
        if call is None:
            return False
        return call.hang_up(by_username)

    def hang_up_all(self) -> int:
        """Hang up every call (shutdown); returns how many there were."""
        calls = list(self._calls.values())
        for call in calls:
            call.hang_up(None)
        if self.media is not None:
            # Failed calls still playing a failure tone: their BYE goes now.
            self.media.stop_all()
        return len(calls)

    def get_call(self, call_id: str) -> CallInfo | None:
        """See :meth:`ICallController.get_call`."""
        call = self._calls.get(call_id)
        return call.info() if call is not None else None

    def active_calls(self) -> list[CallInfo]:
        """See :meth:`ICallController.active_calls`."""
        return [call.info() for call in self._calls.values()]

    def subscribe(self, listener: ICallEventListener) -> Callable[[], None]:
        """See :meth:`ICallController.subscribe`."""
        return self.events.subscribe(listener)

    #: The ``[calls]`` keys :func:`reload` applies (the rest need a restart).
    RELOADED_SETTINGS = frozenset(
        ["policy", "who_may_call", "max_calls_per_user", "max_calls_total",
         "ring_timeout", "callee_ring_timeout", "max_duration", "max_forks"]
    )  # fmt: skip

    def reload(self, config: Config) -> None:
        """
        SIGHUP: calls placed from now on follow ``config``'s ``[calls]`` policy
        (who may call, the limits, the media flow) and timers.  Calls in
        progress keep the flow and timers they started with (each :class:`Call`
        holds its own) and still count towards the new limits.  When the new
        policy cannot be built, the error propagates and nothing changes.
        """
        policy = create_policy(config.calls, config.plugins.options("policy", config.calls.policy))
        self.settings = settings_from_config(config.calls, self.settings.bridge_timeout)
        self.policy = policy
        log.info("[calls] policy {name} in force for new calls", name=config.calls.policy)

    # -- CallObserver ----------------------------------------------------------

    def call_input_unexpected(self, call: Call, phase: Phase, event: Input) -> None:
        """Count an input without transition (the call logs it)."""
        key = f"{phase.value}/{event.value}"
        self.unexpected_inputs[key] = self.unexpected_inputs.get(key, 0) + 1

    def call_changed(self, call: Call, changes: CallChanges) -> None:
        """Record ``changes`` (written at connect and at the end) and publish a new state."""
        call_id = call.call_id
        # Merged as dicts of the fields set (the call's own, made for this report); one
        # CallUpdate per write (a CallUpdate and its validators per step cost more than
        # the step's bookkeeping).
        written = changes.get("state") in _WRITE_AT
        unwritten = self._unwritten.pop(call_id, None)
        if unwritten is not None:
            unwritten.update(changes)
            changes = unwritten
        if written:
            self._write(call_id, changes)
        else:
            # The steps before (ringing, answered) wait for the next write: the live
            # state is the controller's, the record is the history (docs/calls.md).
            self._unwritten[call_id] = changes
        phase = call.phase
        state = PUBLIC_STATE[phase]
        if call.published != state:
            call.published = state
            events = self.events
            if state in events.wanted:  # events.wants(state), without a call
                events.publish(call.info())
        if phase is Phase.ENDED or phase is Phase.FAILED:
            if self._calls.pop(call_id, None) is not None:
                for name in {call.caller.user.username, call.callee.user.username}:
                    self._running[name] -= 1
                    if not self._running[name]:
                        del self._running[name]
            if self.tracer is not None:
                self.tracer.call_over(call_id)
            if LOG_LEVELS.info:
                log.info(
                    "call {record} {state}: {reason} (status {status}, hung up by {who})",
                    record=call_id,
                    state=state,
                    reason=call.end_reason,
                    status=call.sip_status,
                    who=call.who_hung_up,
                )

    def _write(self, call_id: str, changes: CallChanges) -> None:
        # One write per call at a time, in order; updates arriving meanwhile are merged
        # into one (under load, fewer round trips to the database).
        if call_id in self._writing:
            queued = self._queued.get(call_id)
            if queued is not None:
                queued.update(changes)
            else:
                self._queued[call_id] = changes
            return
        self._writing.add(call_id)
        update = CallUpdate(**changes)
        writes = self._record_writes
        written = (
            writes.write_call(call_id, update)
            if writes is not None
            else self.records.update_call(call_id, update)
        )
        # Methods, not two closures and a callback more per write.
        written.addCallbacks(
            self._written, self._write_failed, callbackArgs=(call_id,), errbackArgs=(call_id,)
        )

    def _written(self, _: object, call_id: str) -> None:
        """A write of ``call_id``'s record is done: the next one, if changes are queued."""
        self._writing.discard(call_id)
        queued = self._queued.pop(call_id, None)
        if queued is not None:
            self._write(call_id, queued)

    def _write_failed(self, failure: Failure, call_id: str) -> None:
        log.failure("cannot update call record", failure, record=call_id)
        self._written(None, call_id)

    @property
    def pending_writes(self) -> int:
        """Calls with record writes not yet done (0 when idle)."""
        return len(self._writing)


class CallService(MultiService):
    """
    The controller's lifecycle in the daemon: at start, calls a stopped
    instance left "active" in the records are ended as ``lost`` (and their
    media relay sessions deleted: :class:`LostCalls`); at stop,
    every call in progress is hung up (BYE / CANCEL go out before the SIP
    transports close: this service stops before the SIP stack).

    :ivar controller: the :class:`CallController`.
    """

    def __init__(self, controller: CallController) -> None:
        super().__init__()
        self.controller = controller
        #: Ends the calls of a previous run as lost and deletes their media relay sessions.
        self.lost = LostCalls(controller.relay.relay if controller.relay is not None else None)

    def startService(self) -> None:
        # The children first: the media relay's ng port is open for the lost calls' deletes.
        super().startService()
        controller = self.controller

        def ended(count: int) -> None:
            if count:
                log.info("marked {count} call(s) of a previous run as lost", count=count)

        self.lost.end(controller.records, controller.node, controller.clock.seconds()).addCallbacks(
            ended, lambda f: log.failure("cannot end stale calls", f)
        )

    def stopService(self) -> Deferred[None]:
        count = self.controller.hang_up_all()
        if count:
            log.info("hung up {count} call(s) at shutdown", count=count)
        return super().stopService()


def build_call_service(
    config: Config,
    reactor: IReactorCore,
    user_agent: UserAgent,
    transaction_timeout: float,
    store: IStoreBackend,
    directory: CachedDirectory | None = None,
    tracer: CallTracer | None = None,
    *,
    policy: ICallPolicy | None = None,
    trunks: ITrunkRegistry | None = None,
) -> CallService:
    """
    The daemon's call controller for ``config`` on ``user_agent`` (the SIP
    stack's), with the store as call records and ``directory`` (the store's,
    cached: :class:`CachedDirectory`; made here if not given) as users and locations.
    The registrar must write bindings through the same ``directory``.
    ``tracer`` keeps the calls' SIP messages (the SIP transport's tap), or None.

    :param policy: the ``[calls] policy`` (:obj:`clicktodial.pluginconfig.build_policy`
        builds it with its ``[policy:NAME]`` options); built here when not given.
    :raises clicktodial.calls.policy.UnknownPolicy: ``[calls] policy`` names
        no policy (start-up checks it first).
    """
    # The node name in call records ([cluster]; None for a single daemon).
    from clicktodial.cluster.service import record_node

    clock = IReactorTime(reactor)
    relay, relay_service = build_media_relay(config, reactor)
    if directory is None:
        directory = CachedDirectory(clock, store, store, config.calls.lookup_cache_seconds)
    controller = CallController(
        clock,
        user_agent,
        users=directory,
        locations=directory,
        records=store,
        policy=policy
        if policy is not None
        else create_policy(config.calls, config.plugins.options("policy", config.calls.policy)),
        settings=settings_from_config(config.calls, transaction_timeout),
        domain=config.sip.domain,
        node=record_node(config),
        media=build_ringback(config, reactor),
        trusted_paths=trusted_paths(config),
        tracer=tracer,
        relay=relay,
        trunks=trunks,
    )
    service = CallService(controller)
    if relay_service is not None:
        # A child: stopped after the calls are hung up, so their deletes get their answers.
        relay_service.setServiceParent(service)
    return service


def build_ringback(config: Config, reactor: IReactorCore) -> RingbackPlayer | None:
    """The ringback player of ``[calls] ringback`` on ``[media]``'s ports, or None if off."""
    if config.calls.ringback == "none":
        return None
    from twisted.internet.interfaces import IReactorUDP

    from clicktodial.media.rtp import RtpPortAllocator

    low, high = config.media.rtp_ports
    return RingbackPlayer(
        IReactorTime(reactor),
        RtpPortAllocator(IReactorUDP(reactor), config.media.address, low, high),
        ringback=config.calls.ringback,
        tones=config.calls.tones,
        failure_tone_seconds=config.calls.failure_tone_seconds,
        direction=config.media.direction,
    )


def build_media_relay(
    config: Config, reactor: IReactorCore
) -> tuple[RelaySettings | None, Service | None]:
    """The media relay of ``[media] relay`` (rtpengine, ``[media:rtpengine]``) and its port."""
    if config.media.relay == "off":
        return None, None
    from twisted.internet.interfaces import IReactorUDP

    from clicktodial.media.rtpengine import NgClient, NgClientService, RtpEngineRelay

    settings = config.rtpengine
    client = NgClient(
        IReactorTime(reactor),
        [(server.host, server.port) for server in settings.ng],
        timeout=settings.timeout,
        retries=settings.retries,
    )
    relay = RelaySettings(
        RtpEngineRelay(client, settings.interfaces),
        auto=config.media.relay == "auto",
        on_failure=settings.on_failure,
    )
    return relay, NgClientService(IReactorUDP(reactor), client)
