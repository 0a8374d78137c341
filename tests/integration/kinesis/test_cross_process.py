"""Processes of their own, each an Application with the same settings, talk through the
stream; with one appName and the Redis store they share the shards through leases."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis

from tests.helpers import wait_until
from tests.integration import peers

from .conftest import REDIS_URL
from .helpers import all_records, bus_settings, engine_config, running_bus

STEP = 30.0  # seconds for a step: starting Python and a bus takes a while on a busy box


@asynccontextmanager
async def running_peers() -> AsyncIterator[list[peers.Peer]]:
    """Start peers with ``start(started, config, *args)``; all end on exit."""
    started: list[peers.Peer] = []
    try:
        yield started
    finally:
        for peer in started:
            await peer.end("STOP")


async def start(started: list[peers.Peer], config: dict[str, Any], *args: str) -> peers.Peer:
    peer = await peers.spawn(bus_settings(config), *args, deadline=STEP)
    started.append(peer)
    await peer.expect("READY")
    return peer


async def test_a_publisher_process_and_a_subscriber_process(stream: str) -> None:
    config = engine_config(stream, shardCount=2)
    async with running_peers() as started:
        subscriber = await start(started, config, "sub", "orders.*")
        publisher = await start(started, config, "pub", "orders.placed", "50")
        await publisher.send("GO")
        await publisher.expect("DONE")

        async def all_there() -> bool:
            return len(subscriber.numbers()) >= 50

        await wait_until(all_there, STEP, "50 events in the subscriber process")
        assert sorted(subscriber.numbers()) == list(range(50))


async def leases(prefix: str, stream: str) -> dict[str, str]:
    """Shard -> the owner of its lease."""
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        base = f"{prefix}{stream}:eventbus:lease:"
        keys = [key async for key in client.scan_iter(match=f"{base}*")]
        values = await client.mget(keys) if keys else []
        return {
            key[len(base) :]: str(value) for key, value in zip(keys, values, strict=True) if value
        }
    finally:
        await client.aclose()


async def checkpoints(prefix: str, stream: str) -> dict[str, int]:
    """Shard -> its checkpointed sequence number (shards with a sequence number only)."""
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        found = await client.hgetall(f"{prefix}{stream}:eventbus:checkpoints")
        return {str(k): int(v) for k, v in found.items() if str(v).isdigit()}
    finally:
        await client.aclose()


async def test_processes_of_one_app_share_the_shards_and_take_over_a_dead_ones(
    stream: str, checkpoint_prefix: str
) -> None:
    config = engine_config(
        stream,
        shardCount=4,
        checkpointStore="redis",
        checkpointRedisUrl=REDIS_URL,
        checkpointKeyPrefix=checkpoint_prefix,
        leaseDuration="1s",
        checkpointInterval="50ms",
    )
    async with running_peers() as started, running_bus(config) as publisher:
        first = await start(started, config, "sub", "jobs.*")
        second = await start(started, config, "sub", "jobs.*")
        first_pid, second_pid = first.process.pid, second.process.pid

        async def split_two_and_two() -> bool:
            owners = Counter(
                o.split("-")[-2] for o in (await leases(checkpoint_prefix, stream)).values()
            )
            return owners == Counter({str(first_pid): 2, str(second_pid): 2})

        await wait_until(split_two_and_two, STEP, "two shards for each process")

        published = list(range(200))
        await asyncio.gather(
            *(publisher.publish("jobs.run", {"n": n}, partition_key=f"key-{n}") for n in published)
        )

        async def both_have_everything() -> bool:
            return len(first.numbers()) + len(second.numbers()) >= 200

        await wait_until(both_have_everything, STEP, "the 200 events, between the two")
        assert sorted(first.numbers() + second.numbers()) == published  # each once
        assert first.numbers() and second.numbers()

        # the first process dies; its checkpoints are what it leaves behind
        first.process.send_signal(signal.SIGKILL)
        await first.process.wait()
        left = await checkpoints(checkpoint_prefix, stream)
        handled_by_first = set(first.numbers())
        loop = asyncio.get_running_loop()
        killed_at = loop.time()

        async def second_holds_all() -> bool:
            owners = set((await leases(checkpoint_prefix, stream)).values())
            return len(owners) == 1 and str(second_pid) in next(iter(owners))

        await wait_until(second_holds_all, STEP, "the second process holding every shard")
        assert loop.time() - killed_at < 1.0 * 4, "taken over within a few lease times"

        later = list(range(200, 300))
        await asyncio.gather(
            *(publisher.publish("jobs.run", {"n": n}, partition_key=f"key-{n}") for n in later)
        )

        async def second_has_the_rest() -> bool:
            return set(later) <= set(second.numbers())

        await wait_until(second_has_the_rest, STEP, "events published after the kill")
        records = await asyncio.to_thread(all_records, stream)
        where = {json.loads(r["Data"])["data"]["n"]: r for r in records}
        everything = set(first.numbers()) | set(second.numbers())
        assert everything == set(published + later)  # nothing lost
        twice = [n for n in handled_by_first if n in second.numbers()]
        for n in twice:  # duplicates only for records after the dead one's last checkpoint
            record = where[n]
            assert int(record["SequenceNumber"]) > left.get(record["ShardId"], -1), n
