"""Broker faults, on a Tansu broker of the test's own (memory storage: a restarted broker
starts empty, like a server without persistence)."""

from __future__ import annotations

import logging
import time

import pytest

from modular import Application, LifecycleError
from modules.eventbus import EngineUnavailableError, EventBusModule
from tests.helpers import Recorder, wait_for

from .helpers import FAST_GROUP, bus_settings, engine_of, own_broker, running_bus

PUBLISH_TIMEOUT = 2.0
DEADLINE = 30.0


def settings(address: str, **more: object) -> dict[str, object]:
    return {
        "brokers": address,
        "topicPrefix": "faults.",
        "connectTimeout": "2s",
        "publishTimeout": f"{PUBLISH_TIMEOUT}s",
        "reconnectMaxDelay": "500ms",
        **FAST_GROUP,
        **more,
    }


async def test_broker_down_at_start_then_up(caplog: pytest.LogCaptureFixture) -> None:
    async with own_broker(started=False) as broker:
        caplog.set_level(logging.WARNING, logger="modules.eventbus.engines.kafka")
        async with running_bus(settings(broker.address)) as bus:
            engine = engine_of(bus)
            assert engine.health().state == "down"
            warnings = [r for r in caplog.records if r.name == "modules.eventbus.engines.kafka"]
            assert len(warnings) == 1 and "cannot reach" in warnings[0].getMessage()
            assert broker.address in warnings[0].getMessage()
            began = time.monotonic()
            with pytest.raises(EngineUnavailableError, match="kafka engine 'k'"):
                await bus.publish("orders.created", {"n": 0})
            assert time.monotonic() - began < PUBLISH_TIMEOUT + 1.5

            await broker.start()
            await wait_for(lambda: engine.health().state == "up", DEADLINE, "the engine up")
            got = Recorder()
            await bus.subscribe("orders.created", got)
            await bus.publish("orders.created", {"n": 1})
            await got.wait_count(1, DEADLINE)
            assert got.payloads == [{"n": 1}]


async def test_require_at_start_fails_start_when_the_broker_is_down() -> None:
    async with own_broker(started=False) as broker:
        app = Application(
            bus_settings(settings(broker.address, requireAtStart=True)), envvar_prefix=None
        )
        app.register_module(EventBusModule())
        await app.init()
        with pytest.raises(LifecycleError, match=r"kafka engine 'k' .*requireAtStart") as caught:
            await app.start()
        assert isinstance(caught.value.__cause__, EngineUnavailableError)


@pytest.mark.parametrize("group", [False, True], ids=["no-group", "group"])
async def test_broker_restarted_mid_stream(group: bool) -> None:
    more = {"groupId": "faults-group"} if group else {}
    async with own_broker() as broker, running_bus(settings(broker.address, **more)) as bus:
        engine = engine_of(bus)
        got = Recorder()
        await bus.subscribe("orders.created", got)
        await bus.publish("orders.created", {"n": 0})
        await got.wait_count(1, DEADLINE)

        await broker.stop()
        began = time.monotonic()
        with pytest.raises(EngineUnavailableError):
            await bus.publish("orders.created", {"n": "lost"})
        assert time.monotonic() - began < PUBLISH_TIMEOUT + 1.5
        await wait_for(lambda: engine.health().state == "down", DEADLINE, "the engine down")

        await broker.start()
        await wait_for(lambda: engine.health().state == "up", DEADLINE, "the engine up again")
        await bus.publish("orders.created", {"n": 1})
        await got.wait_count(2, DEADLINE)
        assert got.payloads == [{"n": 0}, {"n": 1}]
        assert engine.stats().reconnects >= 1


async def test_stop_is_bounded_with_the_broker_gone() -> None:
    async with own_broker() as broker:
        app = Application(bus_settings(settings(broker.address)), envvar_prefix=None)
        app.register_module(EventBusModule())
        await app.start()
        bus = app.get_service("eventbus.provider", EventBusModule)
        got = Recorder()
        await bus.subscribe("orders.created", got)
        await bus.publish("orders.created", {"n": 0})
        await got.wait_count(1, DEADLINE)
        await broker.stop()
        began = time.monotonic()
        await app.stop()  # shutdownTimeout is 3s
        assert time.monotonic() - began < 3.0 + 1.0
        assert engine_of(bus).health().state == "stopped"
