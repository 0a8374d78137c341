"""Fixtures of the EventBus tests: a started application holding the bus, torn down cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

import pytest

from modular import Application, CloudEvent
from modules.eventbus import EventBusModule

EVENT_PREFIX = "com.modular.eventbus."


class Harness:
    """One application with the bus registered, what its observers saw, and its gates."""

    def __init__(self, app: Application, bus: EventBusModule) -> None:
        self.app = app
        self.bus = bus
        self.records: list[CloudEvent] = []
        self._gates: list[asyncio.Event] = []

    def observed(self, kind: str) -> list[CloudEvent]:
        """Observer records of one bus event type, e.g. ``"topic.created"``."""
        return [r for r in self.records if r.type == EVENT_PREFIX + kind]

    def gate(self) -> asyncio.Event:
        """An event handlers can wait on; opened at teardown so no handler outlives a test."""
        gate = asyncio.Event()
        self._gates.append(gate)
        return gate

    def open_gates(self) -> None:
        for gate in self._gates:
            gate.set()


class MakeBus(Protocol):
    def __call__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        clock: Callable[[], float] | None = None,
        observe: bool = False,
        start: bool = True,
    ) -> Awaitable[Harness]: ...


@pytest.fixture
async def make_bus() -> AsyncIterator[MakeBus]:
    """Builds started buses from an ``eventbus`` config section; stops them all afterwards."""
    harnesses: list[Harness] = []

    async def make(
        config: Mapping[str, Any] | None = None,
        *,
        clock: Callable[[], float] | None = None,
        observe: bool = False,
        start: bool = True,
    ) -> Harness:
        app = Application({"eventbus": dict(config or {})}, envvar_prefix=None)
        bus = EventBusModule(clock=clock) if clock is not None else EventBusModule()
        app.register_module(bus)
        harness = Harness(app, bus)
        if observe:
            app.register_observer(harness.records.append)
        harnesses.append(harness)
        if start:
            await app.start()
        else:
            await app.init()
        assert app.get_service("eventbus.provider", EventBusModule) is bus
        return harness

    yield make
    for harness in reversed(harnesses):
        harness.open_gates()
        await harness.app.stop()
