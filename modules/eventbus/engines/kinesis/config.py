"""The ``config`` map of a ``type: kinesis`` engine."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from modular import FieldError, mask_url

from ...config import whole_number
from ..broker import MIB, BrokerEngineConfig, PositiveDuration

# Kinesis' own rules for stream names and region names.
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+-\d+$|^local$")
_APP_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")

MAX_RECORDS_PER_GET = 10_000  # the GetRecords limit
MAX_RECORD_SIZE = MIB  # data + partition key of one record
MAX_BATCH_RECORDS = 500  # the PutRecords limits
MAX_BATCH_BYTES = 5 * MIB


class KinesisEngineConfig(BrokerEngineConfig):
    """The ``config`` map of a ``type: kinesis`` engine (camelCase or snake_case keys).

    Credentials: ``accessKeyId`` + ``secretAccessKey`` (+ ``sessionToken``) when given,
    otherwise boto3's default chain (environment, shared files, instance roles). The legacy
    ``externalBrokerURL``/``User``/``Password`` stand for ``endpointUrl``/``accessKeyId``/
    ``secretAccessKey`` when those are not given. All three credentials are secrets: never in
    a repr or a message.

    Reading: ``iteratorType`` is where a reader of a shard without a checkpoint starts;
    with ``checkpointStore`` (``memory`` or ``redis``) a reader resumes after the last
    record handled by the application ``appName``, and with ``redis`` the processes of one
    ``appName`` share the shards through leases of ``leaseDuration``. Reading with a
    checkpoint store is durable: ``deliveryMode`` then defaults to ``block``.

    ``batchSize`` is at most 500 and ``maxMessageSize`` at most 1 MiB (the PutRecords
    limits; a record's partition key counts towards its size).
    """

    legacy_broker_keys: ClassVar[tuple[str, str, str] | None] = (
        "endpoint_url",
        "access_key_id",
        "secret_access_key",
    )

    region: str = "us-east-1"
    stream_name: str = "eventbus"
    shard_count: Annotated[int, BeforeValidator(whole_number), Field(gt=0, le=10_000)] = 1
    endpoint_url: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    create_stream: bool = True
    stream_active_timeout: PositiveDuration = 60.0  # bounded wait for a stream to be ACTIVE
    request_timeout: PositiveDuration = 10.0  # one HTTP request to Kinesis
    poll_interval: PositiveDuration = 1.0  # pause of a reader after an empty GetRecords
    iterator_type: Literal["LATEST", "TRIM_HORIZON"] = "LATEST"
    max_records_per_get: Annotated[
        int, BeforeValidator(whole_number), Field(gt=0, le=MAX_RECORDS_PER_GET)
    ] = 1000
    shard_discovery_interval: PositiveDuration = 10.0
    app_name: str = "eventbus"
    checkpoint_store: Literal["memory", "redis"] | None = None
    checkpoint_redis_url: str = "redis://127.0.0.1:6379/0"
    checkpoint_key_prefix: str = "eventbus:kinesis:"
    checkpoint_interval: PositiveDuration = 1.0
    lease_duration: PositiveDuration = 10.0

    @field_validator("stream_name")
    @classmethod
    def _stream_name(cls, name: str) -> str:
        if not _STREAM_NAME.match(name):
            raise ValueError("streamName must be 1-128 letters, digits, '_', '.' or '-'")
        return name

    @field_validator("app_name")
    @classmethod
    def _app_name(cls, name: str) -> str:
        if not _APP_NAME.match(name):
            raise ValueError("appName must be 1-100 letters, digits, '_', '.' or '-'")
        return name

    @field_validator("region")
    @classmethod
    def _region(cls, region: str) -> str:
        if not _REGION.match(region):
            raise ValueError("region must look like 'us-east-1'")
        return region

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, url: str | None) -> str | None:
        if not url:
            return None
        url = url.strip()
        # FieldError: shown as written, never followed by the value (it may hold a password).
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FieldError(
                (), f"endpointUrl must be an http:// or https:// url, got {mask_url(url)!r}"
            )
        return url

    @field_validator("checkpoint_redis_url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise FieldError(
                (),
                "checkpointRedisUrl must start with redis://, rediss:// or unix://, "
                f"got {mask_url(url)!r}",
            )
        return url

    @model_validator(mode="after")
    def _consistent(self) -> KinesisEngineConfig:
        if self.batch_size > MAX_BATCH_RECORDS:
            raise FieldError(("batch_size",), f"at most {MAX_BATCH_RECORDS} (the PutRecords limit)")
        if self.max_message_size > MAX_RECORD_SIZE:
            raise FieldError(
                ("max_message_size",), f"at most {MAX_RECORD_SIZE} (the Kinesis record limit)"
            )
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise FieldError(
                ("secret_access_key" if self.secret_access_key is None else "access_key_id",),
                "accessKeyId and secretAccessKey are given together or not at all",
            )
        if self.session_token is not None and self.access_key_id is None:
            raise FieldError(("session_token",), "sessionToken needs accessKeyId/secretAccessKey")
        return self

    def durable_reading(self) -> bool:
        return self.checkpoint_store is not None

    def credentials(self) -> dict[str, str]:
        """The keyword arguments of ``boto3.Session`` for configured keys; empty for boto3's
        default credential chain."""
        if self.access_key_id is None or self.secret_access_key is None:
            return {}
        found = {
            "aws_access_key_id": self.access_key_id.get_secret_value(),
            "aws_secret_access_key": self.secret_access_key.get_secret_value(),
        }
        if self.session_token is not None:
            found["aws_session_token"] = self.session_token.get_secret_value()
        return found

    @property
    def address(self) -> str:
        """Where the stream is, for messages: the (masked) endpoint or the region."""
        where = mask_url(self.endpoint_url) if self.endpoint_url else f"region {self.region}"
        return f"stream {self.stream_name} at {where}"

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name in ("endpoint_url", "external_broker_url", "checkpoint_redis_url") and value:
                value = mask_url(str(value))
            yield name, value
