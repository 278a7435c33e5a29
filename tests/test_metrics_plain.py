"""clicktodial.metrics: the plain counter and histogram write what prometheus_client's do."""

from __future__ import annotations

import re
from unittest import mock

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from clicktodial.metrics import PlainCounter, PlainHistogram

BUCKETS = (0.001, 0.0025, 0.5, 1.0)
OBSERVED = [("register", 0.0005), ("register", 0.001), ("ping", 0.3), ("register", 7.0)]


def _exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_plain_counter_and_histogram_write_what_prometheus_client_writes() -> None:
    """Same samples, labels, order and _created series as Counter and Histogram (the
    creation times stamped by the same clock)."""
    with mock.patch("time.time", return_value=1_800_000_000.25):
        theirs = CollectorRegistry(auto_describe=True)
        counter = Counter("t_responses", "Responses.", ["status"], registry=theirs)
        histogram = Histogram(
            "t_latency_seconds", "Latency.", ["operation"], buckets=BUCKETS, registry=theirs
        )
        ours = CollectorRegistry(auto_describe=True)
        plain_counter = PlainCounter("t_responses", "Responses.", "status")
        plain_histogram = PlainHistogram("t_latency_seconds", "Latency.", "operation", BUCKETS)
        ours.register(plain_counter)
        ours.register(plain_histogram)
        for status in ["401", "200", "401", "5xx"]:
            counter.labels(status).inc()
            plain_counter.inc(status)
        for operation, seconds in OBSERVED:
            histogram.labels(operation).observe(seconds)
            plain_histogram.observe(operation, seconds)
    assert _exposition(ours) == _exposition(theirs)
    assert re.search(r'le="0.001",operation="register"} 2.0', _exposition(ours))
