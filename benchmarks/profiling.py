"""Where the memory bus spends its time (``python -m benchmarks memory --profile``).

1. The per-call cost of each step of the publish path, measured alone (no subscriber, so
   no consumer runs), beside ``asyncio.Queue.put``, the baseline's whole publish step.
2. cProfile over one throughput run (1 ordered subscriber, drop mode), top functions by own
   time. cProfile slows every Python call about alike: read the shares, not the times.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import time
from collections.abc import Awaitable, Callable

from modular import Application
from modules.eventbus import EventBusModule
from modules.eventbus.engines.base import FanoutEngine
from modules.eventbus.event import EMPTY_METADATA, make_event

from .common import format_seconds, print_table
from .memory import BusTarget, measure

CALLS = 200_000


async def _per_call(step: Callable[[], Awaitable[object]], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await step()
    return (time.perf_counter() - start) / calls


def _per_sync_call(step: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        step()
    return (time.perf_counter() - start) / calls


async def _noop() -> None:
    return None


async def publish_path_costs(calls: int = CALLS) -> None:
    app = Application({}, envvar_prefix=None)
    app.register_module(EventBusModule())
    await app.start()
    try:
        bus = app.get_service("eventbus.provider", EventBusModule)
        engine = bus.engine("default")
        assert isinstance(engine, FanoutEngine)
        event = make_event("bench.none", 1.0, EMPTY_METADATA, time.time(), "eventbus", None, None)
        queue: asyncio.Queue[float] = asyncio.Queue()
        history = bus._histories["default"]
        rows = [
            (
                "await bus.publish(topic, payload)",
                await _per_call(lambda: bus.publish("t", 1.0), calls),
            ),
            ("await engine.publish(event)", await _per_call(lambda: engine.publish(event), calls)),
            (
                "await dispatcher.dispatch(event)",
                await _per_call(lambda: engine.dispatcher.dispatch(event), calls),
            ),
            (
                "make_event(...)",
                _per_sync_call(
                    lambda: make_event("t", 1.0, EMPTY_METADATA, 0.0, "eventbus", None, None),
                    calls,
                ),
            ),
            ("history.record(event)", _per_sync_call(lambda: history.record(event), calls)),
            ("await <empty coroutine>", await _per_call(_noop, calls)),
            ("await asyncio.Queue.put (baseline)", await _per_call(lambda: queue.put(1.0), calls)),
        ]
    finally:
        await app.stop()
    print_table(
        f"Publish path, no subscriber: per call, {calls} calls",
        ["step", "cost"],
        [[name, format_seconds(cost)] for name, cost in rows],
    )


def profile_memory(deliveries: int, top: int = 25) -> None:
    asyncio.run(publish_path_costs())
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(measure(BusTarget("drop"), 1, "sync", deliveries))
    profiler.disable()
    print(f"\n### cProfile: bus (drop), 1 sub, sync, {deliveries} events; top {top} by own time\n")
    stats = pstats.Stats(profiler)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(top)
