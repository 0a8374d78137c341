"""What handlers cannot break: failures of any kind, stop, their own mailbox, the loop.

Each test here is a reproduction of a defect seen in earlier versions: a BaseException from
a handler ending the worker pool, a handler that swallows its cancellation holding stop()
for far longer than shutdownTimeout, a handler deadlocking on its own full mailbox in block
mode, a tight publish loop holding the event loop when nobody listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
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
    started = asyncio.Event()

    async def stubborn(event: Event) -> None:
        started.set()
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # a badly written handler
                await asyncio.sleep(0.01)

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
    await asyncio.sleep(0.05)
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

    await h.bus.subscribe("t", slow)
    await h.bus.publish("t", 0)  # being handled
    await h.bus.publish("t", 1)  # queued: the mailbox is full now
    blocked = asyncio.get_running_loop().create_task(h.bus.publish("t", 2))
    await asyncio.sleep(0.02)
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


@pytest.mark.parametrize("subscribers", ["none", "async", "plain"])
async def test_tight_publish_loop_yields_regularly(make_bus: MakeBus, subscribers: str) -> None:
    h = await make_bus({"maxEventQueueSize": 1_000_000, "defaultEventBufferSize": 1_000_000})
    if subscribers == "async":
        await h.bus.subscribe_async("t", Recorder())
    elif subscribers == "plain":
        await h.bus.subscribe("t", Recorder())
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.get_running_loop().create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    publishes = 20 * YIELD_EVERY
    for i in range(publishes):
        await h.bus.publish("t", i)
    during = ticks - before
    stop.set()
    await task
    # The ticker runs at least once per YIELD_EVERY publishes: no stretch of the loop
    # lasts longer than that many publishes (well under a millisecond each).
    assert during >= publishes // YIELD_EVERY - 1, f"the loop ran {during} times"


# --- what a handler must look like ----------------------------------------------------------


async def test_go_style_two_argument_handler_is_refused_at_subscribe(make_bus: MakeBus) -> None:
    h = await make_bus()

    async def go_style(ctx: Any, event: Event) -> None:
        pass

    for subscribe in (h.bus.subscribe, h.bus.subscribe_async):
        with pytest.raises(TypeError, match=r"exactly one argument, the Event"):
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
