"""Publishing: concurrent publishes, as the kit's outbox hands them over, sent in PutRecords
requests of at most ``batchSize`` records and 5 MiB. Kinesis answers each record on its own:
records answered as failed (throttled) are sent again with the kit's backoff until the
deadline of their publish, then their publisher gets ``EngineUnavailableError`` naming the
error code; the others' publishers return at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ...errors import EngineUnavailableError, EventEncodeError
from ...event import Event
from ..broker import Outgoing
from .client import THROTTLED, as_link_error, error_code
from .config import MAX_BATCH_BYTES, MAX_RECORD_SIZE

if TYPE_CHECKING:
    from .engine import KinesisEngine

MAX_PARTITION_KEY = 256  # characters, the Kinesis limit
GIVE_UP_EARLY = 0.05  # seconds before a batch's deadline, when the kit would cancel the send


def partition_key(event: Event) -> str:
    """The record's partition key: the event's ``partition_key``, or its topic."""
    key = event.partition_key or event.topic
    if len(key) > MAX_PARTITION_KEY:
        raise ValueError(
            f"partition key of the event for {event.topic!r} has {len(key)} characters; "
            f"Kinesis takes at most {MAX_PARTITION_KEY}"
        )
    return key


async def put_records(engine: KinesisEngine, batch: Sequence[Outgoing]) -> None:
    """Send ``batch`` in requests within the PutRecords limits; a record over the record
    limit (envelope and partition key) fails its publish, nothing sent."""
    limit = min(engine.settings.max_message_size, MAX_RECORD_SIZE)
    request: list[Outgoing] = []
    size = 0
    for item in batch:
        record_size = len(item.data) + len(str(item.destination).encode())
        if record_size > limit:
            item.fail(
                EventEncodeError(
                    f"the record for topic {item.event.topic!r} is {record_size} bytes "
                    f"(envelope and partition key), over the limit of {limit} bytes; "
                    "nothing was sent"
                )
            )
            continue
        if request and size + record_size > MAX_BATCH_BYTES:
            await _put(engine, request)
            request, size = [], 0
        request.append(item)
        size += record_size
    if request:
        await _put(engine, request)


async def _put(engine: KinesisEngine, items: list[Outgoing]) -> None:
    calls = engine.calls
    assert calls is not None
    loop = asyncio.get_running_loop()
    # The kit cancels send_batch at the earliest deadline of its batch: give up before.
    give_up = min(item.deadline for item in items) - GIVE_UP_EARLY
    pending = items
    attempts = 0
    while pending:
        attempts += 1
        records = [{"Data": i.data, "PartitionKey": i.destination} for i in pending]
        try:
            results = await engine.sender.call(calls.put_records, records)
        except ClientError as exc:
            error = as_link_error(exc)
            if error is not exc:
                raise error from exc
            if error_code(exc) not in THROTTLED:
                for item in pending:
                    item.fail(_refused(engine, item, exc, attempts))
                return
            results = [{"ErrorCode": error_code(exc), "ErrorMessage": str(exc)}] * len(pending)
        failed: list[tuple[Outgoing, dict[str, Any]]] = []
        for item, result in zip(pending, results, strict=True):
            if "ErrorCode" in result:
                failed.append((item, result))
            else:
                item.succeed()
        if not failed:
            return
        pause = engine.backoff.delay(attempts)
        if loop.time() + pause >= give_up:
            for item, result in failed:
                item.fail(_refused(engine, item, result, attempts))
            return
        await asyncio.sleep(pause)
        pending = [item for item, _ in failed if not item.settled]


def _refused(
    engine: KinesisEngine, item: Outgoing, why: Any, attempts: int
) -> EngineUnavailableError:
    if isinstance(why, dict):
        cause = f"{why.get('ErrorCode')}: {why.get('ErrorMessage', '')}"
    else:
        cause = engine.mask.error(why) or ""
    return EngineUnavailableError(
        f"kinesis engine {engine.name!r} ({engine.connection.address}) could not publish to "
        f"{item.event.topic!r} after {attempts} attempt(s): {cause}"
    )
