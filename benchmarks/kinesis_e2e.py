"""Kinesis end to end on kinesalite: the bus's kinesis engine beside raw boto3 doing the same
job, with the same number of concurrent publishers and the same encoding work.

- raw boto3: ``PUBLISHERS`` publisher tasks each encode one event with the bus's codec and
  hand it over; the records go out in PutRecords requests of 500, one at a time, on a thread
  of their own (as boto3 is blocking), and each publisher waits for its request's answer.
  One reader thread per shard loops on GetRecords (pausing ``POLL`` after an empty answer)
  and decodes every record with the bus's codec; the handler is called on the loop.
- bus: ``PUBLISHERS`` concurrent ``await bus.publish(...)`` (the engine batches them into
  PutRecords), one subscription.

Publish throughput: events per second from the first publish to the last acknowledged one.
End to end: handler calls per second from the first publish to the last delivery. Both
sides read every shard with a reader of their own and start at ``LATEST``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import boto3
from botocore.config import Config

from modules.eventbus import Event
from modules.eventbus.codec import decode, encode
from modules.eventbus.event import make_event

from .codec import payload_of_size
from .common import format_rate, print_table, quiet_gc, running_bus

ENDPOINT = "http://127.0.0.1:4567"
REGION = "us-east-1"
KEYS = {"aws_access_key_id": "AKIDBENCH", "aws_secret_access_key": "bench-secret"}
TOPIC = "bench.topic"
PUBLISHERS = 1000
SHARDS = 2
POLL = 0.01
PAYLOAD_BYTES = 200
BATCH = 500


class Progress:
    """When publishing ended, and when each delivery happened."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.delivered = 0
        self.published_at = 0.0
        self.last = 0.0
        self.done = asyncio.Event()

    def deliver(self) -> None:
        self.delivered += 1
        if self.delivered >= self.expected:
            self.last = time.perf_counter()
            self.done.set()


def _client() -> Any:
    return boto3.client(
        "kinesis",
        endpoint_url=ENDPOINT,
        region_name=REGION,
        config=Config(retries={"total_max_attempts": 1}, max_pool_connections=SHARDS + 2),
        **KEYS,
    )


def _create(stream: str) -> None:
    kinesis = _client()
    kinesis.create_stream(StreamName=stream, ShardCount=SHARDS)
    while (
        kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"][
            "StreamStatus"
        ]
        != "ACTIVE"
    ):
        time.sleep(0.02)


async def raw(stream: str, events: int, progress: Progress) -> None:
    template = payload_of_size(PAYLOAD_BYTES)
    await asyncio.to_thread(_create, stream)
    kinesis = _client()
    loop = asyncio.get_running_loop()
    stopping = threading.Event()
    shards = [s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]]
    iterators = [
        kinesis.get_shard_iterator(StreamName=stream, ShardId=s, ShardIteratorType="LATEST")[
            "ShardIterator"
        ]
        for s in shards
    ]

    def read(iterator: str) -> None:
        while not stopping.is_set():
            reply = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            for record in reply["Records"]:
                decode(record["Data"])
                loop.call_soon_threadsafe(progress.deliver)
            iterator = reply["NextShardIterator"]
            if not reply["Records"]:
                time.sleep(POLL)

    readers = [threading.Thread(target=read, args=(it,), daemon=True) for it in iterators]
    for reader in readers:
        reader.start()

    # Publishers hand encoded records to one sender, which sends them 500 at a time.
    queue: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
    wakeup = asyncio.Event()

    async def sender() -> None:
        while True:
            await wakeup.wait()
            wakeup.clear()
            while queue:
                batch, queue[:] = queue[:BATCH], queue[BATCH:]
                await asyncio.to_thread(
                    kinesis.put_records, StreamName=stream, Records=[r for r, _ in batch]
                )
                for _, future in batch:
                    future.set_result(None)

    async def publish() -> None:
        event = make_event(TOPIC, {**template}, {}, time.time(), "bench", None, None)
        future: asyncio.Future[None] = loop.create_future()
        queue.append(({"Data": encode(event), "PartitionKey": event.topic}, future))
        wakeup.set()
        await future

    sending = asyncio.create_task(sender())
    try:
        for start in range(0, events, PUBLISHERS):
            await asyncio.gather(*(publish() for _ in range(min(PUBLISHERS, events - start))))
        progress.published_at = time.perf_counter()
        await asyncio.wait_for(progress.done.wait(), 120)
    finally:
        stopping.set()
        sending.cancel()
        for reader in readers:
            await asyncio.to_thread(reader.join, 5)


async def bus(stream: str, events: int, progress: Progress) -> None:
    template = payload_of_size(PAYLOAD_BYTES)
    config = {
        "endpointUrl": ENDPOINT,
        "region": REGION,
        "accessKeyId": KEYS["aws_access_key_id"],
        "secretAccessKey": KEYS["aws_secret_access_key"],
        "streamName": stream,
        "shardCount": SHARDS,
        "pollInterval": POLL,
        "maxRecordsPerGet": 10_000,
    }
    async with running_bus("kinesis", config) as bus:

        def handler(event: Event) -> None:
            progress.deliver()

        await bus.subscribe(TOPIC, handler)
        publish = bus.publish
        for start in range(0, events, PUBLISHERS):
            await asyncio.gather(
                *(publish(TOPIC, {**template}) for _ in range(min(PUBLISHERS, events - start)))
            )
        progress.published_at = time.perf_counter()
        await asyncio.wait_for(progress.done.wait(), 120)


Runner = Callable[[str, int, Progress], Awaitable[None]]
RUNNERS: dict[str, Runner] = {
    "raw boto3 (put_records of 500 + get_records)": raw,
    f"bus, {PUBLISHERS} concurrent publishers": bus,
}


async def measure(runner: Runner, events: int) -> tuple[float, float]:
    """(publish rate, end-to-end rate) of one run."""
    stream = f"bench-{os.urandom(4).hex()}"
    progress = Progress(events)
    quiet_gc()
    try:
        start = time.perf_counter()
        await runner(stream, events, progress)
    finally:
        await asyncio.to_thread(_delete, stream)
    return events / (progress.published_at - start), events / (progress.last - start)


def _delete(stream: str) -> None:
    try:
        _client().delete_stream(StreamName=stream)
    except Exception as exc:  # reported, not fatal: the stream is a throwaway
        print(f"  could not delete stream {stream}: {exc}")


async def run(events: int, repeat: int) -> list[list[str]]:
    import statistics

    results: dict[str, list[tuple[float, float]]] = {name: [] for name in RUNNERS}
    for _ in range(repeat):
        for name, runner in RUNNERS.items():
            results[name].append(await measure(runner, events))
    raw_name = next(iter(RUNNERS))
    raw_publish = statistics.median(p for p, _ in results[raw_name])
    raw_e2e = statistics.median(e for _, e in results[raw_name])
    rows: list[list[str]] = []
    for name, measured in results.items():
        publish = statistics.median(p for p, _ in measured)
        e2e = statistics.median(e for _, e in measured)
        rows.append(
            [
                name,
                format_rate(publish),
                f"{publish / raw_publish:.2f}x",
                format_rate(e2e),
                f"{e2e / raw_e2e:.2f}x",
            ]
        )
    print(f"  measured kinesis ({events} events x {repeat})")
    print_table(
        f"Kinesis end to end on kinesalite: {events} events of {PAYLOAD_BYTES} B per run, "
        f"{PUBLISHERS} concurrent publishers, {SHARDS} shards, median of {repeat}",
        ["implementation", "published/s", "vs raw", "delivered/s", "vs raw"],
        rows,
    )
    return rows
