"""Shared pieces of the benchmarks: a bus on one engine, measurements, medians of repeats, and
table printing."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from modular import Application
from modules.eventbus import EventBusModule

# Polling the end of a run costs the consumers nothing measurable at this interval, and
# bounds the error on the elapsed time to about half a millisecond.
_POLL = 0.0005


@dataclass
class Measurement:
    """One run of one implementation on one workload."""

    delivered: int  # handler calls
    seconds: float  # first publish to last delivery observed
    latencies: list[float] = field(default_factory=list, repr=False)  # publish -> handler, s
    dropped: int = 0

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Summary:
    """The median over repeats of each number of a measurement."""

    rate: float
    p50: float
    p99: float
    dropped: int
    runs: int

    @classmethod
    def of(cls, runs: Sequence[Measurement]) -> Summary:
        return cls(
            rate=statistics.median(m.rate for m in runs),
            p50=statistics.median(m.percentile(0.50) for m in runs),
            p99=statistics.median(m.percentile(0.99) for m in runs),
            dropped=int(statistics.median(m.dropped for m in runs)),
            runs=len(runs),
        )


async def wait_until(
    done: Callable[[], bool], timeout: float = 120.0, poll: float = _POLL
) -> float:
    """Wait for ``done()``; returns the perf_counter time at which it was seen true.

    ``poll=0`` spins through the event loop: the fastest reaction, for one-event round trips.
    """
    deadline = time.perf_counter() + timeout
    while not done():
        if time.perf_counter() > deadline:
            raise TimeoutError("benchmark run did not complete in time")
        await asyncio.sleep(poll)
    return time.perf_counter()


def quiet_gc() -> None:
    """Start each run from a collected heap so one run's garbage is not another's cost."""
    gc.collect()


def format_rate(rate: float) -> str:
    if rate >= 1e6:
        return f"{rate / 1e6:.2f}M"
    if rate >= 1e3:
        return f"{rate / 1e3:.1f}k"
    return f"{rate:.0f}"


def format_seconds(seconds: float) -> str:
    if seconds != seconds:  # NaN: nothing measured
        return "-"
    if seconds >= 1.0:
        return f"{seconds:.2f}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f}ms"
    if seconds >= 1e-5:
        return f"{seconds * 1e6:.1f}us"
    return f"{seconds * 1e6:.2f}us"


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A Markdown table, so that the output can be pasted into docs/benchmarks.md."""
    print(f"\n### {title}\n")
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


@asynccontextmanager
async def running_bus(engine_type: str, config: dict[str, Any]) -> AsyncIterator[EventBusModule]:
    """A started bus with one engine of ``engine_type`` (named after it); stopped on exit."""
    app = Application(
        {"eventbus": {"engines": [{"name": engine_type, "type": engine_type, "config": config}]}},
        envvar_prefix=None,
    )
    app.register_module(EventBusModule())
    await app.start()
    try:
        yield app.get_service("eventbus.provider", EventBusModule)
    finally:
        await app.stop()
