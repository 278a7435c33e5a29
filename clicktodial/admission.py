"""
Admission control: which received SIP requests go on to the transaction layer.

:class:`AdmissionControl` sits between the transport and the transaction layer (it is the
transport's :class:`~clicktodial.interfaces.IMessageHandler`) and, for each request:

1. drops it, unanswered, when its source IP address is banned by the per-source rate limit
   (:class:`SourceRateLimiter`, like Kamailio's ``pike``: answering a flood costs as much as
   serving it, so a flooder gets silence, as it does from Kamailio);
2. lets it through when it belongs to something that exists: ACK (§17: never answered),
   CANCEL (it matches an INVITE transaction or gets its 481 from the layer), a request
   with a To tag (in a dialog: BYE, re-INVITE... of a call in progress, RFC 3261 §12.2);
3. answers a new request with 503 and ``Retry-After`` (RFC 3261 §21.5.4) while the daemon is
   stopping (:meth:`AdmissionControl.start_draining`), or while it is overloaded: too many
   transactions doing work (anything but OPTIONS; finished transactions waiting out Timer J
   for retransmissions do not count), or too many database operations
   waiting (REGISTER and INVITE, the requests that need the database);
4. hands everything else, and every response, to the transaction layer.

The checks are a few integer comparisons and one dictionary look-up per request.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from clicktodial.config import LimitsConfig
from clicktodial.interfaces import IMessageHandler, ISIPTransport
from clicktodial.sip.address import Source
from clicktodial.sip.headers import HeaderParseError
from clicktodial.sip.message import Request, Response, make_response
from clicktodial.sip.transport import TransportError, normalize_host, stateless_to_tag

__all__ = ["AdmissionControl", "AdmissionCounts", "SourceRateLimiter"]

log = Logger(namespace="clicktodial.admission")

#: Requests that need the database (for ``max_store_pending``).
_STORE_METHODS = frozenset(["REGISTER", "INVITE"])


class _Window:
    __slots__ = ("banned_until", "current", "previous", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.current = 0
        self.previous = 0
        self.banned_until = 0.0


class SourceRateLimiter:
    """
    Requests per source IP address in a sliding window, with a temporary ban past a limit.

    The window is approximated the usual way (two fixed windows, the previous one weighted by
    how much of it still overlaps the sliding window), which needs two counters per source.
    Memory is bounded: past ``max_tracked`` sources the least recently seen is forgotten.

    :param window: seconds of the sliding window.
    :param max_requests: requests allowed in a window (0: no limit).
    :param ban_seconds: how long a source over the limit is refused.
    :param exempt: addresses never limited.
    """

    def __init__(
        self,
        clock: IReactorTime,
        window: float,
        max_requests: int,
        ban_seconds: float,
        exempt: tuple[str, ...] = (),
        max_tracked: int = 100_000,
    ) -> None:
        self.clock = clock
        self.max_tracked = max_tracked
        self._sources: OrderedDict[str, _Window] = OrderedDict()
        self.configure(window, max_requests, ban_seconds, exempt)

    def configure(
        self, window: float, max_requests: int, ban_seconds: float, exempt: tuple[str, ...]
    ) -> None:
        """Change the limits (a reload); sources' counts and bans are kept."""
        self.window = window
        self.max_requests = max_requests
        self.ban_seconds = ban_seconds
        self.exempt = frozenset(normalize_host(h) for h in exempt)

    def __len__(self) -> int:
        return len(self._sources)

    def is_banned(self, host: str) -> bool:
        """Whether ``host`` is banned now (without counting a request)."""
        entry = self._sources.get(host)
        return entry is not None and entry.banned_until > self.clock.seconds()

    def allow(self, host: str) -> bool:
        """Count one request from ``host``: whether it may be served."""
        if not self.max_requests or host in self.exempt:
            return True
        now = self.clock.seconds()
        sources = self._sources
        entry = sources.get(host)
        if entry is None:
            entry = sources[host] = _Window(now)
            if len(sources) > self.max_tracked:
                sources.popitem(last=False)
        else:
            sources.move_to_end(host)
        if entry.banned_until > now:
            return False
        elapsed = now - entry.start
        if elapsed >= self.window:
            # Move the fixed window on; more than one window of silence forgets the past.
            entry.previous = entry.current if elapsed < 2 * self.window else 0
            entry.current = 0
            entry.start = now - (elapsed % self.window)
            elapsed = now - entry.start
        entry.current += 1
        estimate = entry.previous * (1.0 - elapsed / self.window) + entry.current
        if estimate > self.max_requests:
            entry.banned_until = now + self.ban_seconds
            entry.current = entry.previous = 0
            log.warn(
                "{peer} sent more than {limit} requests in {window} s: banned for {ban} s",
                peer=host,
                limit=self.max_requests,
                window=self.window,
                ban=self.ban_seconds,
            )
            return False
        return True


