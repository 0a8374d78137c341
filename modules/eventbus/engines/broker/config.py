"""Settings every broker engine understands, and how addresses and errors are shown.

A broker engine's config model subclasses :class:`BrokerEngineConfig` and adds its own
keys (``url``, ``bootstrapServers``, ``streamName``, ...). Keys are camelCase or
snake_case, like every engine's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, ClassVar
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import BeforeValidator, Field, SecretStr, model_validator

from modular import FieldError, is_secret_key, mask_secrets
from modular.secrets import url_passwords

from ...config import EngineConfig, parse_duration, whole_number
from ...delivery import DeliveryMode, DeliveryPolicy

MIB = 1024 * 1024

# Upper bounds, so that a typo of a few zeros fails at init() instead of being sent to a
# broker that refuses it at every publish or read (or keeps a reconnect loop going).
MAX_DURATION = 7 * 86400  # seconds: every duration of a broker engine (timeouts, delays)
MAX_MESSAGE_SIZE = 512 * MIB  # Redis' largest bulk string (proto-max-bulk-len), by default
MAX_BATCH_SIZE = 100_000

PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0, le=MAX_DURATION)]


def secret_text(value: object) -> str:
    """The text of a setting that may be a SecretStr (empty for None or "")."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value) if value else ""


# Sizes and counts: whole numbers (a bool is refused; a numeric string, as an environment
# variable gives, is read as its number).
MessageSize = Annotated[int, BeforeValidator(whole_number), Field(gt=0, le=MAX_MESSAGE_SIZE)]
BatchSize = Annotated[int, BeforeValidator(whole_number), Field(gt=0, le=MAX_BATCH_SIZE)]

MASK = "***"


class BrokerEngineConfig(EngineConfig):
    """What the kit reads from every broker engine's ``config`` map.

    - ``connectTimeout`` (10s): how long ``start()`` waits for the broker.
    - ``requireAtStart`` (false): if the broker cannot be reached at start, fail ``start()``
      (and so ``app.start()``) instead of starting ``down`` and reconnecting.
    - ``publishTimeout`` (5s): how long a publish or a subscribe waits while the broker is
      unreachable before it raises ``EngineUnavailableError``.
    - ``maxMessageSize`` (1 MiB, at most 512 MiB): the largest encoded envelope a publish
      may send.
    - ``batchSize`` (500, at most 100,000): publishes sent to the broker in one batch.
    - ``reconnectMinDelay`` / ``reconnectMaxDelay`` (50ms / 2s): the reconnection backoff.

    Every duration is finite, above 0 and at most 7 days; a size or count is a whole number
    (``true`` is refused), as a number or a numeric string.

    An engine whose reading is durable (acknowledged after handling) returns True from
    :meth:`durable_reading`; its delivery mode then defaults to ``block`` unless the user set
    ``deliveryMode`` (at the top of the section or in the engine's own ``config``).
    """

    # The engine's own keys (address, user, secret) that the legacy externalBrokerURL /
    # externalBrokerUser / externalBrokerPassword fill when the user left them unset; None
    # for an engine that maps the legacy keys itself.
    legacy_broker_keys: ClassVar[tuple[str, str, str] | None] = None

    connect_timeout: PositiveDuration = 10.0
    require_at_start: bool = False
    publish_timeout: PositiveDuration = 5.0
    max_message_size: MessageSize = MIB
    batch_size: BatchSize = 500
    reconnect_min_delay: PositiveDuration = 0.05
    reconnect_max_delay: PositiveDuration = 2.0

    @model_validator(mode="before")
    @classmethod
    def _legacy_broker_settings(cls, data: Any) -> Any:
        if cls.legacy_broker_keys is None or not isinstance(data, Mapping):
            return data
        data = dict(data)
        legacy = ("external_broker_url", "external_broker_user", "external_broker_password")
        for own, old in zip(cls.legacy_broker_keys, legacy, strict=True):
            if not secret_text(data.get(own)) and secret_text(data.get(old)):
                data[own] = data[old]
        return data

    @model_validator(mode="after")
    def _backoff_in_order(self) -> BrokerEngineConfig:
        if self.reconnect_max_delay < self.reconnect_min_delay:
            raise FieldError(("reconnect_max_delay",), "must not be below reconnectMinDelay")
        return self

    def durable_reading(self) -> bool:
        """Whether messages are acknowledged only after handling (so must never be dropped
        locally by default). Engines override it; e.g. Redis: ``mode == "streams"``."""
        return False

    def delivery_policy(self) -> DeliveryPolicy:
        policy = super().delivery_policy()
        if self.durable_reading() and "delivery_mode" not in self.model_fields_set:
            return DeliveryPolicy(
                buffer_size=policy.buffer_size,
                mode=DeliveryMode.BLOCK,
                block_timeout=policy.block_timeout,
                rotate=policy.rotate,
                worker_count=policy.worker_count,
                queue_size=policy.queue_size,
            )
        return policy

    def secrets(self) -> list[str]:
        """Every secret value in this config (passwords, tokens, secrets in urls), so that
        :class:`Masker` can take them out of any text."""
        found: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                text = value.get_secret_value()
                if text:
                    found.append(text)
            elif isinstance(value, str) and "://" in value:
                found.extend(url_secrets(value))
        return found


def url_secrets(url: str) -> list[str]:
    """The secret parts of ``url``: the password of its userinfo (as written and decoded, as
    a client sends it), secret query values."""
    found: list[str] = []
    for password in url_passwords(url):
        found += {password, unquote(password)}
    try:
        query = urlsplit(url).query
    except ValueError:
        return found
    found.extend(v for k, v in parse_qsl(query) if v and is_secret_key(k))
    return found


def mask_url(url: str) -> str:
    """``url`` without its secrets (userinfo password, secret query parameters), for
    messages, reprs and observer events (the container's one masking rule)."""
    return mask_secrets(url)


class Masker:
    """Takes secrets out of any text: the known secret values of a config (an error message
    of a client library may quote what it was given), then whatever the container's
    ``mask_secrets`` recognises (url passwords, ``password=...``)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so that a secret containing another is masked whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return mask_secrets(text)

    def error(self, error: BaseException | None) -> str | None:
        """``Type: message`` of ``error``, masked; None for no error."""
        if error is None:
            return None
        return self(f"{type(error).__name__}: {error}")
