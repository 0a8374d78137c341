"""The module as a service: defaults, publish results, lifecycle and observer events."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from modular import Application
from modules.eventbus import (
    DeliveryMode,
    Event,
    EventBusModule,
    EventBusNotStartedError,
    FanoutEngine,
)
from modules.eventbus.engines.memory import MemoryEngine
from tests.helpers import wait_for
from tests.unit.eventbus.conftest import MakeBus

# --- the service and its defaults ---------------------------------------------------------


async def test_the_service_is_the_module_itself() -> None:
    app = Application(envvar_prefix=None)
    module = EventBusModule()
    app.register_module(module)
    await app.init()
    assert module.name == "eventbus"
    assert app.get_service("eventbus.provider") is module
    assert app.get_service("eventbus.provider", EventBusModule) is module


async def test_defaults_are_the_documented_ones(make_bus: MakeBus) -> None:
    bus = (await make_bus()).bus
    assert bus.config.engine == "memory"
    assert list(bus.engines()) == ["default"]
    engine = bus.engine("default")
    assert isinstance(engine, MemoryEngine)
    config = engine.config
    assert config.default_event_buffer_size == 10
    assert config.worker_count == 5
    assert config.delivery_mode is DeliveryMode.DROP
    assert config.rotate_subscriber_order is True
    assert config.max_event_queue_size == 1000
    assert bus.config.shutdown_timeout == 30.0
    assert bus.config.source == "eventbus"
    # The settings reach the engine's fan-out, not only its config object.
    assert isinstance(engine, FanoutEngine)
    policy = engine.dispatcher.policy
    assert (policy.buffer_size, policy.worker_count, policy.queue_size) == (10, 5, 1000)
    assert policy.mode is DeliveryMode.DROP and policy.rotate is True


async def test_unknown_engine_name_is_a_clear_key_error(make_bus: MakeBus) -> None:
    bus = (await make_bus()).bus
    with pytest.raises(KeyError, match=r"nope.*default"):
        bus.engine("nope")


async def test_publish_before_start_raises(make_bus: MakeBus) -> None:
    bus = (await make_bus(start=False)).bus
    assert not bus.is_running
    with pytest.raises(EventBusNotStartedError, match=r"user\.created"):
        await bus.publish("user.created", {"id": 1})


async def test_publish_on_a_module_never_initialised_raises() -> None:
    with pytest.raises(EventBusNotStartedError):
        await EventBusModule().publish("user.created")


async def test_publish_returns_the_event(make_bus: MakeBus) -> None:
    bus = (await make_bus()).bus
    received: list[Event] = []
    await bus.subscribe("user.created", received.append)
    before = datetime.now(UTC)

    event = await bus.publish(
        "user.created", {"id": 7}, metadata={"trace": "abc"}, partition_key="7", tenant=None
    )

    assert isinstance(event, Event)
    assert event.topic == "user.created"
    assert event.payload == {"id": 7}
    assert dict(event.metadata) == {"trace": "abc"}
    assert event.partition_key == "7"
    assert event.tenant is None
    assert event.source == "eventbus"
    assert event.created_at.tzinfo is not None
    assert event.created_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=5) <= event.created_at <= datetime.now(UTC)
    assert isinstance(event.id, str) and event.id
    with pytest.raises(TypeError):
        event.metadata["trace"] = "changed"  # type: ignore[index]
    await wait_for(lambda: len(received) == 1)
    assert received[0] == event and received[0].payload == {"id": 7}


async def test_event_ids_are_unique_and_metadata_is_copied(make_bus: MakeBus) -> None:
    bus = (await make_bus()).bus
    metadata = {"k": "v"}
    events = [await bus.publish("a.b", i, metadata=metadata) for i in range(200)]
    metadata["k"] = "changed later"
    assert len({e.id for e in events}) == 200
    assert all(e.metadata == {"k": "v"} for e in events)
    assert events[0].metadata is not metadata


async def test_tenant_and_source_come_from_the_call_and_the_config(make_bus: MakeBus) -> None:
    bus = (await make_bus({"source": "billing-service"})).bus
    event = await bus.publish("invoice.paid", tenant="acme")
    assert event.tenant == "acme"
    assert event.source == "billing-service"
    assert event.payload is None
    assert dict(event.metadata) == {}


async def test_subscription_details_and_counts(make_bus: MakeBus) -> None:
    bus = (await make_bus()).bus
    exact = await bus.subscribe("user.created", lambda e: None)
    pattern = await bus.subscribe_async("user.*", lambda e: None)
    everything = await bus.subscribe("*", lambda e: None)

    assert len({exact.id, pattern.id, everything.id}) == 3
    assert (exact.topic, exact.is_async) == ("user.created", False)
    assert (pattern.topic, pattern.is_async) == ("user.*", True)
    assert exact.engine == "default" and exact.active
    assert bus.topics() == ["*", "user.*", "user.created"]
    assert bus.subscriber_count("user.created") == 3
    assert bus.subscriber_count("user.deleted") == 2
    assert bus.subscriber_count("user") == 1  # `user.*` does not match `user` itself
    assert bus.subscriber_count("order.placed") == 1
    assert {s.id for s in bus.subscriptions()} == {exact.id, pattern.id, everything.id}


# --- lifecycle ------------------------------------------------------------------------------


async def test_stop_refuses_new_publishes(make_bus: MakeBus) -> None:
    harness = await make_bus()
    await harness.bus.publish("a.b")
    await harness.app.stop()
    assert not harness.bus.is_running
    with pytest.raises(EventBusNotStartedError):
        await harness.bus.publish("a.b")


async def test_stop_lets_in_flight_async_handlers_finish(make_bus: MakeBus) -> None:
    harness = await make_bus({"shutdownTimeout": "10s"})
    bus = harness.bus
    started: list[int] = []
    finished: list[int] = []

    async def slow(event: Event) -> None:
        started.append(event.payload)
        await asyncio.sleep(0.05)  # the handler is slow; the test never sleeps to synchronise
        finished.append(event.payload)

    await bus.subscribe_async("work.item", slow)
    await bus.subscribe("work.item", slow)
    for i in range(3):
        await bus.publish("work.item", i)
    await wait_for(lambda: len(started) >= 1)
    await harness.app.stop()

    assert sorted(finished) == [0, 0, 1, 1, 2, 2]
    assert bus.stats() == (6, 0)


async def test_stop_counts_what_is_left_after_the_shutdown_timeout(make_bus: MakeBus) -> None:
    harness = await make_bus({"shutdownTimeout": "100ms"})
    bus = harness.bus
    never = asyncio.Event()  # never set: these handlers cannot finish
    started: list[int] = []

    async def stuck(event: Event) -> None:
        started.append(event.payload)
        await never.wait()

    await bus.subscribe("jobs.sync", stuck)
    await bus.subscribe_async("jobs.async", stuck)
    for i in range(3):
        await bus.publish("jobs.sync", i)
        await bus.publish("jobs.async", i)
    await wait_for(lambda: len(started) == 4)  # 1 ordered + 3 on the async pool

    began = time.monotonic()
    await harness.app.stop()
    elapsed = time.monotonic() - began

    assert elapsed < 3.0, f"stop took {elapsed:.2f}s with shutdownTimeout 100ms"
    delivered, dropped = bus.stats()
    assert delivered == 0
    assert dropped == 6  # in a handler or still queued: every one of them is counted
    assert bus.per_engine_stats()["default"].dropped == 6


async def test_stop_releases_a_publisher_blocked_on_a_full_queue(make_bus: MakeBus) -> None:
    harness = await make_bus(
        {"shutdownTimeout": "100ms", "deliveryMode": "block", "defaultEventBufferSize": 1}
    )
    bus = harness.bus
    never = asyncio.Event()
    started: list[int] = []

    async def stuck(event: Event) -> None:
        started.append(event.payload)
        await never.wait()

    await bus.subscribe("jobs", stuck)
    await bus.publish("jobs", 0)  # taken by the handler, which never returns
    await wait_for(lambda: started == [0])
    await bus.publish("jobs", 1)  # fills the queue of one
    blocked = asyncio.create_task(bus.publish("jobs", 2))
    await asyncio.sleep(0)
    assert not blocked.done()

    async with asyncio.timeout(3):
        await harness.app.stop()
        await blocked  # released by the stop, not left hanging
    assert bus.stats() == (0, 3)  # in the handler, queued, and the blocked one


async def test_nothing_of_the_bus_is_left_running_after_stop() -> None:
    before = asyncio.all_tasks()
    app = Application(
        {
            "eventbus": {
                "shutdownTimeout": "100ms",
                "engines": [
                    {"name": "mem", "type": "memory"},
                    {"name": "cust", "type": "custom", "config": {"metricsInterval": "10ms"}},
                ],
                "routing": [{"topics": ["metrics.*"], "engine": "cust"}],
            }
        },
        envvar_prefix=None,
    )
    bus = EventBusModule()
    app.register_module(bus)
    await app.start()
    never = asyncio.Event()

    async def stuck(event: Event) -> None:
        await never.wait()

    received: list[Event] = []
    await bus.subscribe("user.*", received.append)
    await bus.subscribe_async("metrics.*", stuck)
    await bus.subscribe("*", stuck)
    await bus.publish("user.a")
    await bus.publish("metrics.cpu")
    await wait_for(lambda: len(received) == 1)
    assert asyncio.all_tasks() - before, "the bus runs tasks while started"

    await app.stop()

    left = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert left == set(), left
    assert bus.topics() == []
    assert bus.subscriptions() == []
    assert bus.subscriber_count("user.a") == 0
    assert all(engine.topics() == [] for engine in bus.engines().values())


async def test_stop_is_idempotent_and_start_after_stop_works(make_bus: MakeBus) -> None:
    harness = await make_bus(observe=True)
    bus = harness.bus
    await bus.subscribe("a.b", lambda e: None)
    await harness.app.stop()
    await harness.app.stop()
    await bus.stop()
    assert len(harness.observed("bus.stopped")) == 1

    await harness.app.start()
    assert bus.is_running
    received: list[Event] = []
    pooled: list[Event] = []
    await bus.subscribe("a.b", received.append)
    await bus.subscribe_async("a.*", pooled.append)
    await bus.publish("a.b", "again")
    await wait_for(lambda: len(received) == 1 and len(pooled) == 1)
    assert received[0].payload == "again" and pooled[0].payload == "again"
    assert bus.subscriber_count("a.b") == 2  # the subscription of before the stop is gone


async def test_unsubscribe_is_idempotent_and_harmless_after_stop(make_bus: MakeBus) -> None:
    harness = await make_bus()
    bus = harness.bus
    received: list[Event] = []
    other: list[Event] = []
    sub = await bus.subscribe("a.b", received.append)
    await bus.subscribe("a.b", other.append)

    await bus.unsubscribe(sub)
    await bus.unsubscribe(sub)
    assert not sub.active
    assert bus.subscriber_count("a.b") == 1
    await bus.publish("a.b", 1)
    await wait_for(lambda: len(other) == 1)
    assert received == []

    later = await bus.subscribe("c.d", received.append)
    await harness.app.stop()
    await bus.unsubscribe(later)
    await later.cancel()
    assert not later.active


async def test_cancel_ends_the_subscription(make_bus: MakeBus) -> None:
    bus = (await make_bus()).bus
    received: list[Event] = []
    witness: list[Event] = []
    sub = await bus.subscribe("a.b", received.append)
    await bus.subscribe("a.b", witness.append)
    await bus.publish("a.b", 1)
    await wait_for(lambda: len(received) == 1 and len(witness) == 1)

    await sub.cancel()
    await sub.cancel()
    await bus.publish("a.b", 2)
    await wait_for(lambda: len(witness) == 2)
    assert [e.payload for e in received] == [1]
    assert not sub.active
    assert sub.id not in {s.id for s in bus.subscriptions()}


async def test_subscribe_before_start_is_live_once_started() -> None:
    app = Application(envvar_prefix=None)
    bus = EventBusModule()
    app.register_module(bus)
    await app.init()
    received: list[Event] = []
    await bus.subscribe("early.bird", received.append)
    await app.start()
    try:
        await bus.publish("early.bird", 1)
        await wait_for(lambda: len(received) == 1)
    finally:
        await app.stop()


# --- observer events ------------------------------------------------------------------------


async def test_observer_events_of_a_bus_lifetime(make_bus: MakeBus) -> None:
    harness = await make_bus(observe=True)
    bus = harness.bus
    assert len(harness.observed("config.loaded")) == 1
    loaded = harness.observed("config.loaded")[0]
    assert loaded.data["engines"] == [{"name": "default", "type": "memory"}]
    assert loaded.source == "modular.eventbus"
    assert len(harness.observed("bus.started")) == 1
    assert harness.observed("bus.started")[0].data["engines"] == ["default"]

    received: list[Event] = []
    first = await bus.subscribe("user.created", received.append)
    second = await bus.subscribe("user.created", lambda e: None)

    created = harness.observed("subscription.created")
    assert [r.data["subscription_id"] for r in created] == [first.id, second.id]
    assert all(r.data["topic"] == "user.created" for r in created)
    assert all(r.data["engine"] == "default" for r in created)
    topic_created = harness.observed("topic.created")
    assert len(topic_created) == 1  # only the first subscriber creates the topic
    assert topic_created[0].data == {"topic": "user.created", "engine": "default"}

    event = await bus.publish("user.created", {"id": 1})
    published = harness.observed("message.published")
    assert len(published) == 1
    assert published[0].data["topic"] == "user.created"
    assert published[0].data["event_id"] == event.id
    assert published[0].data["engine"] == "default"
    await wait_for(lambda: len(harness.observed("message.received")) == 2)
    got = harness.observed("message.received")
    assert {r.data["subscription_id"] for r in got} == {first.id, second.id}
    assert all(r.data["topic"] == "user.created" and r.data["engine"] == "default" for r in got)
    assert all(r.data["event_id"] == event.id for r in got)

    await bus.unsubscribe(first)
    removed = harness.observed("subscription.removed")
    assert [r.data["subscription_id"] for r in removed] == [first.id]
    assert removed[0].data["topic"] == "user.created"
    assert removed[0].data["engine"] == "default"
    assert harness.observed("topic.deleted") == []  # one subscriber is left

    await second.cancel()
    deleted = harness.observed("topic.deleted")
    assert len(deleted) == 1
    assert deleted[0].data == {"topic": "user.created", "engine": "default"}

    await harness.app.stop()
    stopped = harness.observed("bus.stopped")
    assert len(stopped) == 1 and stopped[0].data["engines"] == ["default"]
    assert all(r.source == "modular.eventbus" for r in harness.records if "eventbus" in r.type)
    kinds = [r.type.removeprefix("com.modular.eventbus.") for r in harness.records]
    assert kinds.index("config.loaded") < kinds.index("bus.started") < kinds.index("bus.stopped")


async def test_observers_can_ask_for_only_some_event_types(make_bus: MakeBus) -> None:
    harness = await make_bus()
    seen: list[str] = []
    harness.app.register_observer(
        lambda record: seen.append(record.type), ["com.modular.eventbus.topic.created"]
    )
    await harness.bus.subscribe("a.b", lambda e: None)
    await harness.bus.publish("a.b")
    assert seen == ["com.modular.eventbus.topic.created"]
