"""Redis end to end: one publisher and 1 or 10 subscriptions in this process, 200-byte JSON
payloads, the bus's redis engine (pubsub and streams) beside raw redis-py doing the same job.

- raw pubsub: PUBLISH pipelined in batches of ``BATCH``; one PSUBSCRIBE connection reads
  (``pubsub.listen()``), decodes the JSON once and calls every local handler. Also with
  one awaited PUBLISH at a time, the raw counterpart of the bus's sequential publisher.
- raw streams: XADD pipelined in batches; one reader on a consumer group (XREADGROUP, then
  XACK of the batch), same local fan-out.
- bus, sequential: ``await bus.publish(...)`` one after the other (each waits for Redis).
- bus, windowed: ``BATCH`` publishes in flight at a time (``asyncio.gather``), which lets an
  engine that batches its writes do so, as the raw client's pipeline does.
- faststream's ``RedisBroker`` (pubsub), as its users write it: one ``@broker.subscriber``
  per subscription (each its own connection; Redis fans out), ``async def`` handlers taking
  the decoded ``dict`` body, ``await broker.publish(...)`` sequential or ``BATCH`` in
  flight. It uses only faststream's public API and redis-py, nothing of the bus.

Throughput is handler calls per second from the first publish to the last delivery;
latency is from just before the publish call to the handler. Pub/sub is at-most-once, so a
run ends when everything arrived or nothing arrived for ``QUIET`` seconds; losses are shown.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import redis.asyncio as aioredis
from faststream.redis import RedisBroker

from modules.eventbus import Event

from .codec import payload_of_size
from .common import (
    Measurement,
    Summary,
    format_rate,
    format_seconds,
    print_table,
    quiet_gc,
    running_bus,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
TOPIC = "bench.topic"
BATCH = 100
# redis-py's default pool (100 connections) is too small for BATCH publishes in flight plus
# one connection per faststream subscriber: it raises "Too many connections".
FASTSTREAM_MAX_CONNECTIONS = 2 * BATCH
QUIET = 3.0
PAYLOAD_BYTES = 200


class Progress:
    """Latencies recorded by every handler, and when the last one ran."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.last = time.perf_counter()

    def record(self, t0: float) -> None:
        now = time.perf_counter()
        self.latencies.append(now - t0)
        self.last = now

    async def settle(self, expected: int) -> None:
        """Until ``expected`` deliveries happened, or none for ``QUIET`` seconds."""
        while len(self.latencies) < expected:
            if time.perf_counter() - self.last > QUIET:
                return
            await asyncio.sleep(0.001)


def _payload(template: dict[str, Any]) -> dict[str, Any]:
    return {**template, "t": time.perf_counter()}


# XREADGROUP's reply: [(stream, [(entry id, {field: value})])]
StreamBatches = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]
Runner = Callable[[str, int, int, Progress], Awaitable[None]]


async def raw_pubsub(prefix: str, subscribers: int, events: int, progress: Progress) -> None:
    await _raw_pubsub(prefix, subscribers, events, progress, BATCH)


async def raw_pubsub_sequential(
    prefix: str, subscribers: int, events: int, progress: Progress
) -> None:
    await _raw_pubsub(prefix, subscribers, events, progress, 1)


async def _raw_pubsub(
    prefix: str, subscribers: int, events: int, progress: Progress, batch: int
) -> None:
    template = payload_of_size(PAYLOAD_BYTES)
    publisher = aioredis.Redis.from_url(REDIS_URL)
    reader = aioredis.Redis.from_url(REDIS_URL)
    pubsub = reader.pubsub()
    await pubsub.psubscribe(f"{prefix}*")

    async def read() -> None:
        async for message in pubsub.listen():
            if message["type"] == "pmessage":
                t0 = json.loads(message["data"])["t"]
                for _ in range(subscribers):
                    progress.record(t0)

    task = asyncio.create_task(read())
    try:
        channel = f"{prefix}{TOPIC}"
        if batch == 1:
            for _ in range(events):
                await publisher.publish(channel, json.dumps(_payload(template)))
        else:
            for start in range(0, events, batch):
                pipe = publisher.pipeline(transaction=False)
                for _ in range(min(batch, events - start)):
                    pipe.publish(channel, json.dumps(_payload(template)))
                await pipe.execute()
        await progress.settle(events * subscribers)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pubsub.reset()
        await reader.aclose()
        await publisher.aclose()


async def raw_streams(prefix: str, subscribers: int, events: int, progress: Progress) -> None:
    template = payload_of_size(PAYLOAD_BYTES)
    client = aioredis.Redis.from_url(REDIS_URL)
    reader = aioredis.Redis.from_url(REDIS_URL)
    key, group = f"{prefix}{TOPIC}", f"{prefix}group"
    await client.xgroup_create(key, group, id="$", mkstream=True)

    stopping = asyncio.Event()

    async def read() -> None:
        # Ends on a flag between short blocking reads: cancelling a blocked XREADGROUP can
        # leave redis-py waiting for the reply.
        while not stopping.is_set():
            batches = cast(
                StreamBatches,
                await reader.xreadgroup(group, "reader", {key: ">"}, count=500, block=100),
            )
            for _stream, entries in batches:
                for _entry_id, fields in entries:
                    t0 = json.loads(fields[b"event"])["t"]
                    for _ in range(subscribers):
                        progress.record(t0)
                if entries:
                    await reader.xack(key, group, *(entry_id for entry_id, _ in entries))

    task = asyncio.create_task(read())
    try:
        for start in range(0, events, BATCH):
            pipe = client.pipeline(transaction=False)
            for _ in range(min(BATCH, events - start)):
                pipe.xadd(key, {"event": json.dumps(_payload(template))})
            await pipe.execute()
        await progress.settle(events * subscribers)
    finally:
        stopping.set()
        await task
        await reader.aclose()
        await client.aclose()


