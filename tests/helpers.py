"""Helpers shared by every test package: waiting on a condition, recording handlers, a clock
tests control."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from modules.eventbus import Event

# Broker round trips on a busy 2-core machine can take a while; a deadline only bounds a
# failure, a passing test never waits for it.
DEADLINE = 15.0


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds.

    This waits on a condition, never for a fixed time: it returns as soon as the condition
    holds, and the deadline is only there so that a broken feature fails instead of hanging.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what or predicate}")
        await asyncio.sleep(0.005)


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float = DEADLINE, what: str = ""
) -> None:
    """``wait_for`` for a condition that must itself be awaited (e.g. a query to Redis)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what or check}")
        await asyncio.sleep(0.01)


class Recorder:
    """A plain-function handler that keeps every event it is given."""

    def __init__(self, name: str = "handler") -> None:
        self.name = name
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    @property
    def payloads(self) -> list[Any]:
        return [e.payload for e in self.events]

    @property
    def topics(self) -> list[str]:
        return [e.topic for e in self.events]

    async def wait_count(self, count: int, timeout: float = DEADLINE) -> None:
        await wait_for(
            lambda: len(self.events) >= count,
            timeout,
            f"{self.name} to receive {count} events (has {len(self.events)}: {self.topics})",
        )

    async def wait_payload(self, payload: Any, timeout: float = DEADLINE) -> None:
        await wait_for(
            lambda: payload in self.payloads,
            timeout,
            f"{self.name} to receive payload {payload!r} (has {self.payloads})",
        )


class AsyncRecorder(Recorder):
    """An ``async def`` handler that suspends once, then keeps the event."""

    async def __call__(self, event: Event) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        self.events.append(event)


class FakeClock:
    """A wall clock (seconds since the epoch) that moves only when a test advances it."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
