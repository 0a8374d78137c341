"""Retention: history per topic, TTL, retentionDays, limits and replay, on a clock we move."""

from __future__ import annotations

import asyncio

from modules.eventbus import Event
from modules.eventbus.history import History
from tests.helpers import FakeClock, wait_for
from tests.unit.eventbus.conftest import MakeBus


def payloads(events: list[Event]) -> list[object]:
    return [e.payload for e in events]


def make_event(topic: str, payload: object, at: float, tenant: str | None = None) -> Event:
    return Event(f"id-{topic}-{payload}", topic, payload, {}, at, "test", tenant)


async def test_events_expire_after_the_ttl(make_bus: MakeBus) -> None:
    clock = FakeClock()
    bus = (await make_bus({"eventTTL": "10s"}, clock=clock)).bus
    await bus.publish("user.a", 1)
    await bus.publish("user.b", 2)
    await bus.publish("order.x", 3)
    assert payloads(await bus.history("user.*")) == [1, 2]
    assert payloads(await bus.history()) == [1, 2, 3]

    clock.advance(5)
    await bus.publish("user.c", 4)
    clock.advance(6)  # 11s after the first events, 6s after the last
    assert payloads(await bus.history("user.*")) == [4]
    assert payloads(await bus.history("*")) == [4]
    clock.advance(5)
    assert await bus.history("user.*") == []


async def test_event_timestamps_come_from_the_clock(make_bus: MakeBus) -> None:
    clock = FakeClock(1_800_000_000.0)
    bus = (await make_bus(clock=clock)).bus
    event = await bus.publish("t.x")
    assert event.timestamp == 1_800_000_000.0
    assert event.created_at.timestamp() == 1_800_000_000.0


async def test_at_most_max_event_queue_size_per_topic(make_bus: MakeBus) -> None:
    bus = (await make_bus({"maxEventQueueSize": 3}, clock=FakeClock())).bus
    for i in range(7):
        await bus.publish("busy.topic", i)
    await bus.publish("quiet.topic", "q")
    assert payloads(await bus.history("busy.topic")) == [4, 5, 6]
    assert payloads(await bus.history("quiet.topic")) == ["q"]
    assert len(await bus.history()) == 4


async def test_retention_days_caps_the_ttl(make_bus: MakeBus) -> None:
    clock = FakeClock()
    bus = (await make_bus({"eventTTL": "30d", "retentionDays": 1}, clock=clock)).bus
    assert bus.engine("default").config.history_ttl == 86400.0
    await bus.publish("audit.entry", 1)
    clock.advance(86400 - 60)
    assert payloads(await bus.history("audit.*")) == [1]
    clock.advance(120)
    assert await bus.history("audit.*") == []


async def test_limit_and_since(make_bus: MakeBus) -> None:
    clock = FakeClock()
    start = clock.now
    bus = (await make_bus(clock=clock)).bus
    for i in range(5):
        await bus.publish("log.line", i)
        clock.advance(1)
    assert payloads(await bus.history("log.line", limit=2)) == [3, 4]
    assert payloads(await bus.history("log.*", since=start + 1.5)) == [2, 3, 4]
    assert payloads(await bus.history("log.*", since=start + 1.5, limit=1)) == [4]
    assert payloads(await bus.history("log.*", limit=100)) == [0, 1, 2, 3, 4]


async def test_history_spans_engines_oldest_first(make_bus: MakeBus) -> None:
    clock = FakeClock()
    bus = (
        await make_bus(
            {
                "engines": [{"name": "a", "type": "memory"}, {"name": "b", "type": "memory"}],
                "routing": [{"topics": ["b.*"], "engine": "b"}],
            },
            clock=clock,
        )
    ).bus
    for i, topic in enumerate(["a.x", "b.x", "a.y", "b.y"]):
        await bus.publish(topic, i)
        clock.advance(1)
    assert payloads(await bus.history()) == [0, 1, 2, 3]
    assert payloads(await bus.history("b.*")) == [1, 3]


async def test_history_is_tenant_scoped(make_bus: MakeBus) -> None:
    bus = (await make_bus(clock=FakeClock())).bus
    await bus.publish("user.login", "untenanted")
    await bus.publish("user.login", "acme", tenant="acme")
    await bus.publish("user.login", "globex", tenant="globex")
    assert payloads(await bus.history("user.*")) == ["untenanted"]
    assert payloads(await bus.for_tenant("acme").history("user.*")) == ["acme"]
    assert payloads(await bus.for_tenant("globex").history()) == ["globex"]


