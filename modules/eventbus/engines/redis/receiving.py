"""The receiving side of the engine, whatever its mode: the interface through which the
engine drives a mode, and what both modes share.

The kit's session loop (``engines.broker``) runs :meth:`Receiver.session` again after each
failure, with backoff; a session opens the receiving connection, subscribes everything on
it, reports ``session.ready()`` and reads until the connection breaks. What arrives goes
through the kit's ``Inbound``: decoded, checked against the channel or stream key it came
from, and handed to the local fan-out in the event's tenant context.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from ...event import Subscription
from ..broker import Origin, Session
from .connection import Link, close

if TYPE_CHECKING:
    from .engine import RedisEngine


class Receiver(ABC):
    """What the engine receives in one mode. The engine calls ``start`` and ``close`` from
    its lifecycle, ``session`` from the kit's loop, ``attach`` and ``detach`` for each
    subscription, and ``published`` after each publish."""

    def __init__(self, engine: RedisEngine) -> None:
        self.engine = engine
        self.connections = engine.connections
        self.channels = engine.channels
        self.dispatcher = engine.dispatcher
        self.inbound = engine.inbound
        self.connection = engine.connection  # the engine's health
        self.name = engine.name
        self.settings = engine.settings
        self._timeout = engine.settings.publish_timeout

    def start(self) -> None:  # noqa: B027 - a hook; nothing to do by default
        """At start, before the first session."""

    @abstractmethod
    async def close(self) -> None:
        """At stop, once nothing is received or published any more: settle what is left
        with Redis and forget the Redis side of every subscription."""

    @abstractmethod
    async def attach(self, sub: Subscription) -> None:
        """Receive ``sub``'s events (``sub`` is already in the dispatcher); returns once an
        event published from now on will be received."""

    @abstractmethod
    async def detach(self, sub: Subscription) -> None:
        """Stop receiving what only ``sub`` (already out of the dispatcher) wanted."""

    def published(self, name: str) -> None:  # noqa: B027 - a hook; nothing to do by default
        """This process just published to the channel (or stream key) ``name``."""

    async def session(self, session: Session) -> None:
        conn = await self.connections.open("receiver")
        try:
            await self._session(conn, session)
        finally:
            await close(conn)

    @abstractmethod
    async def _session(self, conn: Link, session: Session) -> None:
        """Receive on ``conn`` until it breaks; ``session.ready()`` once all is subscribed."""

    def _wanted(self, route: Origin) -> bool:
        """Whether a local subscription takes events found at ``route``."""
        return self.inbound.wanted(route.topic or "", route.tenant)
