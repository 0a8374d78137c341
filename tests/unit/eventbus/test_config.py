"""The ``eventbus`` config section: spellings, durations, legacy config, validation, YAML."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from modular import Application, ConfigError
from modules.eventbus import DeliveryMode, EventBusModule, FanoutEngine
from modules.eventbus.config import parse_duration
from modules.eventbus.engines.custom import CustomEngine
from modules.eventbus.engines.memory import MemoryEngine
from tests.helpers import wait_for
from tests.unit.eventbus.conftest import MakeBus

SECRET = "hunter2-do-not-print"


def flat(text: str) -> str:
    """``text`` with case and underscores ignored, so that ``eventbus.workerCount`` and
    ``eventbus.worker_count`` both name one path."""
    return text.replace("_", "").lower()


async def init_error(config: dict[str, Any]) -> ConfigError:
    """The error ``app.init()`` raises for this ``eventbus`` section."""
    app = Application({"eventbus": config}, envvar_prefix=None)
    app.register_module(EventBusModule())
    with pytest.raises(ConfigError) as caught:
        await app.init()
    return caught.value


# --- spellings and durations ----------------------------------------------------------------


async def test_camel_case_and_snake_case_keys(make_bus: MakeBus) -> None:
    bus = (
        await make_bus(
            {
                "maxEventQueueSize": 50,
                "default_event_buffer_size": 7,
                "WORKERCOUNT": 3,
                "delivery-mode": "block",
                "rotateSubscriberOrder": False,
                "shutdown_timeout": 2,
            }
        )
    ).bus
    config = bus.engine("default").config
    assert config.max_event_queue_size == 50
    assert config.default_event_buffer_size == 7
    assert config.worker_count == 3
    assert config.delivery_mode is DeliveryMode.BLOCK
    assert config.rotate_subscriber_order is False
    assert bus.config.shutdown_timeout == 2.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("250ms", 0.25),
        ("3600s", 3600.0),
        ("1h", 3600.0),
        ("5m", 300.0),
        ("2d", 172800.0),
        ("1.5s", 1.5),
        (30, 30.0),
        (0.5, 0.5),
    ],
)
async def test_durations(make_bus: MakeBus, value: object, seconds: float) -> None:
    bus = (
        await make_bus({"eventTTL": value, "deliveryMode": "timeout", "publishBlockTimeout": value})
    ).bus
    config = bus.engine("default").config
    assert config.event_ttl == pytest.approx(seconds)
    assert config.publish_block_timeout == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["soon", "-1s", "10 parsecs", True, None, "1h30"])
def test_bad_durations_are_value_errors(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


async def test_bad_duration_in_config_names_the_path_and_value() -> None:
    error = await init_error({"eventTTL": "forever"})
    assert "eventbus.eventttl" in flat(str(error))
    assert "forever" in str(error)


# --- legacy config --------------------------------------------------------------------------


async def test_legacy_config_becomes_engine_default_carrying_every_field(
    make_bus: MakeBus,
) -> None:
    bus = (
        await make_bus(
            {
                "engine": "memory",
                "maxEventQueueSize": 42,
                "defaultEventBufferSize": 3,
                "workerCount": 2,
                "eventTTL": "90s",
                "retentionDays": 2,
                "deliveryMode": "timeout",
                "publishBlockTimeout": "250ms",
                "rotateSubscriberOrder": False,
                "externalBrokerURL": "redis://broker.example:6379",
                "externalBrokerUser": "svc-user",
                "externalBrokerPassword": SECRET,
            }
        )
    ).bus
    assert list(bus.engines()) == ["default"]
    engine = bus.engine("default")
    assert isinstance(engine, MemoryEngine)
    config = engine.config
    assert config.max_event_queue_size == 42
    assert config.default_event_buffer_size == 3
    assert config.worker_count == 2
    assert config.event_ttl == 90.0
    assert config.retention_days == 2
    assert config.delivery_mode is DeliveryMode.TIMEOUT
    assert config.publish_block_timeout == 0.25
    assert config.rotate_subscriber_order is False
    assert config.external_broker_url == "redis://broker.example:6379"
    assert config.external_broker_user == "svc-user"
    assert config.external_broker_password.get_secret_value() == SECRET
    # ...and the delivery settings reach the fan-out that applies them.
    assert isinstance(engine, FanoutEngine)
    policy = engine.dispatcher.policy
    assert policy.mode is DeliveryMode.TIMEOUT
    assert policy.block_timeout == 0.25
    assert policy.rotate is False
    assert (policy.buffer_size, policy.worker_count, policy.queue_size) == (3, 2, 42)
    assert bus.get_router().engine_for_topic("anything.at.all") == "default"


async def test_top_level_settings_are_the_defaults_of_every_engine(make_bus: MakeBus) -> None:
    bus = (
        await make_bus(
            {
                "defaultEventBufferSize": 4,
                "deliveryMode": "block",
                "engines": [
                    {"name": "a", "type": "memory"},
                    {"name": "b", "type": "memory", "config": {"defaultEventBufferSize": 9}},
                ],
            }
        )
    ).bus
    a, b = bus.engine("a").config, bus.engine("b").config
    assert (a.default_event_buffer_size, a.delivery_mode) == (4, DeliveryMode.BLOCK)
    assert (b.default_event_buffer_size, b.delivery_mode) == (9, DeliveryMode.BLOCK)


# --- validation at init ---------------------------------------------------------------------


async def test_unknown_engine_type_lists_the_known_types() -> None:
    error = await init_error({"engines": [{"name": "fast", "type": "memroy"}]})
    assert "eventbus.engines[0].type" in str(error)
    assert "memroy" in str(error)
    assert "memory" in str(error) and "custom" in str(error)


async def test_unknown_legacy_engine_type() -> None:
    error = await init_error({"engine": "carrier-pigeon"})
    assert "eventbus.engine" in str(error)
    assert "carrier-pigeon" in str(error) and "memory" in str(error)


async def test_duplicate_engine_names() -> None:
    error = await init_error(
        {"engines": [{"name": "a", "type": "memory"}, {"name": "a", "type": "custom"}]}
    )
    assert "eventbus.engines[1].name" in str(error)
    assert "duplicate" in str(error) and "'a'" in str(error)


async def test_route_to_an_unknown_engine() -> None:
    error = await init_error(
        {
            "engines": [{"name": "a", "type": "memory"}],
            "routing": [{"topics": ["user.*"], "engine": "a"}, {"topics": ["x"], "engine": "b"}],
        }
    )
    assert "eventbus.routing[1].engine" in str(error)
    assert "'b'" in str(error)


async def test_invalid_topic_pattern_in_a_route() -> None:
    error = await init_error(
        {
            "engines": [{"name": "a", "type": "memory"}],
            "routing": [{"topics": ["a*b"], "engine": "a"}],
        }
    )
    assert "eventbus.routing[0].topics[0]" in str(error)
    assert "a*b" in str(error)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("maxEventQueueSize", 0),
        ("maxEventQueueSize", -5),
        ("defaultEventBufferSize", 0),
        ("defaultEventBufferSize", -1),
        ("workerCount", 0),
        ("retentionDays", 0),
    ],
)
async def test_sizes_must_be_positive(key: str, value: int) -> None:
    error = await init_error({key: value})
    assert f"eventbus.{flat(key)}" in flat(str(error))
    assert str(value) in str(error)


async def test_timeout_mode_needs_a_positive_timeout() -> None:
    for config in (
        {"deliveryMode": "timeout"},
        {"deliveryMode": "timeout", "publishBlockTimeout": 0},
    ):
        error = await init_error(config)
        assert str(error).startswith("eventbus")
        assert "publishBlockTimeout" in str(error)


async def test_unknown_key_names_the_closest_known_one() -> None:
    error = await init_error({"workerCont": 3})
    assert "eventbus.workerCont" in str(error)
    assert "did you mean" in str(error)
    assert "workercount" in flat(str(error).split("did you mean", 1)[1])


async def test_unknown_key_inside_an_engine_config_map() -> None:
    error = await init_error(
        {"engines": [{"name": "a", "type": "memory", "config": {"workerCont": 3}}]}
    )
    assert "eventbus.engines[0].config.workerCont" in str(error)
    assert "workercount" in flat(str(error).split("did you mean", 1)[1])


async def test_unknown_key_inside_a_custom_engine_config_map() -> None:
    error = await init_error(
        {"engines": [{"name": "c", "type": "custom", "config": {"enableMetric": True}}]}
    )
    assert "eventbus.engines[0].config.enableMetric" in str(error)
    assert "enablemetrics" in flat(str(error))


async def test_bad_value_inside_an_engine_config_map() -> None:
    error = await init_error(
        {"engines": [{"name": "a", "type": "memory", "config": {"deliveryMode": "sometimes"}}]}
    )
    assert "eventbus.engines[0].config.deliverymode" in flat(str(error))
    assert "sometimes" in str(error)

    error = await init_error(
        {"engines": [{"name": "a", "type": "memory", "config": {"deliveryMode": "timeout"}}]}
    )
    assert "eventbus.engines[0].config" in str(error)
    assert "publishBlockTimeout" in str(error)

    error = await init_error(
        {"engines": [{"name": "c", "type": "custom", "config": {"metricsInterval": "soon"}}]}
    )
    assert "eventbus.engines[0].config.metricsinterval" in flat(str(error))


@pytest.mark.parametrize(
    "config",
    [
        {"externalBrokerPassword": SECRET, "workerCount": 0},
        {"externalBrokerPassword": SECRET, "deliveryMode": "timeout"},
        {"externalBrokerPassword": SECRET, "workerCont": 1},
        {
            "engines": [
                {
                    "name": "a",
                    "type": "memory",
                    "config": {"externalBrokerPassword": SECRET, "deliveryMode": "timeout"},
                }
            ]
        },
        {
            "engines": [
                {
                    "name": "a",
                    "type": "memory",
                    "config": {"externalBrokerPassword": SECRET, "workerCount": -1},
                }
            ]
        },
        {"externalBrokerPassword": [SECRET]},
    ],
    ids=[
        "bad-size",
        "model-level",
        "unknown-key",
        "engine-model-level",
        "engine-bad-size",
        "password-of-wrong-type",
    ],
)
async def test_the_password_never_appears_in_an_error(config: dict[str, Any]) -> None:
    error = await init_error(config)
    assert SECRET not in str(error)
    assert SECRET not in repr(error)


async def test_the_password_never_appears_in_a_repr_or_a_log(
    make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    harness = await make_bus(
        {
            "externalBrokerURL": "redis://broker.example:6379",
            "externalBrokerUser": "svc",
            "externalBrokerPassword": SECRET,
            "engines": [
                {"name": "a", "type": "memory"},
                {"name": "b", "type": "custom", "config": {"externalBrokerPassword": SECRET}},
            ],
        },
        observe=True,
    )
    bus = harness.bus
    await bus.subscribe("x.y", lambda e: None)
    await bus.publish("x.y")
    await harness.app.stop()
    shown = [
        repr(bus.config),
        str(bus.config),
        repr(bus.engine("a").config),
        repr(bus.engine("b").config),
        repr(bus.engine("b")),
        caplog.text,
        repr(harness.records),
    ]
    assert all(SECRET not in text for text in shown)
    assert bus.engine("b").config.external_broker_password.get_secret_value() == SECRET


# --- the Go README's YAML, unchanged ---------------------------------------------------------

README_LEGACY = """\
eventbus:
  engine: memory              # Event bus engine (memory, redis, kafka, kinesis)
  maxEventQueueSize: 1000     # Maximum events to queue per topic
  defaultEventBufferSize: 10  # Default buffer size for subscription channels
  workerCount: 5              # Worker goroutines for async event processing
  eventTTL: 3600s             # TTL for events (duration)
  retentionDays: 7            # Days to retain event history
  externalBrokerURL: ""       # URL for external message broker
  externalBrokerUser: ""      # Username for authentication
  externalBrokerPassword: ""  # Password for authentication
