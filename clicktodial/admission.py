"""
Admission control: which received SIP datagrams and requests the daemon handles at all.

:class:`SourceRateLimiter` (like Kamailio's ``pike``) counts, per source address, everything
the transport receives, before the transport parses anything: every UDP datagram (a request,
a response or garbage the parser would reject), every message of a TCP/TLS connection and
every new connection. A source over ``[limits] rate_max_requests`` in ``rate_window`` is
banned for ``rate_ban_seconds``: what it sends is dropped unanswered, on arrival, for the
cost of one dictionary look-up (answering a flood costs as much as serving it, so a flooder
gets silence, as it does from Kamailio; parsing it first would let it starve the phones).

:class:`AdmissionControl` sits between the transport and the transaction layer (it is the
transport's :class:`~clicktodial.interfaces.IMessageHandler`) and, for each parsed request:

1. lets it through when it belongs to something that exists: ACK (§17: never answered),
   CANCEL (it matches an INVITE transaction or gets its 481 from the layer), a request
   with a To tag (in a dialog: BYE, re-INVITE... of a call in progress, RFC 3261 §12.2);
2. answers a new request with 503 and ``Retry-After`` (RFC 3261 §21.5.4) while the daemon is
   stopping (:meth:`AdmissionControl.start_draining`), or while it is overloaded: too many
   transactions doing work (anything but OPTIONS; finished transactions waiting out Timer J
   for retransmissions do not count), or too many database operations
   waiting (REGISTER and INVITE, the requests that need the database);
3. hands everything else, and every response, to the transaction layer, and tells it of
   requests the transport could not deliver (it forwards
   :class:`~clicktodial.interfaces.ISendFailureHandler` when its handler provides it).

The checks are a few integer comparisons per request.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from clicktodial.config import LimitsConfig
from clicktodial.netaddr import NetworkSet
from clicktodial.sip.address import Destination
from clicktodial.sip.headers import HeaderParseError
from clicktodial.sip.interfaces import (
    IMessageHandler,
    ISendFailureHandler,
    ISIPTransport,
    ISourceLimit,
)
from clicktodial.sip.message import Request, Response, make_response
from clicktodial.sip.transport import TransportError, stateless_to_tag

__all__ = ["AdmissionControl", "AdmissionCounts", "SourceRateLimiter", "source_key"]

log = Logger(namespace="clicktodial.admission")

_NOBODY = NetworkSet()

#: Requests that need the database (for ``max_store_pending``).
_STORE_METHODS = frozenset(["REGISTER", "INVITE"])


class _Window:
    __slots__ = ("banned_until", "current", "previous", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.current = 0
        self.previous = 0
        self.banned_until = 0.0


@functools.lru_cache(maxsize=4096)
def source_key(host: str, ipv6_prefix: int = 64) -> str:
    """
    What a source is counted as: an IPv4 address (an IPv4-mapped IPv6 one as IPv4); an IPv6
    address's network of ``ipv6_prefix`` bits (``2001:db8:1:2::/64``), or the address itself
    at 128; anything else (not an address) as it is, lower-cased.
    """
    # Memoized: called for every datagram of a source that is not banned.
    text = host.strip("[]")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text.lower()
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped.compressed
        if ipv6_prefix < 128:
            network = ipaddress.IPv6Network((int(address), ipv6_prefix), strict=False)
            return network.compressed
    return address.compressed


@implementer(ISourceLimit)
class SourceRateLimiter:
    """
    Datagrams and messages per source in a sliding window, with a temporary ban past a limit.

    The window is approximated the usual way (two fixed windows, the previous one weighted by
    how much of it still overlaps the sliding window), which needs two counters per source.
    A source is an IPv4 address, or an IPv6 network of ``ipv6_prefix`` bits
    (:func:`source_key`). Memory is bounded: past ``max_tracked`` sources the least recently
    seen is forgotten, and so is the oldest banned address past ``max_tracked`` of them.

    The transport calls :meth:`allow` for every datagram before parsing it, so the drop of a
    banned source's datagram comes first and is one dictionary look-up, keyed by the text
    the socket gives (``_banned``): a flood costs the daemon little more than reading it.

    :param window: seconds of the sliding window.
    :param max_requests: datagrams/messages allowed in a window (0: no limit).
    :param ban_seconds: how long a source over the limit is refused.
    :param exempt: addresses and networks never limited.
    :ivar dropped: datagrams and messages refused so far (read by /metrics).
    """

    def __init__(
        self,
        clock: IReactorTime,
        window: float,
        max_requests: int,
        ban_seconds: float,
        exempt: NetworkSet | Iterable[str] = _NOBODY,
        max_tracked: int = 100_000,
        ipv6_prefix: int = 64,
    ) -> None:
        self.clock = clock
        self.max_tracked = max_tracked
        self.dropped = 0
        self._sources: OrderedDict[str, _Window] = OrderedDict()
        #: host text as the socket gives it -> end of its source's ban: the fast path
        self._banned: dict[str, float] = {}
        #: host text -> whether it is exempt (NetworkSet membership parses the address)
        self._exempt_hosts: dict[str, bool] = {}
        #: source key -> end of its ban, for the kernel filter (pruned when read)
        self._banned_sources: dict[str, float] = {}
        self._ban_observers: list[Callable[[], object]] = []
        self.configure(window, max_requests, ban_seconds, exempt, ipv6_prefix)

    @classmethod
    def from_config(
        cls, clock: IReactorTime, limits: LimitsConfig, trusted: NetworkSet = _NOBODY
    ) -> SourceRateLimiter:
        """
        The limiter of ``[limits]``; ``trusted`` (``[registrar] trusted_proxies``) is exempt
        as ``rate_exempt`` is: a proxy in front of the daemon carries every phone's traffic.
        """
        limiter = cls(clock, 0.0, 0, 0.0)
        limiter.configure_from(limits, trusted)
        return limiter

    def configure_from(self, limits: LimitsConfig, trusted: NetworkSet = _NOBODY) -> None:
        """Apply ``[limits]`` (and ``trusted``, see :meth:`from_config`): a reload."""
        self.configure(
            limits.rate_window,
            limits.rate_max_requests,
            limits.rate_ban_seconds,
            NetworkSet(limits.rate_exempt.networks + trusted.networks),
            limits.rate_ipv6_prefix,
        )

    def configure(
        self,
        window: float,
        max_requests: int,
        ban_seconds: float,
        exempt: NetworkSet | Iterable[str],
        ipv6_prefix: int = 64,
    ) -> None:
        """Change the limits (a reload); sources' counts and bans are kept."""
        self.window = window
        self.max_requests = max_requests
        self.ban_seconds = ban_seconds
        self.exempt = exempt if isinstance(exempt, NetworkSet) else NetworkSet.of(exempt)
        self.ipv6_prefix = ipv6_prefix
        # Rebuilt from the sources' entries as datagrams come: a source now exempt, or no
        # limit at all, is no longer dropped on sight.
        self._banned.clear()
        self._exempt_hosts.clear()
        if not max_requests and self._banned_sources:
            self._banned_sources.clear()
            self._notify()

    def banned(self) -> dict[str, float]:
        """The sources banned now (see :meth:`ISourceLimit.banned`)."""
        now = self.clock.seconds()
        sources = self._banned_sources
        for key in [key for key, until in sources.items() if until <= now]:
            del sources[key]
        return dict(sources)

    def on_ban(self, observer: Callable[[], object]) -> None:
        """Call ``observer`` (no arguments) each time a source gets banned."""
        self._ban_observers.append(observer)

    def _notify(self) -> None:
        for observer in self._ban_observers:
            try:
                observer()
            except Exception:
                log.failure("ban observer failed")

    def __len__(self) -> int:
        return len(self._sources)

    def is_banned(self, host: str) -> bool:
        """Whether ``host`` is banned now (without counting anything)."""
        entry = self._sources.get(source_key(host, self.ipv6_prefix))
        return entry is not None and entry.banned_until > self.clock.seconds()

    def allow(self, host: str) -> bool:
        """Count one datagram, message or connection from ``host``: whether to handle it."""
        until = self._banned.get(host)
        if until is not None:
            if until > self.clock.seconds():
                self.dropped += 1
                return False
            del self._banned[host]
        if not self.max_requests:
            return True
        exempt = self._exempt_hosts.get(host)
        if exempt is None:
            if len(self._exempt_hosts) >= self.max_tracked:
                self._exempt_hosts.clear()
            exempt = self._exempt_hosts[host] = host in self.exempt
        if exempt:
            return True
        now = self.clock.seconds()
        key = source_key(host, self.ipv6_prefix)
        sources = self._sources
        entry = sources.get(key)
        if entry is None:
            entry = sources[key] = _Window(now)
            if len(sources) > self.max_tracked:
                sources.popitem(last=False)
        else:
            sources.move_to_end(key)
            if entry.banned_until > now:
                # Another address of a banned IPv6 network, or a ban from before a reload.
                self._ban_host(host, entry.banned_until)
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
            self._ban_host(host, entry.banned_until)
            banned = self._banned_sources
            if len(banned) >= self.max_tracked:
                del banned[next(iter(banned))]
            banned[key] = entry.banned_until
            log.warn(
                "{peer} sent more than {limit} requests in {window} s: banned for {ban} s",
                peer=key,
                limit=self.max_requests,
                window=self.window,
                ban=self.ban_seconds,
            )
            self._notify()
            return False
        return True

    def _ban_host(self, host: str, until: float) -> None:
        self.dropped += 1
        banned = self._banned
        if len(banned) >= self.max_tracked:
            del banned[next(iter(banned))]  # the oldest: it comes back by the slow path
        banned[host] = until


