"""Memory engine: throughput and publish-to-handler latency, beside a hand-written asyncio
baseline and pyee's AsyncIOEventEmitter, on the same workloads in the same run.

Workload: one publisher in a tight loop on one topic; 1 or 10 subscribers whose handler
records ``perf_counter() - t0`` (``t0`` taken just before the publish and carried as the
payload). ``sync`` means ``subscribe`` with a plain-function handler, ``async`` means
``subscribe_async`` with an ``async def`` handler; the baseline and pyee get the same kind of
handler. The bus runs with its defaults (buffer 10, 5 workers, stats and history on) except
for ``deliveryMode``.

- baseline: one bounded ``asyncio.Queue`` (the bus's buffer size) and one consumer task per
  subscriber; the publisher awaits ``queue.put`` on each queue.
- pyee: ``emit`` calls plain handlers inline and schedules a task per coroutine handler; the
  publisher yields every 64 events so that those tasks run (pyee has no backpressure).

"Many patterns": the cost of a publish to a topic never published before, with 10 and with
10,000 pattern subscriptions (see ``run_patterns``).

"loaded" latency is measured during the throughput run (a saturated publisher, so it is
mostly time spent waiting in a full queue); "idle" latency publishes one event at a time and
waits for its deliveries before the next.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from pyee.asyncio import AsyncIOEventEmitter

from modular import Application
from modules.eventbus import Event, EventBusModule
from modules.eventbus.topics import matches

from .common import (
    Measurement,
    Summary,
    format_rate,
    format_seconds,
    print_table,
    quiet_gc,
    wait_until,
)

TOPIC = "bench.topic"
BUFFER = 10  # the bus's default defaultEventBufferSize; the baseline queues get the same
WARMUP = 2_000
IDLE_SAMPLES = 1_000
PYEE_YIELD_EVERY = 64


class Sink:
    """Where every implementation's handlers record their latencies."""

    def __init__(self) -> None:
        self.latencies: list[float] = []

    def plain(self) -> Callable[[float], None]:
        record, now = self.latencies.append, time.perf_counter

        def handler(t0: float) -> None:
            record(now() - t0)

        return handler

    def coroutine(self) -> Callable[[float], Any]:
        record, now = self.latencies.append, time.perf_counter

        async def handler(t0: float) -> None:
            record(now() - t0)

        return handler

    def plain_event(self) -> Callable[[Event], None]:
        record, now = self.latencies.append, time.perf_counter

        def handler(event: Event) -> None:
            record(now() - event.payload)

        return handler

    def coroutine_event(self) -> Callable[[Event], Any]:
        record, now = self.latencies.append, time.perf_counter

        async def handler(event: Event) -> None:
            record(now() - event.payload)

        return handler


class Target(Protocol):
    name: str

    async def setup(self, subscribers: int, kind: str, sink: Sink) -> None: ...
    async def publish_many(self, count: int) -> None: ...
    def dropped(self) -> int: ...
    async def teardown(self) -> None: ...


class BusTarget:
    def __init__(self, mode: str) -> None:
        self.name = f"bus ({mode})"
        self.mode = mode
        self.app: Application | None = None
        self.bus: EventBusModule | None = None

    async def setup(self, subscribers: int, kind: str, sink: Sink) -> None:
        self.app = Application({"eventbus": {"deliveryMode": self.mode}}, envvar_prefix=None)
        self.app.register_module(EventBusModule())
        await self.app.start()
        self.bus = bus = self.app.get_service("eventbus.provider", EventBusModule)
        for _ in range(subscribers):
            if kind == "sync":
                await bus.subscribe(TOPIC, sink.plain_event())
            else:
                await bus.subscribe_async(TOPIC, sink.coroutine_event())

    async def publish_many(self, count: int) -> None:
        assert self.bus is not None
        publish, now = self.bus.publish, time.perf_counter
        for _ in range(count):
            await publish(TOPIC, now())

    def dropped(self) -> int:
        assert self.bus is not None
        return self.bus.stats()[1]

    async def teardown(self) -> None:
        if self.app is not None:
            await self.app.stop()


