"""Faults, each on a kinesalite of the test's own (with a data directory): down at start,
killed and restarted mid-stream, frozen at stop."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modules.eventbus import EngineUnavailableError
from tests.helpers import DEADLINE, Recorder, wait_for

from .conftest import REDIS_URL
from .helpers import Kinesalite, answers, engine_config, engine_of, new_app, stream_name


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Kinesalite]:
    kinesalite = Kinesalite(tmp_path / "kinesalite-data")
    yield kinesalite
    if kinesalite.process is not None:
        kinesalite.thaw()
        await kinesalite.kill()


async def test_kinesalite_down_at_start_then_the_engine_comes_up(
    server: Kinesalite, caplog: pytest.LogCaptureFixture
) -> None:
    config = engine_config(
        stream_name(), server.endpoint, connectTimeout="300ms", publishTimeout="300ms"
    )
    app = new_app(config)
    with caplog.at_level(logging.WARNING):
        await app.start()  # not an error: down, reconnecting in the background
    bus = app.get_service("eventbus.provider")
    try:
        health = bus.health()["k"]
        assert health.state == "down"
        assert health.error is not None and "Could not connect" in health.error
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "cannot reach" in warnings[0], warnings
        with pytest.raises(EngineUnavailableError, match="kinesis engine 'k'"):
            await bus.publish("early.topic", 0)
        with pytest.raises(EngineUnavailableError, match="could not subscribe"):
            await bus.subscribe("early.topic", Recorder())

        await server.start()
        await wait_for(lambda: bus.health()["k"].state == "up", DEADLINE, "the engine up")
        received = Recorder()
        await bus.subscribe("early.topic", received)
        await bus.publish("early.topic", 1)
        await received.wait_count(1)
        assert received.payloads == [1]
    finally:
        await app.stop()


async def test_killed_and_restarted_with_its_data_reading_resumes(
    server: Kinesalite, checkpoint_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    await server.start()
    config = engine_config(
        stream_name(),
        server.endpoint,
        shardCount=2,
        checkpointStore="redis",
        checkpointRedisUrl=REDIS_URL,
        checkpointKeyPrefix=checkpoint_prefix,
        publishTimeout="10s",
    )
    subscriber, publisher = new_app(config), new_app(config)
    await subscriber.start()
    await publisher.start()
    sub_bus = subscriber.get_service("eventbus.provider")
    pub_bus = publisher.get_service("eventbus.provider")
    try:
        received = Recorder()
        await sub_bus.subscribe("resume.*", received)
        for n in range(20):
            await pub_bus.publish("resume.event", n, partition_key=f"key-{n}")
        await received.wait_count(20)

        with caplog.at_level(logging.WARNING):
            await server.kill()  # kill -9, mid-stream
            # a publish during the outage waits (within publishTimeout) for the server
            during = asyncio.create_task(pub_bus.publish("resume.event", 20, partition_key="k"))
            await wait_for(
                lambda: sub_bus.health()["k"].state == "down", DEADLINE, "the subscriber down"
            )
            await server.start()  # same port, same data directory
            await during
            await wait_for(lambda: sub_bus.health()["k"].state == "up", DEADLINE, "up again")
            for n in range(21, 30):
                await pub_bus.publish("resume.event", n, partition_key=f"key-{n}")
            await received.wait_count(30)
        assert sorted(received.payloads) == list(range(30))  # each once: resumed, not replayed
        assert sub_bus.per_engine_stats()["k"].reconnects >= 1
        outage = [r.getMessage() for r in caplog.records if "lost its connection" in r.getMessage()]
        assert outage, [r.getMessage() for r in caplog.records]

        # and a subscriber started again after all this resumes from its checkpoints
        await subscriber.stop()
        for n in range(30, 35):
            await pub_bus.publish("resume.event", n, partition_key=f"key-{n}")
        await subscriber.start()
        again = Recorder("again")
        await sub_bus.subscribe("resume.*", again)
        await again.wait_count(5)
        assert sorted(again.payloads) == list(range(30, 35))
    finally:
        await publisher.stop()
        await subscriber.stop()


async def test_stop_is_bounded_with_the_server_frozen(
    server: Kinesalite, caplog: pytest.LogCaptureFixture
) -> None:
    await server.start()
    config = engine_config(stream_name(), server.endpoint, publishTimeout="20s")
    app = new_app(config, shutdownTimeout="1s")
    await app.start()
    bus = app.get_service("eventbus.provider")
    received = Recorder()
    await bus.subscribe("frozen.topic", received)
    await bus.publish("frozen.topic", 1)
    await received.wait_count(1)

    server.freeze()  # accepts connections, answers nothing
    stuck = asyncio.create_task(bus.publish("frozen.topic", 2))
    engine = engine_of(bus)
    await wait_for(lambda: engine.outbox.waiting == 1, 5.0, "the publish on its way")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.WARNING):
        await app.stop()
    took = loop.time() - started
    assert took < 1.0 + 1.5, f"stop took {took:.2f}s"
    with pytest.raises(EngineUnavailableError):
        await stuck  # not left waiting
    assert engine_of(bus).health().state == "stopped"


async def test_stop_is_bounded_with_the_server_gone(server: Kinesalite) -> None:
    await server.start()
    app = new_app(engine_config(stream_name(), server.endpoint), shutdownTimeout="1s")
    await app.start()
    bus = app.get_service("eventbus.provider")
    await bus.subscribe("gone.topic", Recorder())
    await server.kill()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await app.stop()
    assert loop.time() - started < 2.5


async def test_the_server_outlives_a_client_that_goes_away_mid_request(
    server: Kinesalite,
) -> None:
    await server.start()

    def half_a_request() -> None:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\n"
                b"X-Amz-Target: Kinesis_20131202.ListStreams\r\nContent-Length: 100\r\n\r\n{"
            )

    await asyncio.to_thread(half_a_request)
    assert server.process is not None
    await wait_for(lambda: answers(server.endpoint), DEADLINE, "kinesalite still answering")
    assert server.process.poll() is None


async def test_a_server_that_lost_its_data_is_read_from_the_start_of_the_new_stream(
    server: Kinesalite, tmp_path: Path, checkpoint_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    await server.start()
    config = engine_config(
        stream_name(),
        server.endpoint,
        checkpointStore="redis",
        checkpointRedisUrl=REDIS_URL,
        checkpointKeyPrefix=checkpoint_prefix,
        publishTimeout="10s",
    )
    app = new_app(config)
    await app.start()
    bus = app.get_service("eventbus.provider")
    try:
        received = Recorder()
        await bus.subscribe("lost.topic", received)
        await bus.publish("lost.topic", "before")
        await received.wait_count(1)
        await app.stop()  # its checkpoint names a record of the old stream
        made = time.time()

        await server.kill()
        server.data_dir = tmp_path / "empty"  # the same server, without its data
        await server.start()
        # kinesalite puts the second a shard was made into its sequence numbers, and takes
        # those of an older stream of the same name made within the same second
        await wait_for(lambda: int(time.time()) > int(made) + 1, 5.0, "the next second")
        with caplog.at_level(logging.WARNING):
            await app.start()  # the stream is made again
            again = Recorder("again")
            await bus.subscribe("lost.topic", again)
            await bus.publish("lost.topic", "after")
            await again.wait_count(1)
        assert again.payloads == ["after"]
        assert any("does not hold sequence number" in r.getMessage() for r in caplog.records)
    finally:
        await app.stop()
