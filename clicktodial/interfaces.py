"""
The plugin API: the interfaces a plugin provides or uses (docs/plugins.md).

- Stores: :class:`IUserStore`, :class:`ILocationStore`, :class:`ICallRecordStore`; backends
  :class:`ILocationBackend` (a location store with a lifecycle) and :class:`IStoreBackend`
  (all three), built by :class:`ILocationBackendFactory` / :class:`IStoreBackendFactory`.
- Optional capabilities a backend declares and the daemon adapts to with
  ``IFoo(store, None)``: :class:`IBindingChangeNotifier`, :class:`IUserChangeNotifier`,
  :class:`IStoreLoad`, :class:`IClusterStorage` (with :class:`INodeRegistry` and
  :class:`IEventBus`),
  :class:`IActiveCallClaims`, :class:`ICallTraceStore`, :class:`IVerifiedRegistration`.
- Call control: :class:`ICallPolicyFactory`, :class:`ICallPolicy`, :class:`IMediaFlow`,
  :class:`IBridge`; and the controller the web layer talks to, :class:`ICallController`,
  with :class:`ICallEventListener`.
- SIP trunks to a provider: :class:`ITrunk`, :class:`ITrunkRegistry` (built-in, not plugin API).

Every method that does I/O returns a :class:`Deferred`; its docstring says what the
Deferred fires with and which documented exceptions it fails with. Values
crossing these interfaces come from value modules: :obj:`clicktodial.store.values`,
:obj:`clicktodial.calls.values`, :obj:`clicktodial.store.environment`; configuration
sections (``CallsConfig``) from :obj:`clicktodial.config`.

Every store method may also fail with
:class:`clicktodial.store.errors.StoreUnavailable` when its storage cannot be
reached.

The SIP stack's internal seams are in :obj:`clicktodial.sip.interfaces` (re-exported
at the end of this module for older imports; not plugin API).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from clicktodial.calls.call import Target
    from clicktodial.calls.values import CallInfo, CallRequest
    from clicktodial.config import CallsConfig
    from clicktodial.dialplan.plan import DialDecision
    from clicktodial.sip.address import Destination
    from clicktodial.sip.uri import URI
    from clicktodial.store.environment import StoreEnvironment
    from clicktodial.store.values import (
        ApiToken,
        Binding,
        BindingChanges,
        CallRecord,
        CallTrace,
        CallUpdate,
        NewUser,
        SipCredentials,
        TraceAppend,
        TraceLimits,
        User,
        UserChanges,
        VerifiedUpdate,
    )
    from clicktodial.trunks.limits import CallTicket
    from clicktodial.trunks.values import CallerIdentity, TrunkStatus


class IUserStore(Interface):
    """
    User accounts: web login (Argon2id password hashes), SIP digest
    credentials (HA1s for the store's realm) and API tokens.

    Usernames match ``[a-z0-9._-]{1,64}``; methods that create users fail
    with :class:`InvalidUsername <clicktodial.store.errors.InvalidUsername>`
    otherwise. Password hashing and verification never run on the reactor
    thread.
    """

    realm = Attribute(
        "The SIP digest realm (the configured [sip] domain) the HA1s are computed for: str."
    )

    def add_user(
        username: str,
        *,
        password: str | None = None,
        sip_password: str | None = None,
        display_name: str = "",
        is_admin: bool = False,
    ) -> Deferred[User]:
        """
        Create a user. A user without ``password`` cannot log in to the web
        interface; one without ``sip_password`` cannot register a phone.

        :return: fires with the new :class:`User`; fails with ``InvalidUsername``
            or ``UserExists``.
        """

    def add_users(users: Sequence[NewUser]) -> Deferred[int]:
        """
        Create many users at once, atomically: either all are created or
        none is. Web passwords are hashed in parallel on the hashing pool.

        :return: fires with the number of users created; fails with
            ``InvalidUsername`` or ``UserExists`` (naming every username that
            already exists, or that appears twice in ``users``).
        """

    def get_user(username: str) -> Deferred[User | None]:
        """
        :return: fires with the :class:`User`, or :class:`None` if there is none.
        """

    def list_users() -> Deferred[list[User]]:
        """
        :return: fires with every user, ordered by username.
        """

    def update_user(username: str, changes: UserChanges) -> Deferred[User]:
        """
        Apply ``changes`` (new passwords are hashed as in ``add_user``).

        :return: fires with the updated :class:`User`; fails with ``NoSuchUser``.
        """

    def remove_user(username: str) -> Deferred[None]:
        """
        Delete a user and their API tokens (not their bindings or call
        records).

        :return: fires with :class:`None`; fails with ``NoSuchUser``.
        """

    def check_password(username: str, password: str) -> Deferred[User | None]:
        """
        Verify a web login. Takes about as long for an unknown user as for
        a known one, so timing does not reveal which usernames exist.

        :return: fires with the :class:`User` if the user exists, is not disabled,
            has a web password and ``password`` matches it; with :class:`None`
            otherwise.
        """

    def get_sip_credentials(username: str) -> Deferred[SipCredentials | None]:
        """
        The digest secrets the registrar checks a REGISTER's Authorization
        against (RFC 8760: MD5 and SHA-256 HA1s for ``realm``).

        :return: fires with :class:`SipCredentials`, or :class:`None` if the user does
            not exist, is disabled or has no SIP secret.
        """

    def create_token(username: str, label: str = "") -> Deferred[str]:
        """
        Create an API token for a user. Only its SHA-256 is stored: the
        plaintext is returned here and never again.

        :return: fires with the plaintext token; fails with ``NoSuchUser``.
        """

    def verify_token(token: str) -> Deferred[str | None]:
        """
        :return: fires with the username owning ``token``, or :class:`None` if the
            token is unknown or revoked or its user is disabled.
        """

    def list_tokens(username: str) -> Deferred[list[ApiToken]]:
        """
        :return: fires with the user's tokens (descriptions only), oldest
            first; an unknown user has none.
        """

    def revoke_token(token: str) -> Deferred[bool]:
        """
        Revoke a token, named by its plaintext or by its ``token_id``.

        :return: fires with :class:`True` if a token was revoked, :class:`False` if no
            token matched.
        """


class ILocationStore(Interface):
    """
    The location service of a registrar (RFC 3261 §10.3): for each
    address-of-record a set of bindings. Times are POSIX seconds passed in
    by the caller (``clock.seconds()``); a binding whose ``expires_at`` is at
    or before ``now`` no longer exists.

    Updates to one AOR are serialised, also between several daemons sharing
    one database.
    """

    def get_bindings(aor: str, now: float) -> Deferred[list[Binding]]:
        """
        :return: fires with the unexpired bindings of ``aor``, ordered by
            contact URI (empty if there are none).
        """

    def update_bindings(aor: str, changes: BindingChanges, now: float) -> Deferred[list[Binding]]:
        """
        Apply one REGISTER request (RFC 3261 §10.3 steps 6 and 7)
        atomically: add, refresh or (``expires`` 0) remove each contact, or
        remove all bindings for a wildcard request. A binding whose Call-ID
        equals the request's may only change if the request's CSeq is
        higher than the stored one. A request that adds a binding may not
        leave the AOR with more than ``changes.max_bindings``; the check is
        part of the atomic update, so it holds for concurrent requests
        (other Call-IDs, other daemons sharing the database).

        :return: fires with the AOR's unexpired bindings after the update
            (what the 200 OK lists, step 8); fails with
            ``OutOfOrderRegistration`` when the CSeq rule is broken, or
            ``TooManyBindings`` when the limit would be exceeded, in which
            case nothing was changed.
        """

    def remove_all(aor: str) -> Deferred[int]:
        """
        Remove every binding of ``aor`` unconditionally (administrative use;
        a wildcard REGISTER goes through ``update_bindings``).

        :return: fires with the number of bindings removed.
        """

    def purge_expired(now: float) -> Deferred[int]:
        """
        Delete the bindings that expired at or before ``now``.

        :return: fires with the number of bindings deleted.
        """

    def registered_aors(now: float) -> Deferred[list[str]]:
        """
        :return: fires with the AORs that have at least one unexpired
            binding, sorted.
        """

    def all_bindings(now: float) -> Deferred[list[Binding]]:
        """
        :return: fires with every unexpired binding, ordered by AOR, then
            contact.
        """


class ICallRecordStore(Interface):
    """
    Records of click-to-dial calls, for the call history and for counting
    calls in progress. A call is active until its ``ended_at`` is set.
    """

    def create_call(
        caller: str, callee: str, created_at: float, node: str | None = None
    ) -> Deferred[str]:
        """
        Record a new call in state ``new``.

        :return: fires with the new record's ``call_id``: a fresh UUID4 in
            hex.
        """

    def update_call(call_id: str, update: CallUpdate) -> Deferred[CallRecord]:
        """
        Set the fields ``update`` carries.

        :return: fires with the updated :class:`CallRecord`; fails with
            ``NoSuchCall``.
        """

    def get_call(call_id: str) -> Deferred[CallRecord | None]:
        """
        :return: fires with the :class:`CallRecord`, or :class:`None` if unknown.
        """

    def list_calls(
        user: str | None = None, limit: int = 50, offset: int = 0, before: float | None = None
    ) -> Deferred[list[CallRecord]]:
        """
        List calls newest first (by ``created_at``, then ``call_id``).

        :param user: only calls where this user is the caller or the callee;
            :class:`None` for all calls.
        :param before: only calls created strictly before this time (for
            paging by time); applied before ``offset``.
        :return: fires with at most ``limit`` records.
        """

    def count_active(node: str | None = None) -> Deferred[int]:
        """
        :param node: count only the calls run by this node.
        :return: fires with the number of calls without ``ended_at``.
        """

    def end_active_calls(node: str | None, ended_at: float, reason: str = "lost") -> Deferred[int]:
        """
        Mark the active calls of ``node`` (all nodes if :class:`None`) as ended,
        e.g. at start-up for calls a crashed instance left behind.

        :return: fires with the number of calls ended.
        """


class ICallRecordWrites(Interface):
    """
    Optional capability of an :class:`ICallRecordStore`: write a call's changes without
    reading its record back (the call controller keeps the live state itself and never
    reads what it wrote).  Asked for with ``ICallRecordWrites(store, None)``.
    """

    def write_call(call_id: str, update: CallUpdate) -> Deferred[None]:
        """
        Set the fields ``update`` carries, as :meth:`ICallRecordStore.update_call` does.

        :return: fires with None once written; fails with ``NoSuchCall``.
        """


class ICallTraceStore(Interface):
    """
    The SIP messages of calls (docs/calls.md, "Call traces"), kept beside the call records
    by backends that can: the daemon asks ``ICallTraceStore(records, None)``.

    Each call's trace is bounded (:class:`TraceLimits`): the first message that does not fit,
    and every later one of that call, is only counted as dropped
    (:func:`clicktodial.store.traces.fit_messages`).
    """

    def append_traces(appends: Sequence[TraceAppend], limits: TraceLimits) -> Deferred[None]:
        """
        Add each :class:`TraceAppend`'s messages to its call's trace (made if new), in one
        write for all of them, within ``limits``.

        :return: fires once written.
        """

    def get_trace(call_id: str) -> Deferred[CallTrace | None]:
        """
        :return: fires with the call's :class:`CallTrace` (messages in the order appended), or
            :class:`None` if nothing was kept for it.
        """

    def purge_traces(before: float) -> Deferred[int]:
        """
        Forget the traces whose newest message is older than ``before`` (POSIX seconds).

        :return: fires with the number of calls whose trace was removed.
        """


class ILocationBackend(ILocationStore):
    """
    A location store with a lifecycle: what a location backend plugin
    (``[location] backend = NAME``) builds. Every :class:`IStoreBackend` is one, so
    by default the ``[store]`` backend keeps the registrations too.
    """

    def start() -> Deferred[None]:
        """
        Connect to the storage and check it is usable.

        :return: fires when the store can be used; fails with
            ``StoreUnavailable`` (or ``SchemaOutOfDate``) otherwise: the daemon
            then stops with exit status 1.
        """

    def stop() -> Deferred[None]:
        """
        Release thread pools and connections. Called once ``start()`` was
        called, whether its Deferred has fired, failed or is still waiting: a
        stop must not wait for a start in progress to succeed.

        :return: fires once stopped.
        """


class ILocationBackendFactory(Interface):
    """
    A named kind of location store, registered as an ``importlib.metadata``
    entry point in the group ``clicktodial.location_backends`` and chosen by
    ``[location] backend = NAME``; its options are the keys of the
    ``[location:NAME]`` section.
    """

    def create(options: Mapping[str, str], environment: StoreEnvironment) -> ILocationBackend:
        """
        Build a (not yet started) location store. Must not connect or start
        anything (``check-config`` calls it to validate the options and
        discards the result).

        :param options: the ``[location:NAME]`` section's keys and values.
        :param environment: the reactor, realm, thread-pool factory and
            password hasher to use.
        :raises clicktodial.store.errors.StoreConfigError: for a missing,
            unknown or invalid option, naming the key.
        """


class IBindingChangeNotifier(Interface):
    """
    Optional capability of a location store: it tells of AORs whose
    bindings changed, through this daemon or through another daemon sharing
    the storage (the web's presence then refreshes that AOR at once instead
    of at its next poll).
    """

    def subscribe(listener: Callable[[str], object]) -> Callable[[], None]:
        """
        Call ``listener`` with an AOR each time its bindings changed (added,
        refreshed, removed, expired when the storage expires them itself).
        It runs on the reactor thread; an exception from it is logged and
        swallowed.

        :return: a function that unsubscribes ``listener``.
        """


class IUserChangeNotifier(Interface):
    """
    Optional capability of a user store: it tells of users whose
    credentials or enabled state changed (a new password, disabled,
    removed), so that the registrar's cached Digest secrets of that user are
    dropped at once.
    """

    def subscribe(listener: Callable[[str], object]) -> Callable[[], None]:
        """
        Call ``listener`` with a username each time that user's passwords,
        SIP credentials or enabled state changed or the user was removed.
        It runs on the reactor thread.

        :return: a function that unsubscribes ``listener``.
        """


class IVerifiedRegistration(Interface):
    """
    Optional capability of a store that keeps both the users and the bindings: an
    authenticated REGISTER in one store operation (one thread hop, one transaction)
    instead of a credentials read then a binding update.

    The store reads the user's SIP credentials, hands them to the caller's ``verify``, and
    applies the binding changes only if it accepted them, in the same transaction: a wrong
    password writes nothing.
    """

    def update_bindings_if_verified(
        username: str,
        verify: Callable[[SipCredentials | None], bool],
        aor: str,
        changes: BindingChanges,
        now: float,
    ) -> Deferred[VerifiedUpdate]:
        """
        Read ``username``'s SIP credentials (``None`` for an unknown or disabled user, as
        ``IUserStore.get_sip_credentials``), call ``verify`` with them, and if it returns
        true apply ``changes`` to ``aor``'s bindings exactly as
        ``ILocationStore.update_bindings`` does (the same rules, limits and atomicity).

        ``verify`` may run on a store thread, and more than once for one call (a
        transaction retried after a transient error): it must be thread-safe and answer
        the same each time for the same credentials.

        :return: fires with a :class:`~clicktodial.store.values.VerifiedUpdate`: the
            credentials read and the bindings after the update, or ``None`` bindings (and
            nothing written) when ``verify`` refused. Fails with ``OutOfOrderRegistration``
            or ``TooManyBindings`` (nothing written) only after ``verify`` accepted.
        """


class IStoreLoad(Interface):
    """
    Optional capability of a store (or location) backend: how much work
    waits for it. Admission control (``[limits] max_store_pending``) answers
    new requests 503 while too much does; ``/metrics`` shows it as
    ``clicktodial_store_pending``. A backend without it counts as 0.
    """

    def pending() -> int:
        """
        The operations waiting for a storage thread or connection now. Called
        for every new SIP request: must be cheap and must not block.
        """


class IActiveCallClaims(Interface):
    """
    Optional capability of a call record store: end a node's active calls
    and say which.  The daemon uses it when it records calls as ``lost`` (its
    own calls an earlier run left active, a dead node's calls) to delete
    their media relay sessions (``[media] relay``); a store without it still
    ends them with :meth:`ICallRecordStore.end_active_calls`, and their relay
    sessions are left to the relay's own timeout.
    """

    def claim_active_calls(
        node: str | None, ended_at: float, reason: str = "lost"
    ) -> Deferred[list[str]]:
        """
        Like :meth:`ICallRecordStore.end_active_calls`, atomically: the calls are
        ended and their ids returned in one step, so that of several callers
        at once (several daemons on one database) each call is returned to
        exactly one.

        :return: fires with the ids of the calls this call ended.
        """


class IOutboundQuota(Interface):
    """
    Optional capability of a call record store: counts each user's calls to telephone
    numbers a day, for ``[dialplan] daily_limit`` (docs/dialplan.md). The daemon asks
    ``IOutboundQuota(store, None)``; without it, numbers cannot be called while a daily
    limit is set.
    """

    def count_outbound_call(username: str, day: str, limit: int) -> Deferred[bool]:
        """
        Count one more outbound call of ``username`` on ``day`` (``YYYY-MM-DD``, UTC) if
        fewer than ``limit`` (1 or more) are counted, in one atomic step: however many
        requests (and daemons sharing the database) ask at once, at most ``limit`` of them
        are counted.

        :return: fires with :class:`True` if counted, :class:`False` if the limit was reached
            (nothing changed).
        """

    def uncount_outbound_call(username: str, day: str) -> Deferred[None]:
        """
        Give back one call counted by :meth:`count_outbound_call` for ``username`` on
        ``day`` (a call that ended before any INVITE reached a trunk), in one atomic step;
        the count never goes below 0.

        :return: fires with :class:`None` once done.
        """

    def outbound_calls(username: str, day: str) -> Deferred[int]:
        """
        :return: fires with the calls counted for ``username`` on ``day`` (0 if none).
        """


class ISchemaManagement(Interface):
    """
    Optional capability of a store or location backend whose storage has a
    schema to create and migrate: ``clicktodial db upgrade`` and ``db check``
    use it (for the ``[store]`` and the ``[location]`` backend). Its methods
    block: administration commands call them, without a reactor and before
    ``start()``.
    """

    def upgrade_schema() -> None:
        """
        Create the schema, or migrate it to what this code expects.

        :raises clicktodial.store.errors.StoreUnavailable: the storage cannot
            be reached.
        """

    def check_schema() -> None:
        """
        :raises clicktodial.store.errors.SchemaOutOfDate: the schema is not
            what this code expects (the message says what to run).
        """


class INodeRegistry(Interface):
    """
    The cluster's table of nodes (``[cluster] bus = postgres``): each node's
    last heartbeat, for finding dead nodes and reaping their calls
    (``clicktodial.cluster.nodes``).
    """

    def start() -> None:
        """Start the thread pool or connections it uses."""

    def stop() -> None:
        """Stop them."""

    def heartbeat(node: str, at: float) -> Deferred[bool]:
        """Set ``node``'s last heartbeat; fires with whether its row existed."""

    def stale_nodes(cutoff: float) -> Deferred[list[str]]:
        """
        Fires with the nodes whose last heartbeat is before ``cutoff``, and the
        orphans: nodes with calls in progress but no row.
        """

    def claim(node: str, cutoff: float) -> Deferred[bool]:
        """
        Delete ``node``'s row if it is still stale; fires with whether this
        caller should reap its calls (it deleted the row, or there was none).
        """

    def remove(node: str) -> Deferred[None]:
        """Delete ``node``'s row (a clean stop)."""


class IClusterStorage(Interface):
    """
    Optional capability of a store backend: what ``[cluster] bus = postgres``
    needs of the storage the daemons share (the ``sql`` backend provides it on
    PostgreSQL). Without it that setting stops start-up, naming both.
    """

    def node_registry() -> INodeRegistry:
        """The nodes table (not started: the cluster service starts it)."""

    def event_bus(node_id: str) -> IEventBus:
        """
        The event bus between the daemons sharing this storage, for node
        ``node_id``; it is also an ``IService`` (the cluster service starts and
        stops it).
        """


class IStoreBackend(IUserStore, ILocationBackend, ICallRecordStore):
    """
    What a store backend provides: all three stores and a lifecycle.
    """

    def start() -> Deferred[None]:
        """
        Start thread pools and check the storage is usable.

        :return: fires when the store can be used; fails with
            ``SchemaOutOfDate`` if the database needs ``db upgrade``, or with
            ``StoreUnavailable``.
        """

    def stop() -> Deferred[None]:
        """
        Release thread pools and connections.

        Called once start() was called, whether its Deferred has fired, failed or is still
        waiting (the daemon stopped during start-up, after cancelling it): a stop must not
        wait for a start in progress to succeed.

        :return: fires once stopped.
        """


class IStoreBackendFactory(Interface):
    """
    A named kind of store, registered as an ``importlib.metadata`` entry
    point in the group ``clicktodial.store_backends`` and chosen by
    ``[store] backend = NAME``.
    """

    def create(options: Mapping[str, str], environment: StoreEnvironment) -> IStoreBackend:
        """
        Build a (not yet started) store. Must not connect or start anything
        (``check-config`` calls it to validate the options and discards the
        result).

        :param options: the ``[store:NAME]`` section's keys and values (for
            ``sql``, also the older ``[store] url`` and ``auto_upgrade``).
        :param environment: the reactor, realm, thread-pool factory and
            password hasher to use.
        :raises clicktodial.store.errors.StoreConfigError: for a missing,
            unknown or invalid option, naming the key.
        """


# Appended by the click-to-dial call controller work (clicktodial.calls).
# Values: clicktodial.calls.events.CallInfo, clicktodial.calls.policy.CallRequest;
# errors: clicktodial.calls.policy.CallRefused.


class ICallEventListener(Interface):
    """
    Told about every change of a click-to-dial call's public state
    (``calling-caller``, ``calling-callee``, ``connected``, ``ended``,
    ``failed``), e.g. by the web layer to show calls live.  Called on the
    reactor thread; must not raise (exceptions are logged and swallowed).
    """

    def call_state_changed(info: CallInfo) -> None:
        """The call ``info.call_id`` entered ``info.state``."""


class IKnownLookups(Interface):
    """
    Optional capability of the users and locations the call controller looks up (the
    daemon's :class:`clicktodial.calls.directory.CachedDirectory`): what it keeps in memory,
    answered at once, without a Deferred.  Asked for with ``IKnownLookups(obj, None)``.
    """

    def known_user(username: str) -> User | None:
        """The user as ``get_user`` would answer now from memory, else None (ask it)."""

    def known_bindings(aor: str, now: float) -> list[Binding] | None:
        """``aor``'s bindings unexpired at ``now`` as ``get_bindings`` would answer from
        memory, else None (ask it)."""


class ICallOutcomeListener(ICallEventListener):
    """
    An :class:`ICallEventListener` told only of the final states (``ended``, ``failed``):
    how calls end (metrics).  The states before are not made for it: a call whose every
    listener is one of these publishes nothing until it ends.
    """


class ICallController(Interface):
    """
    Runs click-to-dial calls: "caller X calls callee Y" as RFC 3725 third
    party call control, X's phone rung first, Y's when X answers.
    """

    def place_call(caller_username: str, callee_username: str) -> Deferred[CallInfo]:
        """
        Check the call-control policy, look up both users' bindings, record
        the call and ring the caller's phones.

        :return: fires with the :class:`CallInfo` of the new call once its first
            INVITEs are out (state ``calling-caller``), or already ``failed``
            when a party has no binding (end reason ``caller-unreachable``
            / ``callee-unreachable``); fails with
            :class:`CallRefused <clicktodial.calls.policy.CallRefused>` when a user
            is unknown or disabled or the policy forbids the call.
        """

    def hang_up(call_id: str, by_username: str | None = None) -> bool:
        """
        End the call at whatever stage it is: CANCEL ringing phones, BYE
        answered ones.  ``by_username`` is recorded as who hung up (the
        caller, the callee, or anyone else: ``system``).

        :return: :class:`True` if the call was in progress here, else :class:`False`.
        """

    def get_call(call_id: str) -> CallInfo | None:
        """
        :return: the :class:`CallInfo` of a call in progress on this controller,
            or :class:`None` (ended calls are in the call record store).
        """

    def active_calls() -> list[CallInfo]:
        """@return: the calls in progress here, oldest first."""

    def subscribe(listener: ICallEventListener) -> Callable[[], None]:
        """
        Tell ``listener`` about every call state change from now on.

        :return: a function that unsubscribes it.
        """


class IOutboundCalls(Interface):
    """
    Optional capability of a call controller: calls to telephone numbers through trunks,
    as the dial plan decided (docs/dialplan.md). The web asks ``IOutboundCalls(controller,
    None)``.
    """

    def place_outbound(
        caller_username: str,
        decision: DialDecision,
        refund_untried: Callable[[], object] | None = None,
    ) -> Deferred[CallInfo]:
        """
        Take a place on the first of ``decision.trunks`` with room (:meth:`ITrunk.admit`),
        record the call (``number``, ``destination_class``) and ring the caller's phones,
        then the number through that trunk (the next ones on failure).

        :param refund_untried: called once if the call ends without an INVITE sent to any
            trunk (the daily limit gives its count back: docs/dialplan.md).
        :return: fires with the :class:`CallInfo` of the new call, or of the call already
            ``failed`` with end reason ``no-trunk`` when none of the trunks exists or has
            room (no phone is rung);
            fails with :class:`CallRefused <clicktodial.calls.policy.CallRefused>` when the
            caller is unknown or disabled.
        """


class ICalleeRoute(Interface):
    """
    Where the callee leg of one call goes, attempt after attempt: the callee's registered
    phones (one attempt), or a number through the trunks of a :class:`DialDecision`, in fail-over
    order (:class:`clicktodial.calls.outbound.TrunkHunt`).  Driven by the call's table
    (docs/calls.md, "Calls through a trunk"); all on the reactor thread.
    """

    trunk = Attribute("The name of the trunk the current attempt goes through, or None.")

    def targets() -> Deferred[list[Target]]:
        """
        The targets of the next attempt (what was held for the previous one is given
        back first).

        :return: fires with the targets, or an empty list when no attempt is left (see
            :func:`unreachable`); fails when the look-up failed.
        """

    def reroutes(status: int) -> bool:
        """
        Whether a leg whose every fork failed with ``status`` is tried again with the
        next :func:`targets` (a trunk answered 408/5xx or could not be reached, and another
        trunk remains); ``False`` ends the call.
        """

    def unreachable() -> tuple[str, int]:
        """The end reason and SIP status when :func:`targets` found nothing to call."""

    def release() -> None:
        """The call is over: give back what the attempts hold (a trunk's call ticket)."""


class IMediaFlow(Interface):
    """
    How a click-to-dial call sets up media between the two phones (an RFC
    3725 flow): what the controller sends when each phone answers.  The
    controller always INVITEs the caller without SDP, so the caller's 2xx
    carries an offer.  The flow drives the call through :class:`IBridge`.
    """

    name = Attribute("The flow's name, e.g. 'flow1' or 'flow4': str.")

    def caller_answered(bridge: IBridge, offer: bytes) -> None:
        """
        The caller's phone answered with ``offer``: answer it now or later
        (:meth:`IBridge.ack_caller`) and ring the callee (:meth:`IBridge.invite_callee`).
        """

    def callee_answered(bridge: IBridge, sdp: bytes | None) -> None:
        """
        The callee's phone answered with ``sdp`` (an answer to the offer the
        flow sent it, or its own offer): finish the offer/answer exchanges
        and call :meth:`IBridge.bridged` (or :meth:`IBridge.bridge_failed`).
        """


class IBridge(Interface):
    """
    What a call offers an :class:`IMediaFlow`.  SDP passed in is relayed to the
    named leg with the origin (o=) line that leg has seen from us, its
    version bumped when the description changed (RFC 3264 §8).
    """

    caller_offer = Attribute("The offer in the caller's 2xx: bytes.")

    def ack_caller(answer: bytes) -> None:
        """ACK the caller's 2xx with ``answer`` (relayed)."""

    def held_answer(offer: bytes) -> bytes:
        """
        An answer to ``offer`` that puts every stream on hold (a=inactive,
        connection address 0.0.0.0): RFC 3725 §5 Flow IV's answer1.
        """

    def invite_callee(offer: bytes | None) -> None:
        """Ring the callee's phones, with ``offer`` (relayed) or without SDP."""

    def ack_callee(answer: bytes | None) -> None:
        """ACK the callee's 2xx, with ``answer`` (relayed) if it carried an offer."""

    def reinvite_caller(offer: bytes, answered: Callable[[bytes], None]) -> None:
        """
        Re-INVITE the caller with ``offer`` (relayed, m-lines padded to the
        number the caller's session has); ``answered`` gets the caller's
        answer.  A failure ends the call.
        """

    def bridged() -> None:
        """Media is set up: the call is connected."""

    def bridge_failed(status: int) -> None:
        """The offer/answer exchange failed with ``status``: end the call."""


class IMediaRelay(Interface):
    """
    A media relay the calls put between the two phones (rtpengine through
    its ``ng`` protocol: :class:`clicktodial.media.rtpengine.RtpEngineRelay`).

    One relay session per call, named by the call's Call-ID and tags: the
    ``from_tag`` names the side that made the offer (the caller's leg), the
    ``to_tag`` the side that answered.  Every description a phone is sent goes
    through :func:`offer` or :func:`answer`, which return it rewritten to name the
    relay's own address and ports.  ``source`` is the address the phone's
    signalling comes from (its NAT's public address); the relay sends that
    phone's media there rather than to a private SDP address.

    Every method fails with :class:`clicktodial.media.rtpengine.RelayError` when the
    relay refuses the request, and with its subclass
    :class:`clicktodial.media.rtpengine.RelayTimeout` when it never answers.
    """

    name = Attribute("What the relay is, for logs and the call page: str.")

    def offer(call_id: str, from_tag: str, sdp: bytes, source: str | None) -> Deferred[bytes]:
        """The offer ``sdp`` from the ``from_tag`` side, rewritten for the other side."""

    def answer(
        call_id: str, from_tag: str, to_tag: str, sdp: bytes, source: str | None
    ) -> Deferred[bytes]:
        """The answer ``sdp`` from the ``to_tag`` side, rewritten for the offerer."""

    def delete(call_id: str) -> Deferred[None]:
        """End the relay session of the call, both sides (an unknown one is no error)."""

    def query(call_id: str) -> Deferred[Mapping[str, object]]:
        """The relay's view of the call's session (rtpengine's ``query`` reply)."""

    def stats() -> Mapping[str, float]:
        """
        Counters since start for ``/metrics``: ``commands``, ``errors`` (error
        replies), ``timeouts``, ``retransmissions``, ``round_trip_seconds_sum``,
        ``round_trip_count``, ``sessions`` (calls holding a relay session now).
        """


class ICallPolicy(Interface):
    """
    A call-control policy, chosen by name in ``[calls] policy``: who may call
    whom, how many calls run at once, and the media flow to use.
    """

    name = Attribute("The name it is chosen by: str.")
    flow = Attribute("The :class:`IMediaFlow` calls use.")

    def authorize(request: CallRequest) -> None:
        """
        Decide whether ``request`` may be placed.

        :raises clicktodial.calls.policy.CallRefused: it may not (its
            ``reason`` says why: ``forbidden``, ``caller-limit``,
            ``callee-limit``, ``total-limit``, ``same-user``).
        """


class ICallPolicyFactory(Interface):
    """
    A named policy, registered as an ``importlib.metadata`` entry point in
    the group ``clicktodial.call_policies`` and chosen by ``[calls] policy =
    NAME``; its options are the keys of the ``[policy:NAME]`` section.
    """

    def create(settings: CallsConfig, options: Mapping[str, str]) -> ICallPolicy:
        """
        Build the policy. Called at start-up, by ``check-config``, and on
        SIGHUP (new calls then follow the new policy).

        :param settings: the ``[calls]`` section (limits, timeouts).
        :param options: the ``[policy:NAME]`` section's keys and values.
        :raises clicktodial.errors.PluginConfigError: for a missing, unknown
            or invalid option, naming the key.
        :return: the policy.
        """


# Appended by the scale-out work (clicktodial.cluster): several daemons sharing
# one PostgreSQL database tell each other about calls through an event bus.


class IEventBus(Interface):
    """
    Messages between the daemons ("nodes") of one deployment: publish a JSON
    object on a named channel; every node subscribed to the channel, this one
    included, gets it.  Delivery is at most once and in order per publisher;
    a message published while a node's bus is disconnected is lost to that
    node, so each time the bus (re)connects it calls the local subscribers of
    the channel ``bus_connected`` (``clicktodial.cluster.bus.CONNECTED``) with
    ``{"node": node_id}``: they resynchronise.  Callbacks run on the reactor thread; an
    exception from one is logged and swallowed.
    """

    node_id = Attribute("This node's name, put in every message as ``node``: str.")

    def publish(channel: str, payload: Mapping[str, object]) -> Deferred[bool]:
        """
        Send ``payload`` (JSON-serialisable) with ``node`` set to
        ``node_id``.

        :param channel: ``[a-z][a-z0-9_]*``, at most 40 characters.
        :raises ValueError: a bad channel name, a payload that is not
            JSON-serialisable or whose JSON is 8000 bytes or more (the
            PostgreSQL NOTIFY limit).
        :return: fires with :class:`True` once sent, :class:`False` if it could not be
            (the failure is logged); never fails.
        """

    def subscribe(
        channel: str, callback: Callable[[dict[str, object]], None]
    ) -> Callable[[], None]:
        """
        Call ``callback`` with every message on ``channel`` from now on.

        :raises ValueError: a bad channel name.
        :return: a function that unsubscribes it.
        """


# SIP trunks to a provider (clicktodial.trunks, docs/trunks.md): what a call leg through a
# trunk uses, and what the admin page and /metrics read.


class ITrunk(Interface):
    """
    One SIP trunk to a provider (a ``[trunk:NAME]`` section). Everything a call leg needs
    to call an E.164 number through it; all on the reactor thread.
    """

    name = Attribute("The trunk's name (the NAME of [trunk:NAME]): str.")

    def request_uri_for(e164: str) -> URI:
        """
        The Request-URI (and To) for calling ``e164`` through the trunk:
        ``sip:+4930123456@PROVIDER-DOMAIN``.

        :raises ValueError: ``e164`` is not an E.164 number (``+`` and 2-15 digits).
        """

    def destinations() -> Deferred[list[Destination]]:
        """
        Where to send the trunk's requests (RFC 3263), in the order to try them: on a
        408/503 or a transport error, the next one (RFC 3263 §4.3).

        :return: fires with a non-empty list, or fails with
            :class:`clicktodial.trunks.resolver.ResolutionFailed`.
        """

    def credentials_for(realm: str) -> tuple[str, str] | None:
        """
        ``(auth user, password)`` to answer a digest challenge of ``realm`` from this
        trunk's provider, or :class:`None` when ``realm`` is not the trunk's (``[trunk:NAME]
        realm``; any realm when that is empty). Only ever use it for responses that
        came from this trunk's destinations.
        """

    def caller_identity(username: str | None) -> CallerIdentity:
        """
        What to present on a call made by the directory user ``username`` (:class:`None`: the
        daemon itself): the trunk's ``caller_id``, or the user's own from
        ``user_caller_ids``. Never taken from anything a user sends.
        """

    def admit() -> CallTicket:
        """
        Take a place for a new call (``max_calls`` at once, ``max_cps`` a second), at once
        and atomically; release the ticket when the call ends.

        :raises clicktodial.trunks.values.TrunkBusy: a limit is reached.
        """

    def status() -> TrunkStatus:
        """The trunk's registration, reachability and call counts now."""


class ITrunkRegistry(Interface):
    """The trunks built at start-up, by name."""

    def get(name: str) -> ITrunk | None:
        """The trunk ``name``, or :class:`None`."""

    def names() -> list[str]:
        """Every trunk's name, in the order of the configuration file."""

    def statuses() -> list[TrunkStatus]:
        """Every trunk's :meth:`ITrunk.status`, in the order of :func:`names`."""

    def screen_inbound(host: str) -> str | None:
        """
        The name of the trunk a request from ``host`` (an IP address) comes from, when that
        trunk refuses inbound requests (``inbound = refuse``: the caller answers 403 and
        routes the request nowhere; the refusal is counted in the trunk's status); :class:`None`
        for a host that is no trunk's.
        """


# The SIP stack's internal seams moved to clicktodial.sip.interfaces (they are not plugin
# API); importable from here as well for code written before the move.
from clicktodial.sip.interfaces import (  # noqa: E402
    IFlowKeeper,
    IIncomingCallHandler,
    IMessageHandler,
    ISendFailureHandler,
    ISessionHandler,
    ISIPTap,
    ISIPTransport,
    ISourceLimit,
    ITransactionUser,
)

__all__ = [
    "IActiveCallClaims",
    "IBindingChangeNotifier",
    "IBridge",
    "ICallController",
    "ICallEventListener",
    "ICallOutcomeListener",
    "ICallRecordWrites",
    "IKnownLookups",
    "ICalleeRoute",
    "ICallPolicy",
    "ICallPolicyFactory",
    "ICallRecordStore",
    "ICallTraceStore",
    "IClusterStorage",
    "IEventBus",
    "ILocationBackend",
    "ILocationBackendFactory",
    "ILocationStore",
    "IMediaFlow",
    "INodeRegistry",
    "IStoreBackend",
    "IStoreBackendFactory",
    "IStoreLoad",
    "ISchemaManagement",
    "ITrunk",
    "ITrunkRegistry",
    "IUserChangeNotifier",
    "IUserStore",
    # moved to clicktodial.sip.interfaces
    "IFlowKeeper",
    "IIncomingCallHandler",
    "IMessageHandler",
    "ISIPTap",
    "ISIPTransport",
    "ISendFailureHandler",
    "ISessionHandler",
    "ISourceLimit",
    "ITransactionUser",
]
