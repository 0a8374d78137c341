"""Publishing: concurrent publishes batched into PutRecords (500 records, 5 MiB at most),
the record on the wire, failed records retried with backoff, size limits at publish."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from modules.eventbus import EngineUnavailableError, EventEncodeError
from modules.eventbus.codec import encode
from modules.eventbus.engines.kinesis import KinesisEngine

from .helpers import all_records, engine_config, engine_of, running_bus

MIB = 1024 * 1024


def watch_put_records(engine: KinesisEngine) -> list[list[dict[str, Any]]]:
    """The Records of every PutRecords request the engine sends, as sent."""
    requests: list[list[dict[str, Any]]] = []

    def seen(params: dict[str, Any], **_: Any) -> None:
        requests.append(list(params["Records"]))

    assert engine.calls is not None
    engine.calls.client.meta.events.register("before-parameter-build.kinesis.PutRecords", seen)
    return requests


def fail_records(engine: KinesisEngine, should_fail: Any) -> None:
    """Kinesis answers a record as failed (throttled) when ``should_fail(record data)``:
    the reply the engine reads is changed after kinesalite took the request."""

    def after(parsed: dict[str, Any], params: dict[str, Any], **_: Any) -> None:
        failed = 0
        for i, record in enumerate(params["Records"]):
            if should_fail(record["Data"]):
                parsed["Records"][i] = {
                    "ErrorCode": "ProvisionedThroughputExceededException",
                    "ErrorMessage": "Rate exceeded for shard shardId-000000000000",
                }
                failed += 1
        parsed["FailedRecordCount"] = failed

    assert engine.calls is not None
    events = engine.calls.client.meta.events
    keep: dict[str, Any] = {}

    def remember(params: dict[str, Any], **_: Any) -> None:
        keep["params"] = params

    def changed(parsed: dict[str, Any], **_: Any) -> None:
        after(parsed, keep["params"])

    events.register("before-parameter-build.kinesis.PutRecords", remember)
    events.register("after-call.kinesis.PutRecords", changed)


async def test_concurrent_publishes_share_put_records_requests(stream: str) -> None:
    async with running_bus(engine_config(stream, shardCount=2)) as bus:
        requests = watch_put_records(engine_of(bus))
        await asyncio.gather(*(bus.publish("batch.topic", {"i": i}) for i in range(1200)))
    sizes = [len(r) for r in requests]
    assert sum(sizes) == 1200
    assert max(sizes) == 500  # full requests while publishers wait
    assert len(requests) <= 6, sizes
    records = await asyncio.to_thread(all_records, stream)
    assert sorted(json.loads(r["Data"])["data"]["i"] for r in records) == list(range(1200))


async def test_requests_stay_under_five_mib(stream: str) -> None:
    big = "x" * (900 * 1024)  # 12 records of ~0.9 MiB: three requests at least
    async with running_bus(engine_config(stream)) as bus:
        requests = watch_put_records(engine_of(bus))
        await asyncio.gather(*(bus.publish("big.topic", {"i": i, "pad": big}) for i in range(12)))
    request_bytes = [sum(len(r["Data"]) + len(r["PartitionKey"]) for r in req) for req in requests]
    assert sum(len(r) for r in requests) == 12
    assert max(request_bytes) <= 5 * MIB, request_bytes
    assert len(requests) >= 3


async def test_the_record_is_the_envelope_keyed_by_partition_key_or_topic(stream: str) -> None:
    async with running_bus(engine_config(stream)) as bus:
        await bus.publish("orders.created", {"id": 1})
        await bus.publish("orders.created", {"id": 2}, partition_key="customer-7")
    records = await asyncio.to_thread(all_records, stream)
    keys = {json.loads(r["Data"])["data"]["id"]: r["PartitionKey"] for r in records}
    assert keys == {1: "orders.created", 2: "customer-7"}
    envelope = json.loads(records[0]["Data"])
    assert envelope["specversion"] == "1.0"
    assert envelope["type"] == "orders.created"
    assert envelope["source"] == "eventbus"


async def test_a_record_over_one_mib_is_refused_at_publish(stream: str) -> None:
    async with running_bus(engine_config(stream)) as bus:
        requests = watch_put_records(engine_of(bus))
        with pytest.raises(EventEncodeError) as caught:
            await bus.publish("too.big", {"pad": "x" * MIB})
        assert "maxMessageSize" in str(caught.value) and "nothing was sent" in str(caught.value)
        # The partition key counts: an envelope just under the limit with a long key
        # is over it on the wire.
        key = "k" * 200
        probe = await bus.publish("too.big", {"pad": ""}, partition_key=key)
        pad = "x" * (MIB - len(encode(probe)) - 100)
        with pytest.raises(EventEncodeError) as caught:
            await bus.publish("too.big", {"pad": pad}, partition_key=key)
        assert "partition key" in str(caught.value)
        with pytest.raises(ValueError, match="at most 256"):
            await bus.publish("long.key", 1, partition_key="k" * 257)
    assert [len(r) for r in requests] == [1]  # only the probe was sent


async def test_failed_records_are_sent_again_with_backoff(stream: str) -> None:
    async with running_bus(engine_config(stream)) as bus:
        engine = engine_of(bus)
        attempts: dict[bytes, int] = {}

        def first_two_attempts_fail(data: bytes) -> bool:
            if b'"flaky"' not in data:
                return False
            attempts[data] = attempts.get(data, 0) + 1
            return attempts[data] <= 2

        fail_records(engine, first_two_attempts_fail)
        await asyncio.gather(
            bus.publish("retry.topic", "flaky"), *(bus.publish("retry.topic", i) for i in range(5))
        )
        assert list(attempts.values()) == [3]  # failed twice, then taken
        assert bus.health()["k"].state == "up"  # throttled records are not an outage


async def test_a_record_that_keeps_failing_fails_its_publisher_only(stream: str) -> None:
    async with running_bus(engine_config(stream, publishTimeout="600ms")) as bus:
        fail_records(engine_of(bus), lambda data: b'"doomed"' in data)
        results = await asyncio.gather(
            bus.publish("fail.topic", "doomed"),
            bus.publish("fail.topic", "fine"),
            return_exceptions=True,
        )
    error, ok = results
    assert isinstance(error, EngineUnavailableError), results
    assert "could not publish to 'fail.topic'" in str(error)
    assert "ProvisionedThroughputExceededException" in str(error)
    assert not isinstance(ok, BaseException)
