"""
Test harness for the call controller: the daemon's UA core and two (or more)
fake phones on one :class:`FaultyNetwork`, a memory store with users and bindings,
and a :class:`CallController` on a fake clock.

Typical use::

    world = CallWorld(policy="flow4")
    alice = world.phone("alice", "127.0.0.2")
    bob = world.phone("bob", "127.0.0.3", answer=Answer(delay=2))
    info = world.place("alice", "bob")
    world.run(5)
    assert world.controller.get_call(info.call_id).state == "connected"
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet.defer import Deferred
from zope.interface import implementer

from clicktodial.calls.controller import CallController, settings_from_config
from clicktodial.calls.directory import CachedDirectory
from clicktodial.calls.events import CallInfo
from clicktodial.calls.policy import CallRefused, create_policy
from clicktodial.calls.trace import CallTracer
from clicktodial.config import CallsConfig
from clicktodial.interfaces import ICallEventListener, ITrunkRegistry
from clicktodial.netaddr import NetworkSet
from clicktodial.sip.message import Request, Response
from clicktodial.sip.parser import parse_message
from clicktodial.sip.sdp import SDP_CONTENT_TYPE
from clicktodial.sip.transactions import Timers
from clicktodial.sip.ua import IncomingRequest, Session
from clicktodial.store.memory import MemoryStore
from clicktodial.store.traces import TraceLimits
from clicktodial.store.values import BindingChanges, CallRecord, ContactChange, user_aor
from clicktodial.testing.fakes import InlineReactor, InlineThreadPool
from clicktodial.testing.sipfakes import FaultyEndpoint, FaultyNetwork, run_for
from clicktodial.testing.uafakes import Answer, Party, sdp

__all__ = ["DOMAIN", "CallWorld", "Phone", "Wire", "answer_reinvites"]

DOMAIN = "example.test"
DAEMON = ("127.0.0.1", 5060)


@attrs.frozen
class Wire:
    """One datagram seen on the network, parsed."""

    time: float
    sender: tuple[str, int]
    to: tuple[str, int]
    message: Request | Response

    @property
    def method(self) -> str | None:
        """The request method, or the CSeq method of a response."""
        if isinstance(self.message, Request):
            return self.message.method
        return None

    @property
    def status(self) -> int | None:
        """The response status, or None."""
        return self.message.status if isinstance(self.message, Response) else None


def answer_reinvites(
    owner: str, host: str = "127.0.0.1"
) -> Callable[[Session, IncomingRequest], object]:
    """
    An ``on_request`` answering re-INVITE offers with a fresh description of ``owner``
    (media at ``host``).
    """
    versions = [1]

    def on_request(session: Session, request: IncomingRequest) -> None:
        if request.method == "INVITE" and request.offer is not None:
            versions[0] += 1
            request.respond(200, body=sdp(owner, versions[0], host), content_type=SDP_CONTENT_TYPE)
        elif request.method in ("INVITE", "UPDATE", "INFO", "OPTIONS"):
            local = session.dialog.offer_answer.local_sdp
            if request.method == "INVITE" and local is not None:
                request.respond(200, body=local, content_type=SDP_CONTENT_TYPE)
            else:
                request.respond(200)
        else:
            request.respond(501)

    return on_request


class Phone(Party):
    """A fake phone: a :class:`Party` whose re-INVITE offers get answers."""

    @property
    def sessions(self) -> list[Session]:
        """Its live sessions."""
        return self.ua.sessions


@implementer(ICallEventListener)
class _Events:
    def __init__(self) -> None:
        self.seen: list[CallInfo] = []

    def call_state_changed(self, info: CallInfo) -> None:
        self.seen.append(info)


class HeldCallRecords:
    """Call records whose creation waits until the test fires it (a busy database): put in
    a controller's ``records``; each ``create_call`` adds its Deferred to ``pending``."""

    def __init__(self) -> None:
        self.pending: list[Deferred[str]] = []

    def create_call(
        self, caller: str, callee: str, created_at: float, node: str | None = None
    ) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        self.pending.append(d)
        return d


