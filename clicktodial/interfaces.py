"""
The interfaces between clicktodial's parts.

This is the one module that defines zope interfaces. Every method that does
I/O returns a L{Deferred}; its docstring says what the Deferred fires with
and which documented exceptions it fails with. Values crossing these
interfaces are the frozen attrs classes of L{clicktodial.store.values}.

Every store method may also fail with
L{clicktodial.store.errors.StoreUnavailable} when its database cannot be
reached.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from clicktodial.calls.events import CallInfo
    from clicktodial.calls.policy import CallRequest
    from clicktodial.config import CallsConfig
    from clicktodial.sip.address import Destination
    from clicktodial.sip.message import Request, Response
    from clicktodial.sip.transaction import ServerTransaction
    from clicktodial.sip.useragent import IncomingCall, IncomingRequest, OutgoingCall, Session
    from clicktodial.store.plugins import StoreEnvironment
    from clicktodial.store.traces import CallTrace, TraceAppend, TraceLimits
    from clicktodial.store.values import (
        ApiToken,
        Binding,
        BindingChanges,
        CallRecord,
        CallUpdate,
        NewUser,
        SipCredentials,
        User,
        UserChanges,
    )


class IUserStore(Interface):
    """
    User accounts: web login (Argon2id password hashes), SIP digest
    credentials (HA1s for the store's realm) and API tokens.

    Usernames match C{[a-z0-9._-]{1,64}}; methods that create users fail
    with L{InvalidUsername<clicktodial.store.errors.InvalidUsername>}
    otherwise. Password hashing and verification never run on the reactor
    thread.
    """

    realm = Attribute(
        "The SIP digest realm (the configured [sip] domain) the HA1s are"
        " computed for: str.")

    def add_user(
        username: str,
        *,
        password: str | None = None,
        sip_password: str | None = None,
        display_name: str = "",
        is_admin: bool = False,
    ) -> Deferred[User]:
        """
        Create a user. A user without C{password} cannot log in to the web
        interface; one without C{sip_password} cannot register a phone.

        @return: fires with the new L{User}; fails with C{InvalidUsername}
            or C{UserExists}.
        """

    def add_users(users: Sequence[NewUser]) -> Deferred[int]:
        """
        Create many users at once, atomically: either all are created or
        none is. Web passwords are hashed in parallel on the hashing pool.

        @return: fires with the number of users created; fails with
            C{InvalidUsername} or C{UserExists} (naming every username that
            already exists, or that appears twice in C{users}).
        """

    def get_user(username: str) -> Deferred[User | None]:
        """
        @return: fires with the L{User}, or L{None} if there is none.
        """

    def list_users() -> Deferred[list[User]]:
        """
        @return: fires with every user, ordered by username.
        """

    def update_user(username: str, changes: UserChanges) -> Deferred[User]:
        """
        Apply C{changes} (new passwords are hashed as in C{add_user}).

        @return: fires with the updated L{User}; fails with C{NoSuchUser}.
        """

    def remove_user(username: str) -> Deferred[None]:
        """
        Delete a user and their API tokens (not their bindings or call
        records).

        @return: fires with L{None}; fails with C{NoSuchUser}.
        """

    def check_password(username: str, password: str) -> Deferred[User | None]:
        """
        Verify a web login. Takes about as long for an unknown user as for
        a known one, so timing does not reveal which usernames exist.

        @return: fires with the L{User} if the user exists, is not disabled,
            has a web password and C{password} matches it; with L{None}
            otherwise.
        """

    def get_sip_credentials(username: str) -> Deferred[SipCredentials | None]:
        """
        The digest secrets the registrar checks a REGISTER's Authorization
        against (RFC 8760: MD5 and SHA-256 HA1s for C{realm}).

        @return: fires with L{SipCredentials}, or L{None} if the user does
            not exist, is disabled or has no SIP secret.
        """

    def create_token(username: str, label: str = "") -> Deferred[str]:
        """
        Create an API token for a user. Only its SHA-256 is stored: the
        plaintext is returned here and never again.

        @return: fires with the plaintext token; fails with C{NoSuchUser}.
        """

    def verify_token(token: str) -> Deferred[str | None]:
        """
        @return: fires with the username owning C{token}, or L{None} if the
            token is unknown or revoked or its user is disabled.
        """

    def list_tokens(username: str) -> Deferred[list[ApiToken]]:
        """
        @return: fires with the user's tokens (descriptions only), oldest
            first; an unknown user has none.
        """

    def revoke_token(token: str) -> Deferred[bool]:
        """
        Revoke a token, named by its plaintext or by its C{token_id}.

        @return: fires with L{True} if a token was revoked, L{False} if no
            token matched.
        """


class ILocationStore(Interface):
    """
    The location service of a registrar (RFC 3261 §10.3): for each
    address-of-record a set of bindings. Times are POSIX seconds passed in
    by the caller (C{clock.seconds()}); a binding whose C{expires_at} is at
    or before C{now} no longer exists.

    Updates to one AOR are serialised, also between several daemons sharing
    one database.
    """

    def get_bindings(aor: str, now: float) -> Deferred[list[Binding]]:
        """
        @return: fires with the unexpired bindings of C{aor}, ordered by
            contact URI (empty if there are none).
        """

    def update_bindings(aor: str, changes: BindingChanges,
                        now: float) -> Deferred[list[Binding]]:
        """
        Apply one REGISTER request (RFC 3261 §10.3 steps 6 and 7)
        atomically: add, refresh or (C{expires} 0) remove each contact, or
        remove all bindings for a wildcard request. A binding whose Call-ID
        equals the request's may only change if the request's CSeq is
        higher than the stored one. A request that adds a binding may not
        leave the AOR with more than C{changes.max_bindings}; the check is
        part of the atomic update, so it holds for concurrent requests
        (other Call-IDs, other daemons sharing the database).

        @return: fires with the AOR's unexpired bindings after the update
            (what the 200 OK lists, step 8); fails with
            C{OutOfOrderRegistration} when the CSeq rule is broken, or
            C{TooManyBindings} when the limit would be exceeded, in which
            case nothing was changed.
        """

    def remove_all(aor: str) -> Deferred[int]:
        """
        Remove every binding of C{aor} unconditionally (administrative use;
        a wildcard REGISTER goes through C{update_bindings}).

        @return: fires with the number of bindings removed.
        """

    def purge_expired(now: float) -> Deferred[int]:
        """
        Delete the bindings that expired at or before C{now}.

        @return: fires with the number of bindings deleted.
        """

    def registered_aors(now: float) -> Deferred[list[str]]:
        """
        @return: fires with the AORs that have at least one unexpired
            binding, sorted.
        """

    def all_bindings(now: float) -> Deferred[list[Binding]]:
        """
        @return: fires with every unexpired binding, ordered by AOR, then
            contact.
        """


class ICallRecordStore(Interface):
    """
    Records of click-to-dial calls, for the call history and for counting
    calls in progress. A call is active until its C{ended_at} is set.
    """

    def create_call(caller: str, callee: str, created_at: float,
                    node: str | None = None) -> Deferred[str]:
        """
        Record a new call in state C{new}.

        @return: fires with the new record's C{call_id}: a fresh UUID4 in
            hex.
        """

    def update_call(call_id: str, update: CallUpdate) -> Deferred[CallRecord]:
        """
        Set the fields C{update} carries.

        @return: fires with the updated L{CallRecord}; fails with
            C{NoSuchCall}.
        """

    def get_call(call_id: str) -> Deferred[CallRecord | None]:
        """
        @return: fires with the L{CallRecord}, or L{None} if unknown.
        """

    def list_calls(user: str | None = None, limit: int = 50, offset: int = 0,
                   before: float | None = None) -> Deferred[list[CallRecord]]:
        """
        List calls newest first (by C{created_at}, then C{call_id}).

        @param user: only calls where this user is the caller or the callee;
            L{None} for all calls.
        @param before: only calls created strictly before this time (for
            paging by time); applied before C{offset}.
        @return: fires with at most C{limit} records.
        """

    def count_active(node: str | None = None) -> Deferred[int]:
        """
        @param node: count only the calls run by this node.
        @return: fires with the number of calls without C{ended_at}.
        """

    def end_active_calls(node: str | None, ended_at: float,
                         reason: str = "lost") -> Deferred[int]:
        """
        Mark the active calls of C{node} (all nodes if L{None}) as ended,
        e.g. at start-up for calls a crashed instance left behind.

        @return: fires with the number of calls ended.
        """


class ICallTraceStore(Interface):
    """
    The SIP messages of calls (docs/calls.md, "Call traces"), kept beside the call records
    by backends that can: the daemon asks C{ICallTraceStore(records, None)}.

    Each call's trace is bounded (L{TraceLimits}): the first message that does not fit,
    and every later one of that call, is only counted as dropped
    (L{clicktodial.store.traces.fit_messages}).
    """

    def append_traces(appends: Sequence[TraceAppend], limits: TraceLimits) -> Deferred[None]:
        """
        Add each L{TraceAppend}'s messages to its call's trace (made if new), in one
        write for all of them, within C{limits}.

        @return: fires once written.
        """

    def get_trace(call_id: str) -> Deferred[CallTrace | None]:
        """
        @return: fires with the call's L{CallTrace} (messages in the order appended), or
            L{None} if nothing was kept for it.
        """

    def purge_traces(before: float) -> Deferred[int]:
        """
        Forget the traces whose newest message is older than C{before} (POSIX seconds).

        @return: fires with the number of calls whose trace was removed.
        """


class IStoreBackend(IUserStore, ILocationStore, ICallRecordStore):
    """
    What a store backend provides: all three stores and a lifecycle.
    """

    def start() -> Deferred[None]:
        """
        Start thread pools and check the storage is usable.

        @return: fires when the store can be used; fails with
            C{SchemaOutOfDate} if the database needs C{db upgrade}, or with
            C{StoreUnavailable}.
        """

    def stop() -> Deferred[None]:
        """
        Release thread pools and connections.

        Called once start() was called, whether its Deferred has fired, failed or is still
        waiting (the daemon stopped during start-up, after cancelling it): a stop must not
        wait for a start in progress to succeed.

        @return: fires once stopped.
        """


class IStoreBackendFactory(Interface):
    """
    A named kind of store, registered as an C{importlib.metadata} entry
    point in the group C{clicktodial.store_backends} and chosen by
    C{[store] backend = NAME}.
    """

    def create(options: Mapping[str, str],
               environment: StoreEnvironment) -> IStoreBackend:
        """
        Build a (not yet started) store.

        @param options: the C{[store]} section's keys and values other than
            C{backend}.
        @param environment: the reactor, realm, thread-pool factory and
            password hasher to use.
        @raise clicktodial.store.errors.StoreConfigError: for a missing,
            unknown or invalid option, naming the key.
        """


# -- SIP transport and transaction layer (RFC 3261 §17, §18) -----------------
# Appended by the transaction-layer work.  Message types are
# clicktodial.sip.message.Request / Response; destinations are
# clicktodial.sip.address.Destination.  Annotations are strings so this
# module imports nothing from the SIP stack.


class IMessageHandler(Interface):
    """
    What a SIP transport hands parsed messages to (the transaction layer).
    Implementations never raise: bad input is logged and answered or
    dropped.
    """

    def request_received(request: Request, source: object) -> None:
        """
        A request arrived.

        @param source: where it came from (the transport's C{Destination}
            or connection handle); handed back to
            L{ISIPTransport.send_response} with every response to it.
        """

    def response_received(response: Response, source: object) -> None:
        """A response arrived from C{source}."""


class ISourceLimit(Interface):
    """
    The per-source rate limit a SIP transport applies to what it receives,
    before parsing it (like Kamailio's pike; docs/deploy.md, "Protection
    under load").
    """

    def allow(host: str) -> bool:
        """
        Count one datagram (parsed or not), stream message or new connection
        from IP address C{host} (the text the socket gives); whether to
        handle it.  Called for every datagram before anything else is done
        with it: for a banned source it costs one dictionary look-up.  Never
        raises.
        """

    def banned() -> dict[str, float]:
        """
        The sources banned now: each source's key (an IPv4 address, or an
        IPv6 network such as C{2001:db8:1:2::/64}) and the time
        (C{IReactorTime.seconds}) its ban ends.
        """

    def on_ban(observer: Callable[[], object]) -> None:
        """Call C{observer} (no arguments) each time a source gets banned."""


class ISIPTransport(Interface):
    """
    Sends SIP messages over UDP/TCP/TLS (RFC 3261 §18).  A transport error
    (ICMP unreachable, connection refused, no route) is raised as
    C{clicktodial.sip.transport.TransportError} (or C{OSError}); the
    transaction layer turns it into a local 503 (§17.1.4).
    """

    def send_request(request: Request, destination: Destination) -> None:
        """
        Send C{request} to C{destination} (§18.1.1).

        @raise clicktodial.sip.transport.TransportError: it cannot be sent.
        """

    def send_response(response: Response, source: object = None) -> None:
        """
        Send C{response} where §18.2.2 says (the top Via's C{received} /
        C{rport}, or C{source}, the handle the request came with).

        @raise clicktodial.sip.transport.TransportError: it cannot be sent.
        """

    def local_address(transport: str) -> tuple[str, int]:
        """
        The C{(host, port)} to put in the sent-by of a Via for C{transport}
        (C{"UDP"}, C{"TCP"}, C{"TLS"}).

        @raise clicktodial.sip.transport.TransportError: no such transport.
        """


class ISIPTap(Interface):
    """
    Sees every SIP message the transport sends or receives, as octets, e.g. to keep the
    messages of calls (L{clicktodial.calls.trace.CallTracer}). Called on the reactor
    thread for every message: it must be cheap and must not raise.
    """

    def message_passed(direction: str, message: Request | Response, data: bytes,
                       transport: str, local: tuple[str, int],
                       remote: tuple[str, int]) -> None:
        """
        C{message} (C{data}: its octets as on the wire) was sent (C{direction} C{out}) or
        received (C{in}) over C{transport} between C{local} and C{remote}
        (host, port).
        """


class ISendFailureHandler(Interface):
    """
    Optional capability of an L{IMessageHandler}: told when a request the
    transport accepted could not be delivered after all (a connection that
    could not be opened: refused, unreachable, timed out).  Errors known
    while sending are raised by L{ISIPTransport.send_request} instead.
    """

    def request_failed(request: Request, destination: Destination, reason: str) -> None:
        """
        C{request}, sent to C{destination}, never left: RFC 3261 §8.1.3.1 /
        §17.1.4, its client transaction ends at once with a local 503.
        Never raises.
        """


class IFlowKeeper(Interface):
    """
    Keeps the stream connections (TCP, TLS) phones registered over open
    while their bindings live: such a connection is the phone's only way in
    when it is behind NAT (RFC 5626 §5.3, RFC 3261 §18).  Provided by the
    SIP transport; the registrar calls it after each REGISTER it stored.
    """

    flow_timer = Attribute(
        "Seconds (int) within which a phone should send a keep-alive on an RFC 5626"
        " flow over TCP or TLS: the Flow-Timer of a 200 to REGISTER (§4.4.1).")

    def keep_flow(source: object, aor: str, until: float) -> None:
        """
        The connection C{source} (the handle a REGISTER came with) carries
        bindings of C{aor} until POSIX time C{until}: keep it open at least
        that long (plus a margin).  A C{until} in the past (a de-REGISTER)
        releases what C{aor} held.  A datagram source, or a connection that
        is gone or closing, is ignored.  Never raises.
        """


class ITransactionUser(Interface):
    """
    What the transaction layer calls (RFC 3261 §17: the "TU", our UA core).
    Responses to requests it sent go to the callback it passed to
    C{TransactionLayer.send_request}, not here.
    """

    def request_received(server_tx: ServerTransaction, request: Request) -> None:
        """
        A new request (never a retransmission, never ACK or CANCEL) created
        C{server_tx}; answer with C{server_tx.respond(response)}.  An INVITE
        not answered within 200 ms gets 100 Trying from the transaction.
        """

    def cancel_received(server_tx: ServerTransaction) -> None:
        """
        A CANCEL matched the INVITE server transaction C{server_tx}, which
        has no final response yet (RFC 3261 §9.2).  The layer already sent
        200 to the CANCEL; the user should answer the INVITE 487.
        """

    def ack_received(request: Request, source: object) -> None:
        """
        An ACK for a 2xx arrived (it matched no transaction, or one in
        RFC 6026 C{accepted}); ACKs for 300-699 are absorbed by the layer.
        """

    def stray_response(response: Response) -> None:
        """
        A response matched no client transaction (e.g. a 2xx retransmitted
        after Timer M: the user may ACK it again, RFC 6026 §7.2).
        """


# Appended by the dialog / user-agent core work (clicktodial.sip.useragent).
# The application side of the UA core: the click-to-dial B2BUA implements
# these, one ISessionHandler per call leg.


class ISessionHandler(Interface):
    """
    Receives the events of one call leg: an INVITE we sent (L{OutgoingCall})
    or received (L{IncomingCall}) and the L{Session}s (dialogs) it creates.
    Methods are called on the reactor thread and must not raise (exceptions
    are logged and swallowed).  A session surfaced to the handler ends with
    exactly one C{session_terminated}; a call that never got a 2xx ends with
    C{call_failed} (UAC) or C{call_cancelled} / the application's own
    C{reject} (UAS).
    """

    def call_provisional(call: OutgoingCall, response: Response,
                         session: Session | None) -> None:
        """
        UAC: a 1xx arrived.  C{session} is the early dialog it created or
        updated (a 101-199 with a To tag), else None.
        """

    def call_answered(call: OutgoingCall, session: Session, response: Response) -> None:
        """
        UAC: the first 2xx arrived; C{session} is confirmed.  If the INVITE
        had no offer, the 2xx carries one and the application must call
        C{session.ack(answer)}; otherwise the core has ACKed already.
        2xx from other forks are ACKed and BYEd without an event.
        """

    def call_failed(call: OutgoingCall, response: Response) -> None:
        """
        UAC: the INVITE ended without a session: a 300-699, a local 408
        (timeout) or 503 (transport error), or a local 487 when
        C{call.cancel()} made it end (also when a 2xx crossed the CANCEL, or
        came for an early dialog the application had BYEd: that 2xx is
        ACKed and BYEd).
        """

    def call_cancelled(call: IncomingCall) -> None:
        """UAS: the caller sent CANCEL (RFC 3261 §9.2); the core answered 487."""

    def session_confirmed(session: Session, ack: Request) -> None:
        """
        UAS: the ACK for our 2xx (to the INVITE or a re-INVITE) arrived;
        its body, if any, was the answer to the offer in our 2xx.
        """

    def request_received(session: Session, request: IncomingRequest) -> None:
        """
        A request inside the session other than BYE, ACK, CANCEL (re-INVITE,
        UPDATE, INFO, OPTIONS, ...): answer with C{request.respond(...)}, now
        or later.  Glare, CSeq order and offer conflicts were handled before.
        """

    def session_terminated(session: Session, reason: str) -> None:
        """
        The session ended: C{"local-bye"}, C{"remote-bye"}, C{"no-ack"} (our
        2xx was never ACKed, §13.3.1.4), C{"remote-481"}, C{"timeout"}.
        Nothing of it remains in the core afterwards.
        """


class IIncomingCallHandler(Interface):
    """What the UA core hands requests outside any dialog to."""

    def incoming_call(call: IncomingCall) -> ISessionHandler | None:
        """
        A new INVITE.  Answer it with C{call.provisional()},
        C{call.accept(sdp)} or C{call.reject(status)}, now or later.

        @return: the handler for this call's events (None keeps a default
            that ignores them).
        """

    def request_received(request: IncomingRequest) -> None:
        """
        A request outside any dialog other than INVITE (OPTIONS, MESSAGE,
        ...): answer with C{request.respond(...)}.
        """


# Appended by the click-to-dial call controller work (clicktodial.calls).
# Values: clicktodial.calls.events.CallInfo, clicktodial.calls.policy.CallRequest;
# errors: clicktodial.calls.policy.CallRefused.


class ICallEventListener(Interface):
    """
    Told about every change of a click-to-dial call's public state
    (C{calling-caller}, C{calling-callee}, C{connected}, C{ended},
    C{failed}), e.g. by the web layer to show calls live.  Called on the
    reactor thread; must not raise (exceptions are logged and swallowed).
    """

    def call_state_changed(info: CallInfo) -> None:
        """The call C{info.call_id} entered C{info.state}."""


class ICallController(Interface):
    """
    Runs click-to-dial calls: "caller X calls callee Y" as RFC 3725 third
    party call control, X's phone rung first, Y's when X answers.
    """

    def place_call(caller_username: str, callee_username: str) -> Deferred[CallInfo]:
        """
        Check the call-control policy, look up both users' bindings, record
        the call and ring the caller's phones.

        @return: fires with the L{CallInfo} of the new call once its first
            INVITEs are out (state C{calling-caller}), or already C{failed}
            when a party has no binding (end reason C{caller-unreachable}
            / C{callee-unreachable}); fails with
            L{CallRefused<clicktodial.calls.policy.CallRefused>} when a user
            is unknown or disabled or the policy forbids the call.
        """

    def hang_up(call_id: str, by_username: str | None = None) -> bool:
        """
        End the call at whatever stage it is: CANCEL ringing phones, BYE
        answered ones.  C{by_username} is recorded as who hung up (the
        caller, the callee, or anyone else: C{system}).

        @return: L{True} if the call was in progress here, else L{False}.
        """

    def get_call(call_id: str) -> CallInfo | None:
        """
        @return: the L{CallInfo} of a call in progress on this controller,
            or L{None} (ended calls are in the call record store).
        """

    def active_calls() -> list[CallInfo]:
        """@return: the calls in progress here, oldest first."""

    def subscribe(listener: ICallEventListener) -> Callable[[], None]:
        """
        Tell C{listener} about every call state change from now on.

        @return: a function that unsubscribes it.
        """


class IMediaFlow(Interface):
    """
    How a click-to-dial call sets up media between the two phones (an RFC
    3725 flow): what the controller sends when each phone answers.  The
    controller always INVITEs the caller without SDP, so the caller's 2xx
    carries an offer.  The flow drives the call through L{IBridge}.
    """

    name = Attribute("The flow's name, e.g. 'flow1' or 'flow4': str.")

    def caller_answered(bridge: IBridge, offer: bytes) -> None:
        """
        The caller's phone answered with C{offer}: answer it now or later
        (L{IBridge.ack_caller}) and ring the callee (L{IBridge.invite_callee}).
        """

    def callee_answered(bridge: IBridge, sdp: bytes | None) -> None:
        """
        The callee's phone answered with C{sdp} (an answer to the offer the
        flow sent it, or its own offer): finish the offer/answer exchanges
        and call L{IBridge.bridged} (or L{IBridge.bridge_failed}).
        """


class IBridge(Interface):
    """
    What a call offers an L{IMediaFlow}.  SDP passed in is relayed to the
    named leg with the origin (o=) line that leg has seen from us, its
    version bumped when the description changed (RFC 3264 §8).
    """

    caller_offer = Attribute("The offer in the caller's 2xx: bytes.")

    def ack_caller(answer: bytes) -> None:
        """ACK the caller's 2xx with C{answer} (relayed)."""

    def held_answer(offer: bytes) -> bytes:
        """
        An answer to C{offer} that puts every stream on hold (a=inactive,
        connection address 0.0.0.0): RFC 3725 §5 Flow IV's answer1.
        """

    def invite_callee(offer: bytes | None) -> None:
        """Ring the callee's phones, with C{offer} (relayed) or without SDP."""

    def ack_callee(answer: bytes | None) -> None:
        """ACK the callee's 2xx, with C{answer} (relayed) if it carried an offer."""

    def reinvite_caller(offer: bytes, answered: Callable[[bytes], None]) -> None:
        """
        Re-INVITE the caller with C{offer} (relayed, m-lines padded to the
        number the caller's session has); C{answered} gets the caller's
        answer.  A failure ends the call.
        """

    def bridged() -> None:
        """Media is set up: the call is connected."""

    def bridge_failed(status: int) -> None:
        """The offer/answer exchange failed with C{status}: end the call."""


