"""
Registering with the provider (RFC 3261 §10.2), as a client through our transaction layer.

The machine is the table :attr:`TrunkRegistration._TABLE`: for each state
(:class:`~clicktodial.trunks.values.RegistrationState`) and input (:class:`Input`), the
action to run; an action that changes state says so, and the one pending timer (refresh or
retry) is state data, cancelled by whatever leaves the state. In short::

    off          --start-------------------> registering (resolve the proxy, RFC 3263)
    registering  --resolved----------------> registering (REGISTER to the first target)
    registering  --challenge (401/407)-----> registering (answered once, CSeq + 1)
    registering  --too_brief (423)---------> registering (asks for Min-Expires)
    registering  --try_next (408/5xx)------> registering (next target), or failed
    registering  --ok (2xx)----------------> registered  (timer: refresh at half the grant)
    registering  --refused, unresolved-----> failed      (timer: retry with backoff)
    registered   --timer-------------------> registered  (a refresh round: same inputs;
                                                          shown registered meanwhile)
    failed       --timer-------------------> registering
    any          --stop--------------------> off (REGISTER Expires: 0 if registered)

A refresh reuses the last nonce (``nc`` + 1) so it normally costs one transaction; a
challenge is answered once per round, so a wrong password is a failure, never a loop. A
retry waits ``retry_base`` seconds, doubled with each failure in a row up to
``retry_max``, with ±20 % jitter (daemons do not retry in step). Responses of an earlier
round are dropped before they become inputs. Every timer is on the injected clock.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from clicktodial.sip.address import Destination
from clicktodial.sip.headers import HeaderParseError
from clicktodial.sip.message import Request, Response, new_call_id, new_tag
from clicktodial.sip.ua import TransactionLayerLike
from clicktodial.sip.ua.auth import ChallengeRefused, DigestAnswerer
from clicktodial.sip.uri import parse_uri
from clicktodial.trunks.values import RegistrationState, RegistrationStatus

__all__ = ["Event", "Input", "TrunkRegistration", "classify", "refresh_delay"]

log = Logger(namespace="clicktodial.trunks.registration")

OFF = RegistrationState.OFF
REGISTERING = RegistrationState.REGISTERING
REGISTERED = RegistrationState.REGISTERED
FAILED = RegistrationState.FAILED

#: Responses after which the next RFC 3263 target is tried at once (RFC 3263 §4.3).
_TRY_NEXT = frozenset({408, 500, 503, 504})
#: The longest expiry we ask for, whatever a 423 says.
_MAX_EXPIRES = 86400


class Input(enum.StrEnum):
    """What the machine reacts to."""

    START = "start"
    STOP = "stop"
    TIMER = "timer"
    RESOLVED = "resolved"
    UNRESOLVED = "unresolved"
    OK = "ok"
    CHALLENGE = "challenge"
    TOO_BRIEF = "too_brief"
    TRY_NEXT = "try_next"
    REFUSED = "refused"


def classify(response: Response) -> Input:
    """The input a final response to our REGISTER is."""
    status = response.status
    if 200 <= status < 300:
        return Input.OK
    if status in (401, 407):
        return Input.CHALLENGE
    if status == 423:
        return Input.TOO_BRIEF
    if status in _TRY_NEXT:
        return Input.TRY_NEXT
    return Input.REFUSED


def refresh_delay(granted: float) -> float:
    """When to refresh a binding granted for ``granted`` seconds: at half of it (never
    sooner than one second), so the second half is left for retries and fail-over before
    the provider forgets us."""
    return max(1.0, granted / 2)


@attrs.define
class _Round:
    """One attempt to register: the targets, which one, what was sent, whether answered."""

    number: int
    targets: list[Destination] = attrs.field(factory=list)
    index: int = 0
    request: Request | None = None
    challenged: bool = False


@attrs.frozen
class Event:
    """An input with what came with it."""

    input: Input
    response: Response | None = None
    targets: list[Destination] | None = None
    reason: str = ""


Action = Callable[["TrunkRegistration", Event], None]


class TrunkRegistration(Service):
    """
    Keeps one registration with a provider.

    :param destinations: resolves the proxy (RFC 3263): the targets to try, in order.
    :param aor: our address of record at the provider (``sip:user@domain``).
    :param registrar_uri: the REGISTER Request-URI (``sip:domain``, RFC 3261 §10.2).
    :param answerer: answers the provider's challenges with the trunk's credentials.
    :ivar unexpected: inputs that had no transition in their state (logged too).
    """

    def __init__(
        self,
        clock: IReactorTime,
        transactions: TransactionLayerLike,
        destinations: Callable[[], Deferred[list[Destination]]],
        *,
        trunk: str,
        aor: str,
        registrar_uri: str,
        answerer: DigestAnswerer,
        expires: int,
        user_agent: str | None = None,
        retry_base: float = 30.0,
        retry_max: float = 600.0,
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        self.transactions = transactions
        self.destinations = destinations
        self.trunk = trunk
        self.aor = aor
        self.registrar_uri = parse_uri(registrar_uri)
        self.answerer = answerer
        self.expires = expires
        self.user_agent = user_agent
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.rng = rng if rng is not None else random.Random()
        self.state = OFF
        self.reason: str | None = None
        self.expires_at: float | None = None
        self.failures = 0
        self.unexpected = 0
        #: REGISTERs sent (each transaction, challenges answered included)
        self.requests_sent = 0
        self._timer: IDelayedCall | None = None
        self._round = _Round(0)
        self._call_id = new_call_id()
        self._from_tag = new_tag()
        self._cseq = 0
        self._asked = expires
        self._contact: str | None = None

    def status(self) -> RegistrationStatus:
        """The registration as it stands now (the admin page and /metrics read it)."""
        return RegistrationStatus(self.state, self.reason, self.expires_at, self.failures)

    # -- inputs ------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.react(Event(Input.START))

    def stopService(self) -> None:
        super().stopService()
        self.react(Event(Input.STOP))

    def react(self, event: Event) -> None:
        """Run the transition for ``event`` in the current state (see the module)."""
        action = self._TABLE.get((self.state, event.input))
        if action is None:
            self.unexpected += 1
            log.warn("trunk {trunk}: no transition for {input} in state {state}",
                     trunk=self.trunk, input=str(event.input), state=str(self.state))
            return
        action(self, event)

    def _in_round(self, number: int) -> Callable[[Event], None]:
        """Feeds an event to the machine only while round ``number`` is the current one."""
        def feed(event: Event) -> None:
            if number == self._round.number:
                self.react(event)
        return feed

    def _set_timer(self, delay: float | None) -> None:
        old, self._timer = self._timer, None
        if old is not None and old.active():
            old.cancel()
        if delay is not None:
            self._timer = self.clock.callLater(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self.react(Event(Input.TIMER))

    # -- actions -----------------------------------------------------------------------

    def _begin(self, event: Event) -> None:
        """A new round: resolve the proxy (RFC 3263), then REGISTER."""
        if self.state is not REGISTERED:
            self.state = REGISTERING
        self._set_timer(None)
        self._round = _Round(self._round.number + 1)
        self._asked = self.expires
        feed = self._in_round(self._round.number)
        self.destinations().addCallbacks(
            lambda targets: feed(Event(Input.RESOLVED, targets=targets)),
            lambda failure: feed(Event(Input.UNRESOLVED,
                                        reason=f"DNS: {failure.getErrorMessage()}")),
        )

    def _retry(self, event: Event) -> None:
        self.answerer.forget()  # a fresh start: a new challenge
        self._begin(event)

    def _resolved(self, event: Event) -> None:
        assert event.targets
        self._round.targets = event.targets
        self._round.index = 0
        self._send(preemptive=True)

    def _registered(self, event: Event) -> None:
        assert event.response is not None
        granted = self._granted(event.response)
        if granted <= 0:
            self._fail(Event(Input.REFUSED, reason="the provider granted an expiry of 0"))
            return
        self.state = REGISTERED
        self.reason = None
        self.failures = 0
        self.expires_at = self.clock.seconds() + granted
        delay = refresh_delay(granted)
        log.info("trunk {trunk}: registered for {granted} s, refreshing in {delay} s",
                 trunk=self.trunk, granted=granted, delay=delay)
        self._set_timer(delay)

    def _answer_challenge(self, event: Event) -> None:
        assert event.response is not None and self._round.request is not None
        if self._round.challenged:
            # Answered once this round already: the provider refused our credentials.
            self._fail(Event(Input.REFUSED, reason=(
                f"{event.response.status}: the provider refused our credentials")))
            return
        try:
            answer = self.answerer.answer(self._round.request, event.response)
        except ChallengeRefused as e:
            self._fail(Event(Input.REFUSED, reason=str(e)))
            return
        self._round.challenged = True
        request = self._request(self._round.targets[self._round.index], self._asked)
        request.headers.add(*answer)
        self._transmit(request)

    def _ask_longer(self, event: Event) -> None:
        assert event.response is not None
        text = (event.response.headers.get("Min-Expires") or "").strip()
        if not text.isdigit() or not self._asked < int(text) <= _MAX_EXPIRES:
            self._fail(Event(Input.REFUSED, reason="423 without a usable Min-Expires"))
            return
        self._asked = int(text)
        self._send(preemptive=True)

    def _next_target(self, event: Event) -> None:
        round_ = self._round
        reason = event.reason or _describe(event.response)
        if round_.index + 1 >= len(round_.targets):
            self._fail(Event(Input.REFUSED, reason=reason))
            return
        log.info("trunk {trunk}: {target} failed ({reason}), trying the next target",
                 trunk=self.trunk, target=str(round_.targets[round_.index]), reason=reason)
        round_.index += 1
        round_.challenged = False
        self._send(preemptive=True)

    def _fail(self, event: Event) -> None:
        """Failed: the reason shown; the binding we may still hold kept until it ends."""
        reason = event.reason or _describe(event.response)
        self._round = _Round(self._round.number + 1)  # late answers are dropped
        self.state = FAILED
        self.reason = reason
        self.failures += 1
        if self.expires_at is not None and self.expires_at <= self.clock.seconds():
            self.expires_at = None
        delay = min(self.retry_max, self.retry_base * 2 ** (self.failures - 1))
        delay *= self.rng.uniform(0.8, 1.2)
        log.warn("trunk {trunk}: registration failed: {reason}; retrying in {delay:.0f} s",
                 trunk=self.trunk, reason=reason, delay=delay)
        self._set_timer(delay)

    def _stop(self, event: Event) -> None:
        was_registered = self.state is REGISTERED
        targets = self._round.targets
        index = self._round.index
        self._set_timer(None)
        self._round = _Round(self._round.number + 1)
        self.state = OFF
        if was_registered and targets:
            # RFC 3261 §10.2.2: remove our binding; nobody waits for the answer.
            destination = targets[index]
            request = self._request(destination, expires=0)
            answer = self.answerer.preemptive(request)
            if answer is not None:
                request.headers.add(*answer)
            try:
                self.transactions.send_request(request, destination, lambda response: None)
            except (OSError, ValueError) as e:
                log.info("trunk {trunk}: unregister not sent: {error}", trunk=self.trunk,
                         error=str(e))

    def _ignore(self, event: Event) -> None:
        pass

    _TABLE: dict[tuple[RegistrationState, Input], Action] = {
        (OFF, Input.START): _begin,
        (OFF, Input.STOP): _ignore,
        (REGISTERING, Input.STOP): _stop,
        (REGISTERED, Input.STOP): _stop,
        (FAILED, Input.STOP): _stop,
        (REGISTERED, Input.TIMER): _begin,  # refresh
        (FAILED, Input.TIMER): _retry,
        (REGISTERING, Input.RESOLVED): _resolved,
        (REGISTERING, Input.UNRESOLVED): _fail,
        (REGISTERING, Input.OK): _registered,
        (REGISTERING, Input.CHALLENGE): _answer_challenge,
        (REGISTERING, Input.TOO_BRIEF): _ask_longer,
        (REGISTERING, Input.TRY_NEXT): _next_target,
        (REGISTERING, Input.REFUSED): _fail,
        # A refresh round: the same, while the binding still holds.
        (REGISTERED, Input.RESOLVED): _resolved,
        (REGISTERED, Input.UNRESOLVED): _fail,
        (REGISTERED, Input.OK): _registered,
        (REGISTERED, Input.CHALLENGE): _answer_challenge,
        (REGISTERED, Input.TOO_BRIEF): _ask_longer,
        (REGISTERED, Input.TRY_NEXT): _next_target,
        (REGISTERED, Input.REFUSED): _fail,
    }

    # -- messages ----------------------------------------------------------------------

    def _send(self, preemptive: bool) -> None:
        request = self._request(self._round.targets[self._round.index], self._asked)
        if preemptive:
            answer = self.answerer.preemptive(request)
            if answer is not None:
                request.headers.add(*answer)
        self._transmit(request)

    def _transmit(self, request: Request) -> None:
        round_ = self._round
        if not round_.challenged:
            self.answerer.new_request()  # a new REGISTER: its first challenge is answered
        destination = round_.targets[round_.index]
        round_.request = request
        feed = self._in_round(round_.number)

        def answered(response: Response) -> None:
            if response.status >= 200 and round_.request is request:
                feed(Event(classify(response), response=response))

        self.requests_sent += 1
        try:
            self.transactions.send_request(request, destination, answered)
        except (OSError, ValueError) as e:
            feed(Event(Input.TRY_NEXT, reason=f"cannot send to {destination}: {e}"))

    def _request(self, destination: Destination, expires: int) -> Request:
        self._cseq += 1
        host, port = self.transactions.transport.local_address(destination.transport)
        transport = destination.transport.lower()
        contact_host = f"[{host}]" if ":" in host else host
        self._contact = f"sip:{parse_uri(self.aor).user}@{contact_host}:{port}" + (
            "" if transport == "udp" else f";transport={transport}")
        fields = [
            ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={self._from_tag}"),
            ("To", f"<{self.aor}>"),
            ("Call-ID", self._call_id),
            ("CSeq", f"{self._cseq} REGISTER"),
            ("Contact", f"<{self._contact}>"),
            ("Expires", str(expires)),
        ]
        if self.user_agent:
            fields.append(("User-Agent", self.user_agent))
        return Request("REGISTER", self.registrar_uri, fields, b"")

    def _granted(self, response: Response) -> int:
        """RFC 3261 §10.2.4: our Contact's expires in the 2xx, else its Expires header,
        else what we asked for (some providers rewrite the Contact)."""
        try:
            contacts = response.contacts
        except (HeaderParseError, ValueError):
            contacts = []
        ours = parse_uri(self._contact) if self._contact else None
        for contact in contacts:
            if ours is not None and contact.uri == ours:
                value = contact.params.get("expires")
                if value is not None and value.isdigit():
                    return int(value)
        expires = (response.headers.get("Expires") or "").strip()
        return int(expires) if expires.isdigit() else self._asked


def _describe(response: Response | None) -> str:
    return f"{response.status} {response.reason}" if response is not None else "failed"
