"""KafkaEngine: the Kafka side of a broker engine of the kit (``engines.broker``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from ...config import EngineConfig
from ...event import Event, Subscription
from ..base import Capabilities
from ..broker import BrokerEngine, Outgoing, Session, WatermarkAcks
from .clients import LINK_ERRORS
from .config import KafkaEngineConfig
from .names import KafkaTopics
from .reader import Reader, Source
from .writer import Writer


class KafkaEngine(BrokerEngine):
    """Events over Kafka: one producer and one consumer per engine, each on its own thread;
    the consumer's events go to the local fan-out."""

    kind = "kafka"
    capabilities = Capabilities(patterns=True, ordering=True, durability=False, cross_process=True)
    config_model: ClassVar[type[EngineConfig]] = KafkaEngineConfig
    link_errors: ClassVar[tuple[type[BaseException], ...]] = LINK_ERRORS

    def __init__(self, name: str, config: EngineConfig) -> None:
        if not isinstance(config, KafkaEngineConfig):
            config = KafkaEngineConfig.model_validate(config.model_dump(exclude_unset=True))
        super().__init__(name, config, address=config.address())
        self.settings: KafkaEngineConfig = config
        self.group = config.group_id
        # Only a named group keeps what is published while this process is away.
        self.capabilities = Capabilities(
            patterns=True, ordering=True, durability=self.group is not None, cross_process=True
        )
        self.names = KafkaTopics(config.topic_prefix)
        acks: WatermarkAcks[Source, int] = WatermarkAcks()
        self.acks = acks
        self.reader = Reader(self, acks)
        self.writer = Writer(self)

    # --- the kit's interface ------------------------------------------------------------

    async def open(self) -> None:
        self.writer.start()
        self.reader.start()

    async def close(self) -> None:
        try:
            await self.reader.close(1.0)
        finally:
            await self.writer.close(1.0)

    async def session(self, session: Session) -> None:
        if session.number > 0:
            self.writer.forget_topics()
        await self.reader.session(session)

    async def subscribe(self, sub: Subscription) -> None:
        self.names.check(sub)  # a topic Kafka cannot name fails here, before anything else
        await super().subscribe(sub)

    async def broker_subscribe(self, sub: Subscription) -> None:
        await self.reader.follow([sub])

    async def broker_unsubscribe(self, sub: Subscription) -> None:
        await self.reader.follow()

    async def send_acks(self, batch: Any) -> None:
        if self.group is not None:
            await self.reader.bridge.call(self.reader.commit, batch)

    def destination(self, event: Event) -> str:
        return self.names.name(event.tenant, event.topic)

    async def send_batch(self, batch: Sequence[Outgoing]) -> None:
        await self.writer.send(batch)
