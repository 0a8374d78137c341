"""RedisEngine: the Redis side of a broker engine of the kit (``engines.broker``): the
publishing connection and its pipelines, and the mode that receives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from redis.exceptions import ResponseError

from ...config import EngineConfig
from ...errors import EngineUnavailableError
from ...event import Event, Subscription
from ..base import Capabilities
from ..broker import BrokerEngine, MessageAcks, Outgoing, Session
from .channels import Channels
from .config import RedisEngineConfig, masked_url
from .connection import LINK_ERRORS, Connections, Link, close
from .pubsub import PubSubReceiver
from .receiving import Receiver
from .streams import StreamsReceiver, consumer_name, default_group


class RedisEngine(BrokerEngine):
    """Events over one Redis, in pub/sub or streams mode: this side publishes, and its
    ``receiver`` (one per mode) brings what Redis delivers to the local fan-out."""

    kind = "redis"
    capabilities = Capabilities(patterns=True, ordering=True, durability=False, cross_process=True)
    config_model: ClassVar[type[EngineConfig]] = RedisEngineConfig
    link_errors: ClassVar[tuple[type[BaseException], ...]] = LINK_ERRORS

    def __init__(self, name: str, config: EngineConfig) -> None:
        if not isinstance(config, RedisEngineConfig):
            config = RedisEngineConfig.model_validate(config.model_dump(exclude_unset=True))
        super().__init__(name, config, address=masked_url(config.url))
        self.settings: RedisEngineConfig = config
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
        self.channels = Channels(config.channel_prefix, "stream" if self.streams else "channel")
        self.receiver: Receiver
        if self.streams:
            acks: MessageAcks[bytes, bytes] = MessageAcks()
            self.acks = acks
            self.receiver = StreamsReceiver(self, acks)
        else:
            self.receiver = PubSubReceiver(self)
        self._publisher: Link | None = None
        self._maxlen: tuple[Any, ...] = ("MAXLEN", "~", config.max_len) if config.max_len else ()

    def connection_settings(self) -> tuple[type[Any], dict[str, Any]]:
        """The redis-py connection class and keyword arguments every connection is made with."""
        return self.connections.connection_settings()

    # --- the kit's interface ------------------------------------------------------------

    async def open(self) -> None:
        self.connections.open_control()
        self.receiver.start()

    async def close(self) -> None:
        try:
            await self.receiver.close()
        finally:
            publisher, self._publisher = self._publisher, None
            await close(publisher)
            await self.connections.close()

    async def session(self, session: Session) -> None:
        await self.receiver.session(session)

    async def broker_subscribe(self, sub: Subscription) -> None:
        try:
            await self.receiver.attach(sub)
        except ResponseError as exc:  # e.g. WRONGTYPE: the key is not a stream
            raise EngineUnavailableError(
                f"redis engine {self.name!r} could not subscribe to {sub.topic!r}: {exc}"
            ) from exc

    async def broker_unsubscribe(self, sub: Subscription) -> None:
        await self.receiver.detach(sub)

    async def send_acks(self, batch: Any) -> None:
        assert isinstance(self.receiver, StreamsReceiver)
        await self.receiver.acknowledge(batch)

    def destination(self, event: Event) -> str:
        return self.channels.channel(event.tenant, event.topic)

    async def send_batch(self, batch: Sequence[Outgoing]) -> None:
        """One pipeline: every command in one write, then each reply; a command Redis
        refuses fails only its own publisher."""
        conn = self._publisher
        try:
            if conn is None:
                conn = self._publisher = await self.connections.open("publisher")
            if self.streams:
                maxlen = self._maxlen
                commands = [
                    ("XADD", item.destination, *maxlen, "*", "event", item.data) for item in batch
                ]
            else:
                commands = [("PUBLISH", item.destination, item.data) for item in batch]
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            read = conn.read_response
            for item in batch:
                try:
                    await read()
                except ResponseError as exc:
                    item.fail(
                        EngineUnavailableError(
                            f"redis refused the publish to {item.event.topic!r}: {exc}"
                        )
                    )
                # (what succeeded is settled by the kit when this returns)
        except BaseException:
            self._publisher = None
            await close(conn)
            raise
        if self.streams:  # pattern subscriptions may want a stream key just created
            published = self.receiver.published
            for item in batch:
                published(item.destination)
