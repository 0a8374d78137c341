"""The event record and the subscription handle."""

from __future__ import annotations

import inspect
import itertools
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from pydantic import BaseModel

EMPTY_METADATA: Mapping[str, str] = MappingProxyType({})


def _new_id_prefix() -> str:
    return os.urandom(6).hex() + "-"


# Ids are a random per-process prefix plus a counter: unique across processes, and about
# 15x cheaper than str(uuid4()) on the publish path. A forked child draws a new prefix.
_id_prefix = _new_id_prefix()
_id_counter = itertools.count(1)


def _reset_ids_after_fork() -> None:
    global _id_prefix, _id_counter
    _id_prefix = _new_id_prefix()
    _id_counter = itertools.count(1)


os.register_at_fork(after_in_child=_reset_ids_after_fork)


class Event(NamedTuple):
    """One published event. Immutable; built on the hot path, so a tuple, not a dataclass.

    ``timestamp`` is seconds since the epoch; ``created_at`` is the same instant as an aware
    UTC datetime. Two events are equal when their ids are.
    """

    id: str
    topic: str
    payload: Any
    metadata: Mapping[str, str]
    timestamp: float
    source: str
    tenant: str | None = None
    partition_key: str | None = None

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, UTC)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and tuple.__getitem__(other, 0) == self.id

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        tenant = f" tenant={self.tenant!r}" if self.tenant is not None else ""
        return f"Event(id={self.id!r}, topic={self.topic!r}{tenant}, payload={self.payload!r})"


_tuple_new = tuple.__new__


def make_event(
    topic: str,
    payload: Any,
    metadata: Mapping[str, str],
    timestamp: float,
    source: str,
    tenant: str | None,
    partition_key: str | None,
) -> Event:
    """A new Event with a fresh id; the publish path's constructor (skips NamedTuple's
    Python-level ``__new__``, a measurable share of a publish)."""
    return _tuple_new(
        Event,
        (
            f"{_id_prefix}{next(_id_counter)}",
            topic,
            payload,
            metadata,
            timestamp,
            source,
            tenant,
            partition_key,
        ),
    )


Handler = Callable[[Event], Awaitable[None] | None]


def check_handler(topic: str, handler: object) -> None:
    """TypeError unless ``handler`` can be called with one positional argument, the Event
    (checked at subscribe, so that a wrong handler fails there rather than on every event)."""
    if not callable(handler):
        raise TypeError(f"handler for {topic!r} must be callable, got {handler!r}")
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):  # no signature to read (some builtins): trust it
        return
    try:
        signature.bind(None)
    except TypeError:
        name = getattr(handler, "__qualname__", type(handler).__qualname__)
        raise TypeError(
            f"handler {name}{signature} for {topic!r} must take exactly one argument, the "
            "Event (e.g. `async def handler(event)`); a Go-style (ctx, event) handler does "
            "not fit: context variables such as current_tenant() are set when it runs"
        ) from None


class Subscription:
    """A live subscription. ``cancel()`` (or ``bus.unsubscribe``) ends it; both are idempotent.

    ``topic`` is the exact topic or pattern subscribed to; ``engine`` the engine its topic
    routes to, ``engines`` every engine it listens on (a pattern may span several).
    """

    __slots__ = (
        "_cancel",
        "active",
        "all_tenants",
        "engine",
        "engines",
        "handler",
        "id",
        "is_async",
        "payload_type",
        "tenant",
        "topic",
    )

    def __init__(
        self,
        id: str,
        topic: str,
        handler: Handler,
        *,
        is_async: bool,
        tenant: str | None = None,
        all_tenants: bool = False,
        payload_type: type[BaseModel] | None = None,
        engine: str = "",
        cancel: Callable[[Subscription], Awaitable[None]] | None = None,
    ) -> None:
        self.id = id
        self.topic = topic
        self.handler = handler
        self.is_async = is_async
        self.tenant = tenant
        self.all_tenants = all_tenants
        self.payload_type = payload_type
        self.engine = engine
        self.engines: tuple[str, ...] = (engine,) if engine else ()
        self.active = True
        self._cancel = cancel

    def accepts(self, tenant: str | None) -> bool:
        """Whether an event of ``tenant`` is for this subscription (tenant isolation)."""
        return self.tenant == tenant or (self.all_tenants and self.tenant is None)

    async def cancel(self) -> None:
        if self.active and self._cancel is not None:
            await self._cancel(self)
        self.active = False

    def __repr__(self) -> str:
        kind = "async" if self.is_async else "ordered"
        tenant = f" tenant={self.tenant!r}" if self.tenant else ""
        return f"<Subscription {self.id} {self.topic!r} {kind} engine={self.engine!r}{tenant}>"


def describe(metadata: Mapping[str, str] | None) -> Mapping[str, str]:
    """Metadata frozen for an event; the shared empty mapping when there is none."""
    return MappingProxyType(dict(metadata)) if metadata else EMPTY_METADATA
