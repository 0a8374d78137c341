"""Values that used to be accepted at init() and fail later: each is a ConfigError now, naming
the path and the value. And the durable-memory engine, whose defaults depend on this."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import pytest

from modules.eventbus import (
    DeliveryMode,
    EngineConfig,
    Event,
    register_engine,
    unregister_engine,
)
from modules.eventbus.engines.memory import DurableMemoryEngine, MemoryEngine
from tests.helpers import wait_for
from tests.unit.eventbus.conftest import MakeBus
from tests.unit.eventbus.test_config import flat, init_error


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("publishBlockTimeout", math.nan, "finite"),
        ("publishBlockTimeout", math.inf, "finite"),
        ("shutdownTimeout", math.inf, "finite"),
        ("eventTTL", -math.inf, "finite"),
        ("retentionDays", math.inf, "finite"),
        ("retentionDays", math.nan, "finite"),
        ("maxEventQueueSize", 10**30, "10000000"),
        ("defaultEventBufferSize", 10_000_001, "10000000"),
        ("workerCount", 10**9, "10000"),
        ("workerCount", 0, "greater than 0"),
    ],
)
async def test_out_of_bounds_values_fail_at_init(key: str, value: Any, expected: str) -> None:
    error = str(await init_error({key: value}))
    assert flat(f"eventbus.{key}") in flat(error)
    assert expected in error
    assert error.count(repr(value)) == 1 or error.count(str(value)) >= 1


async def test_bounds_apply_inside_an_engine_config_too() -> None:
    error = str(
        await init_error(
            {"engines": [{"name": "m", "type": "memory", "config": {"workerCount": 10**6}}]}
        )
    )
    assert flat("eventbus.engines[0].config.workerCount") in flat(error)
    assert "10000" in error


async def test_an_explicit_empty_engine_list_is_an_error() -> None:
    error = str(await init_error({"engines": []}))
    assert "eventbus.engines" in error
    assert "at least one engine" in error


async def test_largest_allowed_values_are_accepted(make_bus: MakeBus) -> None:
    h = await make_bus({"workerCount": 10_000, "maxEventQueueSize": 10_000_000}, start=False)
    assert h.bus.engine("default").config.worker_count == 10_000


# --- durable-memory -------------------------------------------------------------------------


async def test_durable_memory_blocks_by_default_and_never_drops(make_bus: MakeBus) -> None:
    h = await make_bus(
        {
            "engines": [
                {
                    "name": "durable",
                    "type": "durable-memory",
                    "config": {"maxDurableQueueDepth": 4},
                },
                {"name": "lossy", "type": "memory"},
            ],
            "routing": [{"topics": ["lossy.*"], "engine": "lossy"}],
        }
    )
    durable = h.bus.engine("durable")
    assert isinstance(durable, DurableMemoryEngine)
    assert durable.config.delivery_mode is DeliveryMode.BLOCK
    policy = durable.dispatcher.policy
    assert policy.buffer_size == 4
    assert h.bus.engine("lossy").config.delivery_mode is DeliveryMode.DROP
    seen: list[int] = []

    async def slow(event: Event) -> None:
        await asyncio.sleep(0.0005)
        seen.append(event.payload)

    await h.bus.subscribe("orders", slow)
    await h.bus.subscribe_async("orders", slow)
    for i in range(300):
        await h.bus.publish("orders", i)
    await wait_for(lambda: len(seen) == 600)
    assert h.bus.per_engine_stats()["durable"].dropped == 0


async def test_durable_memory_depth_zero_means_max_event_queue_size(make_bus: MakeBus) -> None:
    h = await make_bus(
        {
            "maxEventQueueSize": 77,
            "engines": [{"name": "d", "type": "durable-memory"}],
        },
        start=False,
    )
    assert h.bus.engine("d").dispatcher.policy.buffer_size == 77  # type: ignore[attr-defined]


@pytest.mark.parametrize("where", ["top", "engine"])
async def test_durable_memory_refuses_a_lossy_mode(where: str) -> None:
    engine: dict[str, Any] = {"name": "d", "type": "durable-memory"}
    section: dict[str, Any] = {"engines": [engine]}
    if where == "top":
        section["deliveryMode"] = "drop"
    else:
        engine["config"] = {"deliveryMode": "timeout", "publishBlockTimeout": "1s"}
    error = str(await init_error(section))
    assert "never drops" in error
    assert "eventbus.engines[0]" in error


async def test_unset_top_level_settings_leave_engine_defaults_alone(make_bus: MakeBus) -> None:
    h = await make_bus(
        {
            "workerCount": 3,  # set: reaches every engine
            "engines": [{"name": "d", "type": "durable-memory"}, {"name": "m", "type": "memory"}],
        },
        start=False,
    )
    for name in ("d", "m"):
        assert h.bus.engine(name).config.worker_count == 3
    assert h.bus.engine("d").config.delivery_mode is DeliveryMode.BLOCK
    assert h.bus.engine("m").config.delivery_mode is DeliveryMode.DROP


# --- secrets --------------------------------------------------------------------------------

URL_SECRET = "s3cret-url-password"


async def test_top_level_legacy_broker_settings_are_masked_in_reprs(make_bus: MakeBus) -> None:
    h = await make_bus(
        {
            "externalBrokerURL": f"redis://alice:{URL_SECRET}@127.0.0.1:6379/0?token=tok-{URL_SECRET}",
            "externalBrokerUser": "alice",
            "externalBrokerPassword": URL_SECRET,
        },
        start=False,
    )
    shown = [
        repr(h.bus.config),
        str(h.bus.config),
        repr(h.app.config_section("eventbus")),
        repr(h.bus.engine("default").config),
    ]
    for text in shown:
        assert URL_SECRET not in text
        assert "redis://alice:***@127.0.0.1:6379/0" in text


async def test_an_engine_failing_to_start_is_reported_without_its_secrets(
    make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    class Unreachable(MemoryEngine):
        async def start(self) -> None:
            raise ConnectionError(f"cannot reach redis://bob:{URL_SECRET}@127.0.0.1:1/0")

    register_engine("unreachable-test", lambda config, name: Unreachable(name, EngineConfig()))
    try:
        with caplog.at_level(logging.ERROR, "modules.eventbus"):
            h = await make_bus(
                {"engines": [{"name": "down", "type": "unreachable-test"}]}, observe=True
            )
    finally:
        unregister_engine("unreachable-test")
    (failed,) = h.observed("engine.failed")
    assert "redis://bob:***@127.0.0.1:1/0" in failed.data["error"]
    logged = [r.getMessage() for r in caplog.records if "failed to start" in r.getMessage()]
    assert logged and "redis://bob:***@" in logged[0]
    assert all(URL_SECRET not in r.getMessage() for r in caplog.records)
