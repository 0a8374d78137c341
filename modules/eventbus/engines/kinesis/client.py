"""The boto3 client of one engine, how its errors read, and the calls made with it.

boto3 is blocking: every call runs on a :class:`ThreadBridge` of the kit (one thread per
bridge). botocore's own retries are off: the kit's backoff is the one retry policy, and an
unreachable endpoint fails within ``connectTimeout`` instead of after minutes of retries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .config import KinesisEngineConfig

# Error codes that say "not now" rather than "no": retried with backoff.
THROTTLED = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "ThrottlingException",
        "KMSThrottlingException",
    }
)
SERVER_FAILURES = frozenset({"InternalFailure", "ServiceUnavailable", "InternalServerError"})


class KinesisLinkError(ConnectionError):
    """Kinesis did not answer, or answered with a server failure: the link is down for now."""


def make_client(settings: KinesisEngineConfig, *, pool_size: int = 10) -> Any:
    """A Kinesis client signed with the configured keys (or boto3's default chain)."""
    session = boto3.session.Session(region_name=settings.region, **settings.credentials())
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=min(settings.connect_timeout, settings.request_timeout),
        read_timeout=settings.request_timeout,
        max_pool_connections=pool_size,
        user_agent_extra="modular-eventbus",
    )
    return session.client("kinesis", endpoint_url=settings.endpoint_url, config=config)


def error_code(error: BaseException) -> str:
    """The AWS error code of a ClientError ("" for anything else)."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def http_status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def as_link_error(error: BaseException) -> BaseException:
    """``error`` as the engine should treat it: a KinesisLinkError when the link failed (no
    answer, a 5xx), else ``error`` itself (bad input, a missing stream: an answer)."""
    if isinstance(error, KinesisLinkError):
        return error
    if isinstance(error, BotoCoreError | OSError):
        return KinesisLinkError(f"{type(error).__name__}: {error}")
    if isinstance(error, ClientError):
        code = error_code(error)
        if code in SERVER_FAILURES or http_status(error) >= 500:
            return KinesisLinkError(f"{code or http_status(error)}: {error}")
    return error


@dataclasses.dataclass(frozen=True, slots=True)
class Shard:
    """A shard as ListShards describes it. Sequence numbers are ints (never compared as
    text: they are decimal strings of up to 128 bits)."""

    id: str
    parents: tuple[str, ...]
    closed: bool

    @classmethod
    def from_listing(cls, item: Mapping[str, Any]) -> Shard:
        parents = tuple(
            p for p in (item.get("ParentShardId"), item.get("AdjacentParentShardId")) if p
        )
        ending = item.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
        return cls(id=str(item["ShardId"]), parents=parents, closed=ending is not None)


class StreamCalls:
    """The stream-level calls of one engine (blocking: run them on a bridge)."""

    def __init__(self, client: Any, stream: str) -> None:
        self.client = client
        self.stream = stream

    def status(self) -> str | None:
        """The stream's status; None when it does not exist."""
        try:
            summary = self.client.describe_stream_summary(StreamName=self.stream)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise
        return str(summary["StreamDescriptionSummary"]["StreamStatus"])

    def create(self, shard_count: int) -> None:
        try:
            self.client.create_stream(StreamName=self.stream, ShardCount=shard_count)
        except ClientError as exc:
            if error_code(exc) != "ResourceInUseException":  # created meanwhile by another
                raise

    def shards(self) -> list[Shard]:
        """Every shard of the stream, paging ListShards by hand with NextToken alone (a
        request may not name the stream and a token together)."""
        return list(self._pages())

    def _pages(self) -> Iterator[Shard]:
        reply = self.client.list_shards(StreamName=self.stream)
        while True:
            for item in reply.get("Shards", []):
                yield Shard.from_listing(item)
            token = reply.get("NextToken")
            if not token:
                return
            reply = self.client.list_shards(NextToken=token)

    def iterator(self, shard: str, kind: str, after: int | None = None) -> str:
        kwargs: dict[str, Any] = {
            "StreamName": self.stream,
            "ShardId": shard,
            "ShardIteratorType": kind,
        }
        if after is not None:
            kwargs["StartingSequenceNumber"] = str(after)
        return str(self.client.get_shard_iterator(**kwargs)["ShardIterator"])

    def get_records(self, iterator: str, limit: int) -> dict[str, Any]:
        reply: dict[str, Any] = self.client.get_records(ShardIterator=iterator, Limit=limit)
        return reply

    def put_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        reply = self.client.put_records(StreamName=self.stream, Records=records)
        results: list[dict[str, Any]] = reply["Records"]
        return results
