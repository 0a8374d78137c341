"""A bus with two engines of different types (memory and custom) and traffic on both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest

from modular import Application
from modules.eventbus import Event, EventBusModule
from tests.helpers import wait_for

ENGINES = {
    "engines": [
        {"name": "fast", "type": "memory"},
        {"name": "custom", "type": "custom", "config": {"enableMetrics": False}},
    ],
    "routing": [
        {"topics": ["user.*"], "engine": "fast"},
        {"topics": ["order.*"], "engine": "custom"},
    ],
}


def bus_config(**extra: Any) -> dict[str, Any]:
    return {"eventbus": {**ENGINES, **extra}}


class Traffic:
    """Subscriptions on both engines; an ``order.bad`` event makes its handler fail."""

    def __init__(self) -> None:
        self.handled: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.handled.append(event)
        if event.topic == "order.bad":
            raise RuntimeError("boom")

    async def subscribe(self, bus: EventBusModule) -> None:
        await bus.subscribe("user.*", self)
        await bus.subscribe("order.*", self)

    async def send(self, bus: EventBusModule, *topics: str) -> None:
        before = len(self.handled)
        for topic in topics:
            await bus.publish(topic, {"n": len(topics)})
        await wait_for(
            lambda: len(self.handled) == before + len(topics), what=f"handlers of {topics}"
        )


@asynccontextmanager
async def running_bus(config: Mapping[str, Any]) -> AsyncIterator[EventBusModule]:
    app = Application(config, envvar_prefix=None)
    module = EventBusModule()
    app.register_module(module)
    async with app:
        yield module


@pytest.fixture
def traffic() -> Traffic:
    return Traffic()