class CallWorld:
    """The daemon (UA core + controller + memory store) and phones on one network."""

    def __init__(
        self,
        policy: str = "flow4",
        seed: int = 1,
        timers: Timers | None = None,
        trusted_paths: NetworkSet | None = None,
        trace: TraceLimits | None = None,
        trunks: ITrunkRegistry | None = None,
        **settings: object,
    ) -> None:
        self.clock = InlineReactor()
        self.net = FaultyNetwork(self.clock, seed=seed)
        self.timers = timers or Timers()
        self.wire: list[Wire] = []
        #: Addresses whose datagrams (to or from) are dropped.
        self.blackholed: set[tuple[str, int]] = set()
        self._tap_network()
        # As the daemon's SIPStack builds it: every dialog pinned to its flow.
        self.daemon = Party.on_network(
            self.clock, self.net, *DAEMON, "clicktodial", self.timers, pin_flows=True
        )
        self.store = MemoryStore(self.clock, realm=DOMAIN, hash_pool=InlineThreadPool())
        self.config = CallsConfig(policy=policy, **settings)  # type: ignore[arg-type]
        #: Users and bindings as the daemon's controller sees them: cached; bind() goes
        #: through it as the registrar does.
        self.directory = CachedDirectory(self.clock, self.store, self.store)
        #: With ``trace``: the calls' traces, fed by the network as the daemon's transport
        #: tap would be (what the daemon's endpoint sends and receives).
        self.tracer = (
            CallTracer(self.clock, self.store, trace, linger=self.timers.timeout)
            if trace is not None
            else None
        )
        self.controller = CallController(
            self.clock,
            self.daemon.ua,
            users=self.directory,
            locations=self.directory,
            records=self.store,
            policy=create_policy(self.config),
            settings=settings_from_config(self.config, self.timers.timeout),
            domain=DOMAIN,
            trusted_paths=trusted_paths,
            tracer=self.tracer,
            trunks=trunks,
        )
        self.events = _Events()
        self.controller.subscribe(self.events)
        self.phones: list[Phone] = []
        self._cseq = 0

    def _tap_network(self) -> None:
        carry = self.net.carry

        def tapped(data: bytes, sender: FaultyEndpoint, to: tuple[str, int]) -> None:
            origin = (sender.host, sender.port)
            message = parse_message(data)
            self.wire.append(Wire(self.clock.seconds(), origin, to, message))
            tracer = self.tracer
            if tracer is not None and origin == DAEMON:
                tracer.message_passed("out", message, data, "UDP", DAEMON, to)
            if origin in self.blackholed or to in self.blackholed:
                return
            if tracer is not None and to == DAEMON:
                tracer.message_passed("in", parse_message(data), data, "UDP", DAEMON, origin)
            carry(data, sender, to)

        self.net.carry = tapped  # type: ignore[method-assign]

    def user(self, username: str, display_name: str = "", *, is_admin: bool = False) -> None:
        """Create a user (no passwords: the controller does not need them)."""
        self.store.add_user(username, display_name=display_name, is_admin=is_admin)

    def bind(
        self,
        username: str,
        contact: str,
        *,
        received: str | None = None,
        path: tuple[str, ...] = (),
        q: float | None = None,
    ) -> None:
        """Add a binding for ``username``, as a REGISTER would."""
        self._cseq += 1
        changes = BindingChanges(
            call_id=f"reg-{username}-{self._cseq}@test",
            cseq=self._cseq,
            contacts=(ContactChange(contact, 3600, q=q),),
            path=path,
            received=received,
        )
        self.directory.update_bindings(user_aor(username, DOMAIN), changes, self.clock.seconds())

    def phone(
        self,
        username: str,
        host: str,
        port: int = 5060,
        answer: Answer | None = None,
        display_name: str | None = None,
        *,
        create_user: bool = True,
    ) -> Phone:
        """A phone at ``host``:``port``, registered for ``username`` (created if needed)."""
        if create_user:
            self.user(username, display_name if display_name is not None else username.title())
        # By default its media is at its own address, as the daemon's ringback requires.
        media_host = host if answer is None else "127.0.0.1"
        answer = answer if answer is not None else Answer(sdp=sdp(f"{username}-{host}", host=host))
        endpoint = self.net.endpoint(host, port)
        phone = Phone(self.clock, endpoint, host, port, username, self.timers, answer, seed=0)
        endpoint.attach(phone.layer)
        phone.app.on_request = answer_reinvites(f"{username}-{host}", media_host)
        self.bind(
            username, f"sip:{username}@{host}:{port}", received=f"sip:{host}:{port};transport=udp"
        )
        self.phones.append(phone)
        return phone

    def place(self, caller: str, callee: str) -> CallInfo:
        """Place a call; the Deferred must have fired (memory store)."""
        results: list[object] = []
        d: Deferred[CallInfo] = self.controller.place_call(caller, callee)
        d.addBoth(results.append)
        assert results, "place_call did not fire"
        result = results[0]
        if not isinstance(result, CallInfo):
            result.raiseException()  # type: ignore[attr-defined]
        assert isinstance(result, CallInfo)
        return result

    def refusal(self, caller: str, callee: str) -> CallRefused:
        """Place a call that must be refused at once (policy, users); the refusal."""
        failures: list[object] = []
        self.controller.place_call(caller, callee).addErrback(failures.append)
        assert failures, "place_call did not fail"
        error = failures[0].value  # type: ignore[attr-defined]
        assert isinstance(error, CallRefused), error
        return error

    def run(self, seconds: float) -> None:
        """Advance the clock in small steps."""
        run_for(self.clock, seconds)

    def record(self, call_id: str) -> CallRecord:
        """The call's record in the store."""
        results: list[CallRecord | None] = []
        self.store.get_call(call_id).addCallback(results.append)
        record = results[0]
        assert record is not None
        return record

    def states(self, call_id: str) -> list[str]:
        """The states published for the call, in order."""
        return [info.state for info in self.events.seen if info.call_id == call_id]

    def sent(
        self, method: str | None = None, status: int | None = None, to: str | None = None
    ) -> list[Wire]:
        """Datagrams on the wire, filtered by method / status / destination host."""
        return [
            w
            for w in self.wire
            if (method is None or w.method == method)
            and (status is None or w.status == status)
            and (to is None or w.to[0] == to)
        ]

    def assert_quiescent(self) -> None:
        """After the call: no session, transaction, call, write or timer is left."""
        self.run(self.timers.timeout + 8)
        for party in [self.daemon, *self.phones]:
            assert party.ua.active_count == 0, (party.user, party.ua.sessions)
            assert party.layer.active_count == 0, party.user
        assert self.controller.active_calls() == []
        assert self.controller.pending_writes == 0
        assert self.clock.getDelayedCalls() == []
