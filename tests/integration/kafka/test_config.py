"""The kafka engine's config map, from every kind of settings source, and what reaches
kafka-python (no broker needed: init only, nothing connects).

The Tansu build used here answers neither TLS (``--cert`` is accepted but the listener stays
plain) nor SASL (users cannot be created once ``--authentication`` is on), so the security
settings are checked where they reach the client configuration, not against a broker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modular import Application, ConfigError
from modules.eventbus import EventBusModule
from modules.eventbus.delivery import DeliveryMode
from modules.eventbus.engines.kafka import KafkaEngine, KafkaEngineConfig

from .helpers import bus_settings, engine_of


async def configured(app: Application) -> KafkaEngine:
    module = EventBusModule()
    app.register_module(module)
    await app.init()
    return engine_of(module)


async def from_map(engine: dict[str, Any], **eventbus: Any) -> KafkaEngine:
    return await configured(Application(bus_settings(engine, **eventbus), envvar_prefix=None))


async def test_defaults() -> None:
    engine = await from_map({})
    s = engine.settings
    assert s.brokers == ["127.0.0.1:9092"]
    assert (s.group_id, s.topic_prefix, s.partitions, s.acks) == (None, "", 1, "all")
    assert (s.session_timeout, s.heartbeat_interval, s.auto_offset_reset) == (45.0, 3.0, "latest")
    assert engine.dispatcher.policy.mode is DeliveryMode.BLOCK  # durable reading
    assert not engine.capabilities.durability  # no group: nothing outlives the process
    client = s.client_settings("k")
    assert client["client_id"] == "eventbus-k" and client["security_protocol"] == "PLAINTEXT"
    assert "sasl_mechanism" not in client and "ssl_cafile" not in client


async def test_camel_case_keys_strings_and_durations() -> None:
    engine = await from_map(
        {
            "brokers": "k1:9092, k2:9093",
            "groupId": "workers",
            "clientId": "billing",
            "topicPrefix": "app.",
            "partitions": "6",
            "replicationFactor": 3,
            "acks": "1",
            "lingerMs": "20",
            "compression": "GZIP",
            "sessionTimeout": "10s",
            "heartbeatInterval": "2500ms",
            "autoOffsetReset": "earliest",
            "metadataMaxAge": "1m",
            "maxInFlight": 50,
            "publishTimeout": "2s",
            "deliveryMode": "drop",
        }
    )
    s = engine.settings
    assert s.brokers == ["k1:9092", "k2:9093"]
    assert (s.group_id, s.topic_prefix, s.partitions, s.replication_factor) == (
        "workers",
        "app.",
        6,
        3,
    )
    assert (s.acks, s.linger_ms, s.compression) == (1, 20, "gzip")
    assert (s.session_timeout, s.heartbeat_interval, s.metadata_max_age) == (10.0, 2.5, 60.0)
    assert (s.auto_offset_reset, s.max_in_flight) == ("earliest", 50)
    assert engine.capabilities.durability  # a named group keeps what it did not handle
    assert engine.dispatcher.policy.mode is DeliveryMode.DROP  # an explicit choice wins
    client = s.client_settings("k")
    assert client["client_id"] == "billing"
    assert client["bootstrap_servers"] == ["k1:9092", "k2:9093"]
    assert client["request_timeout_ms"] == 2000 and client["metadata_max_age_ms"] == 60000


async def test_toml_yaml_json_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "settings.toml"
    toml.write_text(
        '[default.eventbus]\nshutdownTimeout = "3s"\n'
        '[[default.eventbus.engines]]\nname = "k"\ntype = "kafka"\n'
        '[default.eventbus.engines.config]\nbrokers = ["t1:9092", "t2:9092"]\npartitions = 2\n'
        '[default.eventbus.engines.config.security]\nprotocol = "SASL_PLAINTEXT"\n'
        'saslMechanism = "SCRAM-SHA-512"\nsaslUsername = "svc"\nsaslPassword = "from-toml"\n',
        encoding="utf-8",
    )
    engine = await configured(Application(settings_files=[toml], envvar_prefix=None))
    assert engine.settings.brokers == ["t1:9092", "t2:9092"] and engine.settings.partitions == 2
    client = engine.settings.client_settings("k")
    assert (client["sasl_mechanism"], client["sasl_plain_username"]) == ("SCRAM-SHA-512", "svc")
    assert client["sasl_plain_password"] == "from-toml"

    yaml = tmp_path / "settings.yaml"
    yaml.write_text(
        "default:\n  eventbus:\n    engines:\n      - name: k\n        type: kafka\n"
        "        config:\n          brokers: y1:9092,y2:9092\n          groupId: yaml-group\n"
        "          sessionTimeout: 20\n",
        encoding="utf-8",
    )
    engine = await configured(Application(settings_files=[yaml], envvar_prefix=None))
    s = engine.settings
    assert (s.brokers, s.group_id, s.session_timeout) == (["y1:9092", "y2:9092"], "yaml-group", 20)

    as_json = tmp_path / "settings.json"
    as_json.write_text(
        json.dumps(
            {
                "default": {
                    "eventbus": {
                        "engines": [
                            {"name": "k", "type": "kafka", "config": {"acks": 0, "lingerMs": 7}}
                        ]
                    }
                }
            }
        ),
        encoding="utf-8",
    )
    engine = await configured(Application(settings_files=[as_json], envvar_prefix=None))
    assert (engine.settings.acks, engine.settings.linger_ms) == (0, 7)

    # Environment variables arrive as strings (or TOML values), upper-cased keys.
    monkeypatch.setenv(
        "MODULAR_EVENTBUS__ENGINES",
        '[{name="k", type="kafka", config={BROKERS="e1:9092,e2:9092", PARTITIONS="4", '
        'GROUPID="env-group", SECURITY={PROTOCOL="ssl", SSLCHECKHOSTNAME="false"}}}]',
    )
    engine = await configured(Application(envvar_prefix="MODULAR"))
    s = engine.settings
    assert (s.brokers, s.partitions, s.group_id) == (["e1:9092", "e2:9092"], 4, "env-group")
    assert s.security.protocol == "SSL" and s.security.ssl_check_hostname is False


async def test_tls_and_sasl_settings_reach_the_client(tmp_path: Path) -> None:
    cafile, certfile, keyfile = (tmp_path / name for name in ("ca.pem", "cert.pem", "key.pem"))
    for path in (cafile, certfile, keyfile):
        path.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    engine = await from_map(
        {
            "security": {
                "protocol": "SASL_SSL",
                "saslUsername": "svc",
                "saslPassword": "s3cret",
                "sslCafile": str(cafile),
                "sslCertfile": str(certfile),
                "sslKeyfile": str(keyfile),
                "sslCheckHostname": False,
            }
        }
    )
    client = engine.settings.client_settings("k")
    assert client["security_protocol"] == "SASL_SSL"
    assert client["sasl_mechanism"] == "PLAIN"  # the default mechanism
    assert (client["sasl_plain_username"], client["sasl_plain_password"]) == ("svc", "s3cret")
    assert (client["ssl_cafile"], client["ssl_certfile"], client["ssl_keyfile"]) == (
        str(cafile),
        str(certfile),
        str(keyfile),
    )
    assert client["ssl_check_hostname"] is False


async def test_legacy_broker_settings_map_onto_brokers_and_sasl() -> None:
    engine = await from_map(
        {
            "externalBrokerURL": "kafka://b1:9092,b2:9092",
            "externalBrokerUser": "legacy",
            "externalBrokerPassword": "old-secret",
        }
    )
    s = engine.settings
    assert s.brokers == ["b1:9092", "b2:9092"]
    assert s.security.protocol == "SASL_PLAINTEXT" and s.security.sasl_username == "legacy"
    assert engine.settings.client_settings("k")["sasl_plain_password"] == "old-secret"

    # At the top of the section (legacy single-engine style), credentials in the url.
    engine = await from_map({}, externalBrokerURL="sasl_ssl://u:p4ss@b3:9093")
    s = engine.settings
    assert s.brokers == ["b3:9093"] and s.security.protocol == "SASL_SSL"
    assert s.security.sasl_username == "u"

    # Explicit settings win over the legacy ones.
    engine = await from_map({"brokers": ["new:9092"], "externalBrokerURL": "old:9092"})
    assert engine.settings.brokers == ["new:9092"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"brokers": "nohost"}, "config.brokers: broker address 'nohost' must be host:port"),
        ({"brokers": []}, "config.brokers: brokers must name at least one broker"),
        ({"acks": 2}, "config.acks: acks must be 'all', 1 or 0"),
        ({"sessionTimeout": 6000}, "6000s is over 1800s"),
        ({"heartbeatInterval": "50s"}, "config.heartbeat_interval: must be below sessionTimeout"),
        ({"topicPrefix": "a/b"}, "topicPrefix 'a/b' may only hold"),
        ({"compression": "snappy"}, "needs the package python-snappy"),
        ({"autoOffsetReset": "middle"}, "config.auto_offset_reset"),
        ({"groupID": "x", "partitons": 2}, "unknown key 'partitons'; did you mean 'partitions'?"),
        ({"security": {"protocol": "SASL_SSL", "saslUsername": "u"}}, "needs a password"),
        ({"security": {"saslUsername": "u"}}, "SASL settings need protocol SASL_PLAINTEXT"),
        ({"security": {"protocol": "SSL", "sslCafile": "/no/such.pem"}}, "no such file"),
        ({"security": {"sslCafile": "x"}}, "TLS files need protocol SSL or SASL_SSL"),
        ({"externalBrokerURL": "http://x:1"}, "unknown scheme 'http'"),
    ],
)
async def test_bad_values_fail_init_naming_the_path(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=r"eventbus\.engines") as caught:
        await from_map(config)
    assert message in str(caught.value)


def test_secrets_are_never_shown() -> None:
    config = KafkaEngineConfig.model_validate(
        {
            "external_broker_url": "sasl_ssl://u:hunter2@b:9093",
            "security": {"protocol": "SASL_SSL", "sasl_username": "u", "sasl_password": "pw-42"},
        }
    )
    shown = repr(config) + str(config)
    assert "hunter2" not in shown and "pw-42" not in shown
    assert "pw-42" in config.secrets() and "hunter2" in config.secrets()


async def test_secret_in_a_bad_value_is_not_shown() -> None:
    with pytest.raises(ConfigError) as caught:
        await from_map({"security": {"protocol": "SASL_SSL", "saslPassword": 12345678}})
    assert "12345678" not in str(caught.value)
