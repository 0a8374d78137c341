"""Contract: publish/subscribe, patterns, ordering, async subscriptions, unsubscribe."""

from __future__ import annotations

from typing import Any

from modules.eventbus import EventBusModule
from tests.helpers import DEADLINE, AsyncRecorder, Recorder, wait_for

from .helpers import requires

# JSON only: broker engines carry payloads through the wire codec.
PAYLOAD: dict[str, Any] = {
    "id": 7,
    "name": "Ada Lovelace",
    "tags": ["a", "b"],
    "nested": {"ratio": 1.5, "ok": True, "nothing": None, "unicode": "héllo ✓"},
}
# A plain attribute name, a key that is not a valid CloudEvents attribute name, mixed case.
METADATA = {"region": "eu", "trace-id": "abc-123", "Mixed.Key": "x y"}


async def test_publish_subscribe_round_trip(bus: EventBusModule) -> None:
    received = Recorder()
    await bus.subscribe("user.created", received)

    published = await bus.publish(
        "user.created", PAYLOAD, metadata=METADATA, partition_key="user-7"
    )

    await received.wait_count(1)
    (event,) = received.events
    assert event.id == published.id
    assert event.topic == "user.created"
    assert event.payload == PAYLOAD
    assert dict(event.metadata) == METADATA
    assert event.partition_key == "user-7"
    assert event.tenant is None
    assert event.source == published.source == "eventbus"
    assert abs(event.timestamp - published.timestamp) < 0.001
    assert event.created_at.utcoffset() is not None


async def test_async_def_handler_and_every_subscriber_get_the_event(bus: EventBusModule) -> None:
    first, second = AsyncRecorder("first"), Recorder("second")
    await bus.subscribe("order.placed", first)
    await bus.subscribe("order.placed", second)

    await bus.publish("order.placed", {"n": 1})

    await first.wait_count(1)
    await second.wait_count(1)
    assert first.payloads == second.payloads == [{"n": 1}]


async def test_event_without_payload_metadata_or_key(bus: EventBusModule) -> None:
    received = Recorder()
    await bus.subscribe("ping", received)

    await bus.publish("ping")

    await received.wait_count(1)
    (event,) = received.events
    assert event.payload is None
    assert dict(event.metadata) == {}
    assert event.partition_key is None


@requires("patterns")
async def test_prefix_wildcard_matches_deeper_topics_only(bus: EventBusModule) -> None:
    users, everything = Recorder("user.*"), Recorder("*")
    await bus.subscribe("user.*", users)
    await bus.subscribe("*", everything)

    for topic in ("user", "order.x", "user.a", "user.a.b", "username"):
        await bus.publish(topic, {"topic": topic})

    # Every event was dispatched once `*` handled it; a last `user.*` event then flushes the
    # `user.*` queue, so anything wrongly matched would be in front of it.
    await everything.wait_count(5)
    await bus.publish("user.zz", {"topic": "user.zz"})
    await users.wait_payload({"topic": "user.zz"})
    assert sorted(users.topics) == ["user.a", "user.a.b", "user.zz"]


@requires("patterns")
async def test_star_receives_every_topic(bus: EventBusModule) -> None:
    everything = Recorder("*")
    await bus.subscribe("*", everything)
    topics = ["a", "user.created", "order.x.y", "metrics-1", "with_underscore"]

    for topic in topics:
        await bus.publish(topic, {"t": topic})

    await everything.wait_count(len(topics))
    assert sorted(everything.topics) == sorted(topics)
    assert len(everything.events) == len(topics)


@requires("ordering")
async def test_ordered_subscription_sees_events_in_publish_order(bus: EventBusModule) -> None:
    received = Recorder()
    await bus.subscribe("sequence", received)
    count = 200

    for i in range(count):
        await bus.publish("sequence", {"i": i})

    await received.wait_count(count)
    assert [p["i"] for p in received.payloads] == list(range(count))


async def test_async_subscription_receives_everything(bus: EventBusModule) -> None:
    received = AsyncRecorder("async")
    sub = await bus.subscribe_async("jobs.run", received)
    assert sub.is_async
    count = 100

    for i in range(count):
        await bus.publish("jobs.run", {"i": i})

    await received.wait_count(count)
    assert sorted(p["i"] for p in received.payloads) == list(range(count))


async def test_unsubscribe_stops_delivery(bus: EventBusModule) -> None:
    leaving, staying = Recorder("leaving"), Recorder("staying")
    sub = await bus.subscribe("news", leaving)
    await bus.subscribe("news", staying)
    await bus.publish("news", {"n": 1})
    await leaving.wait_count(1)

    await bus.unsubscribe(sub)
    await bus.unsubscribe(sub)  # idempotent
    await bus.publish("news", {"n": 2})
    # Same topic, so the sentinel reaches `staying` only after {"n": 2} was dispatched.
    await bus.publish("news", {"n": "sentinel"})
    await staying.wait_payload({"n": "sentinel"})

    assert leaving.payloads == [{"n": 1}]
    assert staying.payloads == [{"n": 1}, {"n": 2}, {"n": "sentinel"}]
    assert not sub.active
    assert bus.subscriber_count("news") == 1


async def test_cancel_on_the_subscription_handle(bus: EventBusModule) -> None:
    leaving, staying = Recorder("leaving"), Recorder("staying")
    sub = await bus.subscribe_async("news", leaving)
    await bus.subscribe("news", staying)

    await sub.cancel()
    await bus.publish("news", {"n": 1})
    await staying.wait_count(1)

    assert leaving.events == []
    assert bus.topics() == ["news"]


async def test_topics_and_subscriber_counts(bus: EventBusModule) -> None:
    first = await bus.subscribe("user.created", Recorder())
    await bus.subscribe("user.created", Recorder())
    await bus.subscribe("order.placed", Recorder())

    assert bus.topics() == ["order.placed", "user.created"]
    assert bus.subscriber_count("user.created") == 2
    assert bus.engine("main").subscriber_count("user.created") == 2

    await bus.unsubscribe(first)
    await wait_for(lambda: bus.subscriber_count("user.created") == 1, DEADLINE, "the count to drop")
    assert bus.engine("main").subscriber_count("user.created") == 1
