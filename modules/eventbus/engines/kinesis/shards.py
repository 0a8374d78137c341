"""Which shards to read and from where; the reader of one shard.

Order: a child shard (of a split or a merge) is read only once every parent that is still
listed was read to its end, so that the events of one partition key keep their order
across a resharding. Where a reader starts:

- after its checkpoint, when the application has one for the shard;
- else, for the shards listed when reading begins, ``iteratorType`` (a closed shard with
  ``LATEST``: nothing more can arrive there, so it counts as read);
- else (a shard that appeared later, a child of a parent that was being read; with leases,
  a shard taken over without a checkpoint) at its start.

A reader remembers the last sequence number it handed on: an expired iterator (after five
minutes without a read) is replaced by one after that number, and the records a
replacement reads again are skipped (sequence numbers compared as ints).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from ..broker import Origin, ThreadBridge
from .checkpoints import ITERATOR, SHARD_END
from .client import THROTTLED, Shard, StreamCalls, as_link_error, error_code

if TYPE_CHECKING:
    from .engine import KinesisEngine

logger = logging.getLogger("modules.eventbus.engines.kinesis")


class ShardState:
    """What this engine knows of one shard it reads (or read), across sessions."""

    __slots__ = ("finished", "handed", "id", "iterator", "kind", "last_seq", "parents")

    def __init__(self, shard: Shard, kind: str, last_seq: int | None = None) -> None:
        self.id = shard.id
        self.parents = shard.parents
        self.kind = kind  # iterator type when no sequence number is known yet
        self.last_seq = last_seq  # read (or checkpointed) up to here
        self.handed: int | None = None  # the last sequence number handed on in this run
        self.iterator: str | None = None
        self.finished = False  # read to its end (and with a store: checkpointed as such)

    def resume(self, checkpoint: str) -> None:
        """Start where ``checkpoint`` (the application's, for this shard) says."""
        if checkpoint == SHARD_END:
            self.finished = True
        elif checkpoint.startswith(ITERATOR):
            self.iterator = checkpoint[len(ITERATOR) :]
            self.kind = "TRIM_HORIZON"  # once that iterator expired: duplicates, not loss
        else:
            self.last_seq = int(checkpoint)

    @property
    def position(self) -> str | None:
        """An ``iterator:`` checkpoint while nothing was read from the shard (None once a
        record was: its sequence number is the checkpoint then)."""
        if self.handed is None and self.last_seq is None and self.iterator is not None:
            return f"{ITERATOR}{self.iterator}"
        return None

    def fresh_iterator(self, calls: StreamCalls) -> str:
        """Blocking: a new iterator from where this reader is. A sequence number the stream
        does not know (the server lost its data and the stream was made again) means the
        start of what the stream holds now, as a vanished consumer group does."""
        if self.last_seq is not None:
            try:
                return calls.iterator(self.id, "AFTER_SEQUENCE_NUMBER", self.last_seq)
            except ClientError as exc:
                if error_code(exc) != "InvalidArgumentException":
                    raise
                logger.warning(
                    "kinesis stream %s shard %s does not hold sequence number %s (%s); "
                    "reading the shard from its start",
                    calls.stream,
                    self.id,
                    self.last_seq,
                    exc,
                )
                self.last_seq = None
                self.kind = "TRIM_HORIZON"
        return calls.iterator(self.id, self.kind)


def plan(
    listing: Iterable[Shard],
    known: Mapping[str, ShardState],
    checkpoints: Mapping[str, str],
    iterator_type: str,
    initial: set[str],
) -> tuple[list[ShardState], list[ShardState]]:
    """The shards of ``listing`` to read now, and those found finished already (each as a
    new state); shards ``known`` and those waiting for a parent are in neither. ``initial``:
    the shards listed when reading began (``iteratorType`` applies to them)."""
    shards = sorted(listing, key=lambda s: s.id)
    listed = {s.id for s in shards}
    finished = {sid for sid, state in known.items() if state.finished}
    to_read: list[ShardState] = []
    done: list[ShardState] = []
    for shard in shards:
        if shard.id in known:
            continue
        checkpoint = checkpoints.get(shard.id)
        if checkpoint is not None:
            state = ShardState(shard, "TRIM_HORIZON")
            state.resume(checkpoint)
            if state.finished:
                finished.add(shard.id)
                done.append(state)
            else:
                to_read.append(state)
            continue
        if any(p in listed and p not in finished for p in shard.parents):
            continue  # after its parents
        if shard.id not in initial:
            to_read.append(ShardState(shard, "TRIM_HORIZON"))
        elif shard.closed and iterator_type == "LATEST":
            state = ShardState(shard, "LATEST")
            state.finished = True
            finished.add(shard.id)
            done.append(state)
        else:
            to_read.append(ShardState(shard, iterator_type))
    return to_read, done


async def read_shard(engine: KinesisEngine, state: ShardState) -> None:
    """Read one shard until its end (then return) or until cancelled; a failure of the link
    is raised (the engine's session starts over and the reader resumes where it was)."""
    calls = engine.calls
    assert calls is not None
    bridge = ThreadBridge(f"kinesis:{engine.name}:{state.id}")
    bridge.start()
    settings = engine.settings
    limit = settings.max_records_per_get
    pause = settings.poll_interval
    inbound = engine.inbound
    acks = engine.watermarks
    where = f"stream {calls.stream} shard {state.id}"
    throttled = 0
    try:
        while True:
            try:
                if state.iterator is None:
                    state.iterator = await bridge.call(state.fresh_iterator, calls)
                reply = await bridge.call(calls.get_records, state.iterator, limit)
            except ClientError as exc:
                code = error_code(exc)
                if code == "ExpiredIteratorException":
                    state.iterator = None  # a new one, after the last record read
                    continue
                if code in THROTTLED:
                    throttled += 1
                    await engine.backoff.sleep(throttled)
                    continue
                raise as_link_error(exc) from exc
            except Exception as exc:
                raise as_link_error(exc) from exc
            throttled = 0
            records = reply.get("Records", [])
            for record in records:
                seq = int(record["SequenceNumber"])
                last = state.last_seq
                if last is not None and seq <= last:
                    continue  # read again by a replaced iterator
                settle = acks.hand_out(state.id, seq) if acks is not None else None
                origin = Origin(f"{where} sequence {seq}", topic=None, tenant_known=False)
                await inbound.receive(record["Data"], origin, settle)
                state.last_seq = state.handed = seq
            state.iterator = reply.get("NextShardIterator")
            if state.iterator is None:  # a closed shard, read to its end
                await engine.shard_read_to_end(state)
                return
            if not records:
                await asyncio.sleep(pause)
    finally:
        engine.retire(bridge)
        engine.wake()
