"""Settings every broker engine understands, and how addresses and errors are shown.

A broker engine's config model subclasses :class:`BrokerEngineConfig` and adds its own
keys (``url``, ``bootstrapServers``, ``streamName``, ...). Keys are camelCase or
snake_case, like every engine's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BeforeValidator, Field, SecretStr, model_validator

from modular import FieldError

from ...config import EngineConfig, PositiveInt, parse_duration
from ...delivery import DeliveryMode, DeliveryPolicy

PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]

MIB = 1024 * 1024

# Query-string parameters whose value is a secret (``redis://h/0?password=...``).
_SECRET_WORDS = ("password", "passwd", "pwd", "secret", "token", "credential", "auth", "key")
MASK = "***"


class BrokerEngineConfig(EngineConfig):
    """What the kit reads from every broker engine's ``config`` map.

    - ``connectTimeout`` (10s): how long ``start()`` waits for the broker.
    - ``requireAtStart`` (false): if the broker cannot be reached at start, fail ``start()``
      (and so ``app.start()``) instead of starting ``down`` and reconnecting.
    - ``publishTimeout`` (5s): how long a publish or a subscribe waits while the broker is
      unreachable before it raises ``EngineUnavailableError``.
    - ``maxMessageSize`` (1 MiB): the largest encoded envelope a publish may send.
    - ``batchSize`` (500): publishes sent to the broker in one batch.
    - ``reconnectMinDelay`` / ``reconnectMaxDelay`` (50ms / 2s): the reconnection backoff.

    An engine whose reading is durable (acknowledged after handling) returns True from
    :meth:`durable_reading`; its delivery mode then defaults to ``block`` unless the user set
    ``deliveryMode`` (at the top of the section or in the engine's own ``config``).
    """

    connect_timeout: PositiveDuration = 10.0
    require_at_start: bool = False
    publish_timeout: PositiveDuration = 5.0
    max_message_size: PositiveInt = MIB
    batch_size: PositiveInt = 500
    reconnect_min_delay: PositiveDuration = 0.05
    reconnect_max_delay: PositiveDuration = 2.0

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


def _is_secret_parameter(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def url_secrets(url: str) -> list[str]:
    """The secret parts of ``url``: the password of its userinfo, secret query values."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    found = [password] if password else []
    found.extend(v for k, v in parse_qsl(parts.query) if v and _is_secret_parameter(k))
    return found


def mask_url(url: str) -> str:
    """``url`` without its secrets (userinfo password, secret query parameters), for
    messages, reprs and observer events."""
    try:
        parts = urlsplit(url)
        password = parts.password
        port = parts.port
    except ValueError:
        return MASK  # not a url we can take apart: show nothing of it
    if password is not None:
        host = parts.hostname or ""
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        if port is not None:
            host = f"{host}:{port}"
        parts = parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}")
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(_is_secret_parameter(k) for k, _ in pairs):
            masked = [(k, MASK if _is_secret_parameter(k) else v) for k, v in pairs]
            parts = parts._replace(query=urlencode(masked, safe="*"))
    return urlunsplit(parts)


class Masker:
    """Takes known secret values out of any text (error messages of a client library may
    quote what they were given)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so that a secret containing another is masked whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def error(self, error: BaseException | None) -> str | None:
        """``Type: message`` of ``error``, masked; None for no error."""
        if error is None:
            return None
        return self(f"{type(error).__name__}: {error}")


def repr_args_masked(
    args: Iterable[tuple[str | None, Any]], url_fields: Iterable[str]
) -> Iterable[tuple[str | None, Any]]:
    """A config's ``__repr_args__`` with its url fields masked."""
    urls = set(url_fields)
    for name, value in args:
        if name in urls and isinstance(value, str):
            value = mask_url(value)
        yield name, value
