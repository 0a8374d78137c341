"""Stream management: created only when Kinesis says it does not exist, waited for, and every
other answer a clear EngineUnavailableError."""

from __future__ import annotations

import asyncio
import logging

import pytest

from modular import LifecycleError
from modules.eventbus import EngineUnavailableError

from .helpers import client, engine_config, engine_of, new_app, running_bus


def describe(stream: str) -> dict[str, object]:
    summary: dict[str, object] = client().describe_stream_summary(StreamName=stream)[
        "StreamDescriptionSummary"
    ]
    return summary


async def test_a_missing_stream_is_created_with_shard_count(stream: str) -> None:
    async with running_bus(engine_config(stream, shardCount=3)) as bus:
        summary = await asyncio.to_thread(describe, stream)
        assert summary["StreamStatus"] == "ACTIVE"
        assert summary["OpenShardCount"] == 3
        assert bus.health()["k"].state == "up"


async def test_an_existing_stream_is_used_as_it_is(stream: str) -> None:
    await asyncio.to_thread(client().create_stream, StreamName=stream, ShardCount=2)
    async with running_bus(engine_config(stream, shardCount=5)) as bus:
        summary = await asyncio.to_thread(describe, stream)
        assert summary["OpenShardCount"] == 2  # not re-created, not resized
        assert bus.health()["k"].state == "up"


async def test_missing_stream_without_create_stream_fails_at_start_when_required(
    stream: str,
) -> None:
    app = new_app(
        engine_config(stream, createStream=False, requireAtStart=True, connectTimeout="500ms")
    )
    with pytest.raises(LifecycleError) as caught:
        await app.start()
    error = caught.value.errors[0][1]
    assert isinstance(error, EngineUnavailableError)
    assert f"stream {stream!r} does not exist and createStream is false" in str(error)
    with pytest.raises(Exception, match="ResourceNotFoundException"):
        await asyncio.to_thread(describe, stream)  # and nothing was created


async def test_missing_stream_without_create_stream_is_down_until_it_exists(
    stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = engine_config(stream, createStream=False, connectTimeout="300ms")
    with caplog.at_level(logging.WARNING, logger="modules.eventbus.engines.kinesis"):
        async with running_bus(config) as bus:
            health = bus.health()["k"]
            assert health.state == "down"
            assert health.error is not None and "does not exist" in health.error
            await asyncio.to_thread(client().create_stream, StreamName=stream, ShardCount=1)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while bus.health()["k"].state != "up":
                assert loop.time() < deadline, f"still {bus.health()['k']}"
                await asyncio.sleep(0.02)
            received: list[object] = []
            await bus.subscribe("made.later", lambda e: received.append(e.payload))
            await bus.publish("made.later", 1)
            while not received:
                assert loop.time() < deadline
                await asyncio.sleep(0.01)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cannot reach" in w and "does not exist" in w for w in warnings), warnings


async def test_other_errors_are_never_a_reason_to_create(stream: str) -> None:
    # kinesalite is started with shardLimit 100: asking for more is refused, and that
    # refusal is what start() reports.
    app = new_app(
        engine_config(stream, shardCount=101, requireAtStart=True, connectTimeout="500ms")
    )
    with pytest.raises(LifecycleError) as caught:
        await app.start()
    error = caught.value.errors[0][1]
    assert isinstance(error, EngineUnavailableError)
    assert "LimitExceededException" in str(error)
    assert "kinesis engine 'k'" in str(error)


async def test_health_is_stopped_after_stop(stream: str) -> None:
    app = new_app(engine_config(stream))
    await app.start()
    bus_engine = engine_of(app.get_service("eventbus.provider"))
    assert bus_engine.health().state == "up"
    await app.stop()
    assert bus_engine.health().state == "stopped"
