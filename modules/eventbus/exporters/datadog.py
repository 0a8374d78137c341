"""A DogStatsD exporter: every ``flush_interval`` it sends the bus's delivery stats as gauges.

    exporter = DatadogStatsdExporter(bus, DatadogExporterConfig(address="127.0.0.1:8125"))
    task = asyncio.create_task(exporter.run())
    ...
    await exporter.close()    # stops run() and sends the final values

Gauges ``<namespace>{delivered,dropped,failed,decode_errors,reconnects}_total`` tagged
``engine:<name>`` (with ``include_per_engine``) and ``engine:_all``; with
``include_runtime`` also ``runtime.asyncio_tasks`` and ``runtime.threads``. The lines of one
flush are packed into packets of at most ``max_packet_size`` bytes. ``EventBusModule`` runs
one itself when the ``eventbus`` section has ``metrics.datadog``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

from datadog.dogstatsd.base import DogStatsd

from ..delivery import DeliveryStats
from ..metrics import DatadogExporterConfig, split_address

if TYPE_CHECKING:
    from ..module import EventBusModule

__all__ = ["DatadogExporter", "DatadogExporterConfig", "DatadogStatsdExporter"]

logger = logging.getLogger("modules.eventbus.exporters.datadog")

FIELDS = ("delivered", "dropped", "failed", "decode_errors", "reconnects")
ALL_ENGINES = "_all"


class DatadogStatsdExporter:
    def __init__(self, bus: EventBusModule, config: DatadogExporterConfig | None = None) -> None:
        self.bus = bus
        self.config = config = config or DatadogExporterConfig()
        host, port = split_address(config.address)
        self.statsd = DogStatsd(
            host=host,
            port=port,
            namespace=config.namespace.rstrip(".") or None,  # DogStatsd adds the dot
            constant_tags=list(config.tags),
            # Buffered, flushed by us only (flush_interval=0: no thread of its own).
            disable_buffering=False,
            flush_interval=0,
            max_buffer_len=config.max_packet_size,
            disable_telemetry=True,
        )
        self._closing = asyncio.Event()
        self._running: asyncio.Task[object] | None = None
        self._closed = False

    def flush(self) -> None:
        """Send one snapshot now."""
        # DogStatsd applies max_buffer_len only once its socket exists: open it first.
        self.statsd.get_socket()
        per_engine = self.bus.per_engine_stats()
        snapshots = {ALL_ENGINES: sum(per_engine.values(), DeliveryStats())}
        if self.config.include_per_engine:
            snapshots.update(per_engine)
        for engine, stats in snapshots.items():
            tags = [f"engine:{engine}"]
            for field in FIELDS:
                self.statsd.gauge(f"{field}_total", getattr(stats, field), tags=tags)
        if self.config.include_runtime:
            self.statsd.gauge("runtime.asyncio_tasks", _asyncio_tasks())
            self.statsd.gauge("runtime.threads", threading.active_count())
        self.statsd.flush()

    async def run(self) -> None:
        """Flush every ``flush_interval`` until :meth:`close`; run it as a task."""
        self._running = asyncio.current_task()
        try:
            while not self._closing.is_set():
                try:
                    self.flush()
                except OSError as exc:  # the agent may be away; the next flush tries again
                    logger.warning("could not send stats to DogStatsD: %s", exc)
                try:
                    async with asyncio.timeout(self.config.flush_interval):
                        await self._closing.wait()
                except TimeoutError:
                    pass
        finally:
            self._running = None

    def start(self) -> asyncio.Task[None]:
        """``run()`` as a task of the running loop."""
        return asyncio.get_running_loop().create_task(self.run())

    async def close(self) -> None:
        """Stop :meth:`run`, send the final values, close the socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        running = self._running
        if running is not None and running is not asyncio.current_task():
            await asyncio.gather(running, return_exceptions=True)
        try:
            self.flush()
        finally:
            self.statsd.close_socket()


def _asyncio_tasks() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # flushed from outside the event loop
        return 0


class DatadogExporter(DatadogStatsdExporter):
    """Deprecated: the keyword form of earlier releases. Use :class:`DatadogStatsdExporter`."""

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
        super().__init__(
            bus,
            DatadogExporterConfig(
                address=address,
                namespace=namespace,
                flush_interval=flush_interval,
                include_per_engine=include_per_engine,
                include_runtime=False,
                tags=tuple(tags or ()),
            ),
        )
