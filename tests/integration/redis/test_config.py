"""The redis engine's config map and what reaches redis-py (no Redis needed)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio.connection import Connection, SSLConnection

from modular import Application, ConfigError
from modules.eventbus import EngineConfig, EventBusModule
from modules.eventbus.engines.redis import RedisEngine, RedisEngineConfig

from .helpers import bus_settings, engine_of


async def configured(engine: dict[str, Any], **eventbus: Any) -> RedisEngine:
    """The engine built by the bus from ``engine`` (init only: nothing connects)."""
    app = Application(bus_settings(engine, **eventbus), envvar_prefix=None)
    module = EventBusModule()
    app.register_module(module)
    await app.init()
    return engine_of(module)


async def test_defaults() -> None:
    engine = await configured({})
    settings = engine.settings
    assert settings.url == "redis://127.0.0.1:6379"
    assert settings.channel_prefix == "eventbus:"
    assert settings.mode == "pubsub"
    assert settings.publish_timeout == 5.0
    connection_class, kwargs = engine.connection_settings()
    assert connection_class is Connection
    assert kwargs["host"] == "127.0.0.1" and kwargs["port"] == 6379
    assert "password" not in kwargs and "username" not in kwargs


async def test_camel_case_keys_and_durations() -> None:
    engine = await configured(
        {
            "url": "redis://cache.internal:6380/2",
            "channelPrefix": "app:",
            "mode": "streams",
            "groupName": "workers",
            "maxLen": 5000,
            "claimIdle": "250ms",
            "publishTimeout": "2s",
            "poolSize": 3,
            "scanInterval": "1m",
            "workerCount": 9,  # a delivery setting of every engine
        }
    )
    s = engine.settings
    assert (s.channel_prefix, s.mode, s.group_name, s.max_len) == (
        "app:",
        "streams",
        "workers",
        5000,
    )
    assert (s.claim_idle, s.publish_timeout, s.pool_size, s.scan_interval) == (0.25, 2.0, 3, 60.0)
    assert engine.dispatcher.policy.worker_count == 9
    assert engine.group == "workers" and engine.durable_group
    _, kwargs = engine.connection_settings()
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.internal", 6380, 2)
    assert kwargs["socket_connect_timeout"] == 2.0


async def test_capabilities_follow_the_mode() -> None:
    assert RedisEngine.capabilities.cross_process
    assert not RedisEngine.capabilities.durability
    pubsub = await configured({"mode": "pubsub"})
    streams = await configured({"mode": "streams"})
    shared = await configured({"mode": "streams", "groupName": "workers"})
    assert pubsub.capabilities.cross_process and not pubsub.capabilities.durability
    # A per-process group is destroyed at a clean stop: only a named group is durable.
    assert streams.capabilities.cross_process and not streams.capabilities.durability
    assert shared.capabilities.cross_process and shared.capabilities.durability


async def test_explicit_credentials_and_db_win_over_the_url() -> None:
    engine = await configured(
        {"url": "redis://urluser:urlpass@h:1/3", "db": 4, "username": "u", "password": "p"}
    )
    _, kwargs = engine.connection_settings()
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("u", "p", 4)
    engine = await configured({"url": "redis://urluser:urlpass@h:1/3"})
    _, kwargs = engine.connection_settings()
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("urluser", "urlpass", 3)


async def test_legacy_broker_settings_map_onto_url_and_credentials() -> None:
    legacy = {
        "externalBrokerURL": "redis://broker.internal:6390",
        "externalBrokerUser": "legacy-user",
        "externalBrokerPassword": "legacy-secret",
    }
    engine = await configured({}, **legacy)  # top level: the default of every engine
    assert engine.settings.url == "redis://broker.internal:6390"
    _, kwargs = engine.connection_settings()
    assert (kwargs["host"], kwargs["port"]) == ("broker.internal", 6390)
    assert (kwargs["username"], kwargs["password"]) == ("legacy-user", "legacy-secret")

    engine = await configured({"url": "redis://new.internal:6379", "password": "new"}, **legacy)
    _, kwargs = engine.connection_settings()
    assert (kwargs["host"], kwargs["password"], kwargs["username"]) == (
        "new.internal",
        "new",
        "legacy-user",
    )


def test_legacy_url_without_scheme() -> None:
    config = RedisEngineConfig.model_validate({"external_broker_url": "10.0.0.5:6379"})
    assert config.url == "redis://10.0.0.5:6379"


def test_an_engine_config_of_the_base_type_is_accepted() -> None:
    engine = RedisEngine("r", EngineConfig(external_broker_url="redis://h:7000"))
    assert engine.settings.url == "redis://h:7000"


async def test_tls_settings_reach_redis_py() -> None:
    engine = await configured(
        {
            "url": "rediss://secure.internal:6380",
            "sslCaCerts": "/etc/ssl/ca.pem",
            "sslCertfile": "/etc/ssl/client.pem",
            "sslKeyfile": "/etc/ssl/client.key",
            "password": "pw",
        }
    )
    connection_class, kwargs = engine.connection_settings()
    assert connection_class is SSLConnection
    assert kwargs["ssl_ca_certs"] == "/etc/ssl/ca.pem"
    assert kwargs["ssl_certfile"] == "/etc/ssl/client.pem"
    assert kwargs["ssl_keyfile"] == "/etc/ssl/client.key"
    # The connection redis-py builds from them carries them into its TLS context.
    connection = SSLConnection(**kwargs)
    assert connection.ca_certs == "/etc/ssl/ca.pem"
    assert connection.certfile == "/etc/ssl/client.pem"
    assert connection.keyfile == "/etc/ssl/client.key"
    assert (connection.host, connection.port) == ("secure.internal", 6380)


async def test_tls_files_need_a_rediss_url() -> None:
    with pytest.raises(ConfigError, match=r"eventbus\.engines\[0\]\.config\.url: .*rediss://"):
        await configured({"url": "redis://h:1", "sslCaCerts": "/ca.pem"})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"url": "http://user:topsecret@h:1"}, r"config\.url: url must start with redis://"),
        ({"mode": "queue"}, r"config\.mode"),
        ({"publishTimeout": 0}, r"config\.publish_timeout"),
        ({"claimIdle": "soon"}, r"config\.claim_idle"),
        ({"maxLen": -1}, r"config\.max_len"),
        ({"channelPrefx": "x:"}, r"unknown key 'channelPrefx'; did you mean 'channel_?[Pp]refix'"),
        ({"reconnectMinDelay": 2, "reconnectMaxDelay": 1}, r"reconnect_max_delay"),
    ],
)
async def test_bad_values_fail_init_naming_the_path(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        await configured(config)
    assert "topsecret" not in str(caught.value)


def test_secrets_are_never_shown() -> None:
    config = RedisEngineConfig(
        url="redis://admin:url-secret@h:6379/0",
        password=SecretStr("field-secret"),
        external_broker_url="redis://x:legacy-secret@h:1",
    )
    engine = RedisEngine("r", config)
    for text in (repr(config), str(config), repr(engine), engine.connection.address):
        assert "url-secret" not in text
        assert "field-secret" not in text
        assert "legacy-secret" not in text
    assert "redis://admin:***@h:6379/0" in repr(config)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h:6379/abc", r"config\.url: the database in url 'redis://h:6379/abc' must be a"),
        ("", r"config\.url: url must not be empty"),
        ("   ", r"config\.url: url must not be empty"),
    ],
)
async def test_a_bad_url_fails_init_clearly(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        await configured({"url": url})


def test_secrets_in_the_query_string_are_masked() -> None:
    config = RedisEngineConfig(url="redis://h:6379/0?password=query-secret&db=2")
    engine = RedisEngine("r", config)
    _, kwargs = engine.connection_settings()
    assert kwargs["password"] == "query-secret"  # redis-py uses it
    for text in (repr(config), str(config), repr(engine), engine.connection.address):
        assert "query-secret" not in text
    assert engine.connection.address == "redis://h:6379/0?password=***&db=2"
    assert engine.mask("failed: AUTH query-secret") == "failed: AUTH ***"


async def test_streams_default_to_block_unless_delivery_mode_is_set() -> None:
    streams = await configured({"mode": "streams"})
    assert streams.dispatcher.policy.mode == "block"
    pubsub = await configured({"mode": "pubsub"})
    assert pubsub.dispatcher.policy.mode == "drop"
    explicit = await configured({"mode": "streams", "deliveryMode": "drop"})
    assert explicit.dispatcher.policy.mode == "drop"
    at_the_top = await configured(
        {"mode": "streams"}, deliveryMode="timeout", publishBlockTimeout="1s"
    )
    assert at_the_top.dispatcher.policy.mode == "timeout"


async def test_broker_settings_of_the_kit() -> None:
    engine = await configured(
        {"connectTimeout": "3s", "requireAtStart": True, "maxMessageSize": 4096, "batchSize": 7}
    )
    s = engine.settings
    assert (s.connect_timeout, s.require_at_start, s.max_message_size, s.batch_size) == (
        3.0,
        True,
        4096,
        7,
    )
    defaults = (await configured({})).settings
    assert (defaults.connect_timeout, defaults.require_at_start) == (10.0, False)
    assert defaults.max_message_size == 1024 * 1024
