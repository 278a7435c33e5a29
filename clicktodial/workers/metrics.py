"""
``/metrics`` and ``/readyz`` of the main process of ``[daemon] workers = N``.

The counters, histograms and scrape-time gauges live in each worker (its
:class:`~clicktodial.metrics.DaemonMetrics` and collectors, as in a single process). When
``/metrics`` is scraped, the main process asks every worker for its metric families over
the local bus (:class:`~clicktodial.workers.bus.ScrapeMetrics`), adds a ``worker`` label
(its index) to each sample, and answers them together with its own families:
``clicktodial_worker_up{worker}`` (1 when the worker answered this scrape) and
``clicktodial_worker_restarts_total``. A worker's counters restart from zero with the worker,
as a restarted process's do (Prometheus's ``rate()`` takes that); sum over ``worker`` for the
daemon's totals.

Why over the bus, not ``prometheus_client``'s multiprocess mode: most of our gauges are read
from the components at scrape time (:class:`~clicktodial.metrics.DaemonCollector`:
transactions, dialogs, calls in progress, kernel drops...), and the multiprocess mode
exposes no custom collector; it would also turn every counter increment on the REGISTER
path into a write to a memory-mapped file under a lock. Here the hot path is unchanged and a
scrape costs one message per worker.

``/readyz`` is 503 while a worker is not serving (starting, restarting after it died: the
datagrams the kernel hashes to its shared socket wait unanswered meanwhile) or while the
daemon stops, and otherwise asks the store as a single process's does.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from clicktodial.metrics import READY_TIMEOUT

__all__ = [
    "WORKER_LABEL",
    "WorkerMetricsResource",
    "WorkerReadinessResource",
    "decode_families",
    "encode_families",
    "labelled_families",
]

log = Logger(namespace="clicktodial.workers.metrics")

#: The label naming the worker a sample comes from.
WORKER_LABEL = "worker"


def encode_families(registry: CollectorRegistry) -> bytes:
    """A registry's families now, compressed JSON for :class:`ScrapeMetrics`'s answer."""
    families = [
        [
            family.name,
            family.type,
            family.documentation,
            family.unit,
            [[s.name, s.labels, s.value] for s in family.samples],
        ]
        for family in registry.collect()
    ]
    return zlib.compress(json.dumps(families, separators=(",", ":")).encode(), 6)


def decode_families(data: bytes) -> list[Metric]:
    """
    The families :func:`encode_families` wrote.

    :raises ValueError: the data is not that (the worker is another version, or broken).
    """
    if not data:
        return []  # a worker that serves no metrics
    try:
        raw = json.loads(zlib.decompress(data))
        families = []
        for name, kind, documentation, unit, samples in raw:
            family = Metric(name, documentation, kind, unit)
            for sample_name, labels, value in samples:
                family.add_sample(sample_name, dict(labels), float(value))
            families.append(family)
    except (zlib.error, ValueError, TypeError) as e:
        raise ValueError(f"malformed metric families: {e}") from e
    return families


def labelled_families(per_worker: Iterable[tuple[int, Sequence[Metric]]]) -> list[Metric]:
    """
    Every worker's families as one list: samples of one family name merged, each with
    ``worker="INDEX"`` added; the first worker's help text and type are kept.
    """
    merged: dict[str, Metric] = {}
    for index, families in per_worker:
        label = str(index)
        for family in families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            elif into.type != family.type:
                continue  # workers of different versions: keep one definition
            for sample in family.samples:
                into.add_sample(sample.name, {**sample.labels, WORKER_LABEL: label}, sample.value)
    return list(merged.values())


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class WorkerMetricsResource(Resource):
    """
    ``/metrics`` of the main process (see the module).

    :param workers: the worker count.
    :param scrape: worker index -> a Deferred of its encoded families
        (:meth:`~clicktodial.workers.bus.WorkerHub.scrape`); fails when it cannot answer.
    :param restarts: how many times workers were restarted.
    :param timeout: seconds a worker has to answer.
    """

    isLeaf = True

    def __init__(
        self,
        clock: IReactorTime,
        workers: int,
        scrape: Callable[[int], Deferred[bytes]],
        restarts: Callable[[], int],
        timeout: float = READY_TIMEOUT,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.workers = workers
        self.scrape = scrape
        self.restarts = restarts
        self.timeout = timeout

    def render_GET(self, request: Request) -> object:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        asked: list[Deferred[tuple[bool, Any]]] = []
        for index in range(self.workers):
            d = self.scrape(index).addCallback(decode_families)
            d.addTimeout(self.timeout, self.clock)
            asked.append(d.addCallbacks(lambda families: (True, families), lambda f: (False, f)))
        answers = gatherResults(asked)
        answers.addCallback(self._render, request, gone)
        answers.addErrback(lambda f: log.failure("/metrics failed", f))
        return NOT_DONE_YET

    def _render(
        self,
        answers: list[tuple[bool, Any]],
        request: Request,
        gone: list[bool],
    ) -> None:
        up = GaugeMetricFamily(
            "clicktodial_worker_up",
            "1 when the worker process answered this scrape (its families are labelled"
            " worker), else 0.",
            labels=[WORKER_LABEL],
        )
        per_worker: list[tuple[int, list[Metric]]] = []
        for index, (ok, value) in enumerate(answers):
            up.add_metric([str(index)], 1.0 if ok else 0.0)
            if ok:
                per_worker.append((index, value))
            else:
                assert isinstance(value, Failure)
                log.warn(
                    "/metrics: worker {index} did not answer: {error}",
                    index=index,
                    error=value.getErrorMessage(),
                )
        restarts = CounterMetricFamily(
            "clicktodial_worker_restarts",
            "Worker processes restarted after they died, since the daemon started.",
            value=float(self.restarts()),
        )
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families([up, restarts, *labelled_families(per_worker)]))
        if not gone:
            request.write(generate_latest(registry))
            request.finish()


class WorkerReadinessResource(Resource):
    """
    ``/readyz`` of the main process: ``503 worker N not ready`` while worker N does not
    serve, ``503 stopping`` while the daemon stops, else what ``store_check`` (a
    :class:`~clicktodial.metrics.ReadinessResource`) answers.
    """

    isLeaf = True

    def __init__(
        self,
        workers: int,
        ready: Callable[[], Iterable[int]],
        store_check: Resource,
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__()
        self.workers = workers
        self.ready = ready
        self.store_check = store_check
        self.draining = draining

    def render_GET(self, request: Request) -> object:
        if self.draining():
            return self._refuse(request, b"stopping")
        missing = sorted(set(range(self.workers)) - set(self.ready()))
        if missing:
            named = ", ".join(str(index) for index in missing)
            return self._refuse(request, f"worker {named} not ready".encode())
        return self.store_check.render(request)

    def _refuse(self, request: Request, body: bytes) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setResponseCode(503)
        return body
