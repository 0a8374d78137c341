"""What a broker engine receives, on its way to the local fan-out: decode-and-check against
where it came from, decode errors, and the hand-on in the event's tenant context.

Nothing a reader receives can stall it: whatever decoding raises (bad JSON, ``RecursionError``
from ``b"[" * 100_000``, bad UTF-8, wrong types, an envelope that contradicts where it was
found) is a decode error: counted in ``stats().decode_errors``, logged once per burst, and
settled (so that the message is acknowledged or checkpointed past, never re-read forever).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable
from typing import NamedTuple

from modular.tenants import current_tenant_var

from ...codec import decode
from ...delivery import Dispatcher
from ...errors import EventDecodeError
from ...event import Event
from .acks import DECODE_ERROR, Settle

logger = logging.getLogger("modules.eventbus.engines.broker")

DECODE_LOG_INTERVAL = 10.0  # seconds: one warning per burst of undecodable messages


class Origin(NamedTuple):
    """Where a message was found, as far as it tells what the message must be.

    ``where`` names it in logs (``"channel eventbus:acme:user.created"``, ``"topic t
    partition 3 offset 17"``). ``topic`` and ``tenant`` are what the place says the event is
    (the place is authoritative: an envelope contradicting it is a decode error, so that no
    producer can put one tenant's event in front of another tenant). ``topic=None``: the
    place does not tell the topic (a Kinesis shard); ``tenant_known=False``: nor the tenant.
    ``error``: the place itself is not one of the bus (a channel name outside the prefix).
    """

    where: str
    topic: str | None = None
    tenant: str | None = None
    tenant_known: bool = True
    error: str | None = None


class Inbound:
    """The receiving end of one engine, shared by every session: decode, check, hand on."""

    def __init__(
        self, kind: str, engine: str, dispatcher: Dispatcher, log: logging.Logger | None = None
    ) -> None:
        self.kind = kind
        self.log = log or logger
        self.engine = engine
        self.dispatcher = dispatcher
        self._logged_at = -math.inf
        self._unlogged = 0

    def wanted(self, topic: str, tenant: str | None) -> bool:
        """Whether a local subscription takes events of ``topic`` published by ``tenant``."""
        return any(s.accepts(tenant) for s in self.dispatcher.subscriptions.resolve(topic))

    def decode(self, data: object, origin: Origin) -> Event | None:
        """The event in ``data`` found at ``origin``; None (counted and logged) when it is not
        a valid event of that place. Never raises for what ``data`` holds."""
        if origin.error is not None:
            self.decode_failed(origin.where, origin.error)
            return None
        try:
            event = decode(data)  # type: ignore[arg-type]  # any type: a wrong one is an error
            if origin.topic is not None and event.topic != origin.topic:
                raise EventDecodeError(
                    f"envelope type {event.topic!r} does not match the topic {origin.topic!r} "
                    "of where it was found"
                )
            if origin.tenant_known and event.tenant != origin.tenant:
                if event.tenant is not None:
                    raise EventDecodeError(
                        f"envelope tenant {event.tenant!r} does not match the tenant "
                        f"{origin.tenant!r} of where it was found"
                    )
                # A producer that only names the place (a channel) carries no tenant.
                event = event._replace(tenant=origin.tenant)
        except Exception as exc:  # every failure to decode is a decode error, of any type
            self.decode_failed(origin.where, _describe(exc))
            return None
        return event

    def decode_failed(self, where: str, error: str) -> None:
        """Count a message that is not a valid event; log it, once per burst."""
        self.dispatcher.stats.decode_errors += 1
        now = time.monotonic()
        if now - self._logged_at < DECODE_LOG_INTERVAL:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more since the last report)" if self._unlogged else ""
        self.log.warning(
            "%s engine %s skipped a message it cannot decode at %s: %s%s",
            self.kind,
            self.engine,
            where,
            error,
            more,
        )
        self._logged_at = now
        self._unlogged = 0

    def hand_on(self, event: Event, settle: Settle | None = None) -> Awaitable[None]:
        """Dispatch ``event`` to the local subscriptions (await the result); ``settle(outcome)``
        is called once every local delivery of it settled. Handlers run with
        ``current_tenant()`` equal to the event's tenant, as they do for a publisher in
        ``tenant_context`` here: a tenant is what crosses the wire of the publisher's
        context."""
        if current_tenant_var.get() == event.tenant:
            # The dispatcher's coroutine itself: no extra frame on the hot path.
            return self.dispatcher.dispatch(event, settle)
        return self._hand_on_in_tenant(event, settle)

    async def _hand_on_in_tenant(self, event: Event, settle: Settle | None) -> None:
        token = current_tenant_var.set(event.tenant)
        try:
            await self.dispatcher.dispatch(event, settle)
        finally:
            current_tenant_var.reset(token)

    def receive(
        self, data: object, origin: Origin, settle: Settle | None = None
    ) -> Awaitable[None]:
        """Decode ``data`` found at ``origin`` and hand it on (await the result); a decode
        error settles at once, so that the message is acknowledged past."""
        event = self.decode(data, origin)
        if event is None:
            if settle is not None:
                settle(DECODE_ERROR)
            return _nothing()
        return self.hand_on(event, settle)


async def _nothing() -> None:
    pass


def _describe(error: Exception) -> str:
    if isinstance(error, RecursionError):
        return "nested too deeply to decode"
    text = str(error)
    if len(text) > 300:
        text = text[:300] + "..."
    return text if isinstance(error, EventDecodeError) else f"{type(error).__name__}: {text}"
