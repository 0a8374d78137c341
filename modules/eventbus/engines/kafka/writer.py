"""The engine's one KafkaProducer (and the admin client that creates topics), on a thread of
their own.

A batch of publishes is one call on that thread: every record is handed to the producer,
then each acknowledgement is awaited (``acks``), so a publish returns once the broker has
it. A refusal of one record (too large, an invalid topic) fails only its publisher; a link
failure fails the call, and the kit sends what is left again until each publish's
``publishTimeout``. The topics a batch goes to are created first (``partitions``,
``replicationFactor``) unless this engine knows them already; after a link failure it
forgets what it knew, since a broker that lost its state (one that keeps topics in memory
and restarted) would otherwise take records for a topic it no longer has.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kafka import KafkaAdminClient, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import NoError

from ...errors import EngineUnavailableError
from ..broker import Outgoing, ThreadBridge, bounded
from .clients import create_topics, is_link_error, new_admin, new_producer

if TYPE_CHECKING:
    from .engine import KafkaEngine

logger = logging.getLogger("modules.eventbus.engines.kafka")

# Outcome of one record on the producer's thread: None (the broker has it), or an error.
Result = BaseException | None


class Writer:
    """The producer side of one engine."""

    def __init__(self, engine: KafkaEngine) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.bridge = ThreadBridge(f"kafka-producer-{engine.name}")
        # --- touched on the producer's thread only ---
        self._producer: KafkaProducer | None = None
        self._admin: KafkaAdminClient | None = None
        self._known: set[str] = set()  # topics that exist on the broker

    def start(self) -> None:
        self.bridge.start()

    async def close(self, timeout: float) -> None:
        if not self.bridge.running:
            return
        try:
            await bounded(self.bridge.call(self._close), timeout)
        except Exception as exc:
            logger.debug("kafka producer of %s did not close cleanly: %r", self.engine.name, exc)
        await self.bridge.close(0.1)

    async def ensure_topics(self, names: list[str]) -> None:
        """Create the topics ``names`` that this engine does not know to exist."""
        new = await self.bridge.call(self._ensure, names)
        for name in new:
            self.engine.reader.published(name)

    async def start_group_at(
        self, group: str, ends: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """Make ``group`` start at ``ends`` on the partitions it has no offsets for; returns
        those it could not (the group has members now: the reader seeks there itself)."""
        return await self.bridge.call(self._start_group_at, group, ends)

    def forget_topics(self) -> None:
        """The broker may have lost its topics (it went away): check them again."""
        if self.bridge.running:
            self.bridge.submit(self._known.clear)

    async def send(self, batch: Sequence[Outgoing]) -> None:
        results, new = await self.bridge.call(
            self._send, [(item.destination, item.data, item.event.partition_key) for item in batch]
        )
        for name in new:
            self.engine.reader.published(name)
        link_error: BaseException | None = None
        for item, result in zip(batch, results, strict=True):
            if result is None:
                item.succeed()
            elif is_link_error(result):
                link_error = link_error or result
            else:
                item.fail(
                    EngineUnavailableError(
                        f"kafka refused the publish to {item.event.topic!r}: {result}"
                    )
                )
        if link_error is not None:
            raise link_error

    # --- on the producer's thread --------------------------------------------------------

    def _clients(self) -> tuple[KafkaProducer, KafkaAdminClient]:
        if self._admin is None:
            self._admin = new_admin(self.settings, self.engine.name)
        if self._producer is None:
            self._producer = new_producer(self.settings, self.engine.name)
        return self._producer, self._admin

    def _ensure(self, names: list[str]) -> list[str]:
        missing = sorted({name for name in names if name not in self._known})
        if not missing:
            return []
        _, admin = self._clients()
        try:
            create_topics(admin, missing, self.settings)
        except BaseException:
            self._known.clear()
            raise
        self._known.update(missing)
        return missing

    def _start_group_at(
        self, group: str, ends: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        _, admin = self._clients()
        committed = admin.list_group_offsets({group: list(ends)}).get(group, {})
        wanted = {
            tp: OffsetAndMetadata(offset, "", -1)
            for tp, offset in ends.items()
            if tp not in committed or committed[tp].offset < 0
        }
        if not wanted:
            return {}
        results = admin.alter_group_offsets(group, wanted)
        return {tp: ends[tp] for tp, error in results.items() if error is not NoError}

    def _send(self, records: list[tuple[str, bytes, str | None]]) -> tuple[list[Result], list[str]]:
        producer, _ = self._clients()
        new = self._ensure([name for name, _, _ in records])
        deadline = time.monotonic() + self.settings.publish_timeout
        futures: list[Any] = []
        send = producer.send
        for name, data, key in records:
            try:
                futures.append(send(name, value=data, key=None if key is None else key.encode()))
            except Exception as exc:  # refused before sending (size, metadata timeout)
                futures.append(exc)
        results: list[Result] = []
        failed = False
        for future in futures:
            if isinstance(future, BaseException):
                results.append(future)
                failed = failed or is_link_error(future)
                continue
            try:
                future.get(timeout=max(deadline - time.monotonic(), 0.0))
                results.append(None)
            except Exception as exc:
                results.append(exc)
                failed = failed or is_link_error(exc)
        if failed:
            self._known.clear()
        return results, new

    def _close(self) -> None:
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        try:
            if producer is not None:
                producer.close(timeout=0.5)
        finally:
            if admin is not None:
                admin.close()
