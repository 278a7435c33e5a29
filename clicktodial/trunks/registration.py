"""
Registering with the provider (RFC 3261 §10.2), as a client through our transaction layer.

The machine, in one place (states as :class:`~clicktodial.trunks.values.RegistrationState`;
the pending timer is state data, cancelled by the transition leaving the state)::

    registering --2xx--------------------------> registered (timer: refresh)
    registering --401/407 answered-------------> registering (same round, CSeq + 1)
    registering --423 Min-Expires--------------> registering (asks for Min-Expires)
    registering --408/503/5xx, more targets----> registering (next RFC 3263 target)
    registering --other final, DNS failure-----> failed (timer: retry with backoff)
    registered  --refresh timer----------------> registering, shown as registered
    failed      --retry timer------------------> registering
    any         --stop-------------------------> off (REGISTER Expires: 0 if registered)

A refresh goes out at half the expiry the provider granted (the other half is left for
retries and the next target before the binding ends). A refresh reuses the last nonce (``nc`` + 1) so it normally costs
one transaction; the provider challenging again is answered once per round. A retry after
a failure waits ``retry_base`` seconds, doubled with each failure in a row up to
``retry_max``, with ±20 % jitter (so many daemons do not retry in step).

Every timer is on the injected clock; responses of an earlier round are ignored.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from clicktodial.sip.address import Destination
from clicktodial.sip.headers import HeaderParseError
from clicktodial.sip.message import Request, Response, new_call_id, new_tag
from clicktodial.sip.uri import parse_uri
from clicktodial.sip.useragent import TransactionLayerLike
from clicktodial.trunks.auth import ChallengeRefused, DigestAnswerer
from clicktodial.trunks.values import RegistrationState, RegistrationStatus

__all__ = ["TrunkRegistration", "refresh_delay"]

log = Logger(namespace="clicktodial.trunks.registration")

#: Responses after which the next RFC 3263 target is tried at once (§4.3 of RFC 3263).
_TRY_NEXT = frozenset({408, 500, 503, 504})


def refresh_delay(granted: float) -> float:
    """When to refresh a binding granted for ``granted`` seconds: at half of it (never
    sooner than one second), so the second half is left for retries and fail-over before
    the provider forgets us."""
    return max(1.0, granted / 2)


class TrunkRegistration(Service):
    """
    Keeps one registration with a provider.

    :param destinations: resolves the proxy (RFC 3263): the targets to try, in order.
    :param aor: our address of record at the provider (``sip:user@domain``).
    :param registrar_uri: the REGISTER Request-URI (``sip:domain``, RFC 3261 §10.2).
    :param answerer: answers the provider's challenges with the trunk's credentials.
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
        self.state = RegistrationState.OFF
        self.reason: str | None = None
        self.expires_at: float | None = None
        self.failures = 0
        #: REGISTERs sent (each transaction, challenges answered included)
        self.requests_sent = 0
        self._timer: IDelayedCall | None = None
        self._round = 0
        self._call_id = new_call_id()
        self._from_tag = new_tag()
        self._cseq = 0
        self._asked = expires
        self._contact: str | None = None
        self._last_destination: Destination | None = None

    # -- what the admin page and /metrics read ---------------------------------------

    def status(self) -> RegistrationStatus:
        """The registration as it stands now."""
        return RegistrationStatus(self.state, self.reason, self.expires_at, self.failures)

    # -- service -----------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._set_timer(None)
        self.state = RegistrationState.REGISTERING
        self._start_round()

    def stopService(self) -> None:
        super().stopService()
        self._set_timer(None)
        self._round += 1  # late responses of the last round are ignored
        was = self.state
        self.state = RegistrationState.OFF
        if was is RegistrationState.REGISTERED and self._last_destination is not None:
            # RFC 3261 §10.2.2: remove our binding; nobody waits for the answer.
            request = self._request(self._last_destination, expires=0)
            answer = self.answerer.preemptive(request)
            if answer is not None:
                request.headers.add(answer.name, answer.value)
            try:
                self.transactions.send_request(request, self._last_destination,
                                               lambda response: None)
            except (OSError, ValueError) as e:
                log.info("trunk {trunk}: unregister not sent: {error}", trunk=self.trunk,
                         error=str(e))

    # -- transitions -------------------------------------------------------------------

    def _set_timer(self, timer: IDelayedCall | None) -> None:
        old, self._timer = self._timer, timer
        if old is not None and old.active():
            old.cancel()

    def _start_round(self) -> None:
        self._set_timer(None)
        self._round += 1
        round_ = self._round
        self._asked = self.expires
        self.destinations().addCallbacks(
            lambda targets: self._send(round_, targets, 0, challenged=False),
            lambda failure: self._failed(round_, f"DNS: {failure.getErrorMessage()}"),
        )

    def _send(self, round_: int, targets: list[Destination], index: int,
              challenged: bool, preemptive: bool = True) -> None:
        if round_ != self._round:
            return
        destination = targets[index]
        request = self._request(destination, expires=self._asked)
        if preemptive:
            answer = self.answerer.preemptive(request)
            if answer is not None:
                request.headers.add(answer.name, answer.value)

        def answered(response: Response) -> None:
            if response.status >= 200 and round_ == self._round:
                self._answered(round_, targets, index, challenged, request, response)

        self.requests_sent += 1
        self._last_destination = destination
        try:
            self.transactions.send_request(request, destination, answered)
        except (OSError, ValueError) as e:
            self._next_target(round_, targets, index, f"cannot send to {destination}: {e}")

    def _answered(self, round_: int, targets: list[Destination], index: int, challenged: bool,
                  request: Request, response: Response) -> None:
        status = response.status
        if 200 <= status < 300:
            self._registered(response)
        elif status in (401, 407):
            if challenged:
                # Answered once this round already: a second challenge is a refusal.
                self._failed(round_, f"{status}: the provider refused our credentials")
                return
            try:
                answer = self.answerer.answer(request, response)
            except ChallengeRefused as e:
                self._failed(round_, str(e))
                return
            retry = self._request(targets[index], expires=self._asked)
            retry.headers.add(answer.name, answer.value)
            self._send_prepared(round_, targets, index, retry)
        elif status == 423 and self._asked < 86400:
            min_expires = response.headers.get("Min-Expires") or ""
            if not min_expires.strip().isdigit() or int(min_expires) <= self._asked:
                self._failed(round_, "423 without a usable Min-Expires")
                return
            self._asked = min(int(min_expires), 86400)
            self._send(round_, targets, index, challenged)
        elif status in _TRY_NEXT:
            self._next_target(round_, targets, index, f"{status} {response.reason}")
        else:
            self._failed(round_, f"{status} {response.reason}")

    def _send_prepared(self, round_: int, targets: list[Destination], index: int,
                       request: Request) -> None:
        destination = targets[index]

        def answered(response: Response) -> None:
            if response.status >= 200 and round_ == self._round:
                self._answered(round_, targets, index, True, request, response)

        self.requests_sent += 1
        try:
            self.transactions.send_request(request, destination, answered)
        except (OSError, ValueError) as e:
            self._next_target(round_, targets, index, f"cannot send to {destination}: {e}")

    def _next_target(self, round_: int, targets: list[Destination], index: int,
                     reason: str) -> None:
        if index + 1 < len(targets):
            log.info("trunk {trunk}: {target} failed ({reason}), trying the next target",
                     trunk=self.trunk, target=str(targets[index]), reason=reason)
            self._send(round_, targets, index + 1, challenged=False)
        else:
            self._failed(round_, reason)

    def _registered(self, response: Response) -> None:
        granted = self._granted(response)
        if granted <= 0:
            self._failed(self._round, "the provider granted an expiry of 0")
            return
        now = self.clock.seconds()
        self.state = RegistrationState.REGISTERED
        self.reason = None
        self.failures = 0
        self.expires_at = now + granted
        delay = refresh_delay(granted)
        log.info("trunk {trunk}: registered for {granted} s, refreshing in {delay} s",
                 trunk=self.trunk, granted=granted, delay=delay)
        self._set_timer(self.clock.callLater(delay, self._refresh))

    def _refresh(self) -> None:
        self._timer = None
        # Shown as registered while the refresh is under way (the binding still holds).
        self._start_round()

    def _failed(self, round_: int, reason: str) -> None:
        if round_ != self._round:
            return
        self._round += 1
        self.state = RegistrationState.FAILED
        self.reason = reason
        self.failures += 1
        if self.expires_at is not None and self.expires_at <= self.clock.seconds():
            self.expires_at = None
        delay = min(self.retry_max, self.retry_base * 2 ** (self.failures - 1))
        delay *= self.rng.uniform(0.8, 1.2)
        log.warn("trunk {trunk}: registration failed: {reason}; retrying in {delay:.0f} s",
                 trunk=self.trunk, reason=reason, delay=delay)
        self._set_timer(self.clock.callLater(delay, self._retry))

    def _retry(self) -> None:
        self._timer = None
        self.answerer.forget()
        self._start_round()

    # -- messages ----------------------------------------------------------------------

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
        """RFC 3261 §10.2.4: our Contact's expires in the 2xx, else its Expires."""
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
        # Not listed (some providers rewrite the Contact): the Expires header, else what we
        # asked for.
        expires = (response.headers.get("Expires") or "").strip()
        return int(expires) if expires.isdigit() else self._asked