"""

README_MULTI_ENGINE = """\
eventbus:
  engines:
    - name: "memory-fast"
      type: "memory"
      config:
        maxEventQueueSize: 500
        defaultEventBufferSize: 10
        workerCount: 3
        retentionDays: 1
    - name: "memory-reliable"
      type: "memory"
      config:
        maxEventQueueSize: 2000
        defaultEventBufferSize: 50
        workerCount: 8
        deliveryMode: block
    - name: "custom-engine"
      type: "custom"
      config:
        enableMetrics: true
        metricsInterval: "30s"
  routing:
    - topics: ["user.*", "auth.*"]
      engine: "memory-fast"
    - topics: ["analytics.*", "metrics.*"]
      engine: "custom-engine"
    - topics: ["*"]  # Fallback for all other topics
      engine: "memory-reliable"
"""

README_DELIVERY_MODES = """\
eventbus:
  engines:
    - name: "memory-fast"
      type: "memory"
      config:
        # Existing settings...
        workerCount: 5
        maxEventQueueSize: 1000
        defaultEventBufferSize: 32

        # New delivery / fairness controls
        deliveryMode: drop            # drop | block | timeout (default: drop)
        publishBlockTimeout: 250ms    # only used when deliveryMode: timeout
        rotateSubscriberOrder: true   # fairness rotation (default: true)
