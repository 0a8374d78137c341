"""Kafka end to end: one publisher and one subscription in this process, 1 KB JSON payloads,
the bus's kafka engine beside raw kafka-python doing the same job, on the broker at
127.0.0.1:9092 (``make services`` starts Tansu there).

- raw kafka-python: one KafkaProducer sends every record (JSON-encoded) and flushes; one
  KafkaConsumer (no group, the topic's partition assigned at its end) polls, decodes each
  record and calls the handler. Each client on a thread of its own, as the engine has them.
- bus, windowed: ``BATCH`` publishes in flight at a time (``asyncio.gather``); each waits for
  the broker's acknowledgement, the engine's consumer hands every event to the handler.
- bus, sequential: ``await bus.publish(...)`` one after the other.

Throughput is handler calls per second from the first publish to the last delivery.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from modules.eventbus import Event, EventBusModule

from .codec import payload_of_size
from .common import (
    Measurement,
    Summary,
    format_rate,
    format_seconds,
    print_table,
    quiet_gc,
    running_bus,
    wait_until,
)

BROKERS = "127.0.0.1:9092"
TOPIC = "bench.topic"
BATCH = 500
PAYLOAD_BYTES = 1024
DEADLINE = 120.0  # seconds a run may take before it is given up


def _payload(template: dict[str, Any]) -> dict[str, Any]:
    return {**template, "t": time.perf_counter()}


def _raw(prefix: str, events: int, latencies: list[float]) -> float:
    """Raw kafka-python; returns the time of the last delivery."""
    topic = prefix + TOPIC
    admin = KafkaAdminClient(bootstrap_servers=BROKERS)
    admin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}})
    admin.close()
    consumer = KafkaConsumer(bootstrap_servers=BROKERS, enable_auto_commit=False)
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    consumer.seek_to_end(partition)
    consumer.position(partition)
    last = [time.perf_counter()]

    def consume() -> None:
        deadline = time.monotonic() + DEADLINE
        while len(latencies) < events and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=100).values():
                for record in records:
                    payload = json.loads(record.value)
                    now = time.perf_counter()
                    latencies.append(now - payload["t"])
                    last[0] = now

    reader = threading.Thread(target=consume)
    reader.start()
    producer = KafkaProducer(bootstrap_servers=BROKERS, enable_idempotence=False, acks="all")
    template = payload_of_size(PAYLOAD_BYTES)
    for _ in range(events):
        producer.send(topic, json.dumps(_payload(template), separators=(",", ":")).encode())
    producer.flush()
    reader.join()
    producer.close()
    consumer.close()
    return last[0]


async def raw(prefix: str, events: int) -> Measurement:
    latencies: list[float] = []
    quiet_gc()
    start = time.perf_counter()
    last = await asyncio.to_thread(_raw, prefix, events, latencies)
    return Measurement(len(latencies), last - start, latencies, dropped=events - len(latencies))


async def bus(prefix: str, events: int, windowed: bool, group: bool = False) -> Measurement:
    config: dict[str, Any] = {"brokers": BROKERS, "topicPrefix": prefix}
    if group:
        # Offsets committed after handling; short group timeouts so the join is quick (it is
        # done before the clock starts: what is measured is the steady state).
        config |= {"groupId": f"{prefix}group", "sessionTimeout": "6s", "heartbeatInterval": "1s"}
    latencies: list[float] = []
    last = [0.0]

    def handler(event: Event) -> None:
        now = time.perf_counter()
        latencies.append(now - event.payload["t"])
        last[0] = now

    async with running_bus("kafka", config) as bus:
        await bus.subscribe(TOPIC, handler)
        template = payload_of_size(PAYLOAD_BYTES)
        if group:  # until the group formed and the first event came through
            await publish_warm_up(bus, template, latencies)
        publish = bus.publish
        quiet_gc()
        start = time.perf_counter()
        if windowed:
            for first in range(0, events, BATCH):
                count = min(BATCH, events - first)
                await asyncio.gather(*(publish(TOPIC, _payload(template)) for _ in range(count)))
        else:
            for _ in range(events):
                await publish(TOPIC, _payload(template))
        await wait_until(lambda: len(latencies) >= events, DEADLINE)
    return Measurement(len(latencies), last[0] - start, latencies, dropped=events - len(latencies))


async def publish_warm_up(
    bus: EventBusModule, template: dict[str, Any], latencies: list[float]
) -> None:
    await bus.publish(TOPIC, _payload(template))
    await wait_until(lambda: bool(latencies), DEADLINE)
    latencies.clear()


def _cleanup(prefix: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=BROKERS)
    try:
        topics = [t for t in admin.list_topics() if t.startswith(prefix)]
        if topics:
            admin.delete_topics(topics)
    finally:
        admin.close()


async def run(events: int, repeat: int) -> list[list[str]]:
    implementations: dict[str, Callable[[str], Awaitable[Measurement]]] = {
        "raw kafka-python (producer + consumer threads)": lambda p: raw(p, events),
        f"bus, {BATCH} publishes in flight": lambda p: bus(p, events, windowed=True),
        f"bus in a group (commits), {BATCH} in flight": lambda p: bus(
            p, events, windowed=True, group=True
        ),
        "bus, sequential publish": lambda p: bus(p, max(events // 10, 1), windowed=False),
    }
    runs: dict[str, list[Measurement]] = {name: [] for name in implementations}
    for _ in range(repeat):
        for name, measure in implementations.items():
            prefix = f"bench-{os.urandom(4).hex()}."
            try:
                runs[name].append(await measure(prefix))
            finally:
                await asyncio.to_thread(_cleanup, prefix)
    raw_rate = Summary.of(runs[next(iter(implementations))]).rate
    rows = []
    for name, measured in runs.items():
        summary = Summary.of(measured)
        rows.append(
            [
                name,
                format_rate(summary.rate),
                f"{summary.rate / raw_rate:.2f}x",
                format_seconds(summary.p50),
                format_seconds(summary.p99),
                str(summary.dropped),
            ]
        )
    print_table(
        f"Kafka end to end: {events} events of {PAYLOAD_BYTES} B per run (sequential: a tenth "
        f"of them), 1 subscription, median of {repeat}",
        ["implementation", "events/s", "vs raw", "p50", "p99", "lost"],
        rows,
    )
    return rows
