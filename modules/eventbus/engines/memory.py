"""The in-process engines: publish hands the event straight to the local fan-out.

``memory`` follows the configured delivery mode (``drop`` by default). ``durable-memory``
(Go Modular's name) never drops while it runs: publishers wait for room instead, and each
subscription's mailbox holds ``maxDurableQueueDepth`` events (0: ``maxEventQueueSize``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from modular import FieldError

from ..config import MAX_QUEUE_SIZE, EngineConfig
from ..delivery import DeliveryMode, DeliveryPolicy
from ..event import Event
from .base import Capabilities, FanoutEngine


class MemoryEngine(FanoutEngine):
    """Bounded, ordered per subscription, in this process only."""

    capabilities = Capabilities(patterns=True, ordering=True, durability=False, cross_process=False)

    def publish(self, event: Event) -> Awaitable[None]:
        # The dispatcher's coroutine itself: no extra coroutine frame on the hot path.
        return self.dispatcher.dispatch(event)


class DurableMemoryConfig(EngineConfig):
    """``durable-memory``: ``block`` delivery, and a per-subscription queue depth."""

    delivery_mode: DeliveryMode = DeliveryMode.BLOCK
    max_durable_queue_depth: Annotated[int, Field(ge=0, le=MAX_QUEUE_SIZE)] = 0

    @model_validator(mode="after")
    def _never_drops(self) -> DurableMemoryConfig:
        if self.delivery_mode is not DeliveryMode.BLOCK:
            raise FieldError(
                ("delivery_mode",),
                f"a durable-memory engine never drops, so its deliveryMode is 'block'; got "
                f"{self.delivery_mode.value!r} (use type 'memory' for a lossy mode)",
            )
        return self

    def delivery_policy(self) -> DeliveryPolicy:
        depth = self.max_durable_queue_depth or self.max_event_queue_size
        policy = super().delivery_policy()
        return DeliveryPolicy(
            buffer_size=depth,
            mode=DeliveryMode.BLOCK,
            block_timeout=0.0,
            rotate=policy.rotate,
            worker_count=policy.worker_count,
            queue_size=policy.queue_size,
        )


class DurableMemoryEngine(MemoryEngine):
    """A memory engine whose publishers wait when a mailbox is full: nothing is dropped
    while it runs (what is left when ``stop`` gives up draining is counted as dropped)."""

    config_model: ClassVar[type[EngineConfig]] = DurableMemoryConfig