class BaselineTarget:
    name = "asyncio baseline"

    def __init__(self) -> None:
        self.queues: list[asyncio.Queue[float]] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def setup(self, subscribers: int, kind: str, sink: Sink) -> None:
        self.queues = [asyncio.Queue(maxsize=BUFFER) for _ in range(subscribers)]
        consume = self._consume_plain if kind == "sync" else self._consume_coroutine
        self.tasks = [
            asyncio.create_task(
                consume(queue, sink.plain() if kind == "sync" else sink.coroutine())
            )
            for queue in self.queues
        ]

    @staticmethod
    async def _consume_plain(queue: asyncio.Queue[float], handler: Callable[[float], None]) -> None:
        get = queue.get
        while True:
            handler(await get())

    @staticmethod
    async def _consume_coroutine(
        queue: asyncio.Queue[float], handler: Callable[[float], Any]
    ) -> None:
        get = queue.get
        while True:
            await handler(await get())

    async def publish_many(self, count: int) -> None:
        now, queues = time.perf_counter, self.queues
        if len(queues) == 1:
            put = queues[0].put
            for _ in range(count):
                await put(now())
            return
        for _ in range(count):
            t0 = now()
            for queue in queues:
                await queue.put(t0)

    def dropped(self) -> int:
        return 0

    async def teardown(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class PyeeTarget:
    name = "pyee AsyncIOEventEmitter"

    def __init__(self) -> None:
        self.emitter: AsyncIOEventEmitter | None = None

    async def setup(self, subscribers: int, kind: str, sink: Sink) -> None:
        self.emitter = AsyncIOEventEmitter()
        for _ in range(subscribers):
            self.emitter.add_listener(TOPIC, sink.plain() if kind == "sync" else sink.coroutine())

    async def publish_many(self, count: int) -> None:
        assert self.emitter is not None
        emit, now = self.emitter.emit, time.perf_counter
        for i in range(count):
            emit(TOPIC, now())
            if i % PYEE_YIELD_EVERY == PYEE_YIELD_EVERY - 1:
                await asyncio.sleep(0)

    def dropped(self) -> int:
        return 0

    async def teardown(self) -> None:
        assert self.emitter is not None
        self.emitter.remove_all_listeners()


@dataclass
class Run:
    loaded: Measurement
    idle: Measurement


async def measure(target: Target, subscribers: int, kind: str, events: int) -> Run:
    sink = Sink()
    latencies = sink.latencies
    await target.setup(subscribers, kind, sink)
    try:
        await target.publish_many(WARMUP)
        await wait_until(partial(_settled, latencies, target, 0, WARMUP * subscribers))
        latencies.clear()
        dropped_before = target.dropped()
        expected = events * subscribers
        quiet_gc()
        start = time.perf_counter()
        await target.publish_many(events)
        end = await wait_until(partial(_settled, latencies, target, dropped_before, expected))
        loaded = Measurement(
            len(latencies), end - start, list(latencies), target.dropped() - dropped_before
        )
        idle = await _idle(target, subscribers, sink)
    finally:
        await target.teardown()
    return Run(loaded, idle)


def _settled(latencies: list[float], target: Target, dropped_before: int, expected: int) -> bool:
    """Every delivery of the events so far happened or was dropped."""
    return len(latencies) + target.dropped() - dropped_before >= expected


async def _idle(target: Target, subscribers: int, sink: Sink) -> Measurement:
    latencies = sink.latencies
    latencies.clear()
    dropped_before = target.dropped()
    start = time.perf_counter()
    for _ in range(IDLE_SAMPLES):
        expected = len(latencies) + subscribers
        await target.publish_many(1)
        done = partial(_settled, latencies, target, dropped_before, expected)
        await wait_until(done, timeout=10.0, poll=0.0)
    return Measurement(
        len(latencies),
        time.perf_counter() - start,
        list(latencies),
        target.dropped() - dropped_before,
    )


@dataclass(frozen=True)
class Workload:
    subscribers: int
    kind: str  # "sync" (subscribe) or "async" (subscribe_async)

    @property
    def label(self) -> str:
        return f"{self.subscribers} sub, {self.kind}"


WORKLOADS = [Workload(1, "sync"), Workload(10, "sync"), Workload(1, "async"), Workload(10, "async")]


async def run(deliveries: int, repeat: int) -> list[list[str]]:
    """Measure every workload ``repeat`` times (implementations interleaved, so that noise
    from other processes spreads over all of them) and print the medians; then the
    many-patterns case."""
    rows: list[list[str]] = []
    for workload in WORKLOADS:
        events = max(1, deliveries // workload.subscribers)
        targets: list[Callable[[], Target]] = [
            BaselineTarget,
            PyeeTarget,
            lambda: BusTarget("drop"),
            lambda: BusTarget("block"),
        ]
        runs: dict[str, list[Run]] = {}
        for _ in range(repeat):
            for make in targets:
                target = make()
                runs.setdefault(target.name, []).append(
                    await measure(target, workload.subscribers, workload.kind, events)
                )
        baseline = Summary.of([r.loaded for r in runs[BaselineTarget.name]]).rate
        for name, measured in runs.items():
            loaded = Summary.of([r.loaded for r in measured])
            idle = Summary.of([r.idle for r in measured])
            rows.append(
                [
                    workload.label,
                    name,
                    format_rate(loaded.rate),
                    f"{loaded.rate / baseline:.2f}x",
                    format_seconds(loaded.p50),
                    format_seconds(loaded.p99),
                    format_seconds(idle.p50),
                    format_seconds(idle.p99),
                    str(loaded.dropped),
                ]
            )
        print(f"  measured {workload.label} ({events} events x {repeat})", flush=True)
    print_table(
        f"Memory engine: {deliveries} deliveries per run, median of {repeat} run(s)",
        [
            "workload",
            "implementation",
            "deliveries/s",
            "vs baseline",
            "loaded p50",
            "loaded p99",
            "idle p50",
            "idle p99",
            "dropped",
        ],
        rows,
    )
    await run_patterns(repeat)
    return rows


# --- many pattern subscriptions -------------------------------------------------------------

PATTERN_COUNTS = (10, 10_000)
NEW_TOPICS = 10_000
SCANNED_TOPICS = 200  # topics resolved by the scan of every pattern (slow, so few)


@dataclass
class PatternRun:
    new_topic: float  # seconds per publish, each to a topic never published before
    seen_topic: float  # seconds per publish, the same topics again (resolved from the cache)
    scan: float  # seconds per topic to check every pattern with ``matches``


async def _pattern_run(patterns: int) -> PatternRun:
    """``patterns`` subscriptions ``p<i>.*`` with a plain-function handler; topic ``j`` is
    ``p<j % patterns>.t<j>``, so that every publish has exactly one delivery whatever the
    number of patterns and only the resolving of a new topic differs."""
    app = Application({"eventbus": {}}, envvar_prefix=None)
    app.register_module(EventBusModule())
    await app.start()
    try:
        bus = app.get_service("eventbus.provider", EventBusModule)
        handled: list[str] = []
        record = handled.append

        def handler(event: Event) -> None:
            record(event.topic)

        names = [f"p{i}.*" for i in range(patterns)]
        for name in names:
            await bus.subscribe(name, handler)
        await asyncio.sleep(0)  # each subscription's consumer task takes its first step
        topics = [f"p{j % patterns}.t{j}" for j in range(NEW_TOPICS)]
        publish = bus.publish
        per_publish: list[float] = []
        for rounds in (1, 2):  # new topics, then the same topics again
            quiet_gc()
            start = time.perf_counter()
            for topic in topics:
                await publish(topic)
            end = await wait_until(lambda: len(handled) >= rounds * NEW_TOPICS)  # noqa: B023
            per_publish.append((end - start) / NEW_TOPICS)
        if handled[:NEW_TOPICS] != topics or bus.stats() != (2 * NEW_TOPICS, 0):
            raise AssertionError(f"{patterns} patterns: deliveries are not one per publish")
    finally:
        await app.stop()
    sample = topics[:SCANNED_TOPICS]
    start = time.perf_counter()
    for topic in sample:
        [name for name in names if matches(name, topic)]
    scan = (time.perf_counter() - start) / len(sample)
    return PatternRun(per_publish[0], per_publish[1], scan)


async def run_patterns(repeat: int) -> list[list[str]]:
    """Publishing to new topics with few and with many pattern subscriptions (interleaved
    ``repeat`` times, medians printed)."""
    runs: dict[int, list[PatternRun]] = {count: [] for count in PATTERN_COUNTS}
    for _ in range(repeat):
        for count in PATTERN_COUNTS:
            runs[count].append(await _pattern_run(count))
    medians = {
        count: PatternRun(
            statistics.median(r.new_topic for r in measured),
            statistics.median(r.seen_topic for r in measured),
            statistics.median(r.scan for r in measured),
        )
        for count, measured in runs.items()
    }
    reference = medians[PATTERN_COUNTS[0]].new_topic
    rows = [
        [
            f"{count:,}",
            format_seconds(m.new_topic),
            f"{m.new_topic / reference:.2f}x",
            format_seconds(m.seen_topic),
            format_seconds(m.scan),
        ]
        for count, m in medians.items()
    ]
    print_table(
        f"Memory engine, many patterns: {NEW_TOPICS:,} publishes to distinct new topics, "
        f"median of {repeat} run(s)",
        [
            "pattern subscriptions",
            "per publish, new topic",
            f"vs {PATTERN_COUNTS[0]} patterns",
            "per publish, topic seen before",
            "scan of every pattern, per topic",
        ],
        rows,
    )
    return rows


def main(deliveries: int = 100_000, repeat: int = 1) -> None:
    asyncio.run(run(deliveries, repeat))
