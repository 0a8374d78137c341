"""The kinesis engine's config map, and what reaches boto3 (no server needed)."""

from __future__ import annotations

from typing import Any

import pytest

from modular import ConfigError, validate_section
from modules.eventbus import EventBusModule
from modules.eventbus.delivery import DeliveryMode
from modules.eventbus.engines.kinesis import KinesisEngine, KinesisEngineConfig
from modules.eventbus.engines.kinesis.client import make_client

from .helpers import engine_of, new_app

PATH = "eventbus.engines[0].config"


def settings(**config: Any) -> KinesisEngineConfig:
    return validate_section(KinesisEngineConfig, config, PATH)


def test_defaults() -> None:
    s = settings()
    assert (s.region, s.stream_name, s.shard_count, s.endpoint_url) == (
        "us-east-1",
        "eventbus",
        1,
        None,
    )
    assert (s.iterator_type, s.max_records_per_get, s.create_stream) == ("LATEST", 1000, True)
    assert (s.app_name, s.checkpoint_store, s.poll_interval) == ("eventbus", None, 1.0)
    assert s.credentials() == {}  # boto3's default credential chain


def test_camel_case_keys_and_durations() -> None:
    s = settings(
        region="eu-west-1",
        streamName="orders",
        shardCount=4,
        endpointUrl="http://127.0.0.1:4567",
        pollInterval="50ms",
        iteratorType="TRIM_HORIZON",
        maxRecordsPerGet=250,
        createStream=False,
        appName="billing",
        checkpointStore="redis",
        checkpointInterval="2s",
        leaseDuration="1m",
    )
    assert (s.region, s.stream_name, s.shard_count) == ("eu-west-1", "orders", 4)
    assert (s.endpoint_url, s.poll_interval, s.iterator_type) == (
        "http://127.0.0.1:4567",
        0.05,
        "TRIM_HORIZON",
    )
    assert (s.max_records_per_get, s.create_stream, s.app_name) == (250, False, "billing")
    assert (s.checkpoint_store, s.checkpoint_interval, s.lease_duration) == ("redis", 2.0, 60.0)


def test_configured_keys_are_the_credentials_and_never_shown() -> None:
    s = settings(accessKeyId="AKIDEXAMPLE", secretAccessKey="wJalrSECRET", sessionToken="TOKEN42")
    assert s.credentials() == {
        "aws_access_key_id": "AKIDEXAMPLE",
        "aws_secret_access_key": "wJalrSECRET",
        "aws_session_token": "TOKEN42",
    }
    shown = repr(s) + str(s)
    for secret in ("AKIDEXAMPLE", "wJalrSECRET", "TOKEN42"):
        assert secret not in shown


def test_legacy_broker_settings_fill_in() -> None:
    s = settings(
        externalBrokerURL="http://127.0.0.1:4567",
        externalBrokerUser="AKIDLEGACY",
        externalBrokerPassword="legacy-secret",
    )
    assert s.endpoint_url == "http://127.0.0.1:4567"
    assert s.credentials() == {
        "aws_access_key_id": "AKIDLEGACY",
        "aws_secret_access_key": "legacy-secret",
    }
    assert "legacy-secret" not in repr(s)
    own = settings(endpointUrl="http://127.0.0.1:4568", externalBrokerURL="http://127.0.0.1:1")
    assert own.endpoint_url == "http://127.0.0.1:4568"


