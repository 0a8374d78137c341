"""Helpers of the Kafka engine tests: a bus on the shared Tansu broker (``make test`` starts
it with scripts/kafka.sh; a missing broker fails the test, loudly), plain kafka-python
clients to look at the wire, and brokers of a test's own on a free port."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from modular import Application
from modules.eventbus import EventBusModule
from modules.eventbus.engines.kafka import KafkaEngine

BROKERS = "127.0.0.1:9092"
ENGINE = "k"
ROOT = Path(__file__).resolve().parents[3]
# Test settings, never the engine's defaults: a group join takes about half the session
# timeout on Tansu, and patterns see new topics within metadataMaxAge.
FAST_GROUP = {"sessionTimeout": "6s", "heartbeatInterval": "1s", "metadataMaxAge": "1s"}


def bus_settings(engine: dict[str, Any], **eventbus: Any) -> dict[str, Any]:
    """Application settings of a bus with one kafka engine named ``k``."""
    return {
        "eventbus": {
            "engines": [{"name": ENGINE, "type": "kafka", "config": engine}],
            "shutdownTimeout": "3s",
            **eventbus,
        }
    }


@asynccontextmanager
async def running_bus(engine: dict[str, Any], **eventbus: Any) -> AsyncIterator[EventBusModule]:
    """A started application holding a bus with one kafka engine; stopped on exit."""
    app = Application(bus_settings(engine, **eventbus), envvar_prefix=None)
    app.register_module(EventBusModule())
    async with app:
        yield app.get_service("eventbus.provider", EventBusModule)


def engine_of(bus: EventBusModule) -> KafkaEngine:
    engine = bus.engine(ENGINE)
    assert isinstance(engine, KafkaEngine)
    return engine


def admin(brokers: str = BROKERS) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=brokers, bootstrap_timeout_ms=5000)


def check_kafka(brokers: str = BROKERS) -> None:
    """Fail (never skip) the test when no Kafka broker answers at ``brokers``."""
    try:
        admin(brokers).close()
    except Exception as exc:
        pytest.fail(
            f"no Kafka broker answers at {brokers} ({type(exc).__name__}: {exc}); "
            "start it with `make services` (scripts/kafka.sh start)",
            pytrace=False,
        )


def delete_topics(prefix: str, brokers: str = BROKERS) -> None:
    client = admin(brokers)
    try:
        topics = [t for t in client.list_topics() if t.startswith(prefix)]
        if topics:
            client.delete_topics(topics)
    finally:
        client.close()


def produce_raw(topic: str, values: list[bytes], brokers: str = BROKERS) -> None:
    """Records put straight on the broker by a plain kafka-python producer."""
    producer = KafkaProducer(bootstrap_servers=brokers, enable_idempotence=False)
    try:
        for value in values:
            producer.send(topic, value=value).get(timeout=10)
    finally:
        producer.close()


def consume_raw(topic: str, count: int, brokers: str = BROKERS, timeout: float = 10.0) -> list[Any]:
    """The first ``count`` records of ``topic`` (from its start), read by a plain consumer."""
    consumer = KafkaConsumer(bootstrap_servers=brokers, auto_offset_reset="earliest")
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        end = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < end:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Broker:
    """A Tansu broker of a test's own on a free port (memory storage: a restart empties it),
    started and stopped with scripts/kafka.sh."""

    def __init__(self) -> None:
        self.port = free_port()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _script(self, action: str) -> None:
        done = subprocess.run(
            ["bash", "scripts/kafka.sh", action, str(self.port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"scripts/kafka.sh {action} {self.port} failed: {done.stderr}")

    async def start(self) -> None:
        await asyncio.to_thread(self._script, "start")

    async def stop(self) -> None:
        await asyncio.to_thread(self._script, "stop")


@asynccontextmanager
async def own_broker(*, started: bool = True) -> AsyncIterator[Broker]:
    broker = Broker()
    if started:
        await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()
