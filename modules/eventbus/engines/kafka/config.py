"""The ``config`` map of a ``type: kafka`` engine, and what of it reaches kafka-python.

Keys are camelCase or snake_case. Values may come from TOML, YAML, JSON or environment
variables: numbers may be strings (``"3"``), ``brokers`` a list or one comma-separated string
(``"k1:9092,k2:9092"``, or a JSON list in a string), durations ``"250ms"``, ``"6s"`` or
seconds. The legacy ``externalBrokerURL`` / ``externalBrokerUser`` /
``externalBrokerPassword`` are used when ``brokers`` / ``security`` do not say otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from modular import FieldError, mask_url

from ...config import PositiveInt, QueueSize
from ..broker import BrokerEngineConfig, PositiveDuration, secret_text

DEFAULT_BROKER = "127.0.0.1:9092"
# Kafka brokers refuse session timeouts above group.max.session.timeout.ms (30 min by default).
MAX_SESSION_TIMEOUT = 1800.0

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]

# The Python package kafka-python needs for each compression codec.
_CODEC_PACKAGES = {"snappy": "python-snappy", "lz4": "lz4", "zstd": "zstandard"}
_URL_SCHEMES: dict[str, Protocol | None] = {
    "kafka": None,
    "tcp": None,
    "plaintext": "PLAINTEXT",
    "ssl": "SSL",
    "sasl_plaintext": "SASL_PLAINTEXT",
    "sasl_ssl": "SASL_SSL",
}


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


class KafkaSecurity(BaseModel):
    """``security``: how the clients authenticate and encrypt.

    ``protocol`` PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL; with SASL,
    ``saslMechanism`` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512; default PLAIN), ``saslUsername``
    and ``saslPassword``; with SSL, ``sslCafile`` (the CA that signed the brokers'
    certificates; default: the system's), ``sslCertfile`` / ``sslKeyfile`` (a client
    certificate, for brokers that ask for one) and ``sslCheckHostname`` (default true).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Annotated[Protocol, BeforeValidator(_upper)] = "PLAINTEXT"
    sasl_mechanism: Annotated[SaslMechanism, BeforeValidator(_upper)] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        if self.sasl:
            if not self.sasl_username:
                raise FieldError(("sasl_username",), f"protocol {self.protocol} needs a user name")
            if not secret_text(self.sasl_password):
                raise FieldError(("sasl_password",), f"protocol {self.protocol} needs a password")
        elif self.sasl_mechanism or self.sasl_username or secret_text(self.sasl_password):
            raise FieldError(
                ("protocol",),
                f"SASL settings need protocol SASL_PLAINTEXT or SASL_SSL, not {self.protocol}",
            )
        files = {
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        for field, path in files.items():
            if not path:
                continue
            if not self.tls:
                raise FieldError(
                    (field,), f"TLS files need protocol SSL or SASL_SSL, not {self.protocol}"
                )
            if not os.path.isfile(path):
                raise FieldError((field,), f"no such file: {path!r}")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise FieldError(("ssl_certfile",), "sslKeyfile needs the sslCertfile it belongs to")
        return self


def _broker_list(value: object) -> object:
    """A list from a comma-separated string or a JSON list in a string (environment)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise ValueError(f"brokers is not a valid JSON list: {text!r}") from None
        else:
            return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [part.strip() if isinstance(part, str) else part for part in value]
    return value


def _check_broker(address: str) -> str:
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise FieldError(
            (), f"broker address {address!r} must be host:port (e.g. {DEFAULT_BROKER})"
        )
    if host.startswith("[") != host.endswith("]"):
        raise FieldError((), f"broker address {address!r}: an IPv6 host is written [::1]:9092")
    return address


def _split_legacy_url(url: str) -> tuple[list[str], Protocol | None, str, str]:
    """Brokers, protocol, user and password in a legacy ``externalBrokerURL``:
    ``host:port[,host:port]``, optionally ``scheme://[user:password@]``."""
    protocol: Protocol | None = None
    user = password = ""
    brokers: list[str] = []
    for part in (p.strip() for p in url.split(",")):
        if not part:
            continue
        scheme, sep, rest = part.partition("://")
        if sep:
            if scheme.lower() not in _URL_SCHEMES:
                raise FieldError(
                    ("external_broker_url",),
                    f"unknown scheme {scheme!r} in {mask_url(url)!r} (known: "
                    f"{', '.join(s + '://' for s in _URL_SCHEMES)})",
                )
            protocol = _URL_SCHEMES[scheme.lower()] or protocol
            part = rest
        userinfo, at, hostport = part.rpartition("@")
        if at:
            user, _, password = userinfo.partition(":")
            part = hostport
        brokers.append(part.rstrip("/"))
    return brokers, protocol, user, password


class KafkaEngineConfig(BrokerEngineConfig):
    """The ``config`` map of a ``type: kafka`` engine, beside the settings of every broker
    engine (:class:`BrokerEngineConfig`: ``connectTimeout``, ``requireAtStart``,
    ``publishTimeout``, ``maxMessageSize``, ``batchSize``, reconnect delays).

    - ``brokers`` (``["127.0.0.1:9092"]``): bootstrap servers, a list or ``"h1:p,h2:p"``.
    - ``groupId`` (none): the consumer group. None: a group of its own per process and
      engine, so every process gets every event; set: the processes of the group share the
      load, each event goes to one of them, and what was not handled comes back.
    - ``clientId`` (``eventbus-<engine>``), ``topicPrefix`` (``""``: the Kafka topic is the
      event topic, as Go Modular names it).
    - ``partitions`` (1) / ``replicationFactor`` (1): for the topics the engine creates.
    - ``acks`` (``all``; ``1``, ``0``), ``lingerMs`` (0), ``compression`` (``none``, ``gzip``,
      ``snappy``, ``lz4``, ``zstd``): the producer.
    - ``sessionTimeout`` (45s), ``heartbeatInterval`` (3s), ``autoOffsetReset`` (``latest``:
      a group without committed offsets starts where the topic was when the subscription was
      made; ``earliest``: from the oldest event the broker holds), ``metadataMaxAge`` (30s:
      how soon a pattern subscription sees a topic created elsewhere), ``maxInFlight``
      (1000: received events not yet settled, beyond which the consumer waits).
    - ``security``: see :class:`KafkaSecurity`.

    Reading is durable (offsets are committed after handling), so ``deliveryMode`` defaults
    to ``block``; an explicit ``drop`` or ``timeout`` can lose events.
    """

    brokers: Annotated[list[str], BeforeValidator(_broker_list)] = Field(
        default_factory=lambda: [DEFAULT_BROKER]
    )
    group_id: str | None = None
    client_id: str | None = None
    topic_prefix: str = ""
    partitions: PositiveInt = 1
    replication_factor: PositiveInt = 1
    acks: Literal["all", 0, 1] = "all"
    linger_ms: Annotated[int, Field(ge=0, le=60_000)] = 0
    compression: Annotated[Compression, BeforeValidator(_lower)] = "none"
    session_timeout: PositiveDuration = 45.0
    heartbeat_interval: PositiveDuration = 3.0
    auto_offset_reset: Annotated[Literal["latest", "earliest"], BeforeValidator(_lower)] = "latest"
    metadata_max_age: PositiveDuration = 30.0
    max_in_flight: QueueSize = 1000
    security: KafkaSecurity = Field(default_factory=KafkaSecurity)

    @model_validator(mode="before")
    @classmethod
    def _legacy_broker_settings(cls, data: Any) -> Any:
        """``externalBrokerURL`` / ``User`` / ``Password`` fill what ``brokers`` and
        ``security`` leave unset; a user name means SASL (PLAIN unless said otherwise)."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        url = str(data.get("external_broker_url") or "").strip()
        user = str(data.get("external_broker_user") or "")
        password = secret_text(data.get("external_broker_password"))
        if not (url or user or password):
            return data
        protocol: str | None = None
        if url:
            brokers, protocol, url_user, url_password = _split_legacy_url(url)
            user, password = user or url_user, password or url_password
            if "brokers" not in data:
                data["brokers"] = brokers
        security = data.get("security")
        if security is not None and not isinstance(security, Mapping):
            return data  # not a table: the field's own validation says so
        security = dict(security or {})
        if user or password:
            security.setdefault("sasl_username", user)
            security.setdefault("sasl_password", password)
            protocol = protocol if protocol and protocol.startswith("SASL_") else None
            security.setdefault("protocol", protocol or "SASL_PLAINTEXT")
        elif protocol:
            security.setdefault("protocol", protocol)
        data["security"] = security
        return data

    @field_validator("brokers")
    @classmethod
    def _valid_brokers(cls, brokers: list[str]) -> list[str]:
        if not brokers:
            raise FieldError((), f"brokers must name at least one broker (e.g. {DEFAULT_BROKER})")
        return [_check_broker(b) for b in brokers]

    @field_validator("acks", mode="before")
    @classmethod
    def _acks(cls, value: object) -> object:
        text = str(value).strip().lower()
        if text in ("all", "-1"):
            return "all"
        if text in ("0", "1"):
            return int(text)
        raise FieldError((), f"acks must be 'all', 1 or 0, got {value!r}")

    @field_validator("group_id", "client_id")
    @classmethod
    def _no_blank_names(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _valid_prefix(cls, prefix: str) -> str:
        if prefix and not all(c.isascii() and (c.isalnum() or c in "._-") for c in prefix):
            raise FieldError(
                (), f"topicPrefix {prefix!r} may only hold letters, digits, '.', '_' and '-'"
            )
        return prefix

    @field_validator("compression")
    @classmethod
    def _codec_installed(cls, codec: str) -> str:
        package = _CODEC_PACKAGES.get(codec)
        if package is None:
            return codec
        from kafka import codec as codecs

        if not getattr(codecs, f"has_{codec}")():
            raise FieldError((), f"compression {codec!r} needs the package {package} installed")
        return codec

    @model_validator(mode="after")
    def _timeouts_in_order(self) -> KafkaEngineConfig:
        if self.session_timeout > MAX_SESSION_TIMEOUT:
            raise FieldError(
                ("session_timeout",),
                f"{self.session_timeout:g}s is over {MAX_SESSION_TIMEOUT:g}s: a duration is in "
                "seconds unless it says otherwise ('45s', '45000ms')",
            )
        if self.heartbeat_interval >= self.session_timeout:
            raise FieldError(
                ("heartbeat_interval",),
                f"must be below sessionTimeout ({self.session_timeout:g}s), ideally a third",
            )
        return self

    def durable_reading(self) -> bool:
        return True

    def secrets(self) -> list[str]:
        found = super().secrets()
        password = secret_text(self.security.sasl_password)
        if password:
            found.append(password)
        if self.external_broker_url:  # a sasl_ssl:// url is no url to urllib (the "_")
            with contextlib.suppress(FieldError):
                url_password = _split_legacy_url(self.external_broker_url)[3]
                if url_password:
                    found.append(url_password)
        return found

    def address(self) -> str:
        """The brokers as shown in messages."""
        return ",".join(self.brokers)

    def client_settings(self, engine: str) -> dict[str, Any]:
        """What every kafka-python client of engine ``engine`` is made with."""
        security = self.security
        settings: dict[str, Any] = {
            "bootstrap_servers": list(self.brokers),
            "client_id": self.client_id or f"eventbus-{engine}",
            "security_protocol": security.protocol,
            "metadata_max_age_ms": int(self.metadata_max_age * 1000),
            "reconnect_backoff_ms": int(self.reconnect_min_delay * 1000),
            "reconnect_backoff_max_ms": int(self.reconnect_max_delay * 1000),
            # Each call waits at most publishTimeout for the broker (kafka-python's default
            # is 30 s), so a broker that went away is noticed in time.
            "request_timeout_ms": int(max(self.publish_timeout, 1.0) * 1000),
        }
        if security.sasl:
            settings["sasl_mechanism"] = security.sasl_mechanism or "PLAIN"
            settings["sasl_plain_username"] = security.sasl_username
            settings["sasl_plain_password"] = secret_text(security.sasl_password)
        if security.tls:
            settings["ssl_check_hostname"] = security.ssl_check_hostname
            for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                if getattr(security, key):
                    settings[key] = getattr(security, key)
        return settings

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name == "external_broker_url" and isinstance(value, str):
                value = mask_url(value)
            yield name, value