async def test_replay_delivers_retained_events_then_live_ones(make_bus: MakeBus) -> None:
    clock = FakeClock()
    bus = (await make_bus({"eventTTL": "1h"}, clock=clock)).bus
    for i in range(3):
        await bus.publish("feed.item", i)
        clock.advance(1)
    await bus.publish("other.item", "not matching")

    received: list[int] = []
    await bus.subscribe("feed.*", lambda e: received.append(e.payload), replay=True)
    await wait_for(lambda: len(received) == 3)
    assert received == [0, 1, 2]
    for i in range(3, 6):
        await bus.publish("feed.item", i)
    await wait_for(lambda: len(received) == 6)
    assert received == [0, 1, 2, 3, 4, 5]


async def test_replay_does_not_repeat_or_lose_events_published_meanwhile(
    make_bus: MakeBus,
) -> None:
    clock = FakeClock()  # never advanced: every event has the same timestamp
    bus = (await make_bus(clock=clock)).bus
    for i in range(3):
        await bus.publish("feed.item", i)

    received: list[int] = []
    publisher: asyncio.Task[None] | None = None

    async def handler(event: Event) -> None:
        nonlocal publisher
        if publisher is None:  # during the replay, someone else keeps publishing
            publisher = asyncio.create_task(publish_more())
        for _ in range(5):
            await asyncio.sleep(0)
        received.append(event.payload)

    async def publish_more() -> None:
        for i in range(3, 6):
            await bus.publish("feed.item", i)
            await asyncio.sleep(0)

    await bus.subscribe("feed.item", handler, replay=True)
    assert publisher is not None
    await publisher
    await bus.publish("feed.item", 6)
    await wait_for(lambda: len(received) >= 7)
    await bus.publish("feed.item", 7)
    await wait_for(lambda: len(received) >= 8)
    assert received == [0, 1, 2, 3, 4, 5, 6, 7]


async def test_replay_skips_expired_events(make_bus: MakeBus) -> None:
    clock = FakeClock()
    bus = (await make_bus({"eventTTL": "10s"}, clock=clock)).bus
    await bus.publish("feed.item", "old")
    clock.advance(20)
    await bus.publish("feed.item", "fresh")
    received: list[object] = []
    await bus.subscribe_async("feed.item", lambda e: received.append(e.payload), replay=True)
    await bus.publish("feed.item", "live")
    await wait_for(lambda: len(received) == 2)
    assert received == ["fresh", "live"]


# --- History directly -------------------------------------------------------------------


def test_history_ring_buffer_and_ttl() -> None:
    clock = FakeClock(1000.0)
    history = History(max_per_topic=2, ttl=10.0, clock=clock)
    for i in range(3):
        history.record(make_event("a", i, clock.now))
    history.record(make_event("b", "b0", clock.now))
    assert len(history) == 3
    assert payloads(history.read("a", lambda e: True)) == [1, 2]
    assert payloads(history.read("*", lambda e: e.topic == "b")) == ["b0"]

    clock.advance(10.5)
    assert history.read("*", lambda e: True) == []
    assert len(history) == 0, "expired buffers are swept when read"


def test_history_record_drops_expired_events_of_its_topic() -> None:
    clock = FakeClock(1000.0)
    history = History(max_per_topic=100, ttl=5.0, clock=clock)
    history.record(make_event("a", "old", clock.now))
    clock.advance(6)
    history.record(make_event("a", "new", clock.now))
    assert len(history) == 1


def test_history_sweeps_topics_gone_quiet() -> None:
    clock = FakeClock(1000.0)
    history = History(max_per_topic=10, ttl=5.0, clock=clock)
    history.record(make_event("quiet", 0, clock.now))
    clock.advance(6)
    for i in range(History.SWEEP_EVERY):
        history.record(make_event("busy", i, clock.now))
    assert "quiet" not in history._topics
    history.clear()
    assert len(history) == 0


def test_quiet_topics_go_without_a_pass_over_every_topic() -> None:
    clock = FakeClock()

    class OftenSwept(History):
        SWEEP_EVERY = 100

    history = OftenSwept(max_per_topic=10, ttl=60.0, clock=clock)
    for i in range(1000):
        history.record(make_event(f"quiet.{i}", i, clock.now))
    clock.advance(61)
    history.record(make_event("busy", 0, clock.now))
    for i in range(99):  # the sweep runs on the 100th record after the last one
        history.record(make_event("busy", i, clock.now))
    assert len(history) == 10  # the quiet topics went; busy keeps its last 10
    assert [e.topic for e in history.read("*", lambda e: True)] == ["busy"] * 10


def test_at_most_max_topics_are_kept_the_quietest_go_first() -> None:
    clock = FakeClock()

    class Small(History):
        MAX_TOPICS = 3

    history = Small(max_per_topic=10, ttl=3600.0, clock=clock)
    for topic in ("a", "b", "c"):
        history.record(make_event(topic, topic, clock.now))
    history.record(make_event("a", "a2", clock.now))  # a is the most recent now
    history.record(make_event("d", "d", clock.now))  # b, the quietest, goes
    assert sorted({e.topic for e in history.read("*", lambda e: True)}) == ["a", "c", "d"]
