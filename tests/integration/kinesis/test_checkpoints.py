"""Checkpoints: a reader resumes after the last record handled; a record counts as handled
once every local delivery of it settled, and the checkpoint advances only over an unbroken
run of them, at most every ``checkpointInterval``."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import redis.asyncio as aioredis

from modules.eventbus import Event
from tests.helpers import DEADLINE, Recorder, wait_for, wait_until

from .conftest import REDIS_URL
from .helpers import all_records, engine_config, engine_of, new_app, running_bus


def redis_store(stream: str, prefix: str, **extra: Any) -> dict[str, Any]:
    return engine_config(
        stream,
        **{
            "shardCount": 2,
            "checkpointStore": "redis",
            "checkpointRedisUrl": REDIS_URL,
            "checkpointKeyPrefix": prefix,
            **extra,
        },
    )


async def checkpoints(prefix: str, stream: str, app: str = "eventbus") -> dict[str, str]:
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        found = await client.hgetall(f"{prefix}{stream}:{app}:checkpoints")
        return {str(k): str(v) for k, v in found.items()}
    finally:
        await client.aclose()


async def publish_numbers(config: dict[str, Any], numbers: range) -> None:
    """Publish from a bus of its own that never subscribes (another process, as it were)."""
    async with running_bus(config) as publisher:
        for n in numbers:
            await publisher.publish("ledger.entry", n, partition_key=f"key-{n % 5}")


async def test_a_restarted_subscriber_gets_exactly_what_it_missed(
    stream: str, checkpoint_prefix: str
) -> None:
    config = redis_store(stream, checkpoint_prefix)
    app = new_app(config)
    await app.start()
    bus = app.get_service("eventbus.provider")
    first = Recorder("first run")
    await bus.subscribe("ledger.*", first)
    await publish_numbers(config, range(10))
    await first.wait_count(10)
    await app.stop()  # checkpoints what settled

    await publish_numbers(config, range(10, 25))  # while the subscriber is away

    await app.start()
    second = Recorder("second run")
    await bus.subscribe("ledger.*", second)
    await publish_numbers(config, range(25, 30))
    await second.wait_count(20)
    assert sorted(first.payloads) == list(range(10))
    assert sorted(second.payloads) == list(range(10, 30))  # nothing twice, nothing lost
    for key in range(5):  # in order per partition key
        mine = [n for n in second.payloads if n % 5 == key]
        assert mine == sorted(mine)
    await app.stop()


async def test_memory_checkpoints_carry_a_restart_inside_the_process(stream: str) -> None:
    config = engine_config(stream, checkpointStore="memory", appName=f"app-{stream}")
    app = new_app(config)
    await app.start()
    bus = app.get_service("eventbus.provider")
    first = Recorder("first run")
    await bus.subscribe("ledger.*", first)
    await bus.publish("ledger.entry", 1)
    await first.wait_count(1)
    await app.stop()
    await publish_numbers(config, range(2, 5))
    await app.start()
    second = Recorder("second run")
    await bus.subscribe("ledger.*", second)
    await second.wait_count(3)
    assert second.payloads == [2, 3, 4]
    await app.stop()


async def test_the_checkpoint_waits_for_the_slowest_local_delivery(
    stream: str, checkpoint_prefix: str
) -> None:
    config = redis_store(stream, checkpoint_prefix, shardCount=1)
    async with running_bus(config) as bus:
        gate = asyncio.Event()
        slow_seen: list[int] = []

        async def slow(event: Event) -> None:
            slow_seen.append(event.payload)
            if event.payload == 2:
                await gate.wait()

        fast = Recorder("fast")
        await bus.subscribe("gate.topic", slow)
        await bus.subscribe("gate.topic", fast)
        for n in range(5):
            await bus.publish("gate.topic", n)
        await fast.wait_count(5)
        records = await asyncio.to_thread(all_records, stream)
        sequence = [r["SequenceNumber"] for r in records]

        async def checkpoint_is(expected: str) -> bool:
            return (await checkpoints(checkpoint_prefix, stream)).get(
                "shardId-000000000000"
            ) == expected

        # 0 and 1 settled everywhere; 2 is held by the slow handler: the checkpoint stops there
        await wait_until(lambda: checkpoint_is(sequence[1]), DEADLINE, "checkpoint at record 1")
        # all five were read and the fast handler has them, yet the watermark stays at 1
        watermarks = engine_of(bus).watermarks
        assert watermarks is not None
        assert watermarks.position("shardId-000000000000") == int(sequence[1])
        assert await checkpoint_is(sequence[1])
        gate.set()
        await wait_until(lambda: checkpoint_is(sequence[4]), DEADLINE, "checkpoint at record 4")
        assert slow_seen == [0, 1, 2, 3, 4]


async def test_a_failed_handler_settles_its_record(
    stream: str, checkpoint_prefix: str, caplog: Any
) -> None:
    config = redis_store(stream, checkpoint_prefix, shardCount=1)
    async with running_bus(config) as bus:

        def broken(event: Event) -> None:
            raise RuntimeError(f"cannot handle {event.payload}")

        await bus.subscribe("broken.topic", broken)
        await bus.publish("broken.topic", 1)
        await bus.publish("broken.topic", 2)
        records = await asyncio.to_thread(all_records, stream)

        async def checkpointed() -> bool:
            found = await checkpoints(checkpoint_prefix, stream)
            return found.get("shardId-000000000000") == str(records[-1]["SequenceNumber"])

        await wait_until(checkpointed, DEADLINE, "checkpoint past the failed records")
        assert bus.per_engine_stats()["k"].failed == 2
    assert sum("cannot handle" in r.getMessage() for r in caplog.records) == 2


async def test_checkpoints_are_written_at_most_every_interval(
    stream: str, checkpoint_prefix: str
) -> None:
    config = redis_store(stream, checkpoint_prefix, shardCount=1, checkpointInterval="400ms")
    async with running_bus(config) as bus:
        engine = engine_of(bus)
        assert engine.store is not None
        writes: list[float] = []
        save = engine.store.save
        loop = asyncio.get_running_loop()

        async def counted(positions: Any) -> set[str]:
            writes.append(loop.time())
            return await save(positions)

        engine.store.save = counted  # type: ignore[method-assign]
        received = Recorder()
        await bus.subscribe("often.topic", received)
        started = loop.time()
        for n in range(40):  # every record settles at once: 40 chances to write
            await bus.publish("often.topic", n)
            await asyncio.sleep(0.025)
        await received.wait_count(40)
        elapsed = loop.time() - started
        await wait_for(lambda: bool(writes), DEADLINE)
    gaps = [b - a for a, b in itertools.pairwise(writes)]
    assert len(writes) <= elapsed / 0.4 + 2, (len(writes), elapsed)  # + the one at stop
    assert all(gap >= 0.39 for gap in gaps[:-1]), gaps
