"""The contract suite: every test runs once per engine configuration of ``CASES``.

The ``bus`` fixture is parametrized over the cases. What an engine declares in
``Engine.capabilities`` decides which tests apply: a test marked ``requires("durability")``
is deselected for a case whose engine does not declare durability. A case whose engine
cannot be built (its module missing, its broker down) is never deselected: its tests run
and fail, loudly.

Broker engines get a fresh namespace per test (channel/key prefix, group name); the keys
the test left on the broker are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis

from modular import Application
from modules.eventbus import Capabilities, EventBusModule
from modules.eventbus.registry import create_engine

from .helpers import CAPABILITIES

REDIS_URL = "redis://127.0.0.1:6379/0"
KINESIS_ENDPOINT = "http://127.0.0.1:4567"
KAFKA_BROKERS = "127.0.0.1:9092"  # the Tansu broker scripts/kafka.sh starts
ENGINE = "main"  # the name of the engine under test in every bus of the suite

# (engine config map, topic, raw bytes): put bytes where the engine reads ``topic`` from.
Injector = Callable[[Mapping[str, Any], str, bytes], Awaitable[None]]


@dataclass(frozen=True)
class Broker:
    """What the suite does to the broker behind an engine, bypassing the bus."""

    check: Callable[[Mapping[str, Any]], Awaitable[None]]  # raises when it is unreachable
    cleanup: Callable[[Mapping[str, Any]], Awaitable[None]]  # deletes a test's keys
    injectors: Mapping[str, Injector] = field(default_factory=dict)  # by engine ``mode``


@dataclass(frozen=True)
class EngineCase:
    id: str
    type: str
    options: Callable[[str], dict[str, Any]]  # namespace -> the engine's config map
    module: str  # the engine's module: a missing one fails the case's tests
    # Whether the place a message is found (a channel, a topic) names its topic and tenant, so
    # that an envelope can contradict it. A Kinesis shard names neither: tests marked
    # ``wire_names_place`` do not apply.
    wire_names_place: bool = True

    def __str__(self) -> str:
        return self.id


def _no_options(namespace: str) -> dict[str, Any]:
    return {}


def _custom_options(namespace: str) -> dict[str, Any]:
    return {"enableMetrics": True, "metricsInterval": "1h"}


def _redis_options(mode: str) -> Callable[[str], dict[str, Any]]:
    def options(namespace: str) -> dict[str, Any]:
        config: dict[str, Any] = {"url": REDIS_URL, "channelPrefix": f"{namespace}:", "mode": mode}
        if mode == "streams":
            # A shared, named group: the durable flavour of streams (a per-process group is
            # removed on a clean stop).
            config["groupName"] = f"{namespace}-group"
        return config

    return options


def _kinesis_options(checkpoints: bool) -> Callable[[str], dict[str, Any]]:
    def options(namespace: str) -> dict[str, Any]:
        config: dict[str, Any] = {
            "endpointUrl": KINESIS_ENDPOINT,
            "region": "us-east-1",
            "accessKeyId": "AKIDCONTRACT",
            "secretAccessKey": "contract-secret",
            "streamName": namespace,
            "shardCount": 2,
            "pollInterval": "20ms",
            "shardDiscoveryInterval": "500ms",
        }
        if checkpoints:
            # Checkpoints and leases in Redis: the durable flavour of the engine.
            config |= {
                "checkpointStore": "redis",
                "checkpointRedisUrl": REDIS_URL,
                "checkpointKeyPrefix": f"{namespace}:",
                "checkpointInterval": "50ms",
            }
        return config

    return options


def _kafka_options(group: bool) -> Callable[[str], dict[str, Any]]:
    def options(namespace: str) -> dict[str, Any]:
        config: dict[str, Any] = {
            "brokers": KAFKA_BROKERS,
            "topicPrefix": f"{namespace}.",
            "metadataMaxAge": "1s",
        }
        if group:
            # A named group (the durable flavour), with the short group timeouts of a test:
            # a join takes about half the session timeout.
            config |= {
                "groupId": f"{namespace}-group",
                "sessionTimeout": "6s",
                "heartbeatInterval": "1s",
            }
        return config

    return options


CASES = [
    EngineCase("memory", "memory", _no_options, "modules.eventbus.engines.memory"),
    EngineCase("custom", "custom", _custom_options, "modules.eventbus.engines.custom"),
    EngineCase("durable-memory", "durable-memory", _no_options, "modules.eventbus.engines.memory"),
    EngineCase("redis-pubsub", "redis", _redis_options("pubsub"), "modules.eventbus.engines.redis"),
    EngineCase(
        "redis-streams", "redis", _redis_options("streams"), "modules.eventbus.engines.redis"
    ),
    EngineCase(
        "kinesis",
        "kinesis",
        _kinesis_options(False),
        "modules.eventbus.engines.kinesis",
        wire_names_place=False,
    ),
    EngineCase(
        "kinesis-checkpoints",
        "kinesis",
        _kinesis_options(True),
        "modules.eventbus.engines.kinesis",
        wire_names_place=False,
    ),
    EngineCase("kafka", "kafka", _kafka_options(False), "modules.eventbus.engines.kafka"),
    EngineCase("kafka-group", "kafka", _kafka_options(True), "modules.eventbus.engines.kafka"),
]


# --- Redis, reached directly -------------------------------------------------------------


async def _redis_check(options: Mapping[str, Any]) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        raise RuntimeError(f"Redis at {REDIS_URL} is not reachable: {exc}") from exc
    finally:
        await client.aclose()


async def _redis_cleanup(options: Mapping[str, Any]) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{options['channelPrefix']}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def _redis_publish_raw(options: Mapping[str, Any], topic: str, data: bytes) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.publish(f"{options['channelPrefix']}{topic}", data)
    finally:
        await client.aclose()


async def _redis_xadd_raw(options: Mapping[str, Any], topic: str, data: bytes) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.xadd(f"{options['channelPrefix']}{topic}", {"event": data})
    finally:
        await client.aclose()


# --- Kinesis (kinesalite), reached with plain boto3 -----------------------------------------


def _kinesis_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "kinesis",
        endpoint_url=KINESIS_ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id="AKIDCONTRACT",
        aws_secret_access_key="contract-secret",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=10),
    )


async def _kinesis_check(options: Mapping[str, Any]) -> None:
    try:
        await asyncio.to_thread(_kinesis_client().list_streams)
    except Exception as exc:
        raise RuntimeError(
            f"no Kinesis API server answers at {KINESIS_ENDPOINT} ({exc}); run `make services`"
        ) from exc


async def _kinesis_cleanup(options: Mapping[str, Any]) -> None:
    def delete() -> None:
        with contextlib.suppress(Exception):  # never created, or gone
            _kinesis_client().delete_stream(StreamName=options["streamName"])

    await asyncio.to_thread(delete)
    if "checkpointKeyPrefix" in options:
        await _redis_cleanup({"channelPrefix": options["checkpointKeyPrefix"]})


async def _kinesis_put_raw(options: Mapping[str, Any], topic: str, data: bytes) -> None:
    def put() -> None:
        _kinesis_client().put_record(
            StreamName=options["streamName"], Data=data, PartitionKey=topic
        )

    await asyncio.to_thread(put)


# --- Kafka, reached directly with kafka-python (the Kafka tests' helpers, on a thread) -----


def _kafka_admin() -> Any:
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=KAFKA_BROKERS, bootstrap_timeout_ms=5000)


async def _kafka_check(options: Mapping[str, Any]) -> None:
    def check() -> None:
        _kafka_admin().close()

    try:
        await asyncio.to_thread(check)
    except Exception as exc:
        raise RuntimeError(
            f"no Kafka broker answers at {KAFKA_BROKERS} (make test starts one: "
            f"scripts/kafka.sh start): {exc}"
        ) from exc


async def _kafka_cleanup(options: Mapping[str, Any]) -> None:
    from tests.integration.kafka.helpers import delete_topics

    await asyncio.to_thread(delete_topics, str(options["topicPrefix"]), KAFKA_BROKERS)


async def _kafka_produce_raw(options: Mapping[str, Any], topic: str, data: bytes) -> None:
    from tests.integration.kafka.helpers import produce_raw

    await asyncio.to_thread(produce_raw, f"{options['topicPrefix']}{topic}", [data], KAFKA_BROKERS)


BROKERS: dict[str, Broker] = {
    "redis": Broker(
        check=_redis_check,
        cleanup=_redis_cleanup,
        injectors={"pubsub": _redis_publish_raw, "streams": _redis_xadd_raw},
    ),
    "kinesis": Broker(
        check=_kinesis_check, cleanup=_kinesis_cleanup, injectors={"": _kinesis_put_raw}
    ),
    "kafka": Broker(check=_kafka_check, cleanup=_kafka_cleanup, injectors={"": _kafka_produce_raw}),
}


# --- one test's world ----------------------------------------------------------------------


class ContractEnv:
    """The buses of one test, all on the same engine config (so they share a broker
    namespace, like processes of one deployment)."""

    def __init__(self, case: EngineCase, namespace: str) -> None:
        self.case = case
        self.namespace = namespace
        self.options = case.options(namespace)
        self.broker = BROKERS.get(case.type)
        self.apps: list[Application] = []
        self.app: Application | None = None

    def config(self) -> dict[str, Any]:
        return {
            "eventbus": {
                "engines": [{"name": ENGINE, "type": self.case.type, "config": self.options}],
                "shutdownTimeout": "5s",
            }
        }

    async def check_available(self) -> None:
        if importlib.util.find_spec(self.case.module) is None:
            raise RuntimeError(
                f"engine case {self.case.id!r}: module {self.case.module} does not exist"
            )
        if self.broker is not None:
            await self.broker.check(self.options)

    async def new_bus(self) -> EventBusModule:
        """Another started bus on the same engine config, stopped at the end of the test."""
        app = Application(self.config(), envvar_prefix=None)
        app.register_module(EventBusModule())
        self.apps.append(app)
        await app.start()
        if self.app is None:
            self.app = app
        return app.get_service("eventbus.provider", EventBusModule)

    @property
    def main_app(self) -> Application:
        assert self.app is not None
        return self.app

    async def inject(self, topic: str, data: bytes) -> None:
        """Put raw ``data`` on the broker where the engine reads ``topic`` from."""
        mode = str(self.options.get("mode", ""))
        if self.broker is None or mode not in self.broker.injectors:
            raise LookupError(
                f"no injector for engine case {self.case.id!r} (type {self.case.type!r}, "
                f"mode {mode!r}): declare one in BROKERS of tests/contract/conftest.py"
            )
        await self.broker.injectors[mode](self.options, topic, data)

    async def close(self) -> None:
        errors: list[BaseException] = []
        for app in reversed(self.apps):
            try:
                await app.stop()
            except Exception as exc:
                errors.append(exc)
        if self.broker is not None:
            await self.broker.cleanup(self.options)
        if errors:
            raise errors[0]


ENV = pytest.StashKey[ContractEnv]()


@pytest.fixture(params=CASES, ids=[case.id for case in CASES])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBusModule]:
    case: EngineCase = request.param
    env = ContractEnv(case, f"contract-{os.urandom(5).hex()}")
    request.node.stash[ENV] = env
    await env.check_available()
    try:
        started = await env.new_bus()
        declared = started.engine(ENGINE).capabilities
        missing = [name for name in _required(request.node) if not getattr(declared, name)]
        if missing:
            raise AssertionError(
                f"{case.id}: the running engine lacks {missing}, although it declared them "
                "when the test was collected"
            )
        yield started
    finally:
        await env.close()


@pytest.fixture
def env(bus: EventBusModule, request: pytest.FixtureRequest) -> ContractEnv:
    found: ContractEnv = request.node.stash[ENV]
    return found


# --- capability-based selection ------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"requires(*capabilities): collect only for engines declaring them {CAPABILITIES}",
    )
    config.addinivalue_line(
        "markers",
        "wire_names_place: collect only for cases whose wire names a message's topic and tenant",
    )


def _required(item: pytest.Item) -> list[str]:
    return [name for mark in item.iter_markers("requires") for name in mark.args]


@functools.cache
def _declared(case: EngineCase) -> Capabilities | None:
    """The case's capabilities, from an engine built (not started) with the case's config;
    None when it cannot be built, so that its tests run and report why."""
    try:
        return create_engine(case.type, "probe", case.options("probe"), "contract").capabilities
    except Exception:
        return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        case = callspec.params.get("bus") if callspec is not None else None
        needed = _required(item)
        declared = _declared(case) if isinstance(case, EngineCase) and needed else None
        lacks = declared is not None and not all(getattr(declared, name) for name in needed)
        unplaced = (
            isinstance(case, EngineCase)
            and not case.wire_names_place
            and item.get_closest_marker("wire_names_place") is not None
        )
        if lacks or unplaced:
            deselected.append(item)
        else:
            kept.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
