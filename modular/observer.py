"""Observers: callbacks that receive CloudEvents-shaped records of what the application does."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .logging_setup import MaskingFilter

logger = logging.getLogger("modular.observer")
logger.addFilter(MaskingFilter())  # exception texts may quote a broker URL

_ids = itertools.count(1)
_ID_PREFIX = os.urandom(4).hex()


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """One observed occurrence, shaped like a CloudEvents 1.0 event."""

    type: str
    source: str
    data: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: f"{_ID_PREFIX}-{next(_ids)}")
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    specversion: str = "1.0"


Observer = Callable[[CloudEvent], Awaitable[None] | None]


@dataclass(slots=True)
class _Registration:
    callback: Observer
    event_types: frozenset[str] | None


class ObserverRegistry:
    """Delivers records to the observers that asked for their type; one failing observer is
    logged and never stops the others."""

    def __init__(self) -> None:
        self._registrations: list[_Registration] = []
        self._pending: set[asyncio.Task[None]] = set()
        self._wanted: frozenset[str] = frozenset()
        self._wants_all = False
        self._change_listeners: list[Callable[[], None]] = []

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        """``listener()`` runs after every (un)registration, e.g. to refresh cached ``wants``."""
        self._change_listeners.append(listener)

    def register(self, callback: Observer, event_types: Iterable[str] | None = None) -> None:
        if isinstance(event_types, str):  # one type, not a set of one-letter types
            event_types = [event_types]
        types = frozenset(event_types) if event_types is not None else None
        self._registrations.append(_Registration(callback, types))
        self._index()

    def unregister(self, callback: Observer) -> None:
        self._registrations = [r for r in self._registrations if r.callback != callback]
        self._index()

    def _index(self) -> None:
        self._wants_all = any(r.event_types is None for r in self._registrations)
        self._wanted = frozenset().union(*(r.event_types or () for r in self._registrations))
        for listener in self._change_listeners:
            listener()

    def wants(self, event_type: str) -> bool:
        """Whether any observer would receive ``event_type``: lets hot paths skip building data."""
        return self._wants_all or event_type in self._wanted

    def emit(self, event_type: str, source: str, data: dict[str, Any] | None = None) -> None:
        """Deliver a record now; coroutine observers are scheduled on the running loop."""
        targets = [
            r.callback
            for r in self._registrations
            if r.event_types is None or event_type in r.event_types
        ]
        if not targets:
            return
        record = CloudEvent(type=event_type, source=source, data=data or {})
        for callback in targets:
            try:
                result = callback(record)
                if inspect.isawaitable(result):
                    self._schedule(callback, result)
            except Exception:
                logger.exception("observer %r failed on %s", callback, event_type)

    def _schedule(self, callback: Observer, awaitable: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await awaitable
            except Exception:
                logger.exception("observer %r failed", callback)

        try:
            task = asyncio.get_running_loop().create_task(run())
        except RuntimeError:  # no running loop: run it to completion here
            asyncio.run(run())
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for scheduled coroutine observers (bounded), e.g. before the application stops."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            await asyncio.wait(set(self._pending), timeout=deadline - time.monotonic())
