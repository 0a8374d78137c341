"""The receiving side of the engine, whatever its mode.

One receiving connection per engine (the pub/sub connection, or the stream reader), kept
by a loop that reconnects with backoff; each mode runs its session on it until it breaks,
resubscribing everything at the start of each one. What arrives is routed by the channel it
came from, decoded, checked against that channel, and handed to the local fan-out.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

from modular.tenants import current_tenant_var

from ...codec import decode
from ...delivery import Dispatcher, Outcome
from ...errors import EventDecodeError
from ...event import Event, Subscription
from .channels import Channels, Route
from .connection import LINK_ERRORS, Connections, Link, cancel, close

logger = logging.getLogger(__package__)

_DECODE_LOG_INTERVAL = 10.0  # seconds: one warning per burst of undecodable messages


class Receiver(ABC):
    """What the engine receives in one mode. The engine calls ``start``, ``stop`` and
    ``close`` from its lifecycle, ``attach`` and ``detach`` for each subscription, and
    ``published`` after each publish."""

    def __init__(
        self, connections: Connections, channels: Channels, dispatcher: Dispatcher
    ) -> None:
        self.connections = connections
        self.channels = channels
        self.dispatcher = dispatcher
        self.name = connections.engine
        self.settings = connections.settings
        self.receiving = False  # a session is established
        self._timeout = connections.timeout
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._sessions = 0
        self._decode_logged_at = -math.inf
        self._decode_unlogged = 0

    @property
    def running(self) -> bool:
        return self._task is not None

    async def start(self) -> None:
        """Start receiving; returns once the first session is established. The engine
        bounds the wait, and calls ``stop`` and ``close`` when it fails."""
        loop = asyncio.get_running_loop()
        self._sessions = 0
        self._ready = loop.create_future()
        self._task = loop.create_task(self._receive_loop())
        await asyncio.shield(self._ready)

    async def stop(self) -> None:
        """Stop receiving: nothing more reaches the local fan-out."""
        await cancel(self._task)
        self._task = None
        self.receiving = False

    @abstractmethod
    async def close(self) -> None:
        """After ``stop``, once nothing is published any more: settle what is left with
        Redis and forget the Redis side of every subscription."""

    @abstractmethod
    async def attach(self, sub: Subscription) -> None:
        """Receive ``sub``'s events (``sub`` is already in the dispatcher). While running,
        returns once an event published from now on will be received."""

    @abstractmethod
    async def detach(self, sub: Subscription) -> None:
        """Stop receiving what only ``sub`` (already out of the dispatcher) wanted."""

    @abstractmethod
    def published(self, name: str) -> None:
        """This process just published to the channel (or stream key) ``name``."""

    @abstractmethod
    async def _session(self, conn: Link) -> None:
        """Receive on ``conn`` until it breaks; ``_session_ready`` once all is subscribed."""

    async def _receive_loop(self) -> None:
        """Keep one receiving connection: connect, run a session, and on failure start over
        after a backoff."""
        backoff = self.connections.backoff
        failures = 0
        while True:
            try:
                conn = await self.connections.open("receiver")
            except LINK_ERRORS as exc:
                self.connections.mark_down(exc)
                failures += 1
                await asyncio.sleep(backoff.compute(failures))
                continue
            try:
                await self._session(conn)
            except LINK_ERRORS as exc:
                self.connections.mark_down(exc)
                failures = 0
            except Exception as exc:  # a bug must not end the engine's reception for good
                logger.exception("redis engine %s: receiving failed; reconnecting", self.name)
                self.connections.mark_down(exc)
            finally:
                self.receiving = False
                await close(conn)
            failures += 1
            await asyncio.sleep(backoff.compute(failures))

    def _session_ready(self) -> None:
        """The receiving connection is (re)established and has everything subscribed."""
        if self._sessions:
            self.dispatcher.stats.reconnects += 1
        self._sessions += 1
        self.receiving = True
        self.connections.mark_up()
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def _wanted(self, route: Route) -> bool:
        """Whether a local subscription takes events found at ``route``."""
        return any(
            s.accepts(route.tenant) for s in self.dispatcher.subscriptions.resolve(route.topic)
        )

    def _decode_at(self, route: Route, data: bytes) -> Event:
        """The event in ``data``, found at ``route``. The channel is authoritative: an
        envelope that contradicts it is not an event of the bus, so that no producer can put
        one tenant's event in front of another tenant."""
        event = decode(data)
        if event.topic != route.topic:
            raise EventDecodeError(
                f"envelope type {event.topic!r} does not match the topic {route.topic!r} "
                "of the channel it came from"
            )
        if event.tenant != route.tenant:
            if event.tenant is not None:
                raise EventDecodeError(
                    f"envelope tenant {event.tenant!r} does not match the channel's tenant "
                    f"{route.tenant!r}"
                )
            event = event._replace(tenant=route.tenant)  # a producer that only names channels
        return event

    def _decode_failed(self, where: bytes, error: str) -> None:
        self.dispatcher.stats.decode_errors += 1
        now = time.monotonic()
        if now - self._decode_logged_at < _DECODE_LOG_INTERVAL:
            self._decode_unlogged += 1
            return
        more = (
            f" ({self._decode_unlogged} more since the last report)"
            if self._decode_unlogged
            else ""
        )
        logger.warning(
            "redis engine %s skipped a message it cannot decode on %s: %s%s",
            self.name,
            where.decode(errors="replace"),
            error,
            more,
        )
        self._decode_logged_at = now
        self._decode_unlogged = 0

    async def _hand_on(self, event: Event, settlement: Callable[[Outcome], None] | None) -> None:
        """Dispatch a received event. Its handlers run in its tenant's context, as they do
        for a publisher in ``tenant_context`` in this process: a tenant is what crosses the
        wire of the publisher's context."""
        if event.tenant is None:
            await self.dispatcher.dispatch(event, settlement)
            return
        token = current_tenant_var.set(event.tenant)
        try:
            await self.dispatcher.dispatch(event, settlement)
        finally:
            current_tenant_var.reset(token)
