"""The custom engine, and engine types registered by users."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from modular import validate_section
from modules.eventbus import (
    DeliveryStats,
    Engine,
    EngineConfig,
    Event,
    FanoutEngine,
    Subscription,
    known_engine_types,
    register_engine,
    unregister_engine,
)
from modules.eventbus.engines.custom import CustomEngine
from modules.eventbus.topics import matches
from tests.helpers import wait_for
from tests.unit.eventbus.conftest import MakeBus

# --- the custom engine ----------------------------------------------------------------------


async def test_custom_engine_filters_and_counts(make_bus: MakeBus) -> None:
    bus = (
        await make_bus(
            {
                "engines": [
                    {"name": "mem", "type": "memory"},
                    {
                        "name": "cust",
                        "type": "custom",
                        "config": {
                            "enableMetrics": True,
                            "metricsInterval": "30s",
                            "eventFilters": [{"topicPrefix": "analytics.page"}],
                        },
                    },
                ],
                "routing": [{"topics": ["analytics.*"], "engine": "cust"}],
            }
        )
    ).bus
    engine = bus.engine("cust")
    assert isinstance(engine, CustomEngine)
    received: list[str] = []

    async def handler(event: Event) -> None:
        await asyncio.sleep(0)  # handler time must be measurable
        received.append(event.topic)

    await bus.subscribe("analytics.*", handler)
    # Ordered delivery: a filtered event that slipped through would arrive first.
    await bus.publish("analytics.secret")
    await bus.publish("analytics.click")
    await bus.publish("analytics.pageview")
    await bus.publish("analytics.pageview")
    await wait_for(lambda: len(received) == 2)
    assert received == ["analytics.pageview", "analytics.pageview"]

    metrics = engine.metrics()
    assert metrics["events_filtered"] == 2
    assert metrics["events_total"] == 2
    assert metrics["events_by_topic"] == {"analytics.pageview": 2}
    assert metrics["handler_calls"] == 2
    assert metrics["average_handler_seconds"] > 0
    assert bus.per_engine_stats()["cust"].delivered == 2
    assert bus.per_engine_stats()["mem"].delivered == 0


async def test_custom_engine_without_filters_accepts_everything(make_bus: MakeBus) -> None:
    bus = (await make_bus({"engine": "custom"})).bus
    engine = bus.engine("default")
    assert isinstance(engine, CustomEngine)
    received: list[str] = []
    await bus.subscribe_async("*", lambda e: received.append(e.topic))
    for topic in ("a.b", "c.d", "a.b"):
        await bus.publish(topic)
    await wait_for(lambda: len(received) == 3)
    assert engine.metrics()["events_by_topic"] == {"a.b": 2, "c.d": 1}
    assert engine.metrics()["events_filtered"] == 0


async def test_custom_engine_logs_its_metrics_every_interval(
    make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modules.eventbus.engines.custom")
    harness = await make_bus(
        {"engines": [{"name": "cust", "type": "custom", "config": {"metricsInterval": "10ms"}}]}
    )
    await harness.bus.publish("x.y")

    def reports() -> int:
        return sum("engine cust: 1 events" in r.getMessage() for r in caplog.records)

    def reporters() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if "_report" in repr(t.get_coro())]

    await wait_for(lambda: reports() >= 2)
    assert len(reporters()) == 1
    await harness.app.stop()
    assert reporters() == []


async def test_custom_engine_with_metrics_disabled_runs_no_reporter(make_bus: MakeBus) -> None:
    before = asyncio.all_tasks()
    bus = (
        await make_bus(
            {"engines": [{"name": "c", "type": "custom", "config": {"enableMetrics": False}}]}
        )
    ).bus
    assert asyncio.all_tasks() - before == set()
    assert isinstance(bus.engine("c"), CustomEngine)


# --- engine types registered from here ------------------------------------------------------


class RecordingEngine(FanoutEngine):
    """Keeps every event it was given, then fans out like any local engine."""

    def __init__(self, name: str, config: EngineConfig) -> None:
        super().__init__(name, config)
        self.published: list[Event] = []
        self.started = 0
        self.stopped = 0

    async def start(self) -> None:
        self.started += 1

    async def stop(self, timeout: float) -> None:
        self.stopped += 1
        await super().stop(timeout)

    async def publish(self, event: Event) -> None:
        self.published.append(event)
        await self.dispatcher.dispatch(event)


def recording_factory(config: Mapping[str, Any], name: str) -> Engine:
    return RecordingEngine(name, validate_section(EngineConfig, config, f"engine {name}"))


class DirectEngine(Engine):
    """The whole Engine contract without the shared fan-out: handlers are called inline."""

    def __init__(self, name: str) -> None:
        super().__init__(name, EngineConfig())
        self.subs: list[Subscription] = []
        self.counts = DeliveryStats()
        self.running = False

    async def start(self) -> None:
        self.running = True

    async def stop(self, timeout: float) -> None:
        self.running = False
        self.subs.clear()

    async def publish(self, event: Event) -> None:
        for sub in list(self.subs):
            if matches(sub.topic, event.topic) and sub.accepts(event.tenant):
                result = sub.handler(event)
                if result is not None:
                    await result
                self.counts.delivered += 1

    async def subscribe(self, sub: Subscription) -> None:
        self.subs.append(sub)

    async def unsubscribe(self, sub: Subscription) -> None:
        if sub in self.subs:
            self.subs.remove(sub)

    def topics(self) -> list[str]:
        return sorted({s.topic for s in self.subs})

    def subscriber_count(self, topic: str) -> int:
        return sum(1 for s in self.subs if matches(s.topic, topic))

    def stats(self) -> DeliveryStats:
        return self.counts.snapshot()


@pytest.fixture
def engine_types() -> Iterator[None]:
    register_engine("test-recording", recording_factory)
    register_engine("test-direct", lambda config, name: DirectEngine(name))
    try:
        yield
    finally:
        unregister_engine("test-recording")
        unregister_engine("test-direct")


@pytest.mark.usefixtures("engine_types")
async def test_a_registered_engine_type_handles_its_routed_topics(make_bus: MakeBus) -> None:
    harness = await make_bus(
        {
            "engines": [
                {"name": "mem", "type": "memory"},
                {"name": "audit", "type": "test-recording", "config": {"workerCount": 2}},
            ],
            "routing": [{"topics": ["audit.*"], "engine": "audit"}],
        }
    )
    bus = harness.bus
    assert {"test-recording", "test-direct", "memory", "custom"} <= known_engine_types()
    engine = bus.engine("audit")
    assert isinstance(engine, RecordingEngine)
    assert engine.config.worker_count == 2
    assert engine.started == 1
    assert bus.get_router().engine_for_topic("audit.login") == "audit"

    audit: list[Event] = []
    users: list[Event] = []
    await bus.subscribe("audit.*", audit.append)
    await bus.subscribe("user.*", users.append)
    event = await bus.publish("audit.login", {"who": "ada"})
    await bus.publish("user.created")
    await wait_for(lambda: len(audit) == 1 and len(users) == 1)

    assert [e.id for e in engine.published] == [event.id]
    assert audit[0].id == event.id
    stats = bus.per_engine_stats()
    assert (stats["audit"].delivered, stats["mem"].delivered) == (1, 1)
    await harness.app.stop()
    assert engine.stopped == 1


@pytest.mark.usefixtures("engine_types")
async def test_an_engine_without_the_shared_fan_out_works_too(make_bus: MakeBus) -> None:
    harness = await make_bus(
        {
            "engines": [
                {"name": "mem", "type": "memory"},
                {"name": "direct", "type": "test-direct"},
            ],
            "routing": [{"topics": ["direct.*"], "engine": "direct"}],
        }
    )
    bus = harness.bus
    engine = bus.engine("direct")
    assert isinstance(engine, DirectEngine) and engine.running
    received: list[Event] = []
    sub = await bus.subscribe("direct.*", received.append)
    await bus.publish("direct.hit", 1)
    assert [e.payload for e in received] == [1]  # this engine delivers inline
    assert bus.per_engine_stats()["direct"].delivered == 1
    assert bus.subscriber_count("direct.hit") == 1
    await sub.cancel()
    await bus.publish("direct.hit", 2)
    assert [e.payload for e in received] == [1]
    await harness.app.stop()
    assert not engine.running


@pytest.mark.usefixtures("engine_types")
def test_registering_an_existing_type_needs_replace() -> None:
    with pytest.raises(ValueError, match="test-recording"):
        register_engine("test-recording", recording_factory)
    with pytest.raises(ValueError, match="memory"):
        register_engine("memory", recording_factory)
    register_engine("test-recording", recording_factory, replace=True)
    assert "test-recording" in known_engine_types()


def test_engine_type_names_must_be_non_empty() -> None:
    with pytest.raises(ValueError):
        register_engine("", recording_factory)


async def test_an_unregistered_type_is_unknown_again() -> None:
    register_engine("test-temporary", recording_factory)
    unregister_engine("test-temporary")
    assert "test-temporary" not in known_engine_types()
    unregister_engine("test-temporary")  # unregistering twice is harmless


@pytest.mark.usefixtures("engine_types")
async def test_a_factory_error_is_a_config_error_naming_the_engine(make_bus: MakeBus) -> None:
    from modular import ConfigError

    with pytest.raises(ConfigError) as caught:
        await make_bus(
            {"engines": [{"name": "audit", "type": "test-recording", "config": {"workerCont": 1}}]}
        )
    assert "workerCont" in str(caught.value)