class AdmissionCounts:
    """What :class:`AdmissionControl` turned away (read by the metrics)."""

    __slots__ = ("draining", "overload")

    def __init__(self) -> None:
        self.overload = 0
        self.draining = 0


@implementer(IMessageHandler, ISendFailureHandler)
class AdmissionControl:
    """
    The transport's message handler in front of the transaction layer (see the module).

    :param handler: where admitted messages go (the transaction layer).
    :param transport: sends the 503s.
    :param transactions_active: how many transactions are doing work (the transaction
        layer's ``working_count``: not those that only wait out a timer for retransmissions).
    :param store_pending: how many database operations wait for a thread.
    :param server: the ``Server`` header of our 503s.
    :param rate_limiter: the per-source limit the transport applies (reconfigured here on
        reload); by default one of ``limits``.
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
        rate_limiter: SourceRateLimiter | None = None,
    ) -> None:
        self.clock = clock
        self.handler = handler
        self._send_failures = ISendFailureHandler(handler, None)
        self.transport = transport
        self.transactions_active = transactions_active
        self.store_pending = store_pending
        self.server = server
        self.draining = False
        self.counts = AdmissionCounts()
        self.rate_limiter = (
            SourceRateLimiter.from_config(clock, limits) if rate_limiter is None else rate_limiter
        )
        self.limits = limits

    def configure(self, limits: LimitsConfig, trusted: NetworkSet = _NOBODY) -> None:
        """Apply new ``[limits]`` and ``[registrar] trusted_proxies`` (a reload)."""
        self.limits = limits
        self.rate_limiter.configure_from(limits, trusted)

    def start_draining(self) -> None:
        """From now on, new requests get 503 with ``Retry-After`` (the daemon is stopping)."""
        self.draining = True

    # -- IMessageHandler ----------------------------------------------------------------

    def response_received(self, response: Response, source: object) -> None:
        """Responses are always for our own transactions: to the layer."""
        self.handler.response_received(response, source)

    def request_received(self, request: Request, source: object) -> None:
        """Refuse with 503, or pass on ``request`` (see the module)."""
        method = request.method
        if method != "ACK" and method != "CANCEL" and not _in_dialog(request):
            refusal = self._refusal(method)
            if refusal is not None:
                self._refuse(request, source, refusal)
                return
        self.handler.request_received(request, source)

    # -- ISendFailureHandler ------------------------------------------------------------

    def request_failed(self, request: Request, destination: Destination, reason: str) -> None:
        """A request of ours never left: to the layer, whose transaction it ends."""
        if self._send_failures is not None:
            self._send_failures.request_failed(request, destination, reason)

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
    try:
        return request.to.tag is not None
    except HeaderParseError:  # (also a request without To)
        return False