def test_endpoint_password_is_masked_in_repr_and_errors() -> None:
    s = settings(endpointUrl="http://user:hunter2@127.0.0.1:4567")
    assert "hunter2" not in repr(s)
    with pytest.raises(ConfigError) as caught:
        settings(endpointUrl="ftp://user:hunter2@127.0.0.1:4567")
    assert "endpointUrl must be an http:// or https:// url" in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"streamName": "bad name!"}, "stream_name: Value error, streamName must be"),
        ({"streamName": ""}, "streamName must be 1-128"),
        ({"shardCount": 0}, "shard_count"),
        ({"iteratorType": "AT_TIMESTAMP"}, "iterator_type"),
        ({"maxRecordsPerGet": 10_001}, "max_records_per_get"),
        ({"pollInterval": "-1s"}, "poll_interval"),
        ({"checkpointStore": "dynamodb"}, "checkpoint_store"),
        ({"region": "US East"}, "region must look like"),
        ({"accessKeyId": "AKID"}, "secret_access_key: accessKeyId and secretAccessKey"),
        ({"sessionToken": "t"}, "session_token: sessionToken needs"),
        ({"streamNmae": "x"}, "streamNmae"),
    ],
)
def test_bad_values_are_clear_errors(config: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(**config)
    message = str(caught.value)
    assert PATH in message
    assert expected.replace("Value error, ", "") in message


def test_a_bad_secret_value_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        settings(secretAccessKey=["not", "a", "string"], accessKeyId="AKID")
    assert "secret_access_key" in str(caught.value)
    assert "not" not in str(caught.value).split("secret_access_key", 1)[1]


# --- through the bus: what reaches boto3 and the fan-out ----------------------------------


async def configured(engine: dict[str, Any], **eventbus: Any) -> KinesisEngine:
    """The engine built by the bus from ``engine`` (init only: nothing connects)."""
    app = new_app(engine, **eventbus)
    await app.init()
    return engine_of(app.get_service("eventbus.provider", EventBusModule))


async def test_configured_keys_are_what_the_client_signs_with() -> None:
    engine = await configured(
        {
            "endpointUrl": "http://127.0.0.1:4567",
            "region": "eu-central-1",
            "accessKeyId": "AKIDCONFIGURED",
            "secretAccessKey": "configured-secret",
            "sessionToken": "configured-token",
        }
    )
    client = make_client(engine.settings)
    credentials = client._request_signer._credentials.get_frozen_credentials()
    assert credentials.access_key == "AKIDCONFIGURED"
    assert credentials.secret_key == "configured-secret"
    assert credentials.token == "configured-token"
    assert client.meta.region_name == "eu-central-1"
    assert client.meta.endpoint_url == "http://127.0.0.1:4567"
    # botocore retries nothing itself: the engine's backoff is the one retry policy
    assert client.meta.config.retries["total_max_attempts"] == 1


async def test_without_keys_the_default_credential_chain_signs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-from-env")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    engine = await configured({"endpointUrl": "http://127.0.0.1:4567"})
    client = make_client(engine.settings)
    credentials = client._request_signer._credentials.get_frozen_credentials()
    assert (credentials.access_key, credentials.secret_key) == ("AKIDFROMENV", "secret-from-env")


async def test_capabilities_and_delivery_mode_follow_the_checkpoint_store() -> None:
    plain = await configured({})
    memory = await configured({"checkpointStore": "memory"})
    shared = await configured({"checkpointStore": "redis"})
    explicit = await configured({"checkpointStore": "redis", "deliveryMode": "drop"})
    top_level = await configured({"checkpointStore": "redis"}, deliveryMode="drop")
    assert plain.capabilities.cross_process and not plain.capabilities.durability
    assert not memory.capabilities.durability  # kept in this process only
    assert shared.capabilities.durability
    assert plain.dispatcher.policy.mode is DeliveryMode.DROP
    # durable reading never drops by default: a full mailbox holds the reader back
    assert memory.dispatcher.policy.mode is DeliveryMode.BLOCK
    assert shared.dispatcher.policy.mode is DeliveryMode.BLOCK
    assert explicit.dispatcher.policy.mode is DeliveryMode.DROP
    assert top_level.dispatcher.policy.mode is DeliveryMode.DROP
    assert plain.acks is None and shared.acks is not None


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"batchSize": 501}, "batch_size: at most 500"),
        ({"maxMessageSize": 2 * 1024 * 1024}, "max_message_size: at most 1048576"),
    ],
)
async def test_put_records_limits_are_checked_at_init(
    config: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        await configured(config)
    assert expected in str(caught.value)
    assert "eventbus.engines[0].config" in str(caught.value)


async def test_secrets_never_reach_the_engine_repr_or_health() -> None:
    engine = await configured(
        {"accessKeyId": "AKIDHIDDEN", "secretAccessKey": "s3cr3t-value", "sessionToken": "tok"}
    )
    shown = repr(engine.settings) + repr(engine) + str(engine.health())
    for secret in ("AKIDHIDDEN", "s3cr3t-value"):
        assert secret not in shown
    assert engine.mask("failed with s3cr3t-value") == "failed with ***"