def faststream_runner(windowed: bool) -> Runner:
    async def run(prefix: str, subscribers: int, events: int, progress: Progress) -> None:
        template = payload_of_size(PAYLOAD_BYTES)
        channel = f"{prefix}{TOPIC}"
        # faststream logs every message at INFO by default, the others do not; logger=None
        # turns that off (faststream handles None, its parameter types leave it out).
        broker = RedisBroker(
            REDIS_URL,
            logger=None,  # type: ignore[arg-type]
            max_connections=FASTSTREAM_MAX_CONNECTIONS,
        )
        for _ in range(subscribers):
            broker.subscriber(channel)(_faststream_handler(progress))
        probe = aioredis.Redis.from_url(REDIS_URL)
        await broker.start()
        try:
            await _until_subscribed(probe, channel, subscribers)
            publish = broker.publish
            if windowed:
                for start in range(0, events, BATCH):
                    await asyncio.gather(
                        *(
                            publish(_payload(template), channel)
                            for _ in range(min(BATCH, events - start))
                        )
                    )
            else:
                for _ in range(events):
                    await publish(_payload(template), channel)
            await progress.settle(events * subscribers)
        finally:
            await broker.stop()
            await probe.aclose()

    return run


def _faststream_handler(progress: Progress) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def handler(body: dict[str, Any]) -> None:
        progress.record(body["t"])

    return handler


async def _until_subscribed(probe: aioredis.Redis, channel: str, count: int) -> None:
    """Until Redis counts ``count`` subscribers of ``channel`` (the broker's start does not
    wait for the confirmations)."""
    deadline = time.perf_counter() + 10.0
    while True:
        [(_, subscribed)] = await probe.pubsub_numsub(channel)
        if subscribed >= count:
            return
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{subscribed} of {count} subscribers of {channel} after 10 s")
        await asyncio.sleep(0.001)


def bus_runner(mode: str, windowed: bool) -> Runner:
    async def run(prefix: str, subscribers: int, events: int, progress: Progress) -> None:
        template = payload_of_size(PAYLOAD_BYTES)
        config = {"url": REDIS_URL, "channelPrefix": prefix, "mode": mode}
        async with running_bus("redis", config) as bus:

            def handler(event: Event) -> None:
                progress.record(event.payload["t"])

            for _ in range(subscribers):
                await bus.subscribe(TOPIC, handler)
            publish = bus.publish
            if windowed:
                for start in range(0, events, BATCH):
                    await asyncio.gather(
                        *(
                            publish(TOPIC, _payload(template))
                            for _ in range(min(BATCH, events - start))
                        )
                    )
            else:
                for _ in range(events):
                    await publish(TOPIC, _payload(template))
            await progress.settle(events * subscribers)

    return run


RUNNERS: dict[str, dict[str, Runner]] = {
    "pubsub": {
        "raw redis-py (pipelined PUBLISH + PSUBSCRIBE)": raw_pubsub,
        "raw redis-py, sequential await PUBLISH": raw_pubsub_sequential,
        "bus, sequential publish": bus_runner("pubsub", windowed=False),
        f"bus, {BATCH} publishes in flight": bus_runner("pubsub", windowed=True),
        "faststream RedisBroker, sequential publish": faststream_runner(windowed=False),
        f"faststream RedisBroker, {BATCH} publishes in flight": faststream_runner(windowed=True),
    },
    "streams": {
        "raw redis-py (pipelined XADD + XREADGROUP)": raw_streams,
        "bus, sequential publish": bus_runner("streams", windowed=False),
        f"bus, {BATCH} publishes in flight": bus_runner("streams", windowed=True),
    },
}


async def _cleanup(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def measure(runner: Runner, subscribers: int, events: int) -> Measurement:
    prefix = f"bench-{os.urandom(4).hex()}:"
    progress = Progress()
    quiet_gc()
    start = time.perf_counter()
    try:
        await runner(prefix, subscribers, events, progress)
    finally:
        await _cleanup(prefix)
    delivered = len(progress.latencies)
    return Measurement(
        delivered,
        progress.last - start,
        progress.latencies,
        dropped=events * subscribers - delivered,
    )


async def run(events: int, repeat: int) -> list[list[str]]:
    rows: list[list[str]] = []
    for mode, runners in RUNNERS.items():
        for subscribers in (1, 10):
            runs: dict[str, list[Measurement]] = {name: [] for name in runners}
            for _ in range(repeat):
                for name, runner in runners.items():
                    runs[name].append(await measure(runner, subscribers, events))
            raw_name = next(iter(runners))
            raw = Summary.of(runs[raw_name])
            for name, measured in runs.items():
                summary = Summary.of(measured)
                rows.append(
                    [
                        f"{mode}, {subscribers} sub",
                        name,
                        format_rate(summary.rate),
                        format_rate(summary.rate / subscribers),
                        f"{summary.rate / raw.rate:.2f}x",
                        format_seconds(summary.p50),
                        format_seconds(summary.p99),
                        str(summary.dropped),
                    ]
                )
            print(f"  measured redis {mode}, {subscribers} sub ({events} events x {repeat})")
    print_table(
        f"Redis end to end: {events} events of {PAYLOAD_BYTES} B per run, median of {repeat}",
        [
            "workload",
            "implementation",
            "deliveries/s",
            "events/s",
            "vs raw",
            "p50",
            "p99",
            "lost",
        ],
        rows,
    )
    return rows


def main(events: int = 20_000, repeat: int = 1) -> None:
    asyncio.run(run(events, repeat))
