"""
OPTIONS keep-alive for a trunk (RFC 3261 §11): every ``interval`` seconds, an OPTIONS to
the provider's first RFC 3263 target marks the trunk up or down.

Any final response proves the provider reachable (a 404 or 405 too: it answered), except
408 and 503: Timer F's local 408 and the transport's local 503 (nothing answered), or a
provider saying it cannot serve. One OPTIONS at a time: none is sent while the last is
unanswered (a non-INVITE transaction ends within 64*T1 anyway). The loop runs on the
injected clock.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from clicktodial.sip.address import Destination
from clicktodial.sip.message import Request, Response, new_call_id, new_tag
from clicktodial.sip.ua import TransactionLayerLike
from clicktodial.sip.uri import parse_uri
from clicktodial.trunks.values import Reachability

__all__ = ["TrunkKeepAlive"]

log = Logger(namespace="clicktodial.trunks.keepalive")

_DOWN = frozenset({408, 503})


class TrunkKeepAlive(Service):
    """
    :ivar reachability: ``unknown`` until the first answer, then ``up`` or ``down``.
    :ivar reason: why the trunk is down (``None`` when up).
    :ivar pings: OPTIONS sent since start.
    """

    def __init__(
        self,
        clock: IReactorTime,
        transactions: TransactionLayerLike,
        destinations: Callable[[], Deferred[list[Destination]]],
        *,
        trunk: str,
        aor: str,
        target_uri: str,
        interval: float,
        user_agent: str | None = None,
    ) -> None:
        self.clock = clock
        self.transactions = transactions
        self.destinations = destinations
        self.trunk = trunk
        self.aor = aor
        self.target_uri = parse_uri(target_uri)
        self.interval = interval
        self.user_agent = user_agent
        self.reachability = Reachability.UNKNOWN
        self.reason: str | None = None
        self.pings = 0
        self._outstanding = False
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        loop = LoopingCall(self.ping)
        loop.clock = self.clock
        self._loop = loop
        loop.start(self.interval, now=True).addErrback(
            lambda f: log.failure("trunk keep-alive stopped", f)
        )

    def stopService(self) -> None:
        super().stopService()
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    def ping(self) -> None:
        """One OPTIONS, unless the last one is still unanswered."""
        if self._outstanding:
            return
        self._outstanding = True
        self.destinations().addCallbacks(
            self._send, lambda failure: self._mark(False, f"DNS: {failure.getErrorMessage()}")
        )

    def _send(self, targets: list[Destination]) -> None:
        destination = targets[0]
        fields = [
            ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={new_tag()}"),
            ("To", f"<{self.target_uri}>"),
            ("Call-ID", new_call_id()),
            ("CSeq", "1 OPTIONS"),
            ("Accept", "application/sdp"),
        ]
        if self.user_agent:
            fields.append(("User-Agent", self.user_agent))
        request = Request("OPTIONS", self.target_uri, fields, b"")

        def answered(response: Response) -> None:
            if response.status < 200:
                return
            if response.status in _DOWN:
                self._mark(False, f"{response.status} {response.reason} from {destination}")
            else:
                self._mark(True, None)

        self.pings += 1
        try:
            self.transactions.send_request(request, destination, answered)
        except (OSError, ValueError) as e:
            self._mark(False, f"cannot send to {destination}: {e}")

    def _mark(self, up: bool, reason: str | None) -> None:
        self._outstanding = False
        new = Reachability.UP if up else Reachability.DOWN
        if new is not self.reachability:
            log.info(
                "trunk {trunk} is {state}{why}",
                trunk=self.trunk,
                state=str(new),
                why=f": {reason}" if reason else "",
            )
        self.reachability = new
        self.reason = reason
