"""An example of a custom engine, written only against the public engine API.

It keeps metrics (events published, per topic, filtered, average handler time), logs them
every ``metricsInterval`` when ``enableMetrics`` is on, and accepts only topics that start
with one of its ``eventFilters`` prefixes (all topics when there are none).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ..config import Duration, EngineConfig
from ..event import Event, Subscription
from .base import Capabilities, FanoutEngine

logger = logging.getLogger("modules.eventbus.engines.custom")


class EventFilter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    topic_prefix: Annotated[str, Field(min_length=1)]


class CustomEngineConfig(EngineConfig):
    enable_metrics: bool = True
    metrics_interval: Annotated[Duration, Field(gt=0)] = 60.0
    event_filters: list[EventFilter] = Field(default_factory=list)


class CustomEngine(FanoutEngine):
    capabilities = Capabilities(patterns=True, ordering=True)
    config_model: ClassVar[type[EngineConfig]] = CustomEngineConfig

    def __init__(self, name: str, config: EngineConfig) -> None:
        assert isinstance(config, CustomEngineConfig)
        super().__init__(name, config)
        self.settings = config
        self._prefixes = tuple(f.topic_prefix for f in config.event_filters)
        self.events_total = 0
        self.events_filtered = 0
        self.events_by_topic: Counter[str] = Counter()
        self._handler_seconds = 0.0
        self._handler_calls = 0
        self._timed: dict[Subscription, Subscription] = {}
        self._reporter: asyncio.Task[None] | None = None

    def accepts(self, topic: str) -> bool:
        return not self._prefixes or topic.startswith(self._prefixes)

    async def start(self) -> None:
        if self.settings.enable_metrics and self._reporter is None:
            self._reporter = asyncio.get_running_loop().create_task(self._report_periodically())

    async def stop(self, timeout: float) -> None:
        await super().stop(timeout)
        self._timed.clear()
        if self._reporter is not None:
            self._reporter.cancel()
            await asyncio.gather(self._reporter, return_exceptions=True)
            self._reporter = None
            self._log_metrics()

    async def publish(self, event: Event) -> None:
        if not self.accepts(event.topic):
            self.events_filtered += 1
            return
        self.events_total += 1
        self.events_by_topic[event.topic] += 1
        await self.dispatcher.dispatch(event)

    async def subscribe(self, sub: Subscription) -> None:
        # The dispatcher gets a twin of the subscription whose handler is timed.
        timed = Subscription(
            sub.id,
            sub.topic,
            self._timing(sub),
            is_async=sub.is_async,
            tenant=sub.tenant,
            all_tenants=sub.all_tenants,
            payload_type=sub.payload_type,
            engine=self.name,
        )
        self._timed[sub] = timed
        await super().subscribe(timed)

    async def unsubscribe(self, sub: Subscription) -> None:
        timed = self._timed.pop(sub, None)
        if timed is not None:
            await super().unsubscribe(timed)

    def _timing(self, sub: Subscription) -> Any:
        handler = sub.handler

        async def timed(event: Event) -> None:
            started = time.perf_counter()
            try:
                result = handler(event)
                if asyncio.iscoroutine(result):
                    await result
            finally:
                self._handler_seconds += time.perf_counter() - started
                self._handler_calls += 1

        return timed

    def metrics(self) -> dict[str, Any]:
        calls = self._handler_calls
        return {
            "events_total": self.events_total,
            "events_filtered": self.events_filtered,
            "events_by_topic": dict(self.events_by_topic),
            "handler_calls": calls,
            "average_handler_seconds": self._handler_seconds / calls if calls else 0.0,
        }

    async def _report_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.metrics_interval)
            self._log_metrics()

    def _log_metrics(self) -> None:
        m = self.metrics()
        logger.info(
            "engine %s: %d events (%d filtered), %d topics, avg handler %.6fs",
            self.name,
            m["events_total"],
            m["events_filtered"],
            len(m["events_by_topic"]),
            m["average_handler_seconds"],
        )
