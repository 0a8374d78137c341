"""RedisEngine: its lifecycle, the publishing connection, and the mode that receives."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, ClassVar

from redis.exceptions import RedisError, ResponseError

from ...codec import encode
from ...config import EngineConfig
from ...errors import EngineUnavailableError
from ...event import Event, Subscription
from ..base import Capabilities, FanoutEngine
from .channels import Channels
from .config import RedisEngineConfig
from .connection import LINK_ERRORS, Connections, Link, cancel, close
from .pubsub import PubSubReceiver
from .receiving import Receiver
from .streams import StreamsReceiver, consumer_name, default_group


class _Pending:
    """One publish waiting for Redis."""

    __slots__ = ("command", "deadline", "future", "topic")

    def __init__(
        self, command: tuple[Any, ...], future: asyncio.Future[None], deadline: float, topic: str
    ) -> None:
        self.command = command
        self.future = future
        self.deadline = deadline
        self.topic = topic


class RedisEngine(FanoutEngine):
    """Events over one Redis, in pub/sub or streams mode: this side publishes, and its
    ``receiver`` (one per mode) brings what Redis delivers to the local fan-out."""

    capabilities = Capabilities(patterns=True, ordering=True, durability=False, cross_process=True)
    config_model: ClassVar[type[EngineConfig]] = RedisEngineConfig

    def __init__(self, name: str, config: EngineConfig) -> None:
        if not isinstance(config, RedisEngineConfig):
            config = RedisEngineConfig.model_validate(config.model_dump())
        super().__init__(name, config)
        self.settings = config
        self.streams = config.mode == "streams"
        self.group = config.group_name or default_group(name)
        self.durable_group = bool(config.group_name)
        self.consumer = consumer_name()
        # A per-process group is destroyed on a clean stop, so only a named group keeps what
        # is published while this process is away.
        self.capabilities = Capabilities(
            patterns=True,
            ordering=True,
            durability=self.streams and self.durable_group,
            cross_process=True,
        )
        self.connections = Connections(name, config)
        self.channels = Channels(config.channel_prefix)
        self.receiver: Receiver
        if self.streams:
            self.receiver = StreamsReceiver(
                self.connections,
                self.channels,
                self.dispatcher,
                group=self.group,
                consumer=self.consumer,
                durable=self.durable_group,
            )
        else:
            self.receiver = PubSubReceiver(self.connections, self.channels, self.dispatcher)
        self._timeout = config.publish_timeout
        self._publisher: asyncio.Task[None] | None = None
        self._outbox: deque[_Pending] = deque()
        self._outbox_wakeup: asyncio.Future[None] | None = None
        self._closing = False
        self._publish_error: BaseException | None = None  # why the last attempt failed
        self._maxlen: tuple[Any, ...] = ("MAXLEN", "~", config.max_len) if config.max_len else ()

    def connection_settings(self) -> tuple[type[Any], dict[str, Any]]:
        """The redis-py connection class and keyword arguments every connection is made with."""
        return self.connections.connection_settings()

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        if self.receiver.running:
            return
        await self.connections.start()
        self._closing = False
        self._publisher = asyncio.get_running_loop().create_task(self._publish_loop())
        try:
            async with asyncio.timeout(self._timeout):
                await self.receiver.start()
        except (RedisError, *LINK_ERRORS) as exc:
            await self._shutdown_connections()
            raise self.connections.unavailable("could not subscribe at start", exc) from exc

    async def stop(self, timeout: float) -> None:
        # No new messages while the fan-out drains; what it settles is still acknowledged.
        await self.receiver.stop()
        await super().stop(timeout)
        await self._shutdown_connections()

    async def _shutdown_connections(self) -> None:
        await self.receiver.stop()
        if self._publisher is not None:  # publishes in flight end by their own deadline
            self._closing = True
            self._wake_publisher()
            try:
                async with asyncio.timeout(self._timeout + 1.0):
                    await asyncio.shield(self._publisher)
            except TimeoutError:
                pass
            await cancel(self._publisher)
            self._publisher = None
        await self.receiver.close()
        await self.connections.close()

    # --- subscriptions ----------------------------------------------------------------

    async def subscribe(self, sub: Subscription) -> None:
        self.dispatcher.add(sub)
        try:
            await self.receiver.attach(sub)
        except BaseException as exc:
            await self.unsubscribe(sub)
            if isinstance(exc, RedisError | OSError):
                raise self.connections.unavailable(
                    f"could not subscribe to {sub.topic!r}", exc
                ) from exc
            raise

    async def unsubscribe(self, sub: Subscription) -> None:
        self.dispatcher.remove(sub)
        await self.receiver.detach(sub)

    # --- publishing -------------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        if self._publisher is None or self._publisher.done() or self._closing:
            raise self.connections.unavailable(f"is not running: cannot publish to {event.topic!r}")
        data = encode(event)
        name = self.channels.channel(event.tenant, event.topic)
        if self.streams:
            command: tuple[Any, ...] = ("XADD", name, *self._maxlen, "*", "event", data)
        else:
            command = ("PUBLISH", name, data)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._outbox.append(_Pending(command, future, loop.time() + self._timeout, event.topic))
        self._wake_publisher()
        await future
        self.receiver.published(name)

    def _wake_publisher(self) -> None:
        wakeup = self._outbox_wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _publish_loop(self) -> None:
        """Send what publishers queued, in pipelines of up to ``batchSize`` commands; each
        publisher gets its own result. Fails a publish once its deadline has passed."""
        loop = asyncio.get_running_loop()
        outbox = self._outbox
        connections = self.connections
        conn: Link | None = None
        failures = 0
        try:
            while True:
                if not outbox:
                    if self._closing:
                        return
                    self._outbox_wakeup = loop.create_future()
                    await self._outbox_wakeup
                    self._outbox_wakeup = None
                    continue
                batch = self._next_batch(loop.time())
                if not batch:
                    continue
                try:
                    async with asyncio.timeout_at(min(p.deadline for p in batch)):
                        if conn is None:
                            conn = await connections.open("publisher")
                        await _pipeline(conn, batch)
                except LINK_ERRORS as exc:
                    connections.mark_down(exc)
                    self._publish_error = exc
                    await close(conn)
                    conn = None
                    outbox.extendleft(reversed([p for p in batch if not p.future.done()]))
                    failures += 1
                    pause = connections.backoff.compute(failures)
                    if outbox:
                        pause = min(pause, max(0.0, min(p.deadline for p in outbox) - loop.time()))
                    await asyncio.sleep(pause)
                    continue
                failures = 0
                self._publish_error = None
                if connections.down and self.receiver.receiving:
                    connections.mark_up()
        finally:
            await close(conn)
            while outbox:
                pending = outbox.popleft()
                if not pending.future.done():
                    pending.future.set_exception(
                        connections.unavailable(f"stopped before publishing to {pending.topic!r}")
                    )

    def _next_batch(self, now: float) -> list[_Pending]:
        batch: list[_Pending] = []
        outbox = self._outbox
        limit = self.settings.batch_size
        while outbox and len(batch) < limit:
            pending = outbox.popleft()
            if pending.future.done():  # its publisher was cancelled
                continue
            if pending.deadline <= now:
                pending.future.set_exception(
                    self.connections.unavailable(
                        f"could not publish to {pending.topic!r} within {self._timeout}s",
                        self._publish_error,
                    )
                )
                continue
            batch.append(pending)
        return batch


async def _pipeline(conn: Link, batch: list[_Pending]) -> None:
    """Send ``batch`` in one write and read each reply; a command Redis refuses fails only its
    own publisher."""
    await conn.send_packed_command(conn.pack_commands(p.command for p in batch), check_health=False)
    for pending in batch:
        try:
            await conn.read_response()
        except ResponseError as exc:
            if not pending.future.done():
                pending.future.set_exception(
                    EngineUnavailableError(f"redis refused the publish to {pending.topic!r}: {exc}")
                )
            continue
        if not pending.future.done():
            pending.future.set_result(None)
