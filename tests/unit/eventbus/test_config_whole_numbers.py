"""A size or a count written as a bool is refused (pydantic alone reads ``true`` as 1); a
numeric string, as an environment variable gives, is still read as its number."""

from __future__ import annotations

from typing import Any

import pytest

from modular import Application
from modules.eventbus import EventBusModule
from tests.unit.eventbus.test_config import flat, init_error


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ({"workerCount": True}, "eventbus.workerCount"),
        ({"maxEventQueueSize": False}, "eventbus.maxEventQueueSize"),
        ({"defaultEventBufferSize": True}, "eventbus.defaultEventBufferSize"),
        (
            {"engines": [{"name": "m", "type": "memory", "config": {"workerCount": True}}]},
            "eventbus.engines[0].config.workerCount",
        ),
        (
            {
                "engines": [
                    {
                        "name": "d",
                        "type": "durable-memory",
                        "config": {"maxDurableQueueDepth": True},
                    }
                ]
            },
            "eventbus.engines[0].config.maxDurableQueueDepth",
        ),
        ({"metrics": {"prometheus": {"port": True}}}, "eventbus.metrics.prometheus.port"),
        (
            {"metrics": {"datadog": {"maxPacketSize": True}}},
            "eventbus.metrics.datadog.maxPacketSize",
        ),
    ],
)
async def test_a_bool_is_not_a_size_or_a_count(section: dict[str, Any], path: str) -> None:
    error = str(await init_error(section))
    assert flat(path) in flat(error)
    assert "expected a whole number" in error


async def test_numeric_strings_from_environment_variables_are_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODULAR_EVENTBUS__WORKERCOUNT", "8")
    monkeypatch.setenv("MODULAR_EVENTBUS__MAXEVENTQUEUESIZE", "250")
    app = Application({"eventbus": {}}, envvar_prefix="MODULAR")
    module = EventBusModule()
    app.register_module(module)
    await app.init()
    config = module.engine("default").config
    assert (config.worker_count, config.max_event_queue_size) == (8, 250)


@pytest.mark.parametrize("key", ["shard_count", "max_records_per_get"])
def test_a_bool_is_not_a_kinesis_count(key: str) -> None:
    from pydantic import ValidationError

    from modules.eventbus.engines.kinesis.config import KinesisEngineConfig

    with pytest.raises(ValidationError, match="expected a whole number"):
        KinesisEngineConfig.model_validate({key: True})
    assert getattr(KinesisEngineConfig.model_validate({key: "4"}), key) == 4
