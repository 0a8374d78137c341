"""The Redis engine when its Redis is away: down at start, frozen at stop; and its url, which is
validated and never shown with its secrets. Each against a redis-server of the test's own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from modular import Application, CloudEvent, ConfigError
from modules.eventbus import EngineUnavailableError, EventBusModule
from modules.eventbus.engines.base import EngineHealth
from modules.eventbus.engines.redis import RedisEngine
from tests.helpers import DEADLINE, Recorder, wait_for

from .helpers import RedisServer, free_port

NAME = "orders-redis"  # the engine's name, to be found in messages
PUBLISH_TIMEOUT = 1.0
CONNECT_TIMEOUT = 0.5
# Slack on a busy 2-core machine: a bound is met when it holds within this.
SLACK = 1.0


def settings(url: str, eventbus: dict[str, Any] | None = None, **config: Any) -> dict[str, Any]:
    """A bus with one redis engine ``NAME`` at ``url``; ``eventbus`` are more bus settings."""
    engine = {
        "url": url,
        "channelPrefix": "outage:",
        "publishTimeout": PUBLISH_TIMEOUT,
        "reconnectMinDelay": "20ms",
        "reconnectMaxDelay": "200ms",
        **config,
    }
    engines = [{"name": NAME, "type": "redis", "config": engine}]
    return {"eventbus": {"engines": engines, **(eventbus or {})}}


def application(url: str, eventbus: dict[str, Any] | None = None, **config: Any) -> Application:
    app = Application(settings(url, eventbus, **config), envvar_prefix=None)
    app.register_module(EventBusModule())
    return app


def bus_of(app: Application) -> EventBusModule:
    return app.get_service("eventbus.provider", EventBusModule)


def health(bus: EventBusModule) -> EngineHealth:
    return bus.health()[NAME]


@asynccontextmanager
async def stopped_at_exit(app: Application) -> AsyncIterator[Application]:
    try:
        yield app
    finally:
        await app.stop()


def unavailable_in(error: BaseException) -> EngineUnavailableError | None:
    """The EngineUnavailableError raised, or wrapped by the container's LifecycleError."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, EngineUnavailableError):
            return current
        current = current.__cause__
    return None


def assert_names_engine_and_cause(error: EngineUnavailableError, port: int) -> None:
    message = str(error)
    assert NAME in message, message
    assert f"127.0.0.1:{port}" in message, message
    causes = ("refused", "connect call failed", "error 111", "timeout", "timed out")
    assert any(cause in message.lower() for cause in causes), f"no cause in {message!r}"


# --- 3. a broker down at boot -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pubsub", "streams"])
async def test_an_engine_down_at_start_comes_up_with_its_broker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    caplog.set_level(logging.INFO)
    server = RedisServer(tmp_path, persistent=False)  # its port, nobody listening yet
    app = application(server.url, mode=mode, connectTimeout=CONNECT_TIMEOUT)
    try:
        async with stopped_at_exit(app):
            await app.start()
            bus = bus_of(app)
            at_start = health(bus)
            assert at_start.state == "down"
            assert at_start.error is not None
            assert at_start.since is not None
            warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert [r.levelno for r in warnings] == [logging.WARNING], [
                r.getMessage() for r in warnings
            ]
            assert NAME in warnings[0].getMessage()
            assert f"127.0.0.1:{server.port}" in warnings[0].getMessage()

            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(EngineUnavailableError) as publishing:
                await bus.publish("orders.placed", {"during": "outage"})
            assert loop.time() - started < PUBLISH_TIMEOUT + SLACK
            assert_names_engine_and_cause(publishing.value, server.port)
            got = Recorder()
            started = loop.time()
            with pytest.raises(EngineUnavailableError, match=rf"redis engine '{NAME}' .*subscribe"):
                await bus.subscribe("orders.placed", got)
            assert loop.time() - started < PUBLISH_TIMEOUT + SLACK

            await server.start()
            await wait_for(lambda: health(bus).state == "up", DEADLINE, "the engine up")
            came_up = health(bus).since
            assert came_up is not None and came_up > at_start.since, "since did not move"
            await bus.subscribe("orders.placed", got)
            await bus.publish("orders.placed", {"after": "outage"})
            await got.wait_count(1)
            assert got.payloads == [{"after": "outage"}]
        assert health(bus).state == "stopped"
    finally:
        server.kill()


async def test_require_at_start_fails_start_when_the_broker_is_down() -> None:
    port = free_port()
    app = application(f"redis://127.0.0.1:{port}/0", requireAtStart=True, connectTimeout=0.5)
    with pytest.raises(Exception) as starting:  # the container may wrap it
        await app.start()
    error = unavailable_in(starting.value)
    assert error is not None, f"start raised {starting.value!r}"
    assert_names_engine_and_cause(error, port)
    await app.stop()


