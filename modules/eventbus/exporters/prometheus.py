"""A Prometheus collector of the bus's delivery stats, read at scrape time.

    from prometheus_client import REGISTRY
    REGISTRY.register(EventBusCollector(bus))

Counters ``<namespace>_{delivered,dropped,failed,decode_errors,reconnects}_total`` with an
``engine`` label (``_all`` for the sum), and the gauge ``<namespace>_subscriptions``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..delivery import DeliveryStats

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


class EventBusCollector(Collector):
    def __init__(self, bus: EventBusModule, namespace: str = "modular_eventbus") -> None:
        self.bus = bus
        self.namespace = namespace

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the engines are known only once the bus is initialised

    def collect(self) -> Iterator[Metric]:
        per_engine = self.bus.per_engine_stats()
        total = sum(per_engine.values(), DeliveryStats())
        for field, documentation in COUNTERS.items():
            family = CounterMetricFamily(
                f"{self.namespace}_{field}", documentation, labels=["engine"]
            )
            family.add_metric([ALL_ENGINES], getattr(total, field))
            for name, stats in sorted(per_engine.items()):
                family.add_metric([name], getattr(stats, field))
            yield family
        subscriptions = GaugeMetricFamily(
            f"{self.namespace}_subscriptions", "Live subscriptions", labels=["engine"]
        )
        counts = dict.fromkeys(per_engine, 0)
        live = self.bus.subscriptions()
        for sub in live:
            for name in sub.engines:
                counts[name] = counts.get(name, 0) + 1
        subscriptions.add_metric([ALL_ENGINES], len(live))
        for name, count in sorted(counts.items()):
            subscriptions.add_metric([name], count)
        yield subscriptions
