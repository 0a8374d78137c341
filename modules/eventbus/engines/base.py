"""The engine contract, and a base for engines that fan out locally through a Dispatcher."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import ClassVar, Literal

from ..config import EngineConfig
from ..delivery import DeliveryHooks, DeliveryStats, Dispatcher
from ..event import Event, Subscription


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine guarantees; tests and users decide by these, never by engine type."""

    patterns: bool = True  # wildcard subscriptions
    ordering: bool = True  # ordered delivery per subscription and topic
    durability: bool = False  # events survive a restart of this process
    cross_process: bool = False  # other processes' subscribers receive the events


# --- health (bus.health()) -------------------------------------------------------------

HealthState = Literal["up", "down", "stopped"]


@dataclass(frozen=True, slots=True)
class EngineHealth:
    """Whether an engine works: ``state``, the last connection ``error`` (secrets masked; None
    when there was none) and ``since`` (epoch seconds: when it entered that state)."""

    state: HealthState
    error: str | None = None
    since: float | None = None


# --- end of health ----------------------------------------------------------------------


class Engine(ABC):
    """One event transport. The bus routes each topic to exactly one engine.

    ``publish`` returns once the event is handed over (queued locally, or acknowledged by the
    broker). ``subscribe`` returns once the subscription is live. ``stop(timeout)`` drains
    for at most ``timeout`` seconds and forgets every subscription; ``start`` may follow.
    """

    # The guarantees of the engine type; an engine whose guarantees depend on its config
    # (a mode, say) sets its own in ``__init__``.
    capabilities: Capabilities = Capabilities()
    config_model: ClassVar[type[EngineConfig]] = EngineConfig

    def __init__(self, name: str, config: EngineConfig) -> None:
        self.name = name
        self.config = config
        self.hooks: DeliveryHooks | None = None
        self.source = "eventbus"  # the CloudEvents ``source`` of events put on a wire
        self._created_at = time.time()

    def attach(self, hooks: DeliveryHooks | None, source: str) -> None:
        """Called by the bus before ``start``: where to report deliveries, and its source."""
        self.hooks = hooks
        self.source = source

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self, timeout: float) -> None: ...

    @abstractmethod
    def publish(self, event: Event) -> Awaitable[None]:
        """Usually ``async def``; any awaitable will do."""

    @abstractmethod
    async def subscribe(self, sub: Subscription) -> None: ...

    @abstractmethod
    async def unsubscribe(self, sub: Subscription) -> None: ...

    @abstractmethod
    def topics(self) -> list[str]: ...

    @abstractmethod
    def subscriber_count(self, topic: str) -> int: ...

    @abstractmethod
    def stats(self) -> DeliveryStats: ...

    def health(self) -> EngineHealth:
        """Whether the engine works. An in-process engine is ``up`` once created; a broker
        engine (``engines.broker``) reports its connection. The bus reports ``stopped`` for
        an engine that is not started, whatever this says."""
        return EngineHealth("up", None, self._created_at)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class FanoutEngine(Engine):
    """An engine whose subscriptions live in a local :class:`Dispatcher`.

    Subclasses implement ``publish`` (and a broker engine its receiving side, which hands what
    it receives to ``self.dispatcher.dispatch``); subscriptions, delivery policy, stats and
    shutdown draining come from here.
    """

    def __init__(self, name: str, config: EngineConfig) -> None:
        super().__init__(name, config)
        self.dispatcher = Dispatcher(name, config.delivery_policy())

    def attach(self, hooks: DeliveryHooks | None, source: str) -> None:
        super().attach(hooks, source)
        self.dispatcher.hooks = hooks

    async def start(self) -> None:
        pass

    async def stop(self, timeout: float) -> None:
        await self.dispatcher.close(timeout)

    async def subscribe(self, sub: Subscription) -> None:
        self.dispatcher.add(sub)

    async def unsubscribe(self, sub: Subscription) -> None:
        self.dispatcher.remove(sub)

    def topics(self) -> list[str]:
        return self.dispatcher.topics()

    def subscriber_count(self, topic: str) -> int:
        return self.dispatcher.subscriber_count(topic)

    def stats(self) -> DeliveryStats:
        return self.dispatcher.stats.snapshot()
