"""
Calls to telephone numbers through trunks (docs/trunks.md, "Calls through a trunk"): the
callee leg's route (L{ICalleeRoute}) that tries the trunks of a L{DialDecision} in order.

For each trunk: a place under its limits (L{ITrunk.admit}: a refusal skips to the next
trunk), the Request-URI for the number, the next hop among the trunk's resolved
destinations (the configured provider: never a phone's binding), the trunk's credentials
for the provider's 401/407, and the caller identity the trunk presents (From,
P-Asserted-Identity: RFC 3325 inside the trust domain of the provider).  The call's
table moves to the next trunk on 408 or 5xx (a transport error is a 503, RFC 3261
§8.1.3.1); 4xx/6xx such as 404, 486, 603 are the number's answer and end the call.
Whatever way the call ends, the ticket is given back (L{TrunkHunt.release}).
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from clicktodial.calls.call import Target
from clicktodial.interfaces import ICalleeRoute, ITrunk
from clicktodial.sip.headers import NameAddr
from clicktodial.sip.interfaces import IClientCredentials
from clicktodial.sip.uri import parse_uri
from clicktodial.trunks.limits import CallTicket
from clicktodial.trunks.resolver import ResolutionFailed
from clicktodial.trunks.values import TrunkBusy

__all__ = ["TrunkHunt", "fails_over"]

log = Logger(namespace="clicktodial.calls.outbound")


def fails_over(status: int) -> bool:
    """Whether a trunk's final ``status`` sends the call to the next trunk (408, 5xx)."""
    return status == 408 or 500 <= status < 600


@implementer(ICalleeRoute)
class TrunkHunt:
    """
    The trunks a call to ``number`` tries, in order (see the module).

    @param trunks: the decision's trunks that exist, in fail-over order.
    @param number: the number in E.164 (C{+442079460958}).
    @param caller: the directory user placing the call (their caller identity).
    """

    def __init__(self, trunks: Sequence[ITrunk], number: str, caller: str,
                 call_id: str = "") -> None:
        self._remaining = list(trunks)
        self.number = number
        self.caller = caller
        self.call_id = call_id
        #: The trunk of the current attempt, once one took the call.
        self.trunk: str | None = None
        self._ticket: CallTicket | None = None
        self._tried = 0
        self._last_status: int | None = None
        self._closed = False

    def targets(self) -> Deferred[list[Target]]:
        """The next trunk that takes the call, as the one target of the attempt."""
        return Deferred.fromCoroutine(self._next())

    async def _next(self) -> list[Target]:
        self._give_back()
        while self._remaining and not self._closed:
            trunk = self._remaining.pop(0)
            try:
                ticket = trunk.admit()
            except TrunkBusy as e:
                log.info("call {record}: trunk {trunk} refused the call: {error}",
                         record=self.call_id, trunk=trunk.name, error=str(e))
                continue
            try:
                uri = trunk.request_uri_for(self.number)
                destinations = await trunk.destinations()
            except (ResolutionFailed, ValueError) as e:
                ticket.release()
                log.warn("call {record}: trunk {trunk} cannot be used: {error}",
                         record=self.call_id, trunk=trunk.name, error=str(e))
                continue
            if self._closed:  # the call ended meanwhile
                ticket.release()
                break
            self._ticket, self.trunk = ticket, trunk.name
            self._tried += 1
            hop = destinations[0]
            identity = trunk.caller_identity(self.caller)
            return [Target(
                uri, (), hop, hop, trunk=trunk.name,
                from_=NameAddr(parse_uri(identity.from_uri)), to=NameAddr(uri),
                headers=(("P-Asserted-Identity", identity.asserted_identity),),
                credentials=IClientCredentials(trunk, None),
            )]
        return []

    def reroutes(self, status: int) -> bool:
        """408/5xx while another trunk remains."""
        self._last_status = status
        return fails_over(status) and bool(self._remaining) and not self._closed

    def unreachable(self) -> tuple[str, int]:
        """Every trunk left refused or failed: C{no-trunk} if none ever took the call."""
        if not self._tried:
            return "no-trunk", 503
        return "callee-unreachable", self._last_status or 503

    def release(self) -> None:
        """Give the current ticket back; no further attempt."""
        self._closed = True
        self._give_back()

    def _give_back(self) -> None:
        ticket, self._ticket = self._ticket, None
        if ticket is not None:
            ticket.release()