class ICallPolicy(Interface):
    """
    A call-control policy, chosen by name in C{[calls] policy}: who may call
    whom, how many calls run at once, and the media flow to use.
    """

    name = Attribute("The name it is chosen by: str.")
    flow = Attribute("The L{IMediaFlow} calls use.")

    def authorize(request: CallRequest) -> None:
        """
        Decide whether C{request} may be placed.

        @raise clicktodial.calls.policy.CallRefused: it may not (its
            C{reason} says why: C{forbidden}, C{caller-limit},
            C{callee-limit}, C{total-limit}, C{same-user}).
        """


class ICallPolicyFactory(Interface):
    """
    A named policy, registered as an C{importlib.metadata} entry point in
    the group C{clicktodial.call_policies}.
    """

    def create(settings: CallsConfig) -> ICallPolicy:
        """
        @param settings: the C{[calls]} section.
        @return: the policy.
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
    the channel C{bus_connected} (C{clicktodial.cluster.bus.CONNECTED}) with
    C{{"node": node_id}}: they resynchronise.  Callbacks run on the reactor thread; an
    exception from one is logged and swallowed.
    """

    node_id = Attribute("This node's name, put in every message as C{node}: str.")

    def publish(channel: str, payload: Mapping[str, object]) -> Deferred[bool]:
        """
        Send C{payload} (JSON-serialisable) with C{node} set to
        C{node_id}.

        @param channel: C{[a-z][a-z0-9_]*}, at most 40 characters.
        @raise ValueError: a bad channel name, a payload that is not
            JSON-serialisable or whose JSON is 8000 bytes or more (the
            PostgreSQL NOTIFY limit).
        @return: fires with L{True} once sent, L{False} if it could not be
            (the failure is logged); never fails.
        """

    def subscribe(channel: str,
                  callback: Callable[[dict[str, object]], None]) -> Callable[[], None]:
        """
        Call C{callback} with every message on C{channel} from now on.

        @raise ValueError: a bad channel name.
        @return: a function that unsubscribes it.
        """
