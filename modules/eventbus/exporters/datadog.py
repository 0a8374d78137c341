"""A DogStatsD exporter: every ``flush_interval`` it sends the bus's delivery stats as gauges.

    exporter = DatadogExporter(bus, address="127.0.0.1:8125")
    exporter.start()          # in a running event loop
    ...
    await exporter.close()    # sends a last snapshot

Gauges ``<namespace>.{delivered,dropped,failed,decode_errors,reconnects}_total`` tagged
``engine:<name>`` and ``engine:_all``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from datadog.dogstatsd.base import DogStatsd

from ..delivery import DeliveryStats

if TYPE_CHECKING:
    from ..module import EventBusModule

logger = logging.getLogger("modules.eventbus.exporters.datadog")

FIELDS = ("delivered", "dropped", "failed", "decode_errors", "reconnects")


class DatadogExporter:
    def __init__(
        self,
        bus: EventBusModule,
        *,
        address: str = "127.0.0.1:8125",
        namespace: str = "modular.eventbus",
        flush_interval: float = 5.0,
        include_per_engine: bool = True,
        tags: list[str] | None = None,
    ) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"address must be 'host:port', got {address!r}")
        if flush_interval <= 0:
            raise ValueError(f"flush_interval must be positive, got {flush_interval!r}")
        self.bus = bus
        self.flush_interval = flush_interval
        self.include_per_engine = include_per_engine
        self.tags = list(tags or [])
        self.statsd = DogStatsd(
            host=host, port=int(port), namespace=namespace, disable_telemetry=True
        )
        self._task: asyncio.Task[None] | None = None

    def flush(self) -> None:
        """Send one snapshot now."""
        per_engine = self.bus.per_engine_stats()
        snapshots = {"_all": sum(per_engine.values(), DeliveryStats())}
        if self.include_per_engine:
            snapshots.update(per_engine)
        for engine, stats in snapshots.items():
            tags = [*self.tags, f"engine:{engine}"]
            for field in FIELDS:
                self.statsd.gauge(f"{field}_total", getattr(stats, field), tags=tags)
        self.statsd.flush()

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self._task

    async def _run(self) -> None:
        while True:
            try:
                self.flush()
            except OSError as exc:  # the agent may be down; the next flush tries again
                logger.warning("could not send stats to DogStatsD: %s", exc)
            await asyncio.sleep(self.flush_interval)

    async def close(self) -> None:
        """Stop the periodic flush, send a final snapshot, close the socket."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            self.flush()
        finally:
            self.statsd.close_socket()
