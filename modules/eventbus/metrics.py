"""The ``metrics`` part of the ``eventbus`` section, and the exporters it starts with the bus.

    [default.eventbus.metrics.prometheus]
    port = 9464                      # serves http://127.0.0.1:9464/metrics
    host = "127.0.0.1"

    [default.eventbus.metrics.datadog]
    address = "127.0.0.1:8125"       # a DogStatsD agent
    flushInterval = "5s"
    tags = ["env:prod"]

Nothing here imports prometheus_client or datadog: each exporter's library is imported only
when that exporter is configured, so the bus runs with neither installed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from .errors import EventBusError

if TYPE_CHECKING:
    from http.server import HTTPServer
    from threading import Thread

    from .exporters.datadog import DatadogStatsdExporter
    from .module import EventBusModule

logger = logging.getLogger("modules.eventbus.metrics")


def _duration(value: object) -> float:
    from .config import parse_duration  # imported here: config.py imports this module

    return parse_duration(value)


def _whole_number(value: object) -> object:
    from .config import whole_number

    return whole_number(value)


def split_address(address: str) -> tuple[str, int]:
    """``("host", port)`` from ``"host:port"`` (``"[::1]:8125"`` for IPv6)."""
    host, _, port = address.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address must be 'host:port' with a port in 1-65535, got {address!r}")
    return host, int(port)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrometheusServerConfig(_Strict):
    """``metrics.prometheus``: serve ``/metrics`` from prometheus_client's HTTP server."""

    # 0: any free port
    port: Annotated[int, BeforeValidator(_whole_number), Field(ge=0, le=65535)] = 9464
    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    namespace: Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")] = "modular_eventbus"
    # With them, /metrics also shows the process_*, python_* and gc_* families.
    include_process: bool = True


class DatadogExporterConfig(_Strict):
    """``metrics.datadog``, and the settings of :class:`DatadogStatsdExporter`."""

    address: str = "127.0.0.1:8125"
    # Prefix of every metric name; the trailing dot is optional.
    namespace: str = "modular.eventbus."
    flush_interval: Annotated[float, BeforeValidator(_duration), Field(gt=0)] = 5.0
    # Lines are packed into UDP packets of at most this many bytes (1432 fits an
    # Ethernet MTU; raise it on loopback or jumbo-frame networks).
    max_packet_size: Annotated[int, BeforeValidator(_whole_number), Field(ge=64, le=65507)] = 1432
    include_per_engine: bool = True
    include_runtime: bool = True
    tags: tuple[str, ...] = ()

    @field_validator("address")
    @classmethod
    def _host_and_port(cls, address: str) -> str:
        split_address(address)
        return address.strip()

    @field_validator("tags")
    @classmethod
    def _no_separators(cls, tags: tuple[str, ...]) -> tuple[str, ...]:
        for tag in tags:
            if not tag or any(c in tag for c in ",|#\n"):
                raise ValueError(f"a tag must be non-empty without ',', '|', '#', got {tag!r}")
        return tags


class MetricsConfig(_Strict):
    """``metrics``: each exporter runs while the bus runs, when its section is present."""

    prometheus: PrometheusServerConfig | None = None
    datadog: DatadogExporterConfig | None = None


class MetricsExporters:
    """The exporters configured in ``metrics``, started and stopped with the bus."""

    def __init__(self, config: MetricsConfig | None = None) -> None:
        self.config = config or MetricsConfig()
        self._server: HTTPServer | None = None
        self._server_thread: Thread | None = None
        self.datadog: DatadogStatsdExporter | None = None
        self._datadog_task: asyncio.Task[None] | None = None

    @property
    def prometheus_address(self) -> tuple[str, int] | None:
        """Where ``/metrics`` is served (the real port when ``port = 0``), or None."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    async def start(self, bus: EventBusModule) -> None:
        if self.config.prometheus is not None and self._server is None:
            self._start_prometheus(bus, self.config.prometheus)
        if self.config.datadog is not None and self.datadog is None:
            with _needs("datadog", "datadog"):
                from .exporters.datadog import DatadogStatsdExporter
            self.datadog = DatadogStatsdExporter(bus, self.config.datadog)
            self._datadog_task = asyncio.get_running_loop().create_task(self.datadog.run())

    def _start_prometheus(self, bus: EventBusModule, config: PrometheusServerConfig) -> None:
        with _needs("prometheus", "prometheus-client"):
            from prometheus_client import (
                GC_COLLECTOR,
                PLATFORM_COLLECTOR,
                PROCESS_COLLECTOR,
                CollectorRegistry,
                start_http_server,
            )

            from .exporters.prometheus import PrometheusCollector

        # A registry of our own: two buses in one process each serve their own numbers.
        registry = CollectorRegistry(auto_describe=False)
        registry.register(PrometheusCollector(bus, config.namespace))
        if config.include_process:
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                registry.register(collector)
        try:
            self._server, self._server_thread = start_http_server(
                config.port, addr=config.host, registry=registry
            )
        except OSError as exc:
            raise EventBusError(
                f"eventbus.metrics.prometheus: cannot serve /metrics on "
                f"{config.host}:{config.port}: {exc.strerror or exc}"
            ) from exc

    async def stop(self) -> None:
        """Send Datadog's last values, stop serving ``/metrics``."""
        if self.datadog is not None:
            try:
                await self.datadog.close()
            except OSError as exc:
                logger.warning("could not send the last stats to DogStatsD: %s", exc)
            if self._datadog_task is not None:
                await asyncio.gather(self._datadog_task, return_exceptions=True)
            self.datadog = self._datadog_task = None
        if self._server is not None:
            server, thread = self._server, self._server_thread
            self._server = self._server_thread = None
            # shutdown() waits for the serving loop to notice; keep the event loop free.
            await asyncio.to_thread(_shut_down, server, thread)


@contextmanager
def _needs(exporter: str, package: str) -> Iterator[None]:
    """An ImportError of an exporter's library as a clear error at start."""
    try:
        yield
    except ImportError as exc:
        raise EventBusError(
            f"eventbus.metrics.{exporter} needs {package}, which is not installed "
            f"({exc.name}); install it with: pip install 'modular-eventbus[{exporter}]'"
        ) from exc


def _shut_down(server: HTTPServer, thread: Thread | None) -> None:
    server.shutdown()
    server.server_close()
    if thread is not None:
        thread.join(timeout=5)
