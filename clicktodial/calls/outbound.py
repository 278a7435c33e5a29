"""
Calls to telephone numbers through trunks (docs/trunks.md, "Calls through a trunk"): the
callee leg's route (:class:`ICalleeRoute`) that tries the trunks of a :class:`DialDecision`
in order, and within one trunk its resolved destinations in order.

A place under a trunk's limits (:meth:`ITrunk.admit`) is taken before the caller's phone
rings (:meth:`TrunkHunt.reserve`): a caller is never rung only to hear that every trunk is
full.  The reservation is the call's: it is given back whichever way the call ends (the
caller not answering included), never held past it.

For each trunk: the Request-URI for the number, the trunk's resolved destinations (the
configured provider: never a phone's binding), its credentials for the provider's 401/407,
and the caller identity it presents (From, P-Asserted-Identity: RFC 3325 inside the trust
domain of the provider).

- RFC 3263 §4.3: a destination that times out (408) or answers or is found unreachable with
  503 (a transport error is a 503, RFC 3261 §8.1.3.1) gets the same INVITE's next try at the
  trunk's next destination (SRV priority and weight order, then the next address), with
  the same ticket;
- 408 or 5xx when the trunk has no destination left (or another 5xx, a server that did
  answer) moves the call to the next trunk;
- 4xx/6xx such as 404, 486, 603 are the number's answer and end the call.

Whatever way the call ends, the ticket is given back (:meth:`TrunkHunt.release`); a call
that never sent an INVITE to any trunk gives its daily-limit count back too
(``refund_untried``, docs/dialplan.md "The daily limit").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from clicktodial.calls.call import Target
from clicktodial.interfaces import ICalleeRoute, ITrunk
from clicktodial.sip.address import Destination
from clicktodial.sip.headers import NameAddr
from clicktodial.sip.interfaces import IClientCredentials
from clicktodial.sip.uri import URI, parse_uri
from clicktodial.trunks.limits import CallTicket
from clicktodial.trunks.resolver import ResolutionFailed
from clicktodial.trunks.values import TrunkBusy

__all__ = ["TrunkHunt", "fails_over", "tries_next_destination"]

log = Logger(namespace="clicktodial.calls.outbound")


def fails_over(status: int) -> bool:
    """Whether a trunk's final ``status`` sends the call to the next trunk (408, 5xx)."""
    return status == 408 or 500 <= status < 600


def tries_next_destination(status: int) -> bool:
    """RFC 3263 §4.3: whether ``status`` from one destination of a trunk sends the request
    to its next destination (a timeout, 503: the server or the way to it failed)."""
    return status in (408, 503)


@attrs.define
class _Attempt:
    """The trunk taking the call now, with its ticket and the destinations not tried yet."""

    trunk: ITrunk
    ticket: CallTicket
    uri: URI
    destinations: list[Destination]


