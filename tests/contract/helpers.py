"""Small tools of the contract suite: a recording handler, condition waits, capability marks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from modules.eventbus import Event

# Broker round trips on a busy 2-core machine can take a while; a deadline only bounds a
# failure, a passing test never waits for it.
DEADLINE = 15.0

CAPABILITIES = ("patterns", "ordering", "durability", "cross_process")


def requires(*capabilities: str) -> pytest.MarkDecorator:
    """Collect the test only for engines that declare every one of ``capabilities``."""
    unknown = set(capabilities) - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"unknown capabilities {sorted(unknown)}; known: {CAPABILITIES}")
    return pytest.mark.requires(*capabilities)


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


class _Recording:
    def __init__(self, name: str = "handler") -> None:
        self.name = name
        self.events: list[Event] = []

    @property
    def payloads(self) -> list[Any]:
        return [e.payload for e in self.events]

    @property
    def topics(self) -> list[str]:
        return [e.topic for e in self.events]

    async def wait_count(self, count: int, timeout: float = DEADLINE) -> None:
        await wait_for(
            lambda: len(self.events) >= count,
            f"{self.name} to receive {count} events (has {len(self.events)}: {self.topics})",
            timeout,
        )

    async def wait_payload(self, payload: Any, timeout: float = DEADLINE) -> None:
        await wait_for(
            lambda: payload in self.payloads,
            f"{self.name} to receive payload {payload!r} (has {self.payloads})",
            timeout,
        )


class Recorder(_Recording):
    """A plain-function handler that keeps every event it is given."""

    def __call__(self, event: Event) -> None:
        self.events.append(event)


class AsyncRecorder(_Recording):
    """An ``async def`` handler that suspends once, then keeps the event."""

    async def __call__(self, event: Event) -> None:
        await asyncio.sleep(0)
        self.events.append(event)
