"""What handlers cannot break: failures of any kind, stop, their own mailbox, the loop.

Each test here is a reproduction of a defect seen in earlier versions: a BaseException from
a handler ending the worker pool, a handler that swallows its cancellation holding stop()
for far longer than shutdownTimeout, a handler deadlocking on its own full mailbox in block
mode, a tight publish loop holding the event loop when nobody listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections import defaultdict
from typing import Any

import pytest

from modular import current_tenant, tenant_context
from modules.eventbus import Event
from modules.eventbus.delivery import YIELD_EVERY
from tests.helpers import Recorder, wait_for
from tests.unit.eventbus.conftest import MakeBus


class HandlerAbort(BaseException):
    """Not an Exception: what a careless handler (or a library it calls) may raise."""


KINDS = [HandlerAbort, GeneratorExit, asyncio.CancelledError]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
async def test_base_exception_in_pool_handler_keeps_every_worker(
    make_bus: MakeBus, kind: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_bus({"workerCount": 2}, observe=True)
    others = Recorder("others")

    async def broken(event: Event) -> None:
        raise kind("boom")

    async def other(event: Event) -> None:
        others(event)

    bad = await h.bus.subscribe_async("bad.topic", broken)
    await h.bus.subscribe_async("good.topic", other)
    with caplog.at_level(logging.WARNING, "modules.eventbus"):
        for i in range(10):  # more failures than workers
            await h.bus.publish("bad.topic", i)
            await h.bus.publish("good.topic", i)
        await others.wait_count(10)
        await wait_for(lambda: h.bus.per_engine_stats()["default"].failed == 10)
    assert others.payloads == list(range(10)) or sorted(others.payloads) == list(range(10))
    stats = h.bus.per_engine_stats()["default"]
    assert (stats.delivered, stats.failed, stats.dropped) == (20, 10, 0)
    failures = [r for r in caplog.records if "failed on topic bad.topic" in r.getMessage()]
    assert len(failures) == 10
    assert bad.id in failures[0].getMessage()
    assert kind.__name__ in failures[0].getMessage()
    assert len(h.observed("message.failed")) == 10


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
async def test_base_exception_in_plain_handler_never_reaches_the_publisher(
    make_bus: MakeBus, kind: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_bus()
    calls: list[Any] = []

    def broken(event: Event) -> None:
        calls.append(event.payload)
        if event.payload == "bad":
            raise kind("boom")

    await h.bus.subscribe("t", broken)
    with caplog.at_level(logging.WARNING, "modules.eventbus"):
        await h.bus.publish("t", "bad")  # a direct hand-over: the handler runs in here
        await h.bus.publish("t", "good")
        await wait_for(lambda: calls == ["bad", "good"])
    stats = h.bus.per_engine_stats()["default"]
    assert (stats.delivered, stats.failed) == (2, 1)
    assert any("failed on topic t" in r.getMessage() for r in caplog.records)


async def test_ordered_async_handler_survives_a_base_exception(
    make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_bus()
    seen: list[int] = []

    async def handler(event: Event) -> None:
        seen.append(event.payload)
        await asyncio.sleep(0)
        if event.payload % 2:
            raise HandlerAbort("odd")

    await h.bus.subscribe("t", handler)
    with caplog.at_level(logging.WARNING, "modules.eventbus"):
        for i in range(6):
            await h.bus.publish("t", i)
        await wait_for(lambda: seen == list(range(6)))
        await wait_for(lambda: h.bus.per_engine_stats()["default"].failed == 3)


async def test_keyboard_interrupt_is_not_swallowed(make_bus: MakeBus) -> None:
    h = await make_bus()

    def handler(event: Event) -> None:
        raise KeyboardInterrupt

    await h.bus.subscribe("t", handler)
    with pytest.raises(KeyboardInterrupt):
        await h.bus.publish("t", 1)


# --- stop is bounded ------------------------------------------------------------------------


@pytest.mark.parametrize("is_async", [False, True], ids=["ordered", "pool"])
async def test_stop_is_bounded_by_shutdown_timeout_when_a_handler_ignores_cancellation(
    make_bus: MakeBus, is_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_bus({"shutdownTimeout": "500ms"})
    released = asyncio.Event()
    started, finished = asyncio.Event(), asyncio.Event()

    async def stubborn(event: Event) -> None:
        started.set()
        try:
            while not released.is_set():
                with contextlib.suppress(asyncio.CancelledError):  # a badly written handler
                    await asyncio.sleep(0.01)
        finally:
            finished.set()

    subscribe = h.bus.subscribe_async if is_async else h.bus.subscribe
    await subscribe("t", stubborn)
    await h.bus.publish("t", 1)
    await asyncio.wait_for(started.wait(), 5)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with caplog.at_level(logging.ERROR, "modules.eventbus"):
        await h.app.stop()
    elapsed = loop.time() - began
    released.set()
    assert elapsed < 0.5 + 0.5 + 0.25, f"stop took {elapsed:.2f}s with shutdownTimeout 0.5s"
    assert elapsed >= 0.45  # it did wait for the handler first
    assert h.bus.stats() == (0, 1)  # the abandoned event counts as dropped
    assert any("abandoned" in r.getMessage() for r in caplog.records)
    # The abandoned handler finishing later is not counted again.
    await asyncio.wait_for(finished.wait(), 5)
    assert h.bus.stats() == (0, 1)


# --- a handler publishing into its own full mailbox -----------------------------------------


@pytest.mark.parametrize("mode", ["block", "timeout"])
@pytest.mark.parametrize("is_async", [False, True], ids=["ordered", "pool"])
async def test_handler_publishing_to_its_own_full_mailbox_does_not_deadlock(
    make_bus: MakeBus, mode: str, is_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_bus(
        {
            "deliveryMode": mode,
            "publishBlockTimeout": "30s",
            "defaultEventBufferSize": 2,
            "maxEventQueueSize": 2,
            "workerCount": 1,
        }
    )
    seen: list[int] = []

    async def fan_out(event: Event) -> None:
        seen.append(event.payload)
        if event.payload == 0:
            for i in range(1, 11):  # five times what the mailbox holds
                await h.bus.publish("loop", i)

    subscribe = h.bus.subscribe_async if is_async else h.bus.subscribe
    await subscribe("loop", fan_out)
    with caplog.at_level(logging.WARNING, "modules.eventbus"):
        await h.bus.publish("loop", 0)
        await wait_for(lambda: len(seen) == 11, what=f"all 11 events, saw {seen}")
    if not is_async:
        assert seen == list(range(11))  # order holds
    else:
        assert sorted(seen) == list(range(11))
    assert h.bus.stats() == (11, 0)
    warnings = [r for r in caplog.records if "its own full mailbox" in r.getMessage()]
    assert len(warnings) == 1  # once per subscription


async def test_other_publishers_still_wait_in_block_mode(make_bus: MakeBus) -> None:
    h = await make_bus({"deliveryMode": "block", "defaultEventBufferSize": 1})
    gate = h.gate()
    seen: list[int] = []

    async def slow(event: Event) -> None:
        await gate.wait()
        seen.append(event.payload)

    sub = await h.bus.subscribe("t", slow)
    await h.bus.publish("t", 0)  # being handled
    await h.bus.publish("t", 1)  # queued: the mailbox is full now
    blocked = asyncio.get_running_loop().create_task(h.bus.publish("t", 2))
    mailbox = h.bus.engine("default").dispatcher._mailboxes[sub]  # type: ignore[attr-defined]
    await wait_for(lambda: bool(mailbox.putters), what="the publisher waiting for room")
    assert not blocked.done()  # an outside publisher waits for room, as block mode says
    gate.set()
    await asyncio.wait_for(blocked, 5)
    await wait_for(lambda: seen == [0, 1, 2])


# --- handlers run in their event's tenant ---------------------------------------------------


async def test_handlers_see_the_tenant_of_their_event(make_bus: MakeBus) -> None:
    h = await make_bus()
    seen: list[tuple[str, Any, str | None]] = []

    def plain(event: Event) -> None:
        seen.append(("plain", event.payload, current_tenant()))

    async def ordered(event: Event) -> None:
        await asyncio.sleep(0)
        seen.append(("ordered", event.payload, current_tenant()))

    async def pooled(event: Event) -> None:
        await asyncio.sleep(0)
        seen.append(("pooled", event.payload, current_tenant()))

    for tenant in ("acme", None):
        scoped = h.bus.for_tenant(tenant) if tenant else h.bus
        await scoped.subscribe("t", plain)
        await scoped.subscribe("t", ordered)
        await scoped.subscribe_async("t", pooled)
    await h.bus.publish("t", 1, tenant="acme")  # tenant= alone, no tenant context
    with tenant_context("acme"):
        await h.bus.publish("t", 2, tenant=None)  # the context's tenant
    await h.bus.publish("t", 3)
    await wait_for(lambda: len(seen) == 9)
    assert sorted(seen, key=repr) == sorted(
        [(kind, n, "acme") for kind in ("plain", "ordered", "pooled") for n in (1, 2)]
        + [(kind, 3, None) for kind in ("plain", "ordered", "pooled")],
        key=repr,
    )


async def test_a_tenants_follow_up_event_stays_with_the_tenant(make_bus: MakeBus) -> None:
    h = await make_bus()
    untenanted, acme = Recorder("untenanted"), Recorder("acme")
    await h.bus.subscribe("order.shipped", untenanted)
    await h.bus.for_tenant("acme").subscribe("order.shipped", acme)

    async def ship(event: Event) -> None:
        await h.bus.publish("order.shipped", event.payload)  # no tenant named

    await h.bus.for_tenant("acme").subscribe("order.paid", ship)
    await h.bus.publish("order.paid", 7, tenant="acme")
    await acme.wait_count(1)
    assert acme.events[0].tenant == "acme"
    await h.bus.publish("order.shipped", "marker")
    await untenanted.wait_count(1)
    assert untenanted.payloads == ["marker"]


# --- the publisher lets the loop run ---------------------------------------------------------


class LoopTicker:
    """Counts how often the event loop ran another task while the block ran: once per
    yield of whatever held the loop."""

    def __init__(self) -> None:
        self.ticks = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while not self._stop.is_set():
            self.ticks += 1
            await asyncio.sleep(0)

    async def __aenter__(self) -> LoopTicker:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        await asyncio.sleep(0)
        self.ticks = 0
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


@pytest.mark.parametrize("subscribers", ["none", "async", "plain"])
async def test_tight_publish_loop_yields_regularly(make_bus: MakeBus, subscribers: str) -> None:
    h = await make_bus({"maxEventQueueSize": 1_000_000, "defaultEventBufferSize": 1_000_000})
    if subscribers == "async":
        await h.bus.subscribe_async("t", Recorder())
    elif subscribers == "plain":
        await h.bus.subscribe("t", Recorder())
    publishes = 20 * YIELD_EVERY
    async with LoopTicker() as ticker:
        for i in range(publishes):
            await h.bus.publish("t", i)
    during = ticker.ticks
    # The ticker runs at least once per YIELD_EVERY publishes: no stretch of the loop
    # lasts longer than that many publishes (well under a millisecond each).
    assert during >= publishes // YIELD_EVERY - 1, f"the loop ran {during} times"


# --- what a handler must look like ----------------------------------------------------------


async def test_go_style_two_argument_handler_is_refused_at_subscribe(make_bus: MakeBus) -> None:
    h = await make_bus()

    async def go_style(ctx: Any, event: Event) -> None:
        pass

    for subscribe in (h.bus.subscribe, h.bus.subscribe_async):
        with pytest.raises(TypeError, match=r"one positional argument, the Event"):
            await subscribe("t", go_style)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="go_style"):
        await h.bus.for_tenant("acme").subscribe("t", go_style)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be callable"):
        await h.bus.subscribe("t", "not a handler")  # type: ignore[arg-type]
    assert h.bus.subscriptions() == []


async def test_handlers_callable_with_one_event_are_accepted(make_bus: MakeBus) -> None:
    h = await make_bus()
    got: list[str] = []

    def two(event: Event, extra: str = "default") -> None:
        got.append(extra)

    def star(*args: Any) -> None:
        got.append("star")

    class Callable:
        def __call__(self, event: Event) -> None:
            got.append("object")

    for handler in (two, functools.partial(two, extra="partial"), star, Callable(), print):
        await h.bus.subscribe("accepted", handler if handler is not print else Recorder())
    await h.bus.publish("accepted", 1)
    await wait_for(lambda: len(got) == 4)
    assert sorted(got) == ["default", "object", "partial", "star"]


# --- found by review: each a reproduction ---------------------------------------------------


@pytest.mark.parametrize("mode", ["block", "timeout"])
async def test_a_publisher_cancelled_while_waiting_for_room_counts_a_drop(
    make_bus: MakeBus, mode: str
) -> None:
    h = await make_bus(
        {
            "deliveryMode": mode,
            "publishBlockTimeout": "30s",
            "defaultEventBufferSize": 1,
            "shutdownTimeout": "3s",
        }
    )
    gate = h.gate()

    async def slow(event: Event) -> None:
        await gate.wait()

    await h.bus.subscribe("t", slow)
    await h.bus.publish("t", 1)  # being handled
    await h.bus.publish("t", 2)  # queued
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(h.bus.publish("t", 3), 0.05)  # waits for room, gives up
    gate.set()
    await wait_for(lambda: h.bus.stats() == (2, 1))
    engine = h.bus.engine("default")
    assert engine.dispatcher.pending == 0  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    began = loop.time()
    await h.app.stop()
    assert loop.time() - began < 1.0  # nothing left to wait for


async def test_each_handler_of_an_event_has_a_context_of_its_own(make_bus: MakeBus) -> None:
    h = await make_bus()
    request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("rid", default=None)
    seen: list[tuple[str, str | None, str | None]] = []

    # ``second`` looks while ``first`` is inside the same event, its context set.
    inside: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
    looked: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def first(event: Event) -> None:
        request_id.set("set-by-first")
        with tenant_context("acme"):
            inside[event.id].set()
            await looked[event.id].wait()

    async def second(event: Event) -> None:
        await inside[event.id].wait()
        seen.append(("second", current_tenant(), request_id.get()))
        looked[event.id].set()

    def third(event: Event) -> None:
        seen.append(("third", current_tenant(), request_id.get()))

    await h.bus.subscribe("t", first)
    await h.bus.subscribe_async("t", second)
    await h.bus.subscribe("t", third)
    for _ in range(3):  # rotation puts each handler first once
        await h.bus.publish("t")
    await wait_for(lambda: len(seen) == 6)
    assert set(seen) == {("second", None, None), ("third", None, None)}


async def test_a_publish_from_a_task_the_handler_started_does_not_deadlock(
    make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_bus({"deliveryMode": "block", "defaultEventBufferSize": 2})
    seen: list[int] = []

    async def fan_out(event: Event) -> None:
        seen.append(event.payload)
        if event.payload == 0:
            await asyncio.gather(*(h.bus.publish("loop", i) for i in range(1, 10)))

    await h.bus.subscribe("loop", fan_out)
    with caplog.at_level(logging.WARNING, "modules.eventbus"):
        await h.bus.publish("loop", 0)
        await wait_for(lambda: len(seen) == 10, what=f"all 10 events, saw {seen}")
    assert sorted(seen) == list(range(10))


async def test_concurrent_stops_share_one_shutdown(make_bus: MakeBus) -> None:
    h = await make_bus({"shutdownTimeout": "5s"})

    async def slow(event: Event) -> None:
        await asyncio.sleep(0.2)

    await h.bus.subscribe_async("t", slow)
    await h.bus.publish("t", 1)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.gather(h.bus.stop(), h.bus.stop())
    assert loop.time() - began < 2.0
    assert h.bus.stats() == (1, 0)


async def test_a_handler_returning_a_value_has_not_failed(make_bus: MakeBus) -> None:
    h = await make_bus()
    calls: list[int] = []

    def returns_true(event: Event) -> bool:
        calls.append(event.payload)
        return True

    await h.bus.subscribe("t", returns_true)  # type: ignore[arg-type]
    for i in range(3):
        await h.bus.publish("t", i)
    await wait_for(lambda: len(calls) == 3)
    stats = h.bus.per_engine_stats()["default"]
    assert (stats.delivered, stats.failed) == (3, 0)


async def test_an_abandoned_handler_is_counted_once(
    make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_bus({"shutdownTimeout": "100ms"})
    released = asyncio.Event()
    started, finished = asyncio.Event(), asyncio.Event()

    async def stubborn(event: Event) -> None:
        started.set()
        try:
            while not released.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0.01)
        finally:
            finished.set()
        raise asyncio.CancelledError  # on its way out, after it was abandoned

    await h.bus.subscribe("t", stubborn)
    await h.bus.publish("t", 1)
    await asyncio.wait_for(started.wait(), 5)
    with caplog.at_level(logging.ERROR, "modules.eventbus"):
        await h.app.stop()
    released.set()
    await asyncio.wait_for(finished.wait(), 5)
    assert h.bus.stats() == (0, 1)
    engine = h.bus.engine("default")
    assert engine.dispatcher.pending == 0  # type: ignore[attr-defined]


async def test_credentials_in_a_handlers_error_are_masked(
    make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_bus(observe=True)

    def handler(event: Event) -> None:
        raise ConnectionError("cannot reach postgresql://app:s3cretZZ@127.0.0.1:5432/db")

    await h.bus.subscribe("t", handler)
    with caplog.at_level(logging.WARNING, "modules.eventbus"):
        await h.bus.publish("t", 1)
    (failed,) = h.observed("message.failed")
    assert "postgresql://app:***@127.0.0.1:5432/db" in failed.data["error"]
    assert "s3cretZZ" not in caplog.text
    assert "postgresql://app:***@" in caplog.text


async def test_generator_functions_are_refused_as_handlers(make_bus: MakeBus) -> None:
    h = await make_bus()

    def gen(event: Event) -> Any:
        yield event

    async def agen(event: Event) -> Any:
        yield event

    for handler in (gen, agen):
        with pytest.raises(TypeError, match="generator function"):
            await h.bus.subscribe("t", handler)


async def test_a_backlog_of_handlers_that_never_suspend_lets_the_loop_run(
    make_bus: MakeBus,
) -> None:
    h = await make_bus({"defaultEventBufferSize": 100_000})
    first = h.gate()
    handled = 0

    async def quick(event: Event) -> None:  # never suspends, but for the first event
        nonlocal handled
        if event.payload == 0:
            await first.wait()
        handled += 1

    await h.bus.subscribe("t", quick)
    events = 40 * YIELD_EVERY
    for i in range(events):  # all queued behind the first: a backlog
        await h.bus.publish("t", i)
    async with LoopTicker() as ticker:
        first.set()
        await wait_for(lambda: handled == events)
    during = ticker.ticks
    # The consumer yields every YIELD_EVERY deliveries; without that the whole backlog
    # would be drained in one stretch of the loop.
    assert during >= events // YIELD_EVERY - 2, f"the loop ran {during} times"
