"""A sampling engine: it delivers a fixed fraction of the events routed to it.

High-volume telemetry often needs only a sample downstream. The engine's own key is
``sampleRate`` (``0 < sampleRate <= 1``); every other key of its ``config`` map is one of the
settings every engine understands (``workerCount``, ``deliveryMode``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import Field

from modular import validate_section
from modules.eventbus import Capabilities, EngineConfig, Event, FanoutEngine


class SamplingConfig(EngineConfig):
    """The engine's config map: the shared engine settings plus ``sampleRate``."""

    sample_rate: Annotated[float, Field(gt=0, le=1)] = 1.0


class SamplingEngine(FanoutEngine):
    # A sample keeps the order of what it keeps, and patterns work as on any local fan-out.
    capabilities = Capabilities(patterns=True, ordering=True)
    config_model: ClassVar[type[EngineConfig]] = SamplingConfig

    def __init__(self, name: str, config: SamplingConfig) -> None:
        super().__init__(name, config)
        self.sample_rate = config.sample_rate
        self.published = 0
        self.sampled_out = 0

    async def publish(self, event: Event) -> None:
        self.published += 1
        # Deterministic sampling: of the first n events exactly int(n * rate) are kept, the
        # n-th being kept when that number goes up.
        if int(self.published * self.sample_rate) == int((self.published - 1) * self.sample_rate):
            self.sampled_out += 1
            return
        await self.dispatcher.dispatch(event)


def build_sampling_engine(config: Mapping[str, Any], name: str) -> SamplingEngine:
    """The factory given to ``register_engine``: validates the map, builds the engine.

    ``validate_section`` turns a typo (``sampelRate``) or a bad value into a ConfigError that
    names the key, the closest known one and the value.
    """
    settings = validate_section(SamplingConfig, config, f"eventbus.engines.{name}.config")
    return SamplingEngine(name, settings)
