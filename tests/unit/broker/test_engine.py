"""BrokerEngine's lifecycle, supervision and bounded stop, on a loopback broker: an asyncio
queue that a test can take down, break or freeze (the Redis engine is tested against a real
redis-server in tests/integration/redis)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from modules.eventbus import EngineUnavailableError, Event, Subscription
from modules.eventbus.engines.broker import (
    BrokerEngine,
    BrokerEngineConfig,
    Origin,
    Outgoing,
    Session,
    WatermarkAcks,
)
from tests.helpers import Recorder, wait_for

BREAK = ("", b"", -1)  # put on the queue: the receiving link breaks


class LoopbackConfig(BrokerEngineConfig):
    durable: bool = False

    def durable_reading(self) -> bool:
        return self.durable


class LoopbackBroker:
    def __init__(self) -> None:
        self.up = True
        self.frozen = False
        self.queue: asyncio.Queue[tuple[str, bytes, int]] = asyncio.Queue()
        self.offsets = itertools.count()
        self.committed: dict[str, int] = {}


class LoopbackEngine(BrokerEngine):
    kind = "loopback"

    def __init__(self, config: LoopbackConfig, broker: LoopbackBroker) -> None:
        super().__init__("lb", config, address="loop://user:***@host")
        self.broker = broker
        self.watermarks: WatermarkAcks[str, int] = WatermarkAcks()
        self.acks = self.watermarks
        self.sessions = 0
        self.send_attempts = 0
        self.hang_on_close = False

    async def session(self, session: Session) -> None:
        if not self.broker.up:
            raise ConnectionRefusedError("loopback broker is down")
        self.sessions += 1
        session.ready()
        while True:
            topic, data, offset = await self.broker.queue.get()
            if offset < 0:
                raise ConnectionResetError("loopback link reset")
            settle = self.watermarks.hand_out(topic, offset)
            await self.inbound.receive(data, Origin(f"topic {topic}", topic), settle)

    async def send_batch(self, batch: Sequence[Outgoing]) -> None:
        self.send_attempts += 1
        if not self.broker.up:
            raise ConnectionRefusedError("loopback broker is down")
        for item in batch:
            self.broker.queue.put_nowait((item.destination, item.data, next(self.broker.offsets)))

    def destination(self, event: Event) -> str:
        return event.topic

    async def send_acks(self, batch: Any) -> None:
        while self.broker.frozen:
            await asyncio.sleep(0.01)
        self.broker.committed.update(batch)

    async def close(self) -> None:
        if self.hang_on_close:
            await asyncio.Event().wait()


def config(**values: Any) -> LoopbackConfig:
    settings: dict[str, Any] = {
        "connect_timeout": 0.2,
        "publish_timeout": 0.3,
        "reconnect_min_delay": 0.005,
        "reconnect_max_delay": 0.02,
        **values,
    }
    return LoopbackConfig.model_validate(settings)


@pytest.fixture
async def broker() -> AsyncIterator[LoopbackBroker]:
    yield LoopbackBroker()


def sub(topic: str, handler: Any, n: int = 1) -> Subscription:
    return Subscription(f"s{n}", topic, handler, is_async=False)


def event(topic: str, payload: Any) -> Event:
    return Event(f"id-{payload}", topic, payload, {}, 0.0, "test")


async def test_up_publishes_and_receives_and_commits_what_settled(broker: LoopbackBroker) -> None:
    engine = LoopbackEngine(config(), broker)
    got = Recorder()
    await engine.subscribe(sub("t.a", got))
    await engine.start()
    try:
        assert engine.health().state == "up" and engine.health().error is None
        for n in range(3):
            await engine.publish(event("t.a", n))
        await got.wait_count(3)
        await wait_for(lambda: broker.committed == {"t.a": 2}, 2.0, "offsets committed")
    finally:
        await engine.stop(1.0)
    assert engine.health().state == "stopped"


async def test_down_at_start_warns_once_refuses_in_time_and_recovers(
    broker: LoopbackBroker, caplog: pytest.LogCaptureFixture
) -> None:
    broker.up = False
    engine = LoopbackEngine(config(), broker)
    caplog.set_level(logging.INFO, logger="modules.eventbus.engines.loopback")
    await engine.start()
    try:
        health = engine.health()
        assert health.state == "down"
        assert health.error == "ConnectionRefusedError: loopback broker is down"
        [warning] = caplog.records
        assert warning.levelno == logging.WARNING
        assert "loopback engine lb cannot reach loop://user:***@host at start" in (
            warning.getMessage()
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(EngineUnavailableError, match="loopback broker is down"):
            await engine.publish(event("t.a", 1))
        with pytest.raises(EngineUnavailableError, match=r"subscribe to 't\.a' within"):
            await engine.subscribe(sub("t.a", Recorder()))
        assert loop.time() - started < 1.5
        assert engine.subscriber_count("t.a") == 0  # a failed subscribe leaves nothing

        broker.up = True
        await wait_for(lambda: engine.health().state == "up", 2.0, "the engine up")
        got = Recorder()
        await engine.subscribe(sub("t.a", got))
        await engine.publish(event("t.a", 2))
        await got.wait_count(1)
        assert engine.stats().reconnects == 0  # the first session, not a reconnection
        assert "reconnected" in caplog.records[-1].getMessage()
        assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    finally:
        await engine.stop(1.0)


async def test_require_at_start_fails_start(broker: LoopbackBroker) -> None:
    broker.up = False
    engine = LoopbackEngine(config(require_at_start=True), broker)
    with pytest.raises(EngineUnavailableError, match=r"within connectTimeout \(0\.2s\).*down"):
        await engine.start()
    assert engine.health().state == "stopped"
    broker.up = True
    await engine.start()  # a later start may work
    try:
        assert engine.health().state == "up"
    finally:
        await engine.stop(1.0)


async def test_a_broken_session_reconnects_and_is_counted(
    broker: LoopbackBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="modules.eventbus")
    engine = LoopbackEngine(config(), broker)
    got = Recorder()
    await engine.subscribe(sub("t.a", got))
    await engine.start()
    try:
        broker.queue.put_nowait(BREAK)
        await wait_for(lambda: engine.stats().reconnects == 1, 2.0, "one reconnection")
        await engine.publish(event("t.a", 1))
        await got.wait_count(1)
        assert engine.sessions == 2
        [lost] = caplog.records
        assert "lost its connection" in lost.getMessage() and lost.exc_info is None
    finally:
        await engine.stop(1.0)


async def test_a_bug_in_a_session_is_logged_and_reception_goes_on(
    broker: LoopbackBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="modules.eventbus")
    engine = LoopbackEngine(config(), broker)
    failed_once = [False]

    def handler(event: Event) -> None:
        pass

    original = engine.inbound.receive

    async def buggy(*args: Any) -> None:
        if not failed_once[0]:
            failed_once[0] = True
            raise RuntimeError("a bug in the engine")
        await original(*args)

    engine.inbound.receive = buggy  # type: ignore[method-assign,assignment]
    got = Recorder()
    await engine.subscribe(sub("t.a", got))
    await engine.start()
    try:
        await engine.publish(event("t.a", 1))
        await engine.publish(event("t.a", 2))
        await got.wait_count(1)
        assert got.payloads == [2]
        assert engine.stats().reconnects == 1
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0].exc_info is not None
    finally:
        await engine.stop(1.0)


async def test_stop_is_bounded_when_acknowledging_and_closing_hang(
    broker: LoopbackBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="modules.eventbus")
    engine = LoopbackEngine(config(publish_timeout=30.0), broker)
    got = Recorder()
    await engine.subscribe(sub("t.a", got))
    await engine.start()
    await engine.publish(event("t.a", 1))
    await got.wait_count(1)
    broker.frozen, broker.up, engine.hang_on_close = True, False, True
    attempts = engine.send_attempts
    waiting = asyncio.ensure_future(engine.publish(event("t.a", 2)))
    await wait_for(lambda: engine.send_attempts > attempts, what="the publish being retried")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await engine.stop(0.5)
    assert loop.time() - started < 0.5 + 0.45
    with pytest.raises(EngineUnavailableError, match="stopped before publishing"):
        await waiting
    assert engine.health().state == "stopped"


@pytest.mark.parametrize(
    ("values", "mode"),
    [
        ({"durable": True}, "block"),
        ({"durable": True, "delivery_mode": "drop"}, "drop"),
        ({"durable": False}, "drop"),
    ],
)
def test_durable_reading_defaults_to_block(values: dict[str, Any], mode: str) -> None:
    assert LoopbackConfig.model_validate(values).delivery_policy().mode == mode
