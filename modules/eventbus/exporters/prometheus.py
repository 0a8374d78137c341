"""A Prometheus collector of the bus's delivery stats, read at scrape time.

    from prometheus_client import REGISTRY
    REGISTRY.register(PrometheusCollector(bus, namespace="modular_eventbus"))

Counters ``<namespace>_{delivered,dropped,failed,decode_errors,reconnects}_total`` with an
``engine`` label (each engine's name, and ``_all`` for the sum over every engine), the
gauge ``<namespace>_subscriptions``, and the histogram
``<namespace>_delivery_latency_seconds`` (publish to handler start, per engine; recorded
from the moment a collector is made). ``EventBusModule`` serves them itself when the
``eventbus`` section has ``metrics.prometheus`` (see ``modules.eventbus.metrics``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..delivery import DeliveryStats, LatencyHistogram

if TYPE_CHECKING:
    from ..module import EventBusModule

ALL_ENGINES = "_all"

COUNTERS = {
    "delivered": "Events whose handler ran (successfully or not)",
    "dropped": "Events that could not be queued or were left at shutdown",
    "failed": "Delivered events whose handler raised",
    "decode_errors": "Broker messages that were not valid events",
    "reconnects": "Broker connections re-established",
}

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class PrometheusCollector(Collector):
    """Reads ``bus.per_engine_stats()`` at every scrape; register it with any registry."""

    def __init__(self, bus: EventBusModule, namespace: str = "modular_eventbus") -> None:
        if namespace and not _METRIC_NAME.match(namespace):
            raise ValueError(
                f"namespace must be a Prometheus metric name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*), "
                f"got {namespace!r}"
            )
        self.bus = bus
        self.namespace = namespace
        bus.record_latency()

    def _name(self, metric: str) -> str:
        return f"{self.namespace}_{metric}" if self.namespace else metric

    def describe(self) -> Iterator[Metric]:
        # Names only: registering checks them for clashes before the engines are known.
        for field, documentation in COUNTERS.items():
            yield CounterMetricFamily(self._name(field), documentation, labels=["engine"])
        yield GaugeMetricFamily(
            self._name("subscriptions"), "Live subscriptions", labels=["engine"]
        )
        yield HistogramMetricFamily(self._name(LATENCY), LATENCY_HELP, labels=["engine"])

    def collect(self) -> Iterator[Metric]:
        # Scrapes run on the HTTP server's thread: take one copy of the stats, then format.
        per_engine = sorted(self.bus.per_engine_stats().items())
        total = sum((stats for _, stats in per_engine), DeliveryStats())
        for field, documentation in COUNTERS.items():
            family = CounterMetricFamily(self._name(field), documentation, labels=["engine"])
            family.add_metric([ALL_ENGINES], getattr(total, field))
            for name, stats in per_engine:
                family.add_metric([name], getattr(stats, field))
            yield family
        subscriptions = GaugeMetricFamily(
            self._name("subscriptions"), "Live subscriptions", labels=["engine"]
        )
        counts = dict.fromkeys((name for name, _ in per_engine), 0)
        live = self.bus.subscriptions()
        for sub in live:
            for name in sub.engines:
                counts[name] = counts.get(name, 0) + 1
        subscriptions.add_metric([ALL_ENGINES], len(live))
        for name, count in sorted(counts.items()):
            subscriptions.add_metric([name], count)
        yield subscriptions
        latency = HistogramMetricFamily(self._name(LATENCY), LATENCY_HELP, labels=["engine"])
        for name, histogram in sorted(self.bus.latency_histograms().items()):
            latency.add_metric([name], _buckets(histogram), sum_value=histogram.total)
        yield latency


LATENCY = "delivery_latency_seconds"
LATENCY_HELP = "Seconds from publish to the start of a handler"


def _buckets(histogram: LatencyHistogram) -> list[tuple[str, float]]:
    """Cumulative counts per upper bound, as Prometheus histograms are exposed."""
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*histogram.BOUNDS, float("inf")), histogram.counts, strict=True):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return buckets


# The name of earlier releases.
EventBusCollector = PrometheusCollector
