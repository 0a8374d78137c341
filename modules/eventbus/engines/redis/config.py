"""The ``config`` map of a ``type: redis`` engine, and how its url is shown."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from redis.asyncio.connection import parse_url

from modular import FieldError

from ...config import EngineConfig, PositiveInt, parse_duration

DEFAULT_URL = "redis://127.0.0.1:6379"
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


def _secret_text(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value) if value else ""


def masked_url(url: str) -> str:
    """``url`` without its password, for messages and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class RedisEngineConfig(EngineConfig):
    """The ``config`` map of a ``type: redis`` engine (camelCase or snake_case keys).

    ``publishTimeout`` bounds every wait on Redis: a publish, a subscription's confirmation,
    the first connection at start. The legacy ``externalBrokerURL``/``User``/``Password``
    are used when ``url``/``username``/``password`` are not given.
    """

    url: str = DEFAULT_URL
    db: Annotated[int, Field(ge=0)] | None = None
    username: str | None = None
    password: SecretStr | None = None
    pool_size: PositiveInt = 10
    channel_prefix: str = "eventbus:"
    mode: Literal["pubsub", "streams"] = "pubsub"
    group_name: str = ""
    max_len: Annotated[int, Field(ge=0)] = 100_000  # approximate trimming; 0 = never trim
    claim_idle: PositiveDuration = 60.0
    publish_timeout: PositiveDuration = 5.0
    batch_size: PositiveInt = 500  # publishes sent in one pipeline
    read_count: PositiveInt = 500  # stream entries asked for by one read
    scan_interval: PositiveDuration = 1.0
    health_check_interval: PositiveDuration = 15.0
    reconnect_min_delay: PositiveDuration = 0.05
    reconnect_max_delay: PositiveDuration = 2.0
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_broker_settings(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        legacy = {
            "url": data.get("external_broker_url"),
            "username": data.get("external_broker_user"),
            "password": data.get("external_broker_password"),
        }
        for field, value in legacy.items():
            if not _secret_text(data.get(field)) and _secret_text(value):
                data[field] = value
        return data

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        url = url.strip()
        if "://" not in url:  # "host:port", as legacy externalBrokerURL values often are
            url = f"redis://{url}"
        # FieldError: the message is shown as written, never followed by the (secret) value.
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise FieldError(
                (), f"url must start with redis://, rediss:// or unix://, got {masked_url(url)!r}"
            )
        try:
            parse_url(url)
        except ValueError as exc:
            raise FieldError((), f"invalid url {masked_url(url)!r}: {exc}") from None
        return url

    @model_validator(mode="after")
    def _consistent(self) -> RedisEngineConfig:
        tls = (self.ssl_ca_certs, self.ssl_certfile, self.ssl_keyfile)
        if any(tls) and urlsplit(self.url).scheme != "rediss":
            raise FieldError(("url",), "sslCaCerts/sslCertfile/sslKeyfile need a rediss:// url")
        if self.reconnect_max_delay < self.reconnect_min_delay:
            raise FieldError(("reconnect_max_delay",), "must not be below reconnectMinDelay")
        return self

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name in ("url", "external_broker_url") and isinstance(value, str):
                value = masked_url(value)
            yield name, value
