"""The ``config`` map of a ``type: redis`` engine, and how its url is shown."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from redis.asyncio.connection import parse_url

from modular import FieldError

from ...config import PositiveInt
from ..broker import BrokerEngineConfig, PositiveDuration, mask_url

DEFAULT_URL = "redis://127.0.0.1:6379"


def _secret_text(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value) if value else ""


def masked_url(url: str) -> str:
    """``url`` without its secrets (password, secret query parameters)."""
    return mask_url(url)


class RedisEngineConfig(BrokerEngineConfig):
    """The ``config`` map of a ``type: redis`` engine (camelCase or snake_case keys), beside
    the settings of every broker engine (:class:`BrokerEngineConfig`: ``connectTimeout``,
    ``requireAtStart``, ``publishTimeout``, ``maxMessageSize``, ``batchSize``, reconnect
    delays). The legacy ``externalBrokerURL``/``User``/``Password`` are used when
    ``url``/``username``/``password`` are not given.

    ``mode: streams`` reads durably (entries are acknowledged after handling), so its
    ``deliveryMode`` defaults to ``block``; an explicit ``drop`` or ``timeout`` can lose
    events (a dropped entry is acknowledged).
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
    read_count: PositiveInt = 500  # stream entries asked for by one read
    scan_interval: PositiveDuration = 1.0
    health_check_interval: PositiveDuration = 15.0
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
    def _valid_url(cls, url: str) -> str:
        # FieldError: the message is shown as written, never followed by the (secret) value.
        url = url.strip()
        if not url:
            raise FieldError((), "url must not be empty (e.g. redis://127.0.0.1:6379/0)")
        if "://" not in url:  # "host:port", as legacy externalBrokerURL values often are
            url = f"redis://{url}"
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise FieldError(
                (), f"url must start with redis://, rediss:// or unix://, got {masked_url(url)!r}"
            )
        path = parts.path.strip("/")
        if parts.scheme != "unix" and path and not path.isdigit():
            raise FieldError(
                (), f"the database in url {masked_url(url)!r} must be a number, got {path!r}"
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
        return self

    def durable_reading(self) -> bool:
        return self.mode == "streams"

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name in ("url", "external_broker_url") and isinstance(value, str):
                value = masked_url(value)
            yield name, value
