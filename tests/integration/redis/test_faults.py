"""Faults: a redis-server of the test's own is killed and restarted under a running bus."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from modular import Application, LifecycleError, validate_section
from modules.eventbus import EngineUnavailableError, Event, EventBusModule, Subscription
from modules.eventbus.codec import encode
from modules.eventbus.engines.redis import RedisEngine, RedisEngineConfig
from tests.helpers import Recorder, wait_for, wait_until

from .helpers import (
    RedisServer,
    bus_settings,
    counted,
    engine_of,
    free_port,
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

        server.kill()
        await assert_unavailable_within_publish_timeout(bus, "job.done")
        await assert_unavailable_within_publish_timeout(bus, "job.other")

        await server.start()
        await wait_for(lambda: engine.stats().reconnects >= 1, 15, "the engine reconnected")
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


async def test_streams_lose_nothing_acknowledged_and_handle_nothing_twice(tmp_path: Path) -> None:
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


async def test_down_at_start_the_engine_is_down_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    app = Application(bus_settings(fast(url, connectTimeout="300ms")), envvar_prefix=None)
    app.register_module(EventBusModule())
    with caplog.at_level(logging.WARNING, logger="modules.eventbus"):
        async with app:
            bus = app.get_service("eventbus.provider", EventBusModule)
            health = bus.health()["r"]
            assert health.state == "down"
            assert health.error is not None and "ConnectionError" in health.error
            await assert_unavailable_within_publish_timeout(bus, "any.topic")
            with pytest.raises(EngineUnavailableError, match=r"redis engine 'r' .*subscribe"):
                await bus.subscribe("any.topic", Recorder())
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "cannot reach redis://127.0.0.1:" in warnings[0].getMessage()
    assert bus.health()["r"].state == "stopped"


async def test_require_at_start_fails_app_start() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    settings = bus_settings(fast(url, connectTimeout="200ms", requireAtStart=True))
    app = Application(settings, envvar_prefix=None)
    app.register_module(EventBusModule())
    await app.init()
    with pytest.raises(LifecycleError, match=r"redis engine 'r' .*requireAtStart") as caught:
        await app.start()
    assert isinstance(caught.value.__cause__, EngineUnavailableError)


@pytest.mark.parametrize("mode", ["pubsub", "streams"])
async def test_an_engine_down_at_start_works_once_redis_is_up(tmp_path: Path, mode: str) -> None:
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


async def test_a_subscribe_during_an_outage_returns_once_redis_confirmed_it(
    tmp_path: Path,
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


def encode_event(topic: str) -> bytes:
    return encode(Event("outside-1", topic, {"late": True}, {}, 0.0, "test"))


@pytest.mark.parametrize(("mode", "keys"), [("pubsub", 1), ("streams", 1), ("streams", 5)])
async def test_stop_is_bounded_when_redis_is_frozen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str, keys: int
) -> None:
    """SIGSTOP: connections stay open, nothing answers. stop() returns within
    shutdownTimeout (plus the bus's grace), and publishes still waiting have failed."""
    caplog.set_level(logging.ERROR, logger="modules.eventbus")
    shutdown = 1.0
    async with throwaway_server(tmp_path, persistent=False) as server:
        app = Application(
            bus_settings(fast(server.url, mode=mode), shutdownTimeout=shutdown),
            envvar_prefix=None,
        )
        app.register_module(EventBusModule())
        await app.start()
        bus = app.get_service("eventbus.provider", EventBusModule)
        got = Recorder()
        for i in range(keys):
            await bus.subscribe(f"frozen.k{i}", got)
            await bus.publish(f"frozen.k{i}", i)
        await got.wait_count(keys)
        server.freeze()
        in_flight = [asyncio.ensure_future(bus.publish("frozen.k0", n)) for n in range(3)]
        await asyncio.sleep(0)  # the publishes are on their way
        loop = asyncio.get_running_loop()
        started = loop.time()
        await app.stop()
        elapsed = loop.time() - started
        assert elapsed < shutdown + 0.6, f"stop() took {elapsed:.2f}s"
        results = await asyncio.gather(*in_flight, return_exceptions=True)
        assert all(isinstance(r, EngineUnavailableError) for r in results), results
        assert bus.health()["r"].state == "stopped"
    # The bus did not have to abandon the engine.
    assert not [r for r in caplog.records if "did not stop" in r.getMessage()]


async def test_a_secret_in_the_url_never_shows_while_redis_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0?password=query-secret"
    app = Application(bus_settings(fast(url, connectTimeout="200ms")), envvar_prefix=None)
    app.register_module(EventBusModule())
    observed: list[str] = []
    app.register_observer(lambda event: observed.append(repr(event)))
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG, logger="modules.eventbus"):
        async with app:
            bus = app.get_service("eventbus.provider", EventBusModule)
            health = bus.health()["r"]
            texts += [repr(health), repr(bus.engine("r")), repr(bus.engine("r").config)]
            with pytest.raises(EngineUnavailableError) as caught:
                await bus.publish("any.topic", None)
            texts.append(str(caught.value))
    texts += [r.getMessage() for r in caplog.records] + observed
    assert "password=***" in str(caught.value)
    leaked = [t for t in texts if "query-secret" in t]
    assert not leaked, leaked