class AdmissionCounts:
    """What :class:`AdmissionControl` turned away (read by the metrics)."""

    __slots__ = ("draining", "overload", "rate_limited")

    def __init__(self) -> None:
        self.rate_limited = 0
        self.overload = 0
        self.draining = 0


@implementer(IMessageHandler)
class AdmissionControl:
    """
    The transport's message handler in front of the transaction layer (see the module).

    :param handler: where admitted messages go (the transaction layer).
    :param transport: sends the 503s.
    :param transactions_active: how many transactions are doing work (the transaction
        layer's ``working_count``: not those that only wait out a timer for retransmissions).
    :param store_pending: how many database operations wait for a thread.
    :param server: the ``Server`` header of our 503s.
    :ivar draining: the daemon is stopping: new requests get 503.
    :ivar counts: the :class:`AdmissionCounts`.
    """

    def __init__(
        self,
        clock: IReactorTime,
        handler: IMessageHandler,
        transport: ISIPTransport,
        limits: LimitsConfig,
        *,
        transactions_active: Callable[[], int] = lambda: 0,
        store_pending: Callable[[], int] = lambda: 0,
        server: str = "clicktodial",
    ) -> None:
        self.clock = clock
        self.handler = handler
        self.transport = transport
        self.transactions_active = transactions_active
        self.store_pending = store_pending
        self.server = server
        self.draining = False
        self.counts = AdmissionCounts()
        self.rate_limiter = SourceRateLimiter(
            clock,
            limits.rate_window,
            limits.rate_max_requests,
            limits.rate_ban_seconds,
            limits.rate_exempt,
        )
        self.limits = limits

    def configure(self, limits: LimitsConfig) -> None:
        """Apply new ``[limits]`` (a reload)."""
        self.limits = limits
        self.rate_limiter.configure(
            limits.rate_window,
            limits.rate_max_requests,
            limits.rate_ban_seconds,
            limits.rate_exempt,
        )

    def start_draining(self) -> None:
        """From now on, new requests get 503 with ``Retry-After`` (the daemon is stopping)."""
        self.draining = True

    # -- IMessageHandler ----------------------------------------------------------------

    def response_received(self, response: Response, source: object) -> None:
        """Responses are always for our own transactions: to the layer."""
        self.handler.response_received(response, source)

    def request_received(self, request: Request, source: object) -> None:
        """Drop, refuse with 503, or pass on ``request`` (see the module)."""
        host = source.remote_host if isinstance(source, Source) else None
        if host is not None and not self.rate_limiter.allow(host):
            self.counts.rate_limited += 1
            return
        method = request.method
        if method != "ACK" and method != "CANCEL" and not _in_dialog(request):
            refusal = self._refusal(method)
            if refusal is not None:
                self._refuse(request, source, refusal)
                return
        self.handler.request_received(request, source)

    def _refusal(self, method: str) -> str | None:
        limits = self.limits
        if self.draining:
            self.counts.draining += 1
            return "Service Unavailable (Shutting Down)"
        if method == "OPTIONS":
            return None
        if limits.max_transactions and self.transactions_active() >= limits.max_transactions:
            self.counts.overload += 1
            return "Service Unavailable (Overloaded)"
        if (
            limits.max_store_pending
            and method in _STORE_METHODS
            and self.store_pending() >= limits.max_store_pending
        ):
            self.counts.overload += 1
            return "Service Unavailable (Database Overloaded)"
        return None

    def _refuse(self, request: Request, source: object, reason: str) -> None:
        # Stateless (RFC 3261 §8.2.7): a retransmission gets the same To tag, and no
        # transaction is kept for a request we do not serve.
        response = make_response(request, 503, reason, to_tag=stateless_to_tag(request.headers))
        response.headers.add("Retry-After", str(self.limits.retry_after))
        response.headers.add("Server", self.server)
        try:
            self.transport.send_response(response, source)
        except (TransportError, HeaderParseError, OSError) as e:
            log.info(
                "cannot send 503 to {peer}: {error}",
                peer=str(source),
                error=str(e),
                call_id=request.headers.get("Call-ID"),
            )


def _in_dialog(request: Request) -> bool:
    """Whether ``request`` has a To tag: it is part of a dialog (RFC 3261 §12.2.2)."""
    to = request.headers.get("To")
    if to is None:
        return False
    try:
        return request.to.tag is not None
    except HeaderParseError:
        return False