@implementer(ICalleeRoute)
class TrunkHunt:
    """
    The trunks a call to ``number`` tries, in order (see the module).

    :param trunks: the decision's trunks that exist, in fail-over order.
    :param number: the number in E.164 (``+442079460958``).
    :param caller: the directory user placing the call (their caller identity).
    :param refund_untried: called once if the call ends without an INVITE sent to any
        trunk (the daily limit's count is given back).
    """

    def __init__(
        self,
        trunks: Sequence[ITrunk],
        number: str,
        caller: str,
        call_id: str = "",
        refund_untried: Callable[[], object] | None = None,
    ) -> None:
        self._remaining = list(trunks)
        self.number = number
        self.caller = caller
        #: The call's record id, for the log (known once the call is recorded).
        self.call_id = call_id
        self._refund_untried = refund_untried
        #: The trunk of the current attempt, once one took the call.
        self.trunk: str | None = None
        #: The destination the current attempt's INVITE went to.
        self.destination: Destination | None = None
        self._reserved: tuple[ITrunk, CallTicket] | None = None
        self._attempt: _Attempt | None = None
        self._tried = 0
        self._last_status: int | None = None
        self._closed = False

    def reserve(self) -> bool:
        """
        Take a place on the first trunk with room, before the caller's phone rings
        (trunks refusing are skipped, as they would be later).  Checks and takes on the
        reactor thread without yielding: calls placed at once never hold more than a
        trunk's limit.  :meth:`release` gives the place back.

        :return: whether a trunk took the call (else no trunk can: the call fails as
            ``no-trunk`` without ringing anyone).
        """
        while self._remaining and self._reserved is None and not self._closed:
            trunk = self._remaining.pop(0)
            ticket = self._admit(trunk)
            if ticket is not None:
                self._reserved = (trunk, ticket)
        return self._reserved is not None

    def targets(self) -> Deferred[list[Target]]:
        """The next destination or trunk that takes the call, as the one target."""
        return Deferred.fromCoroutine(self._next())

    async def _next(self) -> list[Target]:
        attempt = self._attempt
        if (
            attempt is not None
            and attempt.destinations
            and self._last_status is not None
            and tries_next_destination(self._last_status)
            and not self._closed
        ):
            return [self._target(attempt, attempt.destinations.pop(0))]
        self._give_back()
        while not self._closed:
            if self._reserved is not None:
                (trunk, ticket), self._reserved = self._reserved, None
            elif self._remaining:
                trunk = self._remaining.pop(0)
                admitted = self._admit(trunk)
                if admitted is None:
                    continue
                ticket = admitted
            else:
                break
            try:
                uri = trunk.request_uri_for(self.number)
                destinations = list(await trunk.destinations())
            except (ResolutionFailed, ValueError) as e:
                ticket.release()
                log.warn(
                    "call {record}: trunk {trunk} cannot be used: {error}",
                    record=self.call_id,
                    trunk=trunk.name,
                    error=str(e),
                )
                continue
            if self._closed or not destinations:  # the call ended meanwhile
                ticket.release()
                continue
            attempt = self._attempt = _Attempt(trunk, ticket, uri, destinations)
            self.trunk = trunk.name
            self._tried += 1
            return [self._target(attempt, attempt.destinations.pop(0))]
        return []

    def _admit(self, trunk: ITrunk) -> CallTicket | None:
        try:
            return trunk.admit()
        except TrunkBusy as e:
            log.info(
                "call {record}: trunk {trunk} refused the call: {error}",
                record=self.call_id,
                trunk=trunk.name,
                error=str(e),
            )
            return None

    def _target(self, attempt: _Attempt, hop: Destination) -> Target:
        trunk = attempt.trunk
        self.destination = hop
        log.info(
            "call {record}: {number} through trunk {trunk} at {destination}",
            record=self.call_id,
            number=self.number,
            trunk=trunk.name,
            destination=f"{hop.transport} {hop.host}:{hop.port}",
        )
        identity = trunk.caller_identity(self.caller)
        return Target(
            attempt.uri,
            (),
            hop,
            hop,
            trunk=trunk.name,
            from_=NameAddr(parse_uri(identity.from_uri)),
            to=NameAddr(attempt.uri),
            headers=(("P-Asserted-Identity", identity.asserted_identity),),
            credentials=IClientCredentials(trunk, None),
        )

    def reroutes(self, status: int) -> bool:
        """408/503 while the trunk has another destination; 408/5xx while another trunk
        remains."""
        self._last_status = status
        if self._closed:
            return False
        attempt = self._attempt
        if attempt is not None and attempt.destinations and tries_next_destination(status):
            return True
        return fails_over(status) and (bool(self._remaining) or self._reserved is not None)

    def unreachable(self) -> tuple[str, int]:
        """Every trunk left refused or failed: ``no-trunk`` if none ever took the call."""
        if not self._tried:
            return "no-trunk", 503
        return "callee-unreachable", self._last_status or 503

    def release(self) -> None:
        """Give the reservation or current ticket back; no further attempt.  A call that
        sent no INVITE to any trunk gives its daily count back."""
        self._closed = True
        reserved, self._reserved = self._reserved, None
        if reserved is not None:
            reserved[1].release()
        self._give_back()
        refund, self._refund_untried = self._refund_untried, None
        if refund is not None and not self._tried:
            refund()

    def _give_back(self) -> None:
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            attempt.ticket.release()
