"""The kafka engine against the shared broker: names and keys on the wire, the topics Kafka
cannot name, records that are not events, and a named group's durability."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.helpers import Recorder, wait_for

from .helpers import BROKERS, FAST_GROUP, consume_raw, engine_of, produce_raw, running_bus

DEADLINE = 30.0


async def test_names_keys_and_envelopes_on_the_wire(prefix: str) -> None:
    async with running_bus({"brokers": BROKERS, "topicPrefix": prefix}) as bus:
        await bus.publish("user.created", {"id": 7}, partition_key="user-7")
        await bus.for_tenant("acme").publish("user.created", {"id": 8})

    (plain,) = await asyncio.to_thread(consume_raw, f"{prefix}user.created", 1)
    assert plain.key == b"user-7"
    envelope = json.loads(plain.value)
    assert envelope["type"] == "user.created" and envelope["data"] == {"id": 7}
    assert envelope["partitionkey"] == "user-7" and "tenant" not in envelope

    (tenanted,) = await asyncio.to_thread(consume_raw, f"{prefix}__acme.user.created", 1)
    assert tenanted.key is None
    assert json.loads(tenanted.value)["tenant"] == "acme"


async def test_a_topic_kafka_cannot_name_is_a_value_error(prefix: str) -> None:
    long_prefix = prefix + "p" * (60 - len(prefix))
    async with running_bus({"brokers": BROKERS, "topicPrefix": long_prefix}) as bus:
        topic = "t" * 200  # a valid bus topic; with the prefix, over Kafka's 249 characters
        with pytest.raises(ValueError, match="which Kafka cannot name"):
            await bus.publish(topic, {})
        with pytest.raises(ValueError, match="which Kafka cannot name"):
            await bus.subscribe(topic, Recorder())
        assert bus.subscriber_count(topic) == 0
    async with running_bus({"brokers": BROKERS}) as bus:
        with pytest.raises(ValueError, match=r"Kafka topic '\.\.'"):
            await bus.publish("..", {})


async def test_records_that_are_not_events_are_counted_and_skipped(prefix: str) -> None:
    config = {"brokers": BROKERS, "topicPrefix": prefix, "groupId": f"{prefix}g", **FAST_GROUP}
    async with running_bus(config) as bus:
        got = Recorder()
        await bus.subscribe("inbound", got)
        engine = engine_of(bus)
        garbage = [b"\x00\xff not json", b'{"specversion": "1.0"}', b"", b"[" * 100_000]
        await asyncio.to_thread(produce_raw, f"{prefix}inbound", garbage)
        await bus.publish("inbound", {"ok": True})
        await got.wait_count(1, DEADLINE)
        assert got.payloads == [{"ok": True}]
        await wait_for(lambda: engine.stats().decode_errors == len(garbage), DEADLINE, "4 errors")
        assert engine.stats().dropped == 0


async def test_a_named_group_gets_what_was_published_while_it_was_away(prefix: str) -> None:
    config = {"brokers": BROKERS, "topicPrefix": prefix, "groupId": f"{prefix}g", **FAST_GROUP}
    async with running_bus({"brokers": BROKERS, "topicPrefix": prefix}) as publisher:
        async with running_bus(config) as bus:
            first = Recorder()
            await bus.subscribe("orders.created", first)
            # Published right after subscribe() returned, while the group still joins.
            await publisher.publish("orders.created", {"n": 0})
            await first.wait_count(1, DEADLINE)
        for n in (1, 2):
            await publisher.publish("orders.created", {"n": n})
        async with running_bus(config) as bus:
            again = Recorder()
            await bus.subscribe("orders.created", again)
            await again.wait_count(2, DEADLINE)
            assert again.payloads == [{"n": 1}, {"n": 2}]  # not {"n": 0}: it was committed
