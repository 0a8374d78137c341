"""Faults: a redis-server of the test's own is killed and restarted under a running bus, or
comes up after it. (Away at start or frozen at stop, and the url: test_reliability_outages.)"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from modular import validate_section
from modules.eventbus import EngineUnavailableError, Event, EventBusModule, Subscription
from modules.eventbus.codec import encode
from modules.eventbus.engines.redis import RedisEngine, RedisEngineConfig
from tests.helpers import Recorder, wait_for, wait_until

from .helpers import (
    RedisServer,
    counted,
    engine_of,
    running_bus,
    throwaway_server,
)

PUBLISH_TIMEOUT = 1.0


def fast(url: str, **config: Any) -> dict[str, Any]:
    """Engine settings that notice and recover from an outage quickly."""
    return {
        "url": url,
        "channelPrefix": "fault:",
        "publishTimeout": PUBLISH_TIMEOUT,
        "reconnectMinDelay": "20ms",
        "reconnectMaxDelay": "200ms",
        **config,
    }


async def assert_unavailable_within_publish_timeout(bus: EventBusModule, topic: str) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(EngineUnavailableError, match=topic):
        await bus.publish(topic, {"during": "outage"})
    elapsed = loop.time() - started
    assert elapsed < PUBLISH_TIMEOUT + 1.0, f"publish waited {elapsed:.2f}s"


async def test_pubsub_reconnects_and_resubscribes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modules.eventbus.engines.redis")
    async with (
        throwaway_server(tmp_path, persistent=False) as server,
        running_bus(fast(server.url)) as bus,
    ):
        engine = engine_of(bus)
        exact, pattern = Recorder(), Recorder()
        await bus.subscribe("job.done", exact)
        await bus.subscribe("job.*", pattern)
        await bus.publish("job.done", {"phase": "before"})
        await exact.wait_count(1)
        assert engine.stats().reconnects == 0

        assert bus.health()["r"].state == "up"
        server.kill()
        await assert_unavailable_within_publish_timeout(bus, "job.done")
        await assert_unavailable_within_publish_timeout(bus, "job.other")
        health = bus.health()["r"]
        assert health.state == "down" and health.error is not None

        await server.start()
        await wait_for(lambda: engine.stats().reconnects >= 1, 15, "the engine reconnected")
        assert bus.health()["r"].state == "up" and bus.health()["r"].error is None
        await bus.publish("job.done", {"phase": "after"})
        await exact.wait_count(2)
        await pattern.wait_count(2)
        assert exact.payloads == [{"phase": "before"}, {"phase": "after"}]
        assert pattern.payloads == [{"phase": "before"}, {"phase": "after"}]
        assert engine.stats().reconnects == 1

    lost = [r for r in caplog.records if "lost its connection" in r.getMessage()]
    assert len(lost) == 1, [r.getMessage() for r in lost]  # once per outage, not per attempt
    assert lost[0].levelno == logging.WARNING
    assert any("reconnected" in r.getMessage() for r in caplog.records)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_streams_lose_nothing_acknowledged_and_handle_nothing_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with throwaway_server(tmp_path, persistent=True) as server:
        gate = asyncio.Event()
        handled: list[Event] = []

        async def handler(event: Event) -> None:
            if event.payload["n"] >= 10:  # the stream stalls half way
                await gate.wait()
            handled.append(event)

        async with running_bus(fast(server.url, mode="streams", claimIdle="2s")) as bus:
            engine = engine_of(bus)
            await bus.subscribe("order.*", handler)
            await bus.subscribe("order.placed", Recorder())  # exact and pattern on one key
            sent = [await bus.publish("order.placed", {"n": i}) for i in range(20)]
            await wait_for(lambda: len(handled) == 10, 10, "the first half handled")

            server.kill()  # with entries read but not handled, and acknowledgements in flight
            await assert_unavailable_within_publish_timeout(bus, "order.placed")
            gate.set()  # handled during the outage: acknowledged once Redis is back
            await wait_for(lambda: len(handled) == 20, 10, "the queued half handled")

            await server.start()
            await wait_for(lambda: engine.stats().reconnects >= 1, 15, "the engine reconnected")
            sent += [await bus.publish("order.placed", {"n": i}) for i in range(20, 30)]
            await wait_for(lambda: len(handled) >= 30, 10, "the events after the restart")

            counts = counted(handled, lambda e: e.id)
            assert set(counts) == {e.id for e in sent}
            assert set(counts.values()) == {1}, "an event was handled twice"
            assert [e.payload["n"] for e in handled] == list(range(30))

            async def all_acknowledged() -> bool:
                client = server.client()
                try:
                    summary = await client.xpending("fault:order.placed", engine.group)
                    return int(summary["pending"]) == 0
                finally:
                    await client.aclose()

            await wait_until(all_acknowledged, what="entries left pending")
        assert any(f"lost its connection to {server.url}" in m for m in warnings_of(caplog))


@pytest.mark.parametrize("mode", ["pubsub", "streams"])
async def test_an_engine_down_at_start_works_once_redis_is_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    """Subscriptions made before start are live once the server that was down at start is
    up; publishes and subscribes then work."""
    server = RedisServer(tmp_path, persistent=False)
    settings = validate_section(
        RedisEngineConfig, fast(server.url, mode=mode, connectTimeout="200ms"), "redis"
    )
    engine = RedisEngine("r", settings)
    early, late = Recorder(), Recorder()
    await engine.subscribe(Subscription("s1", "early.*", early, is_async=False))
    await engine.start()
    assert engine.health().state == "down"
    await server.start()
    try:
        await wait_for(lambda: engine.health().state == "up", 10, "the engine is up")
        await engine.subscribe(Subscription("s2", "late.topic", late, is_async=False))
        await engine.publish(Event("e1", "early.bird", {"ok": True}, {}, 0.0, "test"))
        await engine.publish(Event("e2", "late.topic", {"ok": 2}, {}, 0.0, "test"))
        await early.wait_count(1)
        await late.wait_count(1)
        assert early.payloads == [{"ok": True}] and late.payloads == [{"ok": 2}]
        assert engine.stats().reconnects == 0  # the first session is not a reconnection
    finally:
        await engine.stop(1.0)
        server.kill()
    (warning,) = warnings_of(caplog)
    assert f"redis engine r cannot reach {server.url} at start" in warning


async def test_a_subscribe_during_an_outage_returns_once_redis_confirmed_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        throwaway_server(tmp_path, persistent=False) as server,
        running_bus(fast(server.url, publishTimeout="10s")) as bus,
    ):
        engine = engine_of(bus)
        server.kill()
        got = Recorder()
        subscribing = asyncio.ensure_future(bus.subscribe("late.topic", got))
        await wait_for(lambda: engine.subscriber_count("late.topic") == 1, 5, "registered")
        assert not subscribing.done(), "subscribe returned while Redis was down"
        await server.start()
        async with asyncio.timeout(10):
            await subscribing
        client = server.client()
        try:
            receivers = await client.publish("fault:late.topic", encode_event("late.topic"))
        finally:
            await client.aclose()
        assert receivers == 1
        await got.wait_count(1)
        assert any(f"lost its connection to {server.url}" in m for m in warnings_of(caplog))


def encode_event(topic: str) -> bytes:
    return encode(Event("outside-1", topic, {"late": True}, {}, 0.0, "test"))