@pytest.mark.parametrize("require", [False, True])
async def test_connect_timeout_bounds_start_against_a_frozen_broker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, require: bool
) -> None:
    """A frozen server accepts connections and never answers: only connectTimeout ends the
    wait (publishTimeout, far longer, must not be what bounds start)."""
    caplog.set_level(logging.INFO)
    server = RedisServer(tmp_path, persistent=False)
    await server.start()
    server.freeze()
    app = application(
        server.url, connectTimeout=CONNECT_TIMEOUT, publishTimeout="20s", requireAtStart=require
    )
    loop = asyncio.get_running_loop()
    try:
        async with stopped_at_exit(app):
            started = loop.time()
            if require:
                with pytest.raises(Exception) as starting:  # or wrapped
                    await app.start()
                assert unavailable_in(starting.value) is not None, repr(starting.value)
            else:
                await app.start()
                assert health(bus_of(app)).state == "down"
            assert loop.time() - started < CONNECT_TIMEOUT + SLACK
            if not require:
                server.thaw()
                bus = bus_of(app)
                await wait_for(lambda: health(bus).state == "up", DEADLINE, "up")
                got = Recorder()
                await bus.subscribe("thawed", got)
                await bus.publish("thawed", None)
                await got.wait_count(1)
    finally:
        server.thaw()
        server.kill()


# --- 5. stop with a frozen Redis ----------------------------------------------------------


@pytest.mark.parametrize(("mode", "keys"), [("pubsub", 1), ("streams", 1), ("streams", 5)])
async def test_stop_is_bounded_when_redis_is_frozen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str, keys: int
) -> None:
    """SIGSTOP: connections stay open, nothing answers. stop() returns within
    shutdownTimeout (plus the bus's grace), and publishes still waiting have failed."""
    caplog.set_level(logging.INFO)  # what could not finish is logged
    server = RedisServer(tmp_path, persistent=False)
    await server.start()
    app = application(server.url, {"shutdownTimeout": "1s"}, mode=mode, publishTimeout="5s")
    loop = asyncio.get_running_loop()
    try:
        await app.start()
        bus = bus_of(app)
        topics = [f"frozen.k{i}" for i in range(keys)]
        got = Recorder()
        for topic in topics:
            await bus.subscribe(topic, got)
            await bus.publish(topic, {"before": topic})
        await got.wait_count(keys)

        server.freeze()
        engine = bus.engine(NAME)
        assert isinstance(engine, RedisEngine)
        outbox = engine.outbox
        in_flight = [loop.create_task(bus.publish(topic, {"in": "flight"})) for topic in topics]
        try:
            await wait_for(lambda: outbox.waiting == keys, 5.0, "the publishes under way")
            begin = loop.time()
            async with asyncio.timeout(60):  # a bound for a broken stop, far above the tested one
                await app.stop()
            took = loop.time() - begin
            still_waiting = [task for task in in_flight if not task.done()]
        finally:
            server.thaw()
            outcomes = await asyncio.gather(*in_flight, return_exceptions=True)
        assert took < 1.5, f"stop took {took:.1f}s with shutdownTimeout 1s and {keys} keys"
        assert not still_waiting, f"{len(still_waiting)} publishes still waiting after stop"
        for outcome in outcomes:
            assert isinstance(outcome, EngineUnavailableError), repr(outcome)
        logged = [r for r in caplog.records if r.name.startswith("modules.eventbus")]
        if mode == "streams":  # acknowledgements that could not be sent are said
            assert any(r.levelno == logging.WARNING for r in logged), "unfinished stop not logged"
        # The engine stopped within its own bound: the bus did not have to abandon it.
        assert not [r for r in logged if "did not stop" in r.getMessage()]
        assert health(bus).state == "stopped"
    finally:
        server.thaw()
        await app.stop()
        server.kill()


# --- 7. the url ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/abc", "", "   "],
)
async def test_a_bad_url_fails_init(url: str) -> None:
    app = application(url)
    with pytest.raises(ConfigError, match=r"url"):
        await app.init()


async def test_a_password_in_the_query_string_is_never_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cret"
    url = f"redis://127.0.0.1:{free_port()}/0?password={secret}"  # nobody listens there
    observed: list[CloudEvent] = []
    app = application(url, connectTimeout=CONNECT_TIMEOUT)
    app.register_observer(observed.append)
    async with stopped_at_exit(app):
        await app.start()
        bus = bus_of(app)
        engine = bus.engine(NAME)
        shown = {
            "engine": repr(engine),
            "engine config": repr(engine.config),
            "health": repr(health(bus)),
            "eventbus section": repr(app.config_section("eventbus")),
        }
        with pytest.raises(EngineUnavailableError) as publishing:
            await bus.publish("orders.placed", None)
        shown["error"] = f"{publishing.value} {publishing.value!r}"
    shown["logs"] = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    shown["observer events"] = "\n".join(repr(record) for record in observed)
    assert observed, "no observer event at all"
    leaks = [where for where, text in shown.items() if secret in text]
    assert not leaks, f"the password is shown in: {leaks}"
