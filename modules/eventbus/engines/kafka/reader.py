"""The engine's one KafkaConsumer, on a thread of its own, and what it reads.

Two ways of reading, chosen by ``groupId``:

- **No group** (default): the consumer assigns itself every partition of the topics its
  subscriptions match (no consumer group: nothing to join, a subscription is live at once),
  so every process gets every event. A partition found at subscribe time starts where the
  topic was at that moment; one that appears later (a topic created afterwards, found within
  ``metadataMaxAge`` or at once when this engine publishes to it) starts at its oldest event.
  Nothing is committed: a process that starts again starts from "now".
- **A group** (``groupId``): the consumer subscribes to the list of topics the subscriptions
  match (a pattern's topics are found like those of a reader without a group, every
  ``metadataMaxAge`` and at once when this engine creates one); the group shares their
  partitions among its processes. Offsets are committed after handling (the contiguous
  settled run per partition, ``WatermarkAcks``). A partition without a committed offset
  starts where it was when the subscription was made (``autoOffsetReset: latest``), not where
  it is when the join completes, so what is published after ``subscribe()`` returned is
  delivered even while the group is still joining. The rebalance listener (kafka-python's
  ``AsyncConsumerRebalanceListener``; it runs on the client's I/O thread, where blocking calls
  such as ``commit()`` are refused) waits a little for what is in flight on a revoked
  partition, commits what settled with ``await commit_async()``, and voids the rest
  (``revoke``): it comes back to whoever gets the partition.

  A change of that topic list is made between polls and never while a join is in flight,
  and every re-join is asked for with the coordinator's ``request_rejoin()`` (see
  ``_request_rejoin``): kafka-python 3.0 loses the assignment of a re-join it starts itself
  unless the join ends within a single poll, and a join takes about half the session
  timeout. A member left rebalancing for ``3 x sessionTimeout`` (a join the client lost
  anyway) is asked to join again.

Everything that touches the consumer runs on its thread (``ThreadBridge``), between polls;
a poll returns at most ``maxInFlight`` records and the next one waits until the local
fan-out took them, so backpressure reaches the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import kafka
from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import MemberState

from ...event import Subscription
from ..broker import Outcome, Session, ThreadBridge, WatermarkAcks, bounded
from .clients import new_consumer

if TYPE_CHECKING:
    from .engine import KafkaEngine

logger = logging.getLogger("modules.eventbus.engines.kafka")

POLL_MS = 100  # one poll's wait when nothing arrives: subscription changes wait at most this
PROBE_INTERVAL = 2.0  # seconds without records before the brokers are asked if they are there
CLOSE_MS = 1000  # how long closing a consumer waits for the broker
REVOKE_SETTLE_WAIT = 2.0  # seconds a revoked partition's in-flight events get to settle
STALLED_JOINS = 3  # session timeouts a member may stay rebalancing before it re-joins

Source = tuple[str, int]  # (Kafka topic, partition): what the acknowledgement tracker counts


class Reader:
    """The consumer side of one engine."""

    def __init__(self, engine: KafkaEngine, acks: WatermarkAcks[Source, int]) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.topics = engine.names
        self.acks = acks
        self.group = engine.group
        self.bridge = ThreadBridge(f"kafka-consumer-{engine.name}")
        self.listener = _Listener(self)
        self._closing = False
        # --- touched on the consumer's thread only (and its I/O thread, while it waits) ---
        self._consumer: KafkaConsumer | None = None
        self._pattern: str | None = None  # what the consumer reads now
        self._matcher: re.Pattern[str] | None = None
        self._starts: dict[TopicPartition, int] = {}  # group: where a new partition starts
        self._pending: dict[TopicPartition, int] = {}  # group: commits not sent yet
        self._pending_lock = threading.Lock()  # the I/O thread re-queues failed commits
        self._wanted: tuple[str, ...] = ()  # group: the topics the subscriptions match
        self._subscribed: tuple[str, ...] = ()  # group: the topics the consumer subscribed to
        self._rebalancing_since: float | None = None  # group: when the join in flight began
        self._assigned: dict[TopicPartition, None] = {}  # no group: what we assigned
        self._positions: dict[TopicPartition, int] = {}  # no group: the next offset to read

    # --- on the loop ------------------------------------------------------------------

    def start(self) -> None:
        self._closing = False
        self.bridge.start()

    async def close(self, timeout: float) -> None:
        self._closing = True  # what is in flight now is not waited for at revoke
        if not self.bridge.running:
            return
        try:
            await bounded(self.bridge.call(self._close), timeout)
        except Exception as exc:
            logger.debug("kafka consumer of %s did not close cleanly: %r", self.engine.name, exc)
        await self.bridge.close(0.1)

    async def session(self, session: Session) -> None:
        """Connect, follow every subscription, then receive until the link breaks. The
        subscriptions of the first session start now; after a reconnection each partition
        goes on from where it was (or from the oldest event, if the broker lost it)."""
        if session.number > 0:
            self._replace_consumer()
        wait = self.settings.publish_timeout + 1.0
        await bounded(self.bridge.call(self._connect), wait)
        subs = list(self.engine.dispatcher.subscriptions.items())
        # A broker that lost its state (kept in memory, restarted) lost the topics too.
        await self.engine.writer.ensure_topics(
            [name for sub in subs if (name := self.topics.exact(sub)) is not None]
        )
        if session.number > 0 and self.group is None:
            await bounded(self.bridge.call(self._restore), wait)
        await self.follow(subs if session.number == 0 else ())
        session.ready()
        await self._receive()

    async def follow(self, fresh: Iterable[Subscription] = ()) -> None:
        """Read what the engine's subscriptions want now; the partitions of ``fresh``
        (subscriptions just made) start from now, not from when a group join completes."""
        pattern = self.topics.union(self.engine.dispatcher.subscriptions.items())
        fresh = list(fresh)
        exact = [name for sub in fresh if (name := self.topics.exact(sub)) is not None]
        patterns = [
            re.compile(self.topics.regex(sub))
            for sub in fresh
            if sub.topic.endswith("*") or sub.all_tenants
        ]
        if exact:
            await self.engine.writer.ensure_topics(exact)
        starts: dict[TopicPartition, int] = {}
        group = self.group
        if group is not None and self.settings.auto_offset_reset == "latest" and pattern:
            ends = await self.bridge.call(self._new_partitions, exact, patterns)
            if ends:
                starts = await self.engine.writer.start_group_at(group, ends)
        await self.bridge.call(self._follow, pattern, exact, patterns, starts)

    def _replace_consumer(self) -> None:
        """A new session after a failure gets a new consumer on a new thread: a consumer that
        lived through a broker restart was seen to fetch nothing more from Tansu, or to wait
        for metadata for good. The old one is closed on its own thread, or left behind."""
        old_bridge, old_consumer = self.bridge, self._consumer
        self._consumer = None
        self._pattern = None
        self._wanted = self._subscribed = ()
        self._rebalancing_since = None
        self.bridge = ThreadBridge(old_bridge.name)
        self.bridge.start()
        if not old_bridge.running:
            return
        if old_consumer is not None:
            old_bridge.submit(_close_quietly, old_consumer).add_done_callback(_quiet)
        self.engine.spawn(old_bridge.close(CLOSE_MS / 1000 + 0.5), "old-consumer")

    def published(self, name: str) -> None:
        """This engine just created the topic ``name``: a pattern may want it."""
        if self.bridge.running:
            self.bridge.submit(self._discover_topic, name).add_done_callback(_quiet)

    async def _receive(self) -> None:
        engine = self.engine
        inbound = engine.inbound
        acks = self.acks
        origin_of = self.topics.origin
        limit = self.settings.max_in_flight
        bridge = self.bridge
        discover_every = self.settings.metadata_max_age
        probed = discovered = time.monotonic()
        wait = self.settings.publish_timeout + 1.0  # a metadata round trip, at most
        while True:
            if acks.unsettled >= limit:  # the local fan-out is behind: let it catch up
                await self._settling(lambda: acks.unsettled < limit)
            records = await bridge.call(self._poll)
            now = time.monotonic()
            if now - discovered >= discover_every:
                await bounded(bridge.call(self._discover), wait)
                probed = discovered = now
            if not records:
                if now - probed >= PROBE_INTERVAL:
                    await bounded(bridge.call(self._probe), wait)
                    probed = discovered = now
                    if not engine.connection.is_up:
                        # A publish saw the broker gone; the consumer lived through it
                        # (kafka-python reconnected it).
                        engine.dispatcher.stats.reconnects += 1
                        engine.connection.mark_up()
                continue
            probed = now
            for record in records:
                topic = record.topic
                settle = acks.hand_out((topic, record.partition), record.offset)
                origin = origin_of(topic)
                if origin.topic and not inbound.wanted(origin.topic, origin.tenant):
                    settle(Outcome.HANDLED)  # read for a subscription that is gone
                    continue
                await inbound.receive(record.value, origin, settle)

    async def _settling(self, done: Callable[[], bool]) -> None:
        """Wait until ``done()``, checked whenever a watermark moves (and now and then)."""
        wakeup = self.acks.wakeup
        while not done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await wakeup.wait()

    async def revoke(self, sources: list[Source]) -> dict[Source, int]:
        """On the loop, for the rebalance listener: give what is in flight on ``sources`` a
        moment to settle, then take what may be committed and void the rest."""
        acks = self.acks
        wanted = set(sources)
        if not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REVOKE_SETTLE_WAIT):
                    await self._settling(lambda: not any(acks.unsettled_in(s) for s in wanted))
        ready = {s: p for s, p in acks.ready().items() if s in wanted}
        voided = sum(acks.revoke(s) for s in sources)
        if voided:
            logger.info(
                "kafka engine %s: %d events of revoked partitions were not handled in time; "
                "they will be delivered again",
                self.engine.name,
                voided,
            )
        return ready

    # --- on the consumer's thread ------------------------------------------------------

    def _connect(self) -> None:
        if self._consumer is None:
            self._consumer = new_consumer(self.settings, self.engine.name, self.group)
        self._probe()

    def _restore(self) -> None:
        """No group, after a reconnection: the new consumer goes on from where reading was.
        A partition that now ends before that position was emptied (a broker without
        persistence restarted): it is read from its start. (A position inside the new log
        cannot be told from one that survived.)"""
        consumer = self._consumer
        assert consumer is not None
        positions = dict(self._positions)
        if not positions:
            return
        # The topics as they are now (a re-created topic may have other partitions).
        partitions = _partitions(consumer, sorted({tp.topic for tp in positions}))
        self._assigned = dict.fromkeys(partitions)
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        lost = [tp for tp in partitions if positions.get(tp, math.inf) > ends.get(tp, 0)]
        for tp in partitions:
            if tp not in lost:
                consumer.seek(tp, positions[tp])
        if lost:
            logger.warning(
                "kafka engine %s: %d partitions hold less than was read from them (the broker "
                "lost data); reading them from their start",
                self.engine.name,
                len(lost),
            )
            consumer.seek_to_beginning(*lost)

    def _probe(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        topics = consumer.topics()  # a metadata round trip: raises when no broker answers
        self._discover_from(topics)

    def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close(autocommit=False, timeout_ms=CLOSE_MS)

    def _follow(
        self,
        pattern: str | None,
        exact: list[str],
        patterns: list[re.Pattern[str]],
        starts: dict[TopicPartition, int],
    ) -> None:
        consumer = self._consumer
        if consumer is None:
            return  # not connected: the next session follows everything
        self._pattern = pattern
        matcher = self._matcher = re.compile(pattern) if pattern is not None else None
        if self.group is not None:
            self._starts.update(starts)
            topics: set[str] = set()
            if matcher is not None:
                topics = {t for t in self._wanted if matcher.fullmatch(t)} | set(exact)
                topics.update(t for t in consumer.topics() if matcher.fullmatch(t))
            self._wanted = tuple(sorted(topics))  # the next poll subscribes
        elif matcher is None:
            self._assigned.clear()
            self._positions.clear()
            consumer.unsubscribe()
        else:
            self._assign(consumer, exact, patterns)

    def _keep_membership(self, consumer: KafkaConsumer) -> None:
        """Group, before a poll (what the last one returned was handed out): make the
        subscription ``_wanted``, and see that every join is carried to its end (see the
        module's docstring). A change waits while a join is in flight: the join would end with
        the old list, and kafka-python would start the next one on its own."""
        state = consumer.group_metadata().state
        now = time.monotonic()
        if state != MemberState.REBALANCING:
            self._rebalancing_since = None
        elif self._rebalancing_since is None:
            self._rebalancing_since = now
        elif now - self._rebalancing_since > STALLED_JOINS * self.settings.session_timeout:
            logger.warning(
                "kafka engine %s: the consumer has been rebalancing for %.0fs; joining the "
                "group %s again",
                self.engine.name,
                now - self._rebalancing_since,
                self.group,
            )
            self._rebalancing_since = now
            _request_rejoin(consumer)
        wanted = self._wanted
        if wanted == self._subscribed or state == MemberState.REBALANCING:
            return
        logger.debug(
            "kafka engine %s: subscribing to %d topics (was %d)",
            self.engine.name,
            len(wanted),
            len(self._subscribed),
        )
        self._subscribed = wanted
        if wanted:
            consumer.subscribe(topics=list(wanted), listener=self.listener)
            _request_rejoin(consumer)
        else:
            consumer.unsubscribe()

    def _matching(
        self, consumer: KafkaConsumer, exact: list[str], patterns: list[re.Pattern[str]]
    ) -> list[TopicPartition]:
        names = set(exact)
        if patterns:
            names.update(t for t in consumer.topics() if any(p.fullmatch(t) for p in patterns))
        return [
            TopicPartition(name, partition)
            for name in sorted(names)
            for partition in sorted(consumer.partitions_for_topic(name))
        ]

    def _assign(
        self, consumer: KafkaConsumer, exact: list[str], patterns: list[re.Pattern[str]]
    ) -> None:
        matcher = self._matcher
        assert matcher is not None
        keep = {tp: None for tp in self._assigned if matcher.fullmatch(tp.topic)}
        new = [tp for tp in self._matching(consumer, exact, patterns) if tp not in keep]
        earliest = self.settings.auto_offset_reset == "earliest"
        starts = consumer.beginning_offsets(new) if earliest else consumer.end_offsets(new)
        keep.update(dict.fromkeys(new))
        self._assigned = keep
        self._positions = {tp: self._positions[tp] for tp in keep if tp in self._positions}
        consumer.assign(list(keep))
        for tp in new:
            consumer.seek(tp, starts[tp])
            self._positions[tp] = starts[tp]

    def _discover(self) -> None:
        consumer = self._consumer
        if consumer is not None and self._matcher is not None:
            self._discover_from(consumer.topics())

    def _discover_topic(self, name: str) -> None:
        self._discover_from({name})

    def _discover_from(self, topics: set[str]) -> None:
        """Read the topics that appeared since the subscriptions were made, from their oldest
        event (all of it was published after the subscription)."""
        consumer = self._consumer
        matcher = self._matcher
        if consumer is None or matcher is None:
            return
        if self.group is not None:
            wanted = {t for t in topics if matcher.fullmatch(t)}
            if not wanted <= set(self._wanted):
                self._wanted = tuple(sorted(wanted | set(self._wanted)))
            return
        known = {tp.topic for tp in self._assigned}
        found = [t for t in topics if t not in known and matcher.fullmatch(t)]
        if not found:
            return
        new = [TopicPartition(t, p) for t in found for p in consumer.partitions_for_topic(t)]
        self._assigned.update(dict.fromkeys(new))
        consumer.assign(list(self._assigned))
        consumer.seek_to_beginning(*new)
        for tp, offset in consumer.beginning_offsets(new).items():
            self._positions[tp] = offset

    def _new_partitions(
        self, exact: list[str], patterns: list[re.Pattern[str]]
    ) -> dict[TopicPartition, int]:
        """Group: the end offsets of the partitions new subscriptions read that the consumer
        does not read yet (where they start for a group that has no offsets for them)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        assigned = consumer.assignment()
        new = [
            tp
            for tp in self._matching(consumer, exact, patterns)
            if tp not in assigned and tp not in self._starts
        ]
        return dict(consumer.end_offsets(new)) if new else {}

    def _poll(self) -> list[Any]:
        consumer = self._consumer
        if consumer is None:
            raise KafkaError("the consumer is closed")
        if self.group is not None:
            self._keep_membership(consumer)
        if self._pattern is None:
            time.sleep(POLL_MS / 1000)
            return []
        batches = consumer.poll(timeout_ms=POLL_MS)
        if self._pending:
            self._send_pending()
        if not batches:
            return []
        if self.group is None and consumer is self._consumer:
            positions = self._positions
            for tp, records in batches.items():
                positions[tp] = records[-1].offset + 1
        if len(batches) == 1:
            return next(iter(batches.values()))
        return [record for records in batches.values() for record in records]

    def commit(self, offsets: dict[Source, int]) -> None:
        """Group: commit ``offsets`` (the last settled offset per partition). Commits wait
        while the group rebalances (kafka-python refuses them then, and one refused in the
        middle of a join was seen to stall the join); the revoke commits what settled."""
        if self._consumer is None or self.group is None:
            return
        with self._pending_lock:
            for (topic, partition), offset in offsets.items():
                self._pending[TopicPartition(topic, partition)] = offset + 1
        self._send_pending()

    def _send_pending(self) -> None:
        consumer = self._consumer
        if consumer is None or not self._pending:
            return
        if consumer.group_metadata().state != MemberState.STABLE:
            return
        assigned = consumer.assignment()
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        request = {
            tp: OffsetAndMetadata(offset, "", -1)
            for tp, offset in pending.items()
            if tp in assigned
        }
        if request:
            consumer.commit_async(request, callback=self._committed)

    def _committed(self, offsets: dict[TopicPartition, Any], response: Any) -> None:
        """On kafka-python's I/O thread: a commit that failed is tried again (unless its
        partition went elsewhere meanwhile, when the revoke committed what it could)."""
        if isinstance(response, Exception):
            with self._pending_lock:
                for tp, meta in offsets.items():
                    if meta.offset > self._pending.get(tp, -1):
                        self._pending[tp] = meta.offset

    def take_pending(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The commits still waiting for ``partitions`` (for the revoke to send)."""
        with self._pending_lock:
            return {tp: self._pending.pop(tp) for tp in partitions if tp in self._pending}


class _Listener(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Runs on kafka-python's I/O thread, while the consumer's thread waits in ``poll``."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    async def on_partitions_revoked(self, revoked: Any) -> None:
        reader = self.reader
        consumer = reader._consumer
        if not revoked or consumer is None:
            return
        sources = [(tp.topic, tp.partition) for tp in revoked]
        try:
            ready = reader.bridge.call_in_loop(
                reader.revoke, sources, timeout=REVOKE_SETTLE_WAIT + 1.0
            )
        except Exception as exc:  # the loop is gone or busy: what was handled comes back
            logger.debug("kafka engine %s: revoke failed: %r", reader.engine.name, exc)
            return
        commits = reader.take_pending(revoked)
        for (topic, partition), offset in ready.items():
            tp = TopicPartition(topic, partition)
            commits[tp] = max(commits.get(tp, -1), offset + 1)
        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in commits.items()}
        if offsets:
            try:
                await consumer.commit_async(offsets)
            except Exception as exc:
                logger.debug(
                    "kafka engine %s: commit at revoke failed: %r", reader.engine.name, exc
                )

    async def on_partitions_lost(self, lost: Any) -> None:
        reader = self.reader
        sources = [(tp.topic, tp.partition) for tp in lost]
        try:
            reader.bridge.call_in_loop(_revoke_all, reader.acks, sources, timeout=1.0)
        except Exception as exc:
            logger.debug("kafka engine %s: revoke failed: %r", reader.engine.name, exc)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        reader = self.reader
        consumer = reader._consumer
        if consumer is None:
            return
        # Partitions the group had no offsets for when they were subscribed to, and whose
        # start could not be stored for the group (it had members then): from here.
        for tp in assigned:
            start = reader._starts.pop(tp, None)
            if start is not None:
                consumer.seek(tp, start)


def _request_rejoin(consumer: KafkaConsumer) -> None:
    """Make the consumer's next poll join its group again and carry that join to its end.

    kafka-python 3.0.12 has no public call for this. A join it starts on its own (a changed
    subscription, new partitions seen by the group's leader) is awaited only while its
    reason to re-join holds, and that ends once the JoinGroup request is built: unless the
    whole join ends within one ``poll``, its assignment is never applied and the member
    stops heart-beating. A join asked for with the coordinator's ``request_rejoin()`` is
    awaited, poll after poll, until it ended. (Leaving the group and joining as a new member
    would do the same through public calls, but Tansu was seen to keep a departed member as
    the leader of the next generation, leaving the others waiting for it.)"""
    coordinator = getattr(consumer, "_coordinator", None)
    request_rejoin = getattr(coordinator, "request_rejoin", None)
    if request_rejoin is None:
        raise RuntimeError(
            f"this kafka-python ({kafka.__version__}) has no coordinator.request_rejoin(); "
            "the kafka engine is made for the version its package pins"
        )
    request_rejoin()


def _partitions(consumer: KafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    return [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t))]


def _close_quietly(consumer: KafkaConsumer) -> None:
    consumer.close(autocommit=False, timeout_ms=CLOSE_MS)


def _quiet(future: asyncio.Future[Any]) -> None:
    """A background call on the consumer's thread failed: the next discovery retries."""
    if not future.cancelled() and future.exception() is not None:
        logger.debug("kafka consumer call failed: %r", future.exception())


def _revoke_all(acks: WatermarkAcks[Source, int], sources: list[Source]) -> None:
    for source in sources:
        acks.revoke(source)
