"""The Redis engine in pub/sub mode, against the Redis at 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from modular import Application, current_tenant, tenant_context
from modules.eventbus import (
    EngineUnavailableError,
    Event,
    EventBusModule,
    EventBusNotStartedError,
    EventEncodeError,
)
from modules.eventbus.codec import encode
from modules.eventbus.engines.redis import RedisEngine, glob_escape
from tests.helpers import Recorder, wait_for, wait_until

from .helpers import (
    REDIS_URL,
    bus_settings,
    close_pubsub,
    delete_keys,
    engine_of,
    raw_messages,
    running_bus,
)


def pubsub(prefix: str, **config: Any) -> dict[str, Any]:
    return {"url": REDIS_URL, "channelPrefix": prefix, **config}


def cloud_event(topic: str, **attributes: Any) -> bytes:
    body = {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "other-producer",
        "type": topic,
        "datacontenttype": "application/json",
        "data": {"from": "outside"},
        **attributes,
    }
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


async def numsub(client: aioredis.Redis, channel: str) -> int:
    [(_, count)] = await client.pubsub_numsub(channel)
    return int(count)


async def test_exact_and_pattern_subscriptions_each_receive_an_event_once(prefix: str) -> None:
    async with running_bus(pubsub(prefix)) as bus:
        exact, pattern, everything = Recorder(), Recorder(), Recorder()
        await bus.subscribe("user.created", exact)
        await bus.subscribe("user.*", pattern)
        await bus.subscribe("*", everything)
        await bus.publish("user.created", {"n": 1})
        await bus.publish("user.deleted", {"n": 2})
        await bus.publish("order.placed", {"n": 3})
        # One connection delivers in order: once the last event arrived, all earlier did.
        await bus.publish("zz.end", None)
        await everything.wait_count(4)
        assert exact.payloads == [{"n": 1}]
        assert pattern.topics == ["user.created", "user.deleted"]
        assert everything.topics == ["user.created", "user.deleted", "order.placed", "zz.end"]
        stats = bus.per_engine_stats()["r"]
        assert stats.delivered == 7
        assert stats.decode_errors == 0


async def test_the_received_event_is_the_published_one(prefix: str) -> None:
    async with running_bus(pubsub(prefix), source="billing") as bus:
        got = Recorder()
        await bus.subscribe("invoice.paid", got)
        sent = await bus.publish(
            "invoice.paid",
            {"amount": 12.5},
            metadata={"k": "v", "trace-id": "t"},
            partition_key="7",
        )
        await got.wait_count(1)
        [event] = got.events
        assert event.id == sent.id
        assert event.payload == {"amount": 12.5}
        assert dict(event.metadata) == {"k": "v", "trace-id": "t"}
        assert event.partition_key == "7"
        assert event.source == "billing"
        assert event.timestamp == pytest.approx(sent.timestamp, abs=1e-6)


async def test_subscribe_returns_once_redis_confirmed_it(
    prefix: str, redis_client: aioredis.Redis
) -> None:
    """An event published right after subscribe returned, by another connection, arrives."""
    async with running_bus(pubsub(prefix)) as bus:
        got = Recorder()
        for i in range(20):
            await bus.subscribe(f"fresh{i}.*" if i % 2 else f"fresh{i}", got)
            await redis_client.publish(
                f"{prefix}fresh{i}" + (".x" if i % 2 else ""),
                cloud_event(f"fresh{i}" + (".x" if i % 2 else "")),
            )
        await got.wait_count(20)
        assert len(got.events) == 20


async def test_redis_subscription_follows_the_first_and_last_local_one(
    prefix: str, redis_client: aioredis.Redis
) -> None:
    channel = f"{prefix}user.created"
    async with running_bus(pubsub(prefix)) as bus:
        assert await numsub(redis_client, channel) == 0
        first = await bus.subscribe("user.created", Recorder())
        second = await bus.subscribe("user.created", Recorder())
        assert await numsub(redis_client, channel) == 1  # one connection, shared
        await bus.unsubscribe(first)
        await bus.publish("user.created", None)  # a round trip after the unsubscribe call
        assert await numsub(redis_client, channel) == 1
        await bus.unsubscribe(second)

        async def gone() -> bool:
            return await numsub(redis_client, channel) == 0

        await wait_until(gone)
        again = Recorder()
        await bus.subscribe("user.created", again)
        assert await numsub(redis_client, channel) == 1
        await bus.publish("user.created", {"again": True})
        await again.wait_count(1)


async def test_one_pubsub_connection_per_engine(prefix: str, redis_client: aioredis.Redis) -> None:
    name = f"e{uuid.uuid4().hex[:8]}"  # unique, to tell its connections apart
    settings = {
        "eventbus": {"engines": [{"name": name, "type": "redis", "config": pubsub(prefix)}]}
    }
    app = Application(settings, envvar_prefix=None)
    app.register_module(EventBusModule())
    async with app:
        bus = app.get_service("eventbus.provider", EventBusModule)
        for topic in ("a.one", "a.two", "b.*", "*"):
            await bus.subscribe(topic, Recorder())
        with tenant_context("acme"):
            await bus.subscribe("c.*", Recorder())
        await bus.publish("a.one", None)
        clients = [
            c for c in await redis_client.client_list() if c["name"].startswith(f"eventbus-{name}-")
        ]
        by_role = {c["name"].removeprefix(f"eventbus-{name}-"): c for c in clients}
        # (the control client connects on first use; pub/sub mode does not use it)
        assert sorted(by_role) == ["publisher", "receiver"]
        assert len(clients) == 2
        # The one receiving connection holds every subscription: 2 channels and 3 patterns.
        receiver = by_role["receiver"]
        assert (int(receiver["sub"]), int(receiver["psub"])) == (2, 3)


async def test_tenants_are_isolated_on_the_wire(prefix: str, redis_client: aioredis.Redis) -> None:
    raw = redis_client.pubsub()
    await raw.psubscribe(f"{glob_escape(prefix)}*")
    async with running_bus(pubsub(prefix)) as bus:
        untenanted, acme, globex, every_tenant = Recorder(), Recorder(), Recorder(), Recorder()
        await bus.subscribe("*", untenanted)
        await bus.subscribe("user.*", every_tenant, all_tenants=True)
        await bus.for_tenant("acme").subscribe("*", acme)
        await bus.for_tenant("globex").subscribe("user.*", globex)

        sent = await bus.for_tenant("acme").publish("user.created", {"secret": "acme"})
        await bus.publish("user.created", {"public": True})
        await untenanted.wait_count(1)
        await acme.wait_count(1)
        await every_tenant.wait_count(2)

        assert acme.payloads == [{"secret": "acme"}]
        assert acme.events[0].tenant == "acme"
        assert untenanted.payloads == [{"public": True}]
        assert globex.events == []
        assert sorted(e.tenant or "" for e in every_tenant.events) == ["", "acme"]

        messages = await raw_messages(raw, 2)
        channels = [m["channel"].decode() for m in messages]
        assert channels == [f"{prefix}acme:user.created", f"{prefix}user.created"]
        assert json.loads(messages[0]["data"])["id"] == sent.id
        assert json.loads(messages[0]["data"])["tenant"] == "acme"
    await close_pubsub(raw)


@pytest.mark.parametrize("mode", ["pubsub", "streams"])
async def test_handlers_of_a_tenant_event_run_in_its_tenant_context(prefix: str, mode: str) -> None:
    async with running_bus(pubsub(prefix, mode=mode)) as bus:
        seen: dict[str, str | None] = {}

        def recorder(label: str) -> Callable[[Event], None]:
            def record(event: Event) -> None:
                seen[label] = current_tenant()

            return record

        await bus.for_tenant("acme").subscribe("who.am.i", recorder("acme's"))
        await bus.subscribe("who.am.i", recorder("untenanted"))
        await bus.for_tenant("acme").publish("who.am.i", None)
        await bus.publish("who.am.i", None)
        await wait_for(lambda: len(seen) == 2, 10)
        assert seen == {"acme's": "acme", "untenanted": None}


async def test_glob_characters_of_the_prefix_are_literal(redis_client: aioredis.Redis) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}-[ab]*?:"
    try:
        async with running_bus(pubsub(prefix)) as bus:
            got = Recorder()
            await bus.subscribe("user.*", got)
            # Matched by the pattern were its '[ab]', '*' and '?' globbing:
            lookalike = prefix.replace("[ab]*?", "a-anything!")
            await redis_client.publish(f"{lookalike}user.x", cloud_event("user.x"))
            await bus.publish("user.real", {"ok": True})
            await got.wait_count(1)
            await bus.publish("user.end", None)
            await got.wait_count(2)
            assert got.topics == ["user.real", "user.end"]
            assert engine_of(bus).stats().decode_errors == 0
    finally:
        await delete_keys(redis_client, glob_escape(prefix) + "*")


async def test_undecodable_messages_are_counted_logged_once_and_skipped(
    prefix: str, redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="modules.eventbus.engines.redis")
    async with running_bus(pubsub(prefix)) as bus:
        got = Recorder()
        await bus.subscribe("job.*", got)
        await bus.for_tenant("acme").subscribe("job.*", got)
        garbage = [
            ("job.a", b"not json at all"),
            ("job.a", b"[1, 2, 3]"),
            ("job.a", cloud_event("job.a", type=...)),  # missing type
            ("job.a", cloud_event("job.a", specversion="0.3")),
            ("job.a", cloud_event("job.other")),  # type contradicts the channel
            ("job.a", cloud_event("job.a", tenant="acme")),  # a tenant on an untenanted channel
            ("acme:job.a", cloud_event("job.a", tenant="globex")),  # another tenant's claim
        ]
        for channel, data in garbage:
            await redis_client.publish(prefix + channel, data)
        await bus.publish("job.good", {"still": "flowing"})
        await got.wait_count(1)
        assert got.payloads == [{"still": "flowing"}]
        stats = engine_of(bus).stats()
        assert stats.decode_errors == len(garbage)
        assert stats.dropped == 0
        warnings = [r for r in caplog.records if "cannot decode" in r.getMessage()]
        assert len(warnings) == 1
        assert prefix in warnings[0].getMessage()


async def test_events_of_another_producer_are_received(
    prefix: str, redis_client: aioredis.Redis
) -> None:
    """A producer that only knows the channel names: no tenant attribute in the envelope."""
    async with running_bus(pubsub(prefix)) as bus:
        plain, acme = Recorder(), Recorder()
        await bus.subscribe("order.placed", plain)
        await bus.for_tenant("acme").subscribe("order.*", acme)
        await redis_client.publish(f"{prefix}order.placed", cloud_event("order.placed"))
        await redis_client.publish(f"{prefix}acme:order.placed", cloud_event("order.placed"))
        await plain.wait_count(1)
        await acme.wait_count(1)
        assert plain.events[0].source == "other-producer"
        assert plain.events[0].tenant is None
        assert acme.events[0].tenant == "acme"
        assert acme.payloads == [{"from": "outside"}]


async def test_an_unencodable_payload_raises_and_sends_nothing(
    prefix: str, redis_client: aioredis.Redis
) -> None:
    raw = redis_client.pubsub()
    await raw.psubscribe(f"{glob_escape(prefix)}*")
    async with running_bus(pubsub(prefix)) as bus:
        with pytest.raises(EventEncodeError, match="payload of type object"):
            await bus.publish("user.created", object())
        await bus.publish("user.created", {"fine": 1})
        [message] = await raw_messages(raw, 1)
        assert json.loads(message["data"])["data"] == {"fine": 1}
    await close_pubsub(raw)


async def test_concurrent_publishers_each_get_their_acknowledgement(prefix: str) -> None:
    async with running_bus(pubsub(prefix)) as bus:
        got = Recorder()
        await bus.subscribe("load.test", got)
        sent = await asyncio.gather(*(bus.publish("load.test", {"i": i}) for i in range(1000)))
        assert len({e.id for e in sent}) == 1000
        await got.wait_count(1000)
        # Pipelined in publish order, and delivered in that order.
        assert got.payloads == [{"i": i} for i in range(1000)]
        assert [e.id for e in got.events] == [e.id for e in sent]


async def test_subscriptions_made_before_start_are_subscribed_at_start(prefix: str) -> None:
    app = Application(bus_settings(pubsub(prefix)), envvar_prefix=None)
    app.register_module(EventBusModule())
    await app.init()
    bus = app.get_service("eventbus.provider", EventBusModule)
    got = Recorder()
    await bus.subscribe("early.bird", got)
    async with app:
        await bus.publish("early.bird", {"early": True})
        await got.wait_count(1)


async def test_restart_after_stop(prefix: str, redis_client: aioredis.Redis) -> None:
    app = Application(bus_settings(pubsub(prefix)), envvar_prefix=None)
    app.register_module(EventBusModule())
    async with app:
        bus = app.get_service("eventbus.provider", EventBusModule)
        await bus.subscribe("cycle.one", Recorder())
        assert await numsub(redis_client, f"{prefix}cycle.one") == 1
    assert await numsub(redis_client, f"{prefix}cycle.one") == 0  # connection closed
    with pytest.raises(EventBusNotStartedError):
        await bus.publish("cycle.one", None)
    async with app:
        got = Recorder()
        await bus.subscribe("cycle.two", got)
        await bus.publish("cycle.two", {"round": 2})
        await got.wait_count(1)
    tasks = [t for t in asyncio.all_tasks() if "redis" in repr(t.get_coro())]
    assert tasks == []


async def test_publish_on_a_stopped_engine_is_refused(prefix: str) -> None:
    async with running_bus(pubsub(prefix)) as bus:
        engine = engine_of(bus)
    with pytest.raises(EngineUnavailableError, match="not running"):
        await engine.publish(Event("id", "x.y", None, {}, 0.0, "s"))


async def test_legacy_external_broker_url_is_used(redis_client: aioredis.Redis) -> None:
    """Legacy single-engine config: the engine is `default`, its url the externalBrokerURL."""
    topic = f"legacy-{uuid.uuid4().hex[:12]}"
    settings = {"eventbus": {"engine": "redis", "externalBrokerURL": "127.0.0.1:6379"}}
    app = Application(settings, envvar_prefix=None)
    app.register_module(EventBusModule())
    async with app:
        bus = app.get_service("eventbus.provider", EventBusModule)
        engine = bus.engine("default")
        assert isinstance(engine, RedisEngine)
        assert engine.settings.url == "redis://127.0.0.1:6379"
        got = Recorder()
        await bus.subscribe(topic, got)
        await bus.publish(topic, {"legacy": True})
        await got.wait_count(1)
        assert encode(got.events[0])  # a well-formed event came back through Redis
