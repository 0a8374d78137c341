"""``eventbus bench``: publish events through each engine of the configured bus and measure
publish rate, handling rate and publish-to-handler latency.

One subscriber per engine, on a topic that routes to it. The numbers are those of this
machine at this moment: on a shared or busy machine they are noisy, so compare runs made
side by side (``benchmarks/`` has the harness that compares against raw clients).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from ..event import Event
from ..module import EventBusModule
from ..router import Router
from ..topics import validate_topic
from .session import CommandError, Session, engine_type, format_table, running

HEADERS = (
    "engine",
    "type",
    "events",
    "published/s",
    "handled/s",
    "handled",
    "dropped",
    "lost",
    "p50 ms",
    "p99 ms",
    "max ms",
)


@dataclass
class BenchResult:
    engine: str
    engine_type: str
    events: int
    publish_seconds: float
    handle_seconds: float
    latencies: list[float]  # seconds, in arrival order
    dropped: int

    def row(self) -> list[object]:
        handled = len(self.latencies)
        ordered = sorted(self.latencies)

        def percentile(q: float) -> float | None:
            return ordered[round(q * (len(ordered) - 1))] * 1000 if ordered else None

        return [
            self.engine,
            self.engine_type,
            self.events,
            self.events / self.publish_seconds if self.publish_seconds else None,
            handled / self.handle_seconds if self.handle_seconds else None,
            handled,
            self.dropped,
            max(self.events - handled - self.dropped, 0),
            percentile(0.5),
            percentile(0.99),
            percentile(1.0),
        ]


class ProgressBar:
    """``label [#######.......]  50% 5000/10000`` redrawn in place on a terminal."""

    WIDTH = 30

    def __init__(self, label: str, total: int, stream: TextIO, enabled: bool) -> None:
        self.label, self.total, self.stream, self.enabled = label, total, stream, enabled
        self._shown = -1

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        percent = min(100, done * 100 // self.total)
        if percent == self._shown:
            return
        self._shown = percent
        filled = self.WIDTH * percent // 100
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.stream.write(f"\r{self.label} [{bar}] {percent:3d}% {done}/{self.total}")
        self.stream.flush()

    def finish(self, done: int) -> None:
        if self.enabled:
            self.update(done)
            self.stream.write("\n")
            self.stream.flush()


def bench_topic(router: Router, engine: str) -> str:
    """A topic of this process's own that routes to ``engine``."""
    suffix = f"bench-{os.getpid()}"
    own = [p for patterns, name in router.rules() if name == engine for p in patterns]
    candidates = [p[:-1] + suffix for p in own if p.endswith("*")]
    candidates.append(f"eventbus.{suffix}")
    candidates += [p for p in own if not p.endswith("*")]
    for topic in candidates:
        try:
            validate_topic(topic)
        except ValueError:
            continue
        if router.engine_for_topic(topic) == engine:
            return topic
    raise CommandError(f"no topic routes to engine {engine!r}: earlier routing rules take them all")


async def bench_engine(
    bus: EventBusModule, engine: str, events: int, timeout: float, bar: ProgressBar
) -> BenchResult:
    topic = bench_topic(bus.get_router(), engine)
    latencies: list[float] = []
    last_handled = 0.0

    def handler(event: Event) -> None:
        nonlocal last_handled
        last_handled = time.perf_counter()
        latencies.append(last_handled - event.payload["sent"])

    sub = await bus.subscribe(topic, handler)
    before = bus.per_engine_stats()[engine].snapshot()

    def dropped() -> int:
        return bus.per_engine_stats()[engine].dropped - before.dropped

    try:
        step = max(1, events // 100)  # redraw cheaply: reading stats costs more than a publish
        started = time.perf_counter()
        for seq in range(events):
            await bus.publish(topic, {"seq": seq, "sent": time.perf_counter()})
            if seq % step == 0:
                bar.update(len(latencies) + dropped())
        publish_seconds = time.perf_counter() - started
        deadline = time.monotonic() + timeout
        while len(latencies) + dropped() < events and time.monotonic() < deadline:
            bar.update(len(latencies) + dropped())
            await asyncio.sleep(0.02)  # a broker's deliveries arrive on their own
        bar.finish(len(latencies) + dropped())
    finally:
        await sub.cancel()
    return BenchResult(
        engine,
        engine_type(bus, engine),
        events,
        publish_seconds,
        max(last_handled - started, 0.0),
        latencies,
        dropped(),
    )


async def run_bench(args: argparse.Namespace) -> int:
    async def bench(session: Session) -> int:
        bus = session.bus
        known = bus.get_router().engine_names()
        names = args.engine or known
        for name in names:
            if name not in known:
                raise CommandError(f"no engine named {name!r}; engines: {', '.join(known)}")
        states = await session.engine_states()
        for name in names:
            state, error = states.get(name, ("up", None))
            if state != "up":
                raise CommandError(f"engine {name!r} is {state}: {error or 'no error reported'}")
        show = sys.stderr.isatty() if args.progress is None else args.progress
        width = max(len(n) for n in names)
        results = []
        for name in names:
            bar = ProgressBar(name.ljust(width), args.events, sys.stderr, show)
            results.append(await bench_engine(bus, name, args.events, args.timeout, bar))
        print(format_table(HEADERS, [r.row() for r in results]))
        lost = [r.engine for r in results if len(r.latencies) + r.dropped < r.events]
        if lost:
            print(
                f"eventbus: not every event arrived within {args.timeout}s on: {', '.join(lost)}",
                file=sys.stderr,
            )
        return 0

    return await running(args, bench)
