"""KinesisEngine: one stream, publishing batched into PutRecords, one reader per shard."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Sequence
from typing import ClassVar, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from ...config import EngineConfig
from ...event import Event, Subscription
from ..base import Capabilities
from ..broker import BrokerEngine, Outgoing, Session, ThreadBridge, WatermarkAcks, cancel
from .checkpoints import SHARD_END, CheckpointStore, RedisCheckpointStore, owner_id
from .client import (
    KinesisLinkError,
    StreamCalls,
    as_link_error,
    error_code,
    make_client,
)
from .config import KinesisEngineConfig
from .publishing import partition_key, put_records
from .shards import ShardState, plan, read_shard

logger = logging.getLogger("modules.eventbus.engines.kinesis")

T = TypeVar("T")

ACTIVE_POLL = 0.1  # seconds between two looks at a stream that is not ACTIVE yet
SETTLE_POLL = 0.02  # seconds between two looks at a finished shard's last settlements
CLOSE_WAIT = 0.5  # seconds close() waits for a thread's current call


class KinesisEngine(BrokerEngine):
    """Events over one Kinesis stream (see the package docstring)."""

    kind: ClassVar[str] = "kinesis"
    config_model: ClassVar[type[EngineConfig]] = KinesisEngineConfig
    link_errors: ClassVar[tuple[type[BaseException], ...]] = (OSError, BotoCoreError)

    def __init__(self, name: str, config: EngineConfig) -> None:
        if not isinstance(config, KinesisEngineConfig):
            config = KinesisEngineConfig.model_validate(config.model_dump())
        super().__init__(name, config, address=config.address)
        self.settings: KinesisEngineConfig = config
        self.owner = owner_id()
        self.store: CheckpointStore | None = None
        if config.checkpoint_store == "redis":
            self.store = RedisCheckpointStore(
                config.checkpoint_redis_url,
                config.checkpoint_key_prefix,
                config.stream_name,
                config.app_name,
                self.owner,
                config.lease_duration,
            )
        elif config.checkpoint_store == "memory":
            where = config.endpoint_url or config.region
            self.store = CheckpointStore(where, config.stream_name, config.app_name)
        self.capabilities = Capabilities(
            patterns=True,
            ordering=True,  # per partition key (by default the topic): one shard keeps order
            durability=isinstance(self.store, RedisCheckpointStore),
            cross_process=True,
        )
        # With a store, what settled is checkpointed: a watermark per shard.
        self.watermarks: WatermarkAcks[str, int] | None = None
        if self.store is not None:
            self.watermarks = WatermarkAcks()
            self.acks = self.watermarks
        self.calls: StreamCalls | None = None
        self._control = ThreadBridge(f"kinesis:{name}:control")
        self.sender = ThreadBridge(f"kinesis:{name}:publish")
        self.shards: dict[str, ShardState] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._reading = False  # readers run from the first subscribe until stop
        self._initial: set[str] = set()  # the shards listed when reading began
        self._reading_lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._checkpoint_lock = asyncio.Lock()
        self._written: dict[str, int] = {}  # the last checkpoint written, per shard
        self._last_write = -math.inf
        self._flushing = False
        self._retiring: set[asyncio.Task[bool]] = set()  # threads of ended readers, closing

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        self._control.start()
        self.sender.start()
        if self.calls is None:  # building a client loads botocore's models: off the loop
            client = await self._control.call(make_client, self.settings, pool_size=50)
            self.calls = StreamCalls(client, self.settings.stream_name)

    async def close(self) -> None:
        try:
            if self.store is not None:
                await self._save_positions()
                await self.store.release(list(self.shards))
                await self.store.close()
            if self._retiring:
                await asyncio.wait(self._retiring)
        finally:
            for task in list(self._retiring):
                task.cancel()
            await self._control.close(CLOSE_WAIT)
            await self.sender.close(CLOSE_WAIT)

    def retire(self, bridge: ThreadBridge) -> None:
        """Close the thread of a reader that ended, once its current call returned (at most
        ``requestTimeout`` later); ``close()`` waits for it, within the bounds of stop."""
        task = asyncio.get_running_loop().create_task(
            bridge.close(self.settings.request_timeout + CLOSE_WAIT)
        )
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def stop(self, timeout: float) -> None:
        self._flushing = True  # checkpoints go out at once now
        try:
            await super().stop(timeout)
        finally:
            self._flushing = False
            self._reading = False
            self._initial.clear()
            self.shards.clear()
            self._written.clear()

    def wake(self) -> None:
        """Something for the session to look at: a reader ended."""
        self._wakeup.set()

    # --- the session: the stream, the readers, discovery and leases ----------------------

    async def session(self, session: Session) -> None:
        await self._ensure_stream()
        if self.store is not None:
            await self._store(self.store.open())
        try:
            async with self._reading_lock:
                if self._reading or len(self.dispatcher.subscriptions):
                    await self._read_shards()
            session.ready()
            await self._supervise()
        finally:
            readers = list(self._readers.values())
            self._readers.clear()
            await asyncio.gather(*(cancel(task, within=1.0) for task in readers))

    async def broker_subscribe(self, sub: Subscription) -> None:
        """The first subscribe positions a reader on every shard before it returns."""
        if self._reading:
            return
        async with self._reading_lock:
            if not self._reading:
                await self._read_shards()

    async def _ensure_stream(self) -> None:
        """The stream exists and is ACTIVE (or UPDATING), within ``streamActiveTimeout``:
        created only when Kinesis says it does not exist; any other error is the link's."""
        calls = self.calls
        assert calls is not None
        settings = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.stream_active_timeout
        try:
            while True:
                status = await self._control.call(calls.status)
                if status in ("ACTIVE", "UPDATING"):
                    return
                if status is None:
                    if not settings.create_stream:
                        raise KinesisLinkError(
                            f"stream {calls.stream!r} does not exist and createStream is false"
                        )
                    await self._control.call(calls.create, settings.shard_count)
                if loop.time() >= deadline:
                    raise KinesisLinkError(
                        f"stream {calls.stream!r} is {status or 'missing'}, not ACTIVE, after "
                        f"streamActiveTimeout ({settings.stream_active_timeout}s)"
                    )
                await asyncio.sleep(ACTIVE_POLL)
        except ClientError as exc:
            error = as_link_error(exc)
            if error is exc:  # an answer, but not the one needed: the engine cannot work
                error = KinesisLinkError(f"{error_code(exc)}: {exc}")
            raise error from exc

    async def _read_shards(self) -> None:
        """Start a reader on every shard that should be read now and has none; each gets its
        iterator before this returns (so the first subscribe is live when it returns)."""
        calls = self.calls
        assert calls is not None
        try:
            listing = await self._control.call(calls.shards)
        except ClientError as exc:
            raise as_link_error(exc) from exc
        if not self._reading:
            self._reading = True
            self._initial = {s.id for s in listing}
        unknown = [s.id for s in listing if s.id not in self.shards]
        checkpoints: dict[str, str] = {}
        if self.store is not None and unknown:
            checkpoints = await self._store(self.store.load(unknown))
        to_read, done = plan(
            listing, self.shards, checkpoints, self.settings.iterator_type, self._initial
        )
        for state in done:
            self.shards[state.id] = state
        if self.store is not None and self.store.shared:
            to_read = await self._lease(to_read)
        for state in to_read:
            try:
                state.iterator = await self._control.call(state.fresh_iterator, calls)
            except ClientError as exc:
                raise as_link_error(exc) from exc
            self.shards[state.id] = state
        if self.store is not None and self.store.shared:
            # A shard taken over later without a checkpoint may have been read by a process
            # that died before checkpointing: read it from its start (duplicates, not loss).
            self._initial = set()
        for state in self.shards.values():
            if not state.finished and state.id not in self._readers:
                self._readers[state.id] = asyncio.get_running_loop().create_task(
                    read_shard(self, state), name=f"{self.name}:{state.id}"
                )

    async def _supervise(self) -> None:
        """Until cancelled: raise what a reader failed with, rediscover the shards every
        ``shardDiscoveryInterval`` and whenever a shard was read to its end, keep leases."""
        settings = self.settings
        shared = self.store is not None and self.store.shared
        interval = settings.shard_discovery_interval
        if shared:
            interval = min(interval, settings.lease_duration / 3)
        loop = asyncio.get_running_loop()
        next_discovery = loop.time() + settings.shard_discovery_interval
        while True:
            try:
                async with asyncio.timeout(interval):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
            self._wakeup.clear()
            ended = False
            for shard, task in list(self._readers.items()):
                if not task.done():
                    continue
                del self._readers[shard]
                ended = True
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error
            if shared:
                await self._keep_leases()
            if self._reading and (ended or shared or loop.time() >= next_discovery):
                next_discovery = loop.time() + settings.shard_discovery_interval
                async with self._reading_lock:
                    await self._read_shards()

    async def shard_read_to_end(self, state: ShardState) -> None:
        """A closed shard was read to its end: with a store, once everything from it settled,
        its checkpoint becomes SHARD_END (its children may then be read, by any process)."""
        watermarks = self.watermarks
        if self.store is not None and watermarks is not None:
            handed = state.handed
            # The tracker tells no one when a source settled; a shard ends rarely.
            while handed is not None and watermarks.position(state.id) != handed:  # noqa: ASYNC110
                await asyncio.sleep(SETTLE_POLL)
            async with self._checkpoint_lock:
                await self._store(self.store.save({state.id: SHARD_END}))
                self._written.pop(state.id, None)
            watermarks.revoke(state.id)
            state.finished = True
            await self._store(self.store.release([state.id]))
        state.finished = True

    # --- checkpoints ----------------------------------------------------------------------

    async def send_acks(self, batch: dict[str, int]) -> None:
        """Checkpoint the watermarks of ``batch``, at most every ``checkpointInterval``
        (at once while stopping)."""
        store = self.store
        assert store is not None
        loop = asyncio.get_running_loop()
        wait = self._last_write + self.settings.checkpoint_interval - loop.time()
        if wait > 0 and not self._flushing:
            await asyncio.sleep(wait)
        async with self._checkpoint_lock:
            positions: dict[str, str] = {}
            for shard, seq in batch.items():
                state = self.shards.get(shard)
                written = self._written.get(shard)
                if state is None or state.finished or (written is not None and seq <= written):
                    continue
                positions[shard] = str(seq)
            refused = await self._store(store.save(positions)) if positions else set()
            self._last_write = loop.time()
            for shard, position in positions.items():
                if shard not in refused:
                    self._written[shard] = int(position)
        for shard in refused:
            await self._lose(shard)

    async def _store(self, work: Awaitable[T]) -> T:
        """``await work`` on the checkpoint store; its failures are the link's."""
        try:
            return await work
        except (KinesisLinkError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise KinesisLinkError(f"checkpoint store: {type(exc).__name__}: {exc}") from exc

    # --- leases (a shared checkpoint store) --------------------------------------------

    def _held(self) -> list[str]:
        return [s for s, state in self.shards.items() if not state.finished]

    async def _lease(self, candidates: list[ShardState]) -> list[ShardState]:
        """The candidates this process is to read: its share of the readable shards (those
        it holds and the candidates) among the processes alive, each under a lease; shards
        held beyond the share are given back. Checkpoints are read again once leased."""
        store = self.store
        assert store is not None
        workers = await self._store(store.heartbeat())
        held = self._held()
        share = math.ceil((len(held) + len(candidates)) / workers)
        for shard in sorted(held)[share:]:
            await self._give_back(shard)
        room = share - len(self._held())
        got: list[ShardState] = []
        for state in candidates:
            if len(got) >= room:
                break
            if await self._store(store.acquire(state.id)):
                got.append(state)
        if got:
            fresh = await self._store(store.load([s.id for s in got]))
            for state in got:
                checkpoint = fresh.get(state.id)
                if checkpoint is not None:
                    state.resume(checkpoint)
                if state.finished:  # by another process, meanwhile
                    self.shards[state.id] = state
                    await self._store(store.release([state.id]))
        return [state for state in got if not state.finished]

    async def _keep_leases(self) -> None:
        """Renew the leases held; stop reading the shards whose lease was lost; note where
        the readers of shards with nothing read yet are."""
        store = self.store
        assert store is not None
        for shard in await self._store(store.renew(self._held())):
            await self._lose(shard)
        await self._save_positions()

    async def _save_positions(self, shards: list[str] | None = None) -> None:
        """``iterator:`` checkpoints of the shards (all held) from which nothing was read."""
        store = self.store
        assert store is not None
        positions: dict[str, str] = {}
        for shard in self._held() if shards is None else shards:
            state = self.shards.get(shard)
            position = state.position if state is not None else None
            if position is not None:
                positions[shard] = position
        if positions:
            async with self._checkpoint_lock:
                refused = await self._store(store.save(positions))
            for shard in refused:
                await self._lose(shard)

    async def _lose(self, shard: str) -> None:
        """Another process holds ``shard`` now: stop reading it; what was not settled is
        void (that process reads it again after its checkpoint)."""
        state = self.shards.pop(shard, None)
        task = self._readers.pop(shard, None)
        await cancel(task, within=1.0)
        if self.watermarks is not None:
            self.watermarks.revoke(shard)
        self._written.pop(shard, None)
        if state is not None:
            logger.info("kinesis engine %s lost the lease of shard %s", self.name, shard)

    async def _give_back(self, shard: str) -> None:
        """Stop reading ``shard``, checkpoint what settled, and release its lease."""
        store = self.store
        assert store is not None
        task = self._readers.pop(shard, None)
        await cancel(task, within=1.0)
        if self.watermarks is not None:
            settled = self.watermarks.position(shard)
            if settled is not None:
                async with self._checkpoint_lock:
                    written = self._written.get(shard)
                    if written is None or settled > written:
                        await self._store(store.save({shard: str(settled)}))
            self.watermarks.revoke(shard)
        await self._save_positions([shard])
        self.shards.pop(shard, None)
        self._written.pop(shard, None)
        await self._store(store.release([shard]))

    # --- publishing ---------------------------------------------------------------------

    def destination(self, event: Event) -> str:
        """The partition key: the event's, or its topic."""
        return partition_key(event)

    async def send_batch(self, batch: Sequence[Outgoing]) -> None:
        await put_records(self, batch)