"""

README_BALANCED = """\
eventbus:
  engines:
    - name: "memory-balanced"
      type: "memory"
      config:
        workerCount: 8
        defaultEventBufferSize: 64
        deliveryMode: timeout
        publishBlockTimeout: 25ms
        rotateSubscriberOrder: true
"""

README_MIGRATION_AFTER = """\
# After (multi-engine with same behavior)
eventbus:
  engines:
    - name: "default"
      type: "memory"
      config:
        workerCount: 5
"""

README_HIGH_THROUGHPUT = """\
# High-throughput configuration
eventbus:
  engines:
    - name: "high-perf"
      type: "memory"
      config:
        maxEventQueueSize: 10000
        defaultEventBufferSize: 100
        workerCount: 20
"""


async def start_from_yaml(tmp_path: Path, text: str) -> tuple[Application, EventBusModule]:
    path = tmp_path / "settings.yaml"
    path.write_text(text, encoding="utf-8")
    app = Application(settings_files=[path], envvar_prefix=None)
    bus = EventBusModule()
    app.register_module(bus)
    await app.start()
    return app, bus


async def test_readme_legacy_yaml(tmp_path: Path) -> None:
    app, bus = await start_from_yaml(tmp_path, README_LEGACY)
    try:
        config = bus.engine("default").config
        assert isinstance(bus.engine("default"), MemoryEngine)
        assert config.max_event_queue_size == 1000
        assert config.default_event_buffer_size == 10
        assert config.worker_count == 5
        assert config.event_ttl == 3600.0
        assert config.retention_days == 7
        assert config.external_broker_url == ""
    finally:
        await app.stop()


async def test_readme_multi_engine_yaml(tmp_path: Path) -> None:
    app, bus = await start_from_yaml(tmp_path, README_MULTI_ENGINE)
    try:
        assert list(bus.engines()) == ["memory-fast", "memory-reliable", "custom-engine"]
        fast = bus.engine("memory-fast").config
        assert (fast.max_event_queue_size, fast.worker_count, fast.retention_days) == (500, 3, 1)
        assert bus.engine("memory-reliable").config.delivery_mode is DeliveryMode.BLOCK
        custom = bus.engine("custom-engine")
        assert isinstance(custom, CustomEngine)
        assert custom.settings.enable_metrics is True
        assert custom.settings.metrics_interval == 30.0

        router = bus.get_router()
        assert router.engine_for_topic("user.login") == "memory-fast"
        assert router.engine_for_topic("auth.token") == "memory-fast"
        assert router.engine_for_topic("analytics.click") == "custom-engine"
        assert router.engine_for_topic("metrics.cpu") == "custom-engine"
        assert router.engine_for_topic("custom.event") == "memory-reliable"

        seen: list[str] = []
        await bus.subscribe("*", lambda e: seen.append(e.topic))
        for topic in ("user.login", "analytics.click", "custom.event"):
            await bus.publish(topic)
        await wait_for(lambda: len(seen) == 3)
        stats = bus.per_engine_stats()
        assert stats["memory-fast"].delivered == 1
        assert stats["custom-engine"].delivered == 1
        assert stats["memory-reliable"].delivered == 1
        assert custom.metrics()["events_by_topic"] == {"analytics.click": 1}
    finally:
        await app.stop()


@pytest.mark.parametrize(
    ("text", "engine", "expected"),
    [
        (
            README_DELIVERY_MODES,
            "memory-fast",
            {
                "default_event_buffer_size": 32,
                "delivery_mode": "drop",
                "publish_block_timeout": 0.25,
            },
        ),
        (
            README_BALANCED,
            "memory-balanced",
            {"worker_count": 8, "delivery_mode": "timeout", "publish_block_timeout": 0.025},
        ),
        (README_MIGRATION_AFTER, "default", {"worker_count": 5}),
        (
            README_HIGH_THROUGHPUT,
            "high-perf",
            {"max_event_queue_size": 10000, "default_event_buffer_size": 100, "worker_count": 20},
        ),
    ],
    ids=["delivery-modes", "balanced", "migration", "high-throughput"],
)
async def test_readme_engine_yaml(
    tmp_path: Path, text: str, engine: str, expected: dict[str, object]
) -> None:
    app, bus = await start_from_yaml(tmp_path, text)
    try:
        assert list(bus.engines()) == [engine]
        config = bus.engine(engine).config
        for field, value in expected.items():
            assert getattr(config, field) == value, field
        assert config.rotate_subscriber_order is True
    finally:
        await app.stop()
