"""The Redis engine in streams mode, against the Redis at 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from modular import Application
from modules.eventbus import EngineUnavailableError, Event, EventBusModule
from modules.eventbus.codec import decode
from modules.eventbus.engines.redis.streams import StreamsReceiver
from tests.helpers import Recorder, wait_for, wait_until

from .helpers import REDIS_URL, bus_settings, counted, engine_of, running_bus


def streams(prefix: str, **config: Any) -> dict[str, Any]:
    return {"url": REDIS_URL, "channelPrefix": prefix, "mode": "streams", **config}


async def pending(client: aioredis.Redis, key: str, group: str) -> int:
    summary = await client.xpending(key, group)
    return int(summary["pending"])


async def groups(client: aioredis.Redis, key: str) -> list[str]:
    if not await client.exists(key):
        return []
    return [g["name"].decode() for g in await client.xinfo_groups(key)]


async def test_each_event_is_handled_once_and_acknowledged(
    prefix: str, redis_client: aioredis.Redis
) -> None:
    async with running_bus(streams(prefix)) as bus:
        engine = engine_of(bus)
        assert not engine.capabilities.durability  # its per-process group goes at stop
        got = Recorder()
        await bus.subscribe("order.placed", got)
        sent = [await bus.publish("order.placed", {"n": i}) for i in range(50)]
        await got.wait_count(50)
        assert [e.id for e in got.events] == [e.id for e in sent]
        key = f"{prefix}order.placed"
        assert await redis_client.xlen(key) == 50
        entries = await redis_client.xrange(key, count=1)
        assert entries is not None
        [(_, fields)] = entries
        assert fields is not None
        assert list(fields) == [b"event"]  # one field, holding the envelope
        assert decode(fields[b"event"]).id == sent[0].id

        async def acknowledged() -> bool:
            return await pending(redis_client, key, engine.group) == 0

        await wait_until(acknowledged)
        assert engine.stats().delivered == 50


async def test_patterns_and_exact_subscriptions_share_one_reading(prefix: str) -> None:
    async with running_bus(streams(prefix)) as bus:
        exact, pattern, everything = Recorder(), Recorder(), Recorder()
        await bus.subscribe("user.created", exact)
        await bus.subscribe("user.*", pattern)
        await bus.subscribe("*", everything)
        await bus.publish("user.created", {"n": 1})
        await bus.publish("user.deleted", {"n": 2})
        await bus.publish("order.placed", {"n": 3})
        await everything.wait_count(3)
        await pattern.wait_count(2)
        await exact.wait_count(1)
        await bus.publish("user.created", {"n": 4})
        await exact.wait_count(2)
        await pattern.wait_count(3)
        await everything.wait_count(4)
        assert exact.payloads == [{"n": 1}, {"n": 4}]
        assert sorted(pattern.topics) == ["user.created", "user.created", "user.deleted"]
        assert len(everything.events) == 4


async def test_the_per_process_group_goes_with_a_clean_stop(
    prefix: str, redis_client: aioredis.Redis
) -> None:
    key = f"{prefix}job.done"
    async with running_bus(streams(prefix)) as bus:
        engine = engine_of(bus)
        assert engine.group.startswith(f"r-{socket.gethostname()}-{os.getpid()}")
        await bus.subscribe("job.done", Recorder())
        assert await groups(redis_client, key) == [engine.group]
    assert await groups(redis_client, key) == []


async def test_a_configured_group_is_shared_and_durable(
    prefix: str, redis_client: aioredis.Redis
) -> None:
    group = f"{prefix}workers"
    config = streams(prefix, groupName=group)
    async with running_bus(config) as bus:
        await bus.subscribe("job.queued", Recorder())
    assert await groups(redis_client, f"{prefix}job.queued") == [group]

    async with running_bus(streams(prefix)) as publisher:  # nobody of the group is running
        sent = [await publisher.publish("job.queued", {"n": i}) for i in range(5)]

    async with running_bus(config) as bus:
        got = Recorder()
        await bus.subscribe("job.queued", got)
        await got.wait_count(5)
        assert [e.id for e in got.events] == [e.id for e in sent]


async def test_entries_not_settled_at_shutdown_come_back(
    prefix: str, redis_client: aioredis.Redis
) -> None:
    group = f"{prefix}workers"
    config = streams(prefix, groupName=group, claimIdle="300ms")
    release = asyncio.Event()
    first: list[Event] = []

    async def stuck(event: Event) -> None:
        first.append(event)
        await release.wait()

    async with running_bus(config, shutdownTimeout="200ms") as bus:
        await bus.subscribe("job.slow", stuck)
        sent = [await bus.publish("job.slow", {"n": i}) for i in range(3)]
        await wait_for(lambda: len(first) == 1, 10, "the first event is being handled")
    # Stopped with one event in its handler and two queued: none of them acknowledged.
    assert await pending(redis_client, f"{prefix}job.slow", group) == 3
    release.set()

    async with running_bus(config) as bus:
        again = Recorder()
        await bus.subscribe("job.slow", again)
        await again.wait_count(3)
        assert sorted(e.id for e in again.events) == sorted(e.id for e in sent)

        async def acknowledged() -> bool:
            return await pending(redis_client, f"{prefix}job.slow", group) == 0

        await wait_until(acknowledged)


async def test_two_consumers_of_one_group_split_the_events(prefix: str) -> None:
    config = streams(prefix, groupName=f"{prefix}workers")
    async with running_bus(config) as one, running_bus(config) as two:
        got_one, got_two = Recorder(), Recorder()
        await one.subscribe("task.run", got_one)
        await two.subscribe("task.run", got_two)
        sent = [await one.publish("task.run", {"n": i}) for i in range(60)]
        await wait_for(lambda: len(got_one.events) + len(got_two.events) >= 60, 10)
        handled = got_one.events + got_two.events
        assert sorted(e.id for e in handled) == sorted(e.id for e in sent)
        assert got_one.events and got_two.events


async def test_a_pattern_finds_streams_created_by_other_processes(prefix: str) -> None:
    async with (
        running_bus(streams(prefix, scanInterval="100ms")) as subscriber,
        running_bus(streams(prefix)) as other,
    ):
        got = Recorder()
        await subscriber.subscribe("audit.*", got)
        # A key that did not exist when the subscription was made, written by another engine.
        await other.publish("audit.login", {"who": "ada"})
        await other.publish("audit.logout", {"who": "ada"})
        await got.wait_count(2)
        assert sorted(got.topics) == ["audit.login", "audit.logout"]


async def test_tenants_are_isolated_in_their_own_streams(
    prefix: str, redis_client: aioredis.Redis
) -> None:
    async with running_bus(streams(prefix, scanInterval="100ms")) as bus:
        untenanted, acme, globex = Recorder(), Recorder(), Recorder()
        await bus.subscribe("*", untenanted)
        await bus.for_tenant("acme").subscribe("user.*", acme)
        await bus.for_tenant("globex").subscribe("*", globex)
        await bus.for_tenant("acme").publish("user.created", {"secret": "acme"})
        await bus.publish("user.created", {"public": True})
        await acme.wait_count(1)
        await untenanted.wait_count(1)
        entries = await redis_client.xrange(f"{prefix}acme:user.created")
        assert [decode(fields[b"event"]).tenant for _, fields in entries or () if fields] == [
            "acme"
        ]
        await bus.publish("zz.end", None)  # past every earlier event
        await untenanted.wait_count(2)
        assert untenanted.payloads == [{"public": True}, None]
        assert acme.payloads == [{"secret": "acme"}]
        assert globex.events == []


async def test_undecodable_entries_are_counted_acknowledged_and_skipped(
    prefix: str, redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    good = {"specversion": "1.0", "id": "x1", "source": "s", "type": "job.a"}
    async with running_bus(streams(prefix)) as bus:
        engine = engine_of(bus)
        got = Recorder()
        await bus.subscribe("job.a", got)
        key = f"{prefix}job.a"
        garbage: list[dict[Any, Any]] = [
            {"event": b"not json"},
            {"event": b'"a string"'},
            {"event": json.dumps({**good, "type": None})},
            {"event": json.dumps({**good, "specversion": "2.0"})},
            {"event": json.dumps({**good, "type": "job.b"})},  # contradicts the key
            {"payload": json.dumps(good)},  # no 'event' field
        ]
        for fields in garbage:
            await redis_client.xadd(key, fields)
        await redis_client.xadd(key, {"event": json.dumps(good)})  # another producer's event
        await bus.publish("job.a", {"ours": True})
        await got.wait_count(2)
        assert got.events[0].id == "x1"
        assert got.payloads[1] == {"ours": True}
        assert engine.stats().decode_errors == len(garbage)

        async def acknowledged() -> bool:
            return await pending(redis_client, key, engine.group) == 0

        await wait_until(acknowledged)
    # logged once per burst: the first entry, naming its stream
    (logged,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert f"skipped a message it cannot decode at stream {key}" in logged


async def test_streams_are_trimmed_to_about_max_len(
    prefix: str, redis_client: aioredis.Redis
) -> None:
    async with running_bus(streams(prefix, maxLen=10)) as bus:
        await asyncio.gather(*(bus.publish("metrics.tick", {"i": i}) for i in range(500)))
    length = await redis_client.xlen(f"{prefix}metrics.tick")
    assert 10 <= length < 500


async def test_a_refused_command_fails_only_its_own_publish(
    prefix: str, redis_client: aioredis.Redis
) -> None:
    await redis_client.set(f"{prefix}not.a.stream", "a string key")
    async with running_bus(streams(prefix)) as bus:
        got = Recorder()
        await bus.subscribe("fine.topic", got)
        results = await asyncio.gather(
            bus.publish("fine.topic", {"n": 1}),
            bus.publish("not.a.stream", {"n": 2}),
            bus.publish("fine.topic", {"n": 3}),
            return_exceptions=True,
        )
        assert isinstance(results[1], EngineUnavailableError)
        assert "WRONGTYPE" in str(results[1])
        assert isinstance(results[0], Event) and isinstance(results[2], Event)
        await got.wait_count(2)
        assert got.payloads == [{"n": 1}, {"n": 3}]


async def test_subscriptions_made_before_start_read_from_start(prefix: str) -> None:
    app = Application(bus_settings(streams(prefix)), envvar_prefix=None)
    app.register_module(EventBusModule())
    await app.init()
    bus = app.get_service("eventbus.provider", EventBusModule)
    exact, pattern = Recorder(), Recorder()
    await bus.subscribe("early.bird", exact)
    await bus.subscribe("early.*", pattern)
    async with app:
        await bus.publish("early.bird", {"early": True})
        await exact.wait_count(1)
        await pattern.wait_count(1)


async def test_restart_after_stop(prefix: str) -> None:
    app = Application(bus_settings(streams(prefix)), envvar_prefix=None)
    app.register_module(EventBusModule())
    for round_ in range(2):
        async with app:
            bus = app.get_service("eventbus.provider", EventBusModule)
            got = Recorder()
            await bus.subscribe("cycle.topic", got)
            await bus.publish("cycle.topic", {"round": round_})
            await got.wait_count(1)
            # A fresh per-process group each time: nothing from the earlier round.
            assert got.payloads == [{"round": round_}]


@pytest.mark.parametrize("group", [None, "named"])
async def test_unsubscribe_stops_reading_and_resubscribe_starts_now(
    prefix: str, group: str | None
) -> None:
    config = streams(prefix, **({"groupName": f"{prefix}{group}"} if group else {}))
    async with running_bus(config) as bus, running_bus(streams(prefix)) as other:
        first = Recorder()
        sub = await bus.subscribe("feed.item", first)
        await other.publish("feed.item", {"n": 1})
        await first.wait_count(1)
        await bus.unsubscribe(sub)
        await other.publish("feed.item", {"n": 2})  # while nobody of the group listens
        second = Recorder()
        await bus.subscribe("feed.item", second)
        await other.publish("feed.item", {"n": 3})
        # A per-process group starts at the new subscription; a named one is durable.
        expected = [{"n": 3}] if group is None else [{"n": 2}, {"n": 3}]
        await second.wait_count(len(expected))
        await other.publish("feed.item", {"n": 4})
        await second.wait_count(len(expected) + 1)
        assert second.payloads == [*expected, {"n": 4}]
        assert first.payloads == [{"n": 1}]
        assert counted(second.events, lambda e: e.id) == {e.id: 1 for e in second.events}


def test_group_name_defaults_are_unique_per_engine() -> None:
    from modules.eventbus.engines.redis import RedisEngine, RedisEngineConfig

    one = RedisEngine("a", RedisEngineConfig(mode="streams"))
    two = RedisEngine("b", RedisEngineConfig(mode="streams"))
    assert one.group != two.group
    assert one.consumer != two.consumer
    assert not one.durable_group
    same_name = RedisEngine("a", RedisEngineConfig(mode="streams"))
    assert same_name.group != one.group  # two applications of one process
    named = RedisEngine("a", RedisEngineConfig(mode="streams", group_name=f"g-{uuid.uuid4()}"))
    assert named.durable_group


async def test_a_new_reader_connection_hands_out_nothing_still_being_handled(
    prefix: str, redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """The reader's connection dies while entries are in handlers: its successor reads this
    consumer's pending entries again (replies lost with the connection), and must skip those."""
    gate = asyncio.Event()
    handled: list[Event] = []

    async def handler(event: Event) -> None:
        await gate.wait()
        handled.append(event)

    async with running_bus(streams(prefix, reconnectMinDelay="10ms")) as bus:
        engine = engine_of(bus)
        await bus.subscribe("slow.job", handler)
        sent = [await bus.publish("slow.job", {"n": i}) for i in range(5)]
        key = f"{prefix}slow.job"

        async def all_delivered_to_the_reader() -> bool:
            return await pending(redis_client, key, engine.group) == 5

        await wait_until(all_delivered_to_the_reader)
        assert isinstance(engine.receiver, StreamsReceiver)
        reader = engine.receiver.reader_id
        assert reader is not None
        await redis_client.client_kill_filter(_id=str(reader))
        await wait_for(lambda: engine.stats().reconnects == 1, 10, "the reader reconnected")
        gate.set()
        await wait_for(lambda: len(handled) >= 5, 10)
        await bus.publish("slow.job", {"n": 5})
        await wait_for(lambda: len(handled) >= 6, 10)
        assert [e.id for e in handled[:5]] == [e.id for e in sent]
        assert counted(handled, lambda e: e.id) == {e.id: 1 for e in handled}

        async def acknowledged() -> bool:
            return await pending(redis_client, key, engine.group) == 0

        await wait_until(acknowledged)
    (logged,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "redis engine r lost its connection" in logged and "reconnecting" in logged


async def test_stop_always_returns_promptly(prefix: str) -> None:
    # Regression: a cancellation lost inside redis-py (asyncio.wait_for on Python 3.11) left a
    # stream loop running and stop() waiting for it forever.
    for round_ in range(15):
        got = Recorder()
        app = Application(bus_settings(streams(prefix)), envvar_prefix=None)
        app.register_module(EventBusModule())
        await app.start()
        bus = app.get_service("eventbus.provider", EventBusModule)
        subs = [await bus.subscribe("audit.*", got), await bus.subscribe_async("other.*", got)]
        await bus.publish("audit.login", round_)
        await bus.publish("other.login", round_)
        await got.wait_count(2)
        for sub in subs:
            await sub.cancel()
        async with asyncio.timeout(15):  # a hang fails here, with TimeoutError
            await app.stop()
