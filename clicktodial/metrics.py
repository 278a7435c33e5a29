"""
Observability: ``/metrics`` (Prometheus text format), ``/healthz`` and ``/readyz``.

The metrics live in a :class:`prometheus_client.CollectorRegistry` of our own (never the
process-wide default), created with the daemon and passed to what updates it. Hot paths only
bump counters; the gauges (transactions, dialogs, bindings, admission refusals...) are read at
scrape time by :class:`DaemonCollector` from the components' ``active_count``-style
attributes, so nothing is computed per message. Labels have small fixed value sets (a status
code we send, a method we serve), never a user or an address.

``/readyz`` is 200 when the store answers a cheap query within :data:`READY_TIMEOUT`
seconds, 503 otherwise: a load balancer or an orchestrator stops sending work to a daemon
whose database is gone. ``/healthz`` stays the web helper's "the process serves requests".
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from clicktodial.interfaces import ILocationStore, ITrunkRegistry, IUserStore
from clicktodial.trunks.values import Reachability, RegistrationState

__all__ = [
    "READY_TIMEOUT",
    "DaemonCollector",
    "DaemonMetrics",
    "MetricsResource",
    "ReadinessResource",
    "TrunkCollector",
]

log = Logger(namespace="clicktodial.metrics")

#: Seconds the store has to answer the readiness query.
READY_TIMEOUT = 2.0

#: Response codes given their own label value; others are counted as their class ("5xx").
_STATUS_LABELS = frozenset(
    [
        "200",
        "400",
        "401",
        "403",
        "404",
        "408",
        "420",
        "423",
        "480",
        "481",
        "486",
        "487",
        "500",
        "503",
    ]
)


def status_label(status: int) -> str:
    """A bounded label value for a status code."""
    text = str(status)
    return text if text in _STATUS_LABELS else f"{text[0]}xx"


class PlainCounter(Collector):
    """
    A counter with one label, counted in a plain dictionary and written out at scrape time
    as :class:`prometheus_client.Counter` writes it (``_total`` and ``_created``): for the
    counts made for every message, where a ``Counter`` child costs four Python calls and a
    lock per increment.
    """

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        #: label value -> [count, creation time (POSIX)]
        self.values: dict[str, list[float]] = {}

    def inc(self, value: str) -> None:
        """Count one for label ``value``."""
        entry = self.values.get(value)
        if entry is None:
            self.values[value] = [1.0, time.time()]  # (as prometheus_client stamps a child)
        else:
            entry[0] += 1.0

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, (count, created) in list(self.values.items()):
            family.add_metric([value], count, created=created)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=[self.label])


class PlainHistogram(Collector):
    """
    A histogram with one label, kept in plain lists and written out at scrape time as
    :class:`prometheus_client.Histogram` writes it (``_bucket``, ``_count``, ``_sum``,
    ``_created``): an observation is a ``bisect`` and two additions, where a ``Histogram``
    child costs six Python calls and a lock.
    """

    def __init__(self, name: str, documentation: str, label: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.bounds = [float(b) for b in buckets]
        #: label value -> [counts per bucket (not cumulative; the last is +Inf), sum, created]
        self.values: dict[str, tuple[list[int], list[float]]] = {}

    def observe(self, value: str, amount: float) -> None:
        """Observe ``amount`` for label ``value``."""
        entry = self.values.get(value)
        if entry is None:
            entry = self.values[value] = ([0] * (len(self.bounds) + 1), [0.0, time.time()])
        entry[0][bisect.bisect_left(self.bounds, amount)] += 1
        entry[1][0] += amount

    def collect(self) -> Iterator[Metric]:
        family = Metric(self.name, self.documentation, "histogram")
        name, label = self.name, self.label
        for value, (counts, (total, created)) in list(self.values.items()):
            cumulative = 0
            for bound, count in zip([*self.bounds, float("inf")], counts, strict=True):
                cumulative += count
                family.add_sample(
                    name + "_bucket",
                    {label: value, "le": floatToGoString(bound)},
                    float(cumulative),
                )
            family.add_sample(name + "_count", {label: value}, float(cumulative))
            family.add_sample(name + "_sum", {label: value}, total)
            family.add_sample(name + "_created", {label: value}, created)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield Metric(self.name, self.documentation, "histogram")


class DaemonMetrics:
    """
    The daemon's counters and histograms, in :attr:`registry`.

    :ivar registry: the registry ``/metrics`` exposes.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        # (Plain counts: these two run for every REGISTER answered.)
        self.register_responses = PlainCounter(
            "clicktodial_register_responses",
            "Final responses to REGISTER requests, by status code.",
            "status",
        )
        self.registry.register(self.register_responses)
        self.auth_failures = Counter(
            "clicktodial_auth_failures",
            "REGISTERs whose credentials were refused (401/403 to a request with Authorization).",
            registry=self.registry,
        )
        self.calls = Counter(
            "clicktodial_calls_ended",
            "Click-to-dial calls ended, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.calls_media_relay = Counter(
            "clicktodial_calls_media_relay",
            "Click-to-dial calls ended, by media relay state: relayed, unrelayed (the relay"
            " failed and the call went on without it), off, pending (ended before it was"
            " decided).",
            ["relay"],
            registry=self.registry,
        )
        self.store_latency = PlainHistogram(
            "clicktodial_store_latency_seconds",
            "Time the store took to answer, by operation (register: a whole REGISTER"
            " handled by the registrar, almost all of it database time; ping: /readyz).",
            "operation",
            (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.registry.register(self.store_latency)
        self._status_labels: dict[int, str] = {}

    def register_answered(self, status: int, had_credentials: bool, seconds: float) -> None:
        """Count one final response to a REGISTER (taking ``seconds`` to produce)."""
        label = self._status_labels.get(status)
        if label is None:
            label = self._status_labels[status] = status_label(status)
        self.register_responses.inc(label)
        if had_credentials and status in (401, 403, 407):
            self.auth_failures.inc()
        self.store_latency.observe("register", seconds)

    def collector(self, collector: Collector) -> None:
        """Add a scrape-time collector (gauges read from components)."""
        self.registry.register(collector)


class DaemonCollector(Collector):
    """
    Gauges read at scrape time: each ``(name, help, read)`` of ``gauges`` becomes a gauge
    whose value is ``read()``; ``labelled`` ones return ``{label value: number}``.
    ``counters`` are labelled like ``labelled`` but exposed as counters (``NAME_total``):
    integers a component increments on its hot path, read here.
    """

    def __init__(
        self,
        gauges: list[tuple[str, str, Callable[[], float]]],
        labelled: list[tuple[str, str, str, Callable[[], dict[str, float]]]] = (),  # type: ignore[assignment]
        counters: list[tuple[str, str, str, Callable[[], dict[str, float]]]] = (),  # type: ignore[assignment]
    ) -> None:
        self.gauges = gauges
        self.labelled = list(labelled)
        self.counters = list(counters)

    def collect(self) -> Iterator[Metric]:
        for name, help_text, read in self.gauges:
            try:
                value = float(read())
            except Exception:
                log.failure("metrics: cannot read {name}", name=name)
                continue
            yield GaugeMetricFamily(name, help_text, value=value)
        kinds: list[tuple[type[GaugeMetricFamily] | type[CounterMetricFamily], list[Any]]] = [
            (GaugeMetricFamily, self.labelled),
            (CounterMetricFamily, self.counters),
        ]
        for kind, entries in kinds:
            for name, help_text, label, read_all in entries:
                family = kind(name, help_text, labels=[label])
                try:
                    values = read_all()
                except Exception:
                    log.failure("metrics: cannot read {name}", name=name)
                    continue
                for key, value in sorted(values.items()):
                    family.add_metric([key], float(value))
                yield family


class TrunkCollector(Collector):
    """
    The SIP trunks (``[trunk:NAME]``) read at scrape time from their registry: registration
    state, reachability (OPTIONS keep-alive), calls up and refused. The ``trunk`` label is a
    section name of the configuration file (a small fixed set).
    """

    def __init__(self, trunks: ITrunkRegistry) -> None:
        self.trunks = trunks

    def collect(self) -> Iterator[Metric]:
        try:
            statuses = self.trunks.statuses()
        except Exception:
            log.failure("metrics: cannot read the trunks")
            return
        registered = GaugeMetricFamily(
            "clicktodial_trunk_registered",
            "1 while the provider holds our registration, else 0.",
            labels=["trunk"],
        )
        state = GaugeMetricFamily(
            "clicktodial_trunk_registration_state",
            "The registration state with the provider: 1 for the current state.",
            labels=["trunk", "state"],
        )
        expires = GaugeMetricFamily(
            "clicktodial_trunk_registration_expires_timestamp_seconds",
            "When the registration the provider granted ends (Unix time).",
            labels=["trunk"],
        )
        failures = GaugeMetricFamily(
            "clicktodial_trunk_registration_failures",
            "Registration attempts that failed in a row.",
            labels=["trunk"],
        )
        up = GaugeMetricFamily(
            "clicktodial_trunk_up",
            "OPTIONS keep-alive: 1 up, 0 down (absent: no keep-alive or no answer yet).",
            labels=["trunk"],
        )
        active = GaugeMetricFamily(
            "clicktodial_trunk_calls_active", "Calls through the trunk now.", labels=["trunk"]
        )
        refused = CounterMetricFamily(
            "clicktodial_trunk_calls_refused",
            "Calls refused by the trunk's max_calls or max_cps.",
            labels=["trunk"],
        )
        inbound = CounterMetricFamily(
            "clicktodial_trunk_inbound_refused",
            "Requests from the trunk's addresses refused (inbound = refuse).",
            labels=["trunk"],
        )
        for status in statuses:
            name = [status.name]
            current = status.registration.state
            registered.add_metric(name, 1.0 if current is RegistrationState.REGISTERED else 0.0)
            for each in RegistrationState:
                state.add_metric([status.name, str(each)], 1.0 if each is current else 0.0)
            if status.registration.expires_at is not None:
                expires.add_metric(name, status.registration.expires_at)
            failures.add_metric(name, float(status.registration.failures))
            if status.reachability in (Reachability.UP, Reachability.DOWN):
                up.add_metric(name, 1.0 if status.reachability is Reachability.UP else 0.0)
            active.add_metric(name, float(status.active_calls))
            refused.add_metric(name, float(status.refused_calls))
            inbound.add_metric(name, float(status.refused_inbound))
        yield from (registered, state, expires, failures, up, active, refused, inbound)


class MetricsResource(Resource):
    """``/metrics``: the registry in the Prometheus text exposition format."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return generate_latest(self.registry)


class ReadinessResource(Resource):
    """
    ``/readyz``: ``200 ready`` when the store (and a separate ``[location]`` backend)
    answers a cheap query within
    :data:`READY_TIMEOUT` seconds; ``503`` with the reason otherwise, or while the daemon
    is stopping (``draining()``).
    """

    isLeaf = True

    def __init__(
        self,
        clock: IReactorTime,
        store: IUserStore,
        metrics: DaemonMetrics | None = None,
        draining: Callable[[], bool] = lambda: False,
        timeout: float = READY_TIMEOUT,
        locations: ILocationStore | None = None,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.store = store
        #: the [location] backend when it is not the store: it must answer too
        self.locations = locations
        self.metrics = metrics
        self.draining = draining
        self.timeout = timeout

    def render_GET(self, request: Request) -> object:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if self.draining():
            request.setResponseCode(503)
            return b"stopping"
        started = self.clock.seconds()
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        # A user name (an AOR) no one can have: an indexed look-up that finds nothing.
        pings: list[Deferred[Any]] = [self.store.get_user("\x00readyz")]
        if self.locations is not None:
            pings.append(self.locations.get_bindings("\x00readyz", started))
        ping: Deferred[Any] = gatherResults(pings, consumeErrors=True)
        ping.addErrback(_first_failure)
        ping.addTimeout(self.timeout, self.clock)

        def ready(_: object) -> None:
            if self.metrics is not None:
                self.metrics.store_latency.observe("ping", self.clock.seconds() - started)
            _finish(request, gone, 200, b"ready")

        def not_ready(failure: Failure) -> None:
            log.warn("readyz: store not reachable: {error}", error=failure.getErrorMessage())
            _finish(request, gone, 503, b"store unreachable")

        ping.addCallbacks(ready, not_ready)
        return NOT_DONE_YET


def _first_failure(failure: Failure) -> Failure:
    """The failure of the first ping that failed (``gatherResults`` wraps it)."""
    error = failure.value
    return error.subFailure if isinstance(error, FirstError) else failure


def _finish(request: Request, gone: list[bool], code: int, body: bytes) -> None:
    if gone:  # the client went away meanwhile
        return
    request.setResponseCode(code)
    request.write(body)
    request.finish()
