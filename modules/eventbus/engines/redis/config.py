"""The ``config`` map of a ``type: redis`` engine, and how its url is shown."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from redis.asyncio.connection import parse_url

from modular import FieldError

from ...config import whole_number
from ..broker import BrokerEngineConfig, PositiveDuration, mask_url

DEFAULT_URL = "redis://127.0.0.1:6379"

# Upper bounds: Redis refuses larger numbers (at every read, publish or connection), so they
# fail at init() instead.
MAX_DB = 2**31 - 1  # SELECT takes an int; the server's `databases` (16 by default) decides
MAX_POOL_SIZE = 10_000  # Redis' default maxclients
MAX_READ_COUNT = 100_000  # entries held in memory from one XREADGROUP
MAX_STREAM_LENGTH = 1_000_000_000  # XADD MAXLEN


DbNumber = Annotated[int, BeforeValidator(whole_number), Field(ge=0, le=MAX_DB)]
PoolSize = Annotated[int, BeforeValidator(whole_number), Field(gt=0, le=MAX_POOL_SIZE)]
ReadCount = Annotated[int, BeforeValidator(whole_number), Field(gt=0, le=MAX_READ_COUNT)]
StreamLength = Annotated[int, BeforeValidator(whole_number), Field(ge=0, le=MAX_STREAM_LENGTH)]


def masked_url(url: str) -> str:
    """``url`` without its secrets (password, secret query parameters)."""
    return mask_url(url)


class RedisEngineConfig(BrokerEngineConfig):
    """The ``config`` map of a ``type: redis`` engine (camelCase or snake_case keys), beside
    the settings of every broker engine (:class:`BrokerEngineConfig`: ``connectTimeout``,
    ``requireAtStart``, ``publishTimeout``, ``maxMessageSize``, ``batchSize``, reconnect
    delays). The legacy ``externalBrokerURL``/``User``/``Password`` are used when
    ``url``/``username``/``password`` are not given.

    Bounds (a larger value is a ConfigError at init): ``db`` <= 2,147,483,647 (in the url
    too; the server's ``databases`` setting is checked when connecting), ``poolSize`` <=
    10,000, ``readCount`` <= 100,000, ``maxLen`` <= 1,000,000,000; durations (``claimIdle``,
    ``scanInterval``, ``healthCheckInterval``, ...) at most 7 days.

    ``mode: streams`` reads durably (entries are acknowledged after handling), so its
    ``deliveryMode`` defaults to ``block``; an explicit ``drop`` or ``timeout`` can lose
    events (a dropped entry is acknowledged).
    """

    legacy_broker_keys: ClassVar[tuple[str, str, str] | None] = ("url", "username", "password")

    url: str = DEFAULT_URL
    db: DbNumber | None = None
    username: str | None = None
    password: SecretStr | None = None
    pool_size: PoolSize = 10
    channel_prefix: str = "eventbus:"
    mode: Literal["pubsub", "streams"] = "pubsub"
    group_name: str = ""
    max_len: StreamLength = 100_000  # approximate trimming; 0 = never trim
    claim_idle: PositiveDuration = 60.0
    read_count: ReadCount = 500  # stream entries asked for by one read
    scan_interval: PositiveDuration = 1.0
    health_check_interval: PositiveDuration = 15.0
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str) -> str:
        # FieldError: the message is shown as written, never followed by the (secret) value.
        # Only the masked url is parsed for messages, so that no part of a password that a
        # parser splits off ("/", "?", "#" in it) can be quoted as a port, path or parameter.
        url = url.strip()
        if not url:
            raise FieldError((), "url must not be empty (e.g. redis://127.0.0.1:6379/0)")
        if "://" not in url:  # "host:port", as legacy externalBrokerURL values often are
            url = f"redis://{url}"
        shown = masked_url(url)
        parts = urlsplit(shown)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise FieldError(
                (), f"url must start with redis://, rediss:// or unix://, got {shown!r}"
            )
        host = parts.netloc.rpartition("@")[2]
        if host != urlsplit(url).netloc.rpartition("@")[2]:  # a parser splits the password
            raise FieldError(
                (),
                f"the password in url {shown!r} holds '/', '?' or '#', which must be "
                "percent-encoded there (%2F, %3F, %23); or give it as 'password'",
            )
        if parts.scheme != "unix" and "@" in shown.partition(parts.netloc)[2]:
            # Only a password that was not recognised puts an "@" there: never echo it.
            raise FieldError(
                (),
                "the url holds an '@' after its host: percent-encode '/', '?', '#' and '@' "
                "in a password (%2F, %3F, %23, %40), or give it as 'password'",
            )
        try:
            parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
        except ValueError:
            raise FieldError(
                (), f"the port in url {shown!r} must be a number from 0 to 65535"
            ) from None
        path = parts.path.strip("/")
        if parts.scheme != "unix" and path and not path.isdigit():
            raise FieldError((), f"the database in url {shown!r} must be a number, got {path!r}")
        try:
            db = parse_url(shown).get("db")
            parse_url(url)
        except ValueError as exc:
            # redis-py's messages name a query parameter, never its value
            raise FieldError((), f"invalid url {shown!r}: {exc}") from None
        if db is not None and not 0 <= db <= MAX_DB:
            raise FieldError(
                (), f"the database in url {shown!r} must be from 0 to {MAX_DB}, got {db}"
            )
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
