"""Reading: live on return, where readers start, resharding, expired iterators, bad records."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from modules.eventbus import Event
from tests.helpers import DEADLINE, Recorder, wait_for

from .helpers import (
    all_records,
    client,
    engine_config,
    engine_of,
    expired_iterator,
    put_raw,
    running_bus,
)


async def test_an_event_published_right_after_subscribe_returns_is_delivered(stream: str) -> None:
    async with running_bus(engine_config(stream, shardCount=4)) as bus:
        received = Recorder()
        await bus.subscribe("live.*", received)
        # one event per shard, most likely: keys spread over the hash range
        await asyncio.gather(
            *(bus.publish("live.now", i, partition_key=f"key-{i}") for i in range(16))
        )
        await received.wait_count(16)
        assert sorted(received.payloads) == list(range(16))
        assert len(engine_of(bus).shards) == 4


async def test_latest_starts_at_the_subscribe_trim_horizon_at_the_start(stream: str) -> None:
    await asyncio.to_thread(client().create_stream, StreamName=stream, ShardCount=1)
    await wait_active(stream)
    await asyncio.to_thread(put_raw, stream, old_envelope("history.old"), "history.old")
    latest, oldest = Recorder("latest"), Recorder("trim horizon")
    async with (
        running_bus(engine_config(stream)) as at_latest,
        running_bus(engine_config(stream, iteratorType="TRIM_HORIZON")) as from_start,
    ):
        await at_latest.subscribe("history.*", latest)
        await from_start.subscribe("history.*", oldest)
        await at_latest.publish("history.new", "new")
        await oldest.wait_count(2)
        await latest.wait_count(1)
    assert oldest.payloads == ["old", "new"]
    assert latest.payloads == ["new"]


async def test_garbage_put_by_plain_boto3_is_a_decode_error_and_reading_goes_on(
    stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_bus(engine_config(stream)) as bus:
        received = Recorder()
        await bus.subscribe("after.garbage", received)
        with caplog.at_level(logging.WARNING, logger="modules.eventbus.engines.kinesis"):
            await asyncio.to_thread(put_raw, stream, b"\x00\xff{not json")
            await asyncio.to_thread(put_raw, stream, b"[" * 100_000)
            await bus.publish("after.garbage", "still here")
            await received.wait_count(1)
            await wait_for(lambda: bus.per_engine_stats()["k"].decode_errors == 2, DEADLINE)
        stats = bus.per_engine_stats()["k"]
        assert (stats.decode_errors, stats.delivered, stats.dropped) == (2, 1, 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per burst
    assert "cannot decode" in warnings[0] and f"stream {stream} shard shardId-" in warnings[0]


async def test_split_while_events_flow_delivers_each_event_once_in_key_order(
    stream: str,
) -> None:
    async with running_bus(engine_config(stream, shardCount=1)) as bus:
        received = Recorder()
        await bus.subscribe("flow.*", received)
        keys = [f"key-{k}" for k in range(8)]
        published: list[tuple[str, int]] = []

        async def publish(start: int, count: int) -> None:
            for n in range(start, start + count):
                key = keys[n % len(keys)]
                await bus.publish("flow.event", {"key": key, "n": n}, partition_key=key)
                published.append((key, n))

        await publish(0, 100)
        split = asyncio.create_task(asyncio.to_thread(split_first_shard, stream))
        await publish(100, 200)
        await split
        await publish(300, 100)
        await received.wait_count(400)
        await wait_for(lambda: len(engine_of(bus).shards) == 3, DEADLINE, "both children read")
        got = [(p["key"], p["n"]) for p in received.payloads]
        assert sorted(got, key=lambda kn: kn[1]) == published  # each exactly once
        for key in keys:  # and in order per partition key, across the split
            numbers = [n for k, n in got if k == key]
            assert numbers == sorted(numbers), key
        parent = engine_of(bus).shards["shardId-000000000000"]
        assert parent.finished


async def test_merge_while_events_flow_delivers_each_event_once(stream: str) -> None:
    async with running_bus(engine_config(stream, shardCount=2)) as bus:
        received = Recorder()
        await bus.subscribe("merge.*", received)
        for n in range(50):
            await bus.publish("merge.event", n, partition_key=f"key-{n}")
        await asyncio.to_thread(merge_two_shards, stream)
        for n in range(50, 100):
            await bus.publish("merge.event", n, partition_key=f"key-{n}")
        await received.wait_count(100)
        await wait_for(lambda: len(engine_of(bus).shards) == 3, DEADLINE, "the child read")
        assert sorted(received.payloads) == list(range(100))


async def test_an_expired_iterator_is_replaced_after_the_last_record_read(stream: str) -> None:
    async with running_bus(engine_config(stream)) as bus:
        received = Recorder()
        await bus.subscribe("expiry.*", received)
        for n in range(3):
            await bus.publish("expiry.event", n)
        await received.wait_count(3)
        records = await asyncio.to_thread(all_records, stream)
        sequence_of_third = int(records[2]["SequenceNumber"])

        engine = engine_of(bus)
        assert engine.calls is not None
        shard = next(iter(engine.shards))
        listing = await asyncio.to_thread(client().list_shards, StreamName=stream)
        start = listing["Shards"][0]["SequenceNumberRange"]["StartingSequenceNumber"]
        # An iterator from the start of the shard, but expired: used, it would re-read 0..2.
        expired = await asyncio.to_thread(expired_iterator, stream, shard, start)
        swapped: list[str] = []
        asked: list[dict[str, Any]] = []

        def swap_once(params: dict[str, Any], **_: Any) -> None:
            if not swapped:
                swapped.append(params["ShardIterator"])
                params["ShardIterator"] = expired

        def iterator_asked(params: dict[str, Any], **_: Any) -> None:
            asked.append(dict(params))

        events = engine.calls.client.meta.events
        events.register("before-parameter-build.kinesis.GetRecords", swap_once)
        events.register("before-parameter-build.kinesis.GetShardIterator", iterator_asked)
        await wait_for(lambda: bool(asked), DEADLINE, "a new iterator after the expired one")
        for n in range(3, 6):
            await bus.publish("expiry.event", n)
        await received.wait_count(6)
        assert received.payloads == [0, 1, 2, 3, 4, 5]  # nothing lost, nothing twice
        assert asked[0]["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER"
        read_up_to = int(asked[0]["StartingSequenceNumber"])
        assert read_up_to == sequence_of_third  # the last record read when it expired


async def test_handlers_run_in_the_tenant_of_the_event(stream: str) -> None:
    from modular.tenants import current_tenant

    async with running_bus(engine_config(stream)) as bus:
        seen: list[tuple[str | None, str | None]] = []

        def handler(event: Event) -> None:
            seen.append((event.tenant, current_tenant()))

        await bus.for_tenant("acme").subscribe("tenant.topic", handler)
        await bus.for_tenant("acme").publish("tenant.topic", 1)
        await bus.for_tenant("globex").publish("tenant.topic", 2)  # never seen by acme
        await bus.for_tenant("acme").publish("tenant.topic", 3)
        await wait_for(lambda: len(seen) == 2, DEADLINE)
        assert seen == [("acme", "acme"), ("acme", "acme")]


# --- plain boto3 -------------------------------------------------------------------------


async def wait_active(stream: str) -> None:
    kinesis = client()
    for _ in range(200):
        summary = await asyncio.to_thread(kinesis.describe_stream_summary, StreamName=stream)
        if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"stream {stream} did not become ACTIVE")


def old_envelope(topic: str) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": "old-1",
            "source": "elsewhere",
            "type": topic,
            "time": "2026-01-01T00:00:00Z",
            "datacontenttype": "application/json",
            "data": "old",
        }
    ).encode()


def split_first_shard(stream: str) -> None:
    kinesis = client()
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]
    low = int(shard["HashKeyRange"]["StartingHashKey"])
    high = int(shard["HashKeyRange"]["EndingHashKey"])
    kinesis.split_shard(
        StreamName=stream, ShardToSplit=shard["ShardId"], NewStartingHashKey=str((low + high) // 2)
    )


def merge_two_shards(stream: str) -> None:
    kinesis = client()
    shards = sorted(
        kinesis.list_shards(StreamName=stream)["Shards"],
        key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]),
    )
    kinesis.merge_shards(
        StreamName=stream,
        ShardToMerge=shards[0]["ShardId"],
        AdjacentShardToMerge=shards[1]["ShardId"],
    )
