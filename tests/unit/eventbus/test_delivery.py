"""Delivery: modes under pressure, rotation, worker pool, ordering, failures, context, types."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time

import pytest
from pydantic import BaseModel

from modular import current_tenant, tenant_context
from modules.eventbus import Event, EventBusModule
from modules.eventbus.delivery import YIELD_EVERY
from tests.helpers import wait_for
from tests.unit.eventbus.conftest import MakeBus


async def publish_all(bus: EventBusModule, topic: str, count: int) -> None:
    for i in range(count):
        await bus.publish(topic, i)


async def let_others_run(steps: int = 50) -> None:
    """Give every ready task many turns (no wall-clock wait): used to show something does NOT
    happen, e.g. that a blocked publisher stays blocked."""
    for _ in range(steps):
        await asyncio.sleep(0)


# --- delivery modes -------------------------------------------------------------------------


async def test_block_mode_holds_the_publisher_back_and_loses_nothing(make_bus: MakeBus) -> None:
    harness = await make_bus({"deliveryMode": "block", "defaultEventBufferSize": 2})
    bus = harness.bus
    gate = harness.gate()
    slow: list[int] = []
    fast: list[int] = []

    async def slow_handler(event: Event) -> None:
        await gate.wait()
        slow.append(event.payload)

    await bus.subscribe("work.item", slow_handler)
    await bus.subscribe("work.item", lambda e: fast.append(e.payload))
    total = 30
    publisher = asyncio.create_task(publish_all(bus, "work.item", total))
    await wait_for(lambda: len(fast) >= 3)
    await let_others_run()
    assert not publisher.done(), "block mode must wait for the slow subscriber"
    assert len(fast) < total
    assert bus.stats()[1] == 0

    gate.set()
    await asyncio.wait_for(publisher, 10)
    await wait_for(lambda: len(slow) == total and len(fast) == total)
    assert slow == list(range(total)) and fast == list(range(total))
    assert bus.stats() == (2 * total, 0)
    assert bus.per_engine_stats()["default"].dropped == 0


async def test_drop_mode_drops_for_a_blocked_subscriber_only(make_bus: MakeBus) -> None:
    buffer = 2
    harness = await make_bus({"deliveryMode": "drop", "defaultEventBufferSize": buffer})
    bus = harness.bus
    gate = harness.gate()
    slow: list[int] = []
    fast: list[int] = []

    async def slow_handler(event: Event) -> None:
        await gate.wait()
        slow.append(event.payload)

    await bus.subscribe("work.*", slow_handler)
    await bus.subscribe("work.item", lambda e: fast.append(e.payload))
    total = 20
    await asyncio.wait_for(publish_all(bus, "work.item", total), 10)  # never blocks

    await wait_for(lambda: len(fast) == total)
    assert fast == list(range(total)), "the fast subscriber loses nothing"
    dropped = bus.stats()[1]
    # The blocked handler holds one event and its queue `buffer` more: the rest is dropped.
    assert dropped >= total - (buffer + 1)

    gate.set()
    await wait_for(lambda: sum(bus.stats()) == total * 2, what="drained")
    delivered, dropped = bus.stats()
    assert delivered + dropped == total * 2  # published x matching subscribers
    assert len(slow) == total - dropped
    assert slow == sorted(slow)
    engine_stats = bus.per_engine_stats()["default"]
    assert (engine_stats.delivered, engine_stats.dropped) == (delivered, dropped)


async def test_timeout_mode_waits_then_drops(make_bus: MakeBus) -> None:
    harness = await make_bus(
        {"deliveryMode": "timeout", "publishBlockTimeout": "20ms", "defaultEventBufferSize": 2}
    )
    bus = harness.bus
    gate = harness.gate()
    slow: list[int] = []
    fast: list[int] = []

    async def slow_handler(event: Event) -> None:
        await gate.wait()
        slow.append(event.payload)

    await bus.subscribe("work.item", slow_handler)
    await bus.subscribe("work.*", lambda e: fast.append(e.payload))
    total = 8
    began = time.monotonic()
    await asyncio.wait_for(publish_all(bus, "work.item", total), 10)
    elapsed = time.monotonic() - began
    dropped = bus.stats()[1]
    assert dropped >= total - 3
    # Each drop came after waiting for room for publishBlockTimeout.
    assert elapsed >= dropped * 0.015

    gate.set()
    await wait_for(lambda: sum(bus.stats()) == total * 2, what="drained")
    delivered, dropped = bus.stats()
    assert delivered + dropped == total * 2
    assert fast == list(range(total))
    assert len(slow) == total - dropped


async def test_timeout_mode_loses_nothing_when_room_comes_in_time(make_bus: MakeBus) -> None:
    bus = (
        await make_bus(
            {"deliveryMode": "timeout", "publishBlockTimeout": "5s", "defaultEventBufferSize": 1}
        )
    ).bus
    received: list[int] = []

    async def slowish(event: Event) -> None:
        await asyncio.sleep(0.001)
        received.append(event.payload)

    await bus.subscribe("work.item", slowish)
    await publish_all(bus, "work.item", 30)
    await wait_for(lambda: len(received) == 30)
    assert received == list(range(30))
    assert bus.stats() == (30, 0)


@pytest.mark.parametrize("is_async", [False, True], ids=["ordered", "async"])
async def test_a_fast_handler_behind_a_tight_publish_loop_loses_nothing(
    make_bus: MakeBus, is_async: bool
) -> None:
    bus = (
        await make_bus(
            {"deliveryMode": "drop", "defaultEventBufferSize": 10, "maxEventQueueSize": 10}
        )
    ).bus
    received: list[int] = []

    def handler(event: Event) -> None:
        received.append(event.payload)

    if is_async:
        await bus.subscribe_async("tick", handler)
    else:
        await bus.subscribe("tick", handler)
    total = 10_000
    await publish_all(bus, "tick", total)
    await wait_for(lambda: len(received) == total, what=f"{len(received)} of {total}")
    assert bus.stats() == (total, 0)
    if not is_async:
        assert received == list(range(total))


# --- rotation -------------------------------------------------------------------------------


async def delivery_rounds(bus: EventBusModule, is_async: bool, rounds: int) -> list[list[str]]:
    """Which subscriber's handler ran first, second, third for each event published alone."""
    calls: list[str] = []
    for name in ("a", "b", "c"):

        def handler(event: Event, name: str = name) -> None:
            calls.append(name)

        if is_async:
            await bus.subscribe_async("fan.out", handler)
        else:
            await bus.subscribe("fan.out", handler)
    for i in range(rounds):
        await bus.publish("fan.out", i)
        await wait_for(lambda: len(calls) == 3 * (i + 1))  # noqa: B023 (awaited in this turn)
    return [calls[i : i + 3] for i in range(0, len(calls), 3)]


@pytest.mark.parametrize("is_async", [False, True], ids=["ordered", "async"])
async def test_without_rotation_attempts_follow_registration_order(
    make_bus: MakeBus, is_async: bool
) -> None:
    bus = (await make_bus({"rotateSubscriberOrder": False, "workerCount": 1})).bus
    rounds = await delivery_rounds(bus, is_async, 6)
    assert rounds == [["a", "b", "c"]] * 6


@pytest.mark.parametrize("is_async", [False, True], ids=["ordered", "async"])
async def test_rotation_starts_each_fan_out_at_the_next_subscriber(
    make_bus: MakeBus, is_async: bool
) -> None:
    bus = (await make_bus({"rotateSubscriberOrder": True, "workerCount": 1})).bus
    rounds = await delivery_rounds(bus, is_async, 6)
    rotations = [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert all(r in rotations for r in rounds), rounds
    assert {r[0] for r in rounds[:3]} == {"a", "b", "c"}
    assert rounds[:3] == rounds[3:]


async def shares_under_pressure(
    bus: EventBusModule, steps: int, total: int, is_async: bool = True
) -> list[int]:
    """Three subscribers whose handlers take ``steps`` loop turns each, behind a tight
    publisher: how many events each one handled."""
    counts = [0, 0, 0]
    for i in range(3):

        async def handler(event: Event, i: int = i) -> None:
            for _ in range(steps):
                await asyncio.sleep(0)
            counts[i] += 1

        if is_async:
            await bus.subscribe_async("pressure", handler)
        else:
            await bus.subscribe("pressure", handler)
    await publish_all(bus, "pressure", total)
    await wait_for(lambda: sum(bus.stats()) == 3 * total, what="drained")
    assert sum(counts) == bus.stats()[0]
    return counts


@pytest.mark.parametrize(
    ("steps", "queue", "workers"),
    [(3, 1, 1), (3, 2, 1), (3, 1, 2)],
)
async def test_rotation_shares_a_saturated_worker_pool_fairly(
    make_bus: MakeBus, steps: int, queue: int, workers: int
) -> None:
    # Only loop turns, no timers: the run is deterministic. Without rotation each of these
    # settings starves a subscriber (steps=3, queue=1, workers=1 hands out [1, 300, 0]).
    bus = (
        await make_bus(
            {
                "deliveryMode": "drop",
                "maxEventQueueSize": queue,
                "workerCount": workers,
                "rotateSubscriberOrder": True,
            }
        )
    ).bus
    counts = await shares_under_pressure(bus, steps, 300)
    assert bus.stats()[1] > 0, "the test must put the pool under pressure"
    assert min(counts) >= 0.25 * max(counts), counts


async def test_rotation_shares_tiny_buffers_fairly_in_timeout_mode(make_bus: MakeBus) -> None:
    bus = (
        await make_bus(
            {
                "deliveryMode": "timeout",
                "publishBlockTimeout": "1ms",
                "defaultEventBufferSize": 1,
                "rotateSubscriberOrder": True,
            }
        )
    ).bus
    counts = await shares_under_pressure(bus, 40, 100, is_async=False)
    assert min(counts) >= 0.25 * max(counts), counts


# --- async subscriptions: the worker pool ---------------------------------------------------


async def test_worker_count_handlers_run_at_once(make_bus: MakeBus) -> None:
    harness = await make_bus({"workerCount": 4})
    bus = harness.bus
    barrier = asyncio.Barrier(4)
    passed: list[int] = []

    async def meet(event: Event) -> None:
        # Only four handlers running at the same time can all pass a barrier of four.
        await asyncio.wait_for(barrier.wait(), 5)
        passed.append(event.payload)

    await bus.subscribe_async("job", meet)
    for i in range(4):
        await bus.publish("job", i)
    await wait_for(lambda: len(passed) == 4)
    assert sorted(passed) == [0, 1, 2, 3]
    assert bus.per_engine_stats()["default"].failed == 0


async def test_no_more_than_worker_count_handlers_run_at_once(make_bus: MakeBus) -> None:
    harness = await make_bus({"workerCount": 4})
    bus = harness.bus
    gate = harness.gate()
    active = 0
    peak = 0
    done: list[int] = []

    async def handler(event: Event) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await gate.wait()
        active -= 1
        done.append(event.payload)

    await bus.subscribe_async("job", handler)
    for i in range(7):
        await bus.publish("job", i)
    await wait_for(lambda: active == 4)
    await let_others_run()
    assert (active, peak) == (4, 4)
    gate.set()
    await wait_for(lambda: len(done) == 7)
    assert peak == 4
    assert bus.stats() == (7, 0)


async def test_publish_returns_before_a_slow_async_handler_finishes(make_bus: MakeBus) -> None:
    harness = await make_bus()
    bus = harness.bus
    gate = harness.gate()
    started: list[int] = []
    finished: list[int] = []

    async def slow(event: Event) -> None:
        started.append(event.payload)
        await gate.wait()
        finished.append(event.payload)

    await bus.subscribe_async("report.requested", slow)
    await asyncio.wait_for(bus.publish("report.requested", 1), 5)
    assert finished == []
    await wait_for(lambda: started == [1])
    assert finished == []
    gate.set()
    await wait_for(lambda: finished == [1])


# --- ordered subscriptions ------------------------------------------------------------------


async def test_ordered_subscription_handles_one_event_at_a_time_in_order(
    make_bus: MakeBus,
) -> None:
    bus = (await make_bus({"deliveryMode": "block", "defaultEventBufferSize": 4})).bus
    active = 0
    peak = 0
    seen: list[tuple[str, int]] = []

    async def handler(event: Event) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        for _ in range(3):
            await asyncio.sleep(0)
        seen.append((event.topic, event.payload))
        active -= 1

    await bus.subscribe("order.*", handler)
    expected = []
    for i in range(60):
        topic = ("order.placed", "order.paid", "order.shipped")[i % 3]
        expected.append((topic, i))
        await bus.publish(topic, i)
    await wait_for(lambda: len(seen) == 60)
    assert seen == expected
    assert peak == 1


# --- handler failures -----------------------------------------------------------------------


@pytest.mark.parametrize("is_async", [False, True], ids=["ordered", "async"])
async def test_a_failing_handler_is_logged_counted_reported_and_kept(
    make_bus: MakeBus, caplog: pytest.LogCaptureFixture, is_async: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="modules.eventbus")
    harness = await make_bus({"workerCount": 2}, observe=True)
    bus = harness.bus
    handled: list[int] = []

    async def handler(event: Event) -> None:
        if event.payload < 5:
            raise ValueError(f"cannot handle {event.payload}")
        handled.append(event.payload)

    subscribe = bus.subscribe_async if is_async else bus.subscribe
    sub = await subscribe("payment.received", handler)
    for i in range(8):
        await bus.publish("payment.received", i)
    await wait_for(lambda: len(handled) == 3)
    assert sorted(handled) == [5, 6, 7]
    assert sub.active

    stats = bus.per_engine_stats()["default"]
    assert stats.failed == 5
    assert stats.delivered == 8  # a failed delivery is still a delivery
    assert stats.dropped == 0

    failures = [r for r in caplog.records if "cannot handle" in r.getMessage()]
    assert len(failures) == 5
    message = failures[0].getMessage()
    assert "payment.received" in message and sub.id in message
    assert failures[0].levelno >= logging.WARNING

    reported = harness.observed("message.failed")
    assert len(reported) == 5
    data = reported[0].data
    assert data["topic"] == "payment.received"
    assert data["subscription_id"] == sub.id
    assert data["engine"] == "default"
    assert "ValueError" in data["error"] and "cannot handle" in data["error"]


async def test_workers_survive_many_failures(
    make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    bus = (await make_bus({"workerCount": 2})).bus
    handled: list[int] = []

    def handler(event: Event) -> None:
        if event.payload % 2:
            raise RuntimeError("odd")
        handled.append(event.payload)

    await bus.subscribe_async("numbers", handler)
    for i in range(40):
        await bus.publish("numbers", i)
    await wait_for(lambda: len(handled) == 20)
    assert bus.per_engine_stats()["default"].failed == 20
    await bus.publish("numbers", 100)
    await wait_for(lambda: 100 in handled)
    failures = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(failures) == 20
    assert all("failed on topic numbers" in r.getMessage() for r in failures)
    assert all("RuntimeError: odd" in r.getMessage() for r in failures)


@pytest.mark.parametrize("is_async", [False, True], ids=["ordered", "async"])
async def test_plain_function_handlers(make_bus: MakeBus, is_async: bool) -> None:
    bus = (await make_bus()).bus
    received: list[Event] = []

    def handler(event: Event) -> None:
        received.append(event)

    subscribe = bus.subscribe_async if is_async else bus.subscribe
    await subscribe("plain.topic", handler)
    await bus.publish("plain.topic", "x")
    await wait_for(lambda: len(received) == 1)
    assert received[0].payload == "x"


# --- the publisher's context ----------------------------------------------------------------

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


@pytest.mark.parametrize("is_async", [False, True], ids=["ordered", "async"])
async def test_handlers_see_the_publishers_context(make_bus: MakeBus, is_async: bool) -> None:
    harness = await make_bus({"workerCount": 1})
    bus = harness.bus
    gate = harness.gate()
    seen: list[tuple[int, str, str | None]] = []

    async def handler(event: Event) -> None:
        await gate.wait()  # runs after the publisher moved on to another context value
        seen.append((event.payload, request_id.get(), current_tenant()))

    subscribe = bus.subscribe_async if is_async else bus.subscribe
    await subscribe("ctx.check", handler, all_tenants=True)

    token = request_id.set("req-1")
    await bus.publish("ctx.check", 1)
    request_id.set("req-2")
    with tenant_context("acme"):
        await bus.publish("ctx.check", 2)
    request_id.reset(token)
    await bus.publish("ctx.check", 3)

    gate.set()
    await wait_for(lambda: len(seen) == 3)
    assert sorted(seen) == [(1, "req-1", None), (2, "req-2", "acme"), (3, "none", None)]
    assert request_id.get() == "none", "the handler's context does not leak back"


async def test_a_handler_setting_a_contextvar_does_not_change_the_publisher(
    make_bus: MakeBus,
) -> None:
    bus = (await make_bus()).bus
    done: list[str] = []

    def handler(event: Event) -> None:
        request_id.set("set-by-handler")
        done.append(request_id.get())

    await bus.subscribe("ctx.write", handler)
    await bus.publish("ctx.write")
    await wait_for(lambda: done == ["set-by-handler"])
    assert request_id.get() == "none"


# --- typed payloads -------------------------------------------------------------------------


class UserCreated(BaseModel):
    id: int
    name: str


@pytest.mark.parametrize("is_async", [False, True], ids=["ordered", "async"])
async def test_payload_type_validates_before_the_handler(
    make_bus: MakeBus, caplog: pytest.LogCaptureFixture, is_async: bool
) -> None:
    harness = await make_bus(observe=True)
    bus = harness.bus
    received: list[Event] = []
    subscribe = bus.subscribe_async if is_async else bus.subscribe
    sub = await subscribe("user.created", received.append, payload_type=UserCreated)

    await bus.publish("user.created", {"id": "not a number", "name": "x"})
    await bus.publish("user.created", {"id": "7", "name": "Ada"})
    await wait_for(lambda: len(received) == 1)

    payload = received[0].payload
    assert isinstance(payload, UserCreated)
    assert payload == UserCreated(id=7, name="Ada")
    assert received[0].topic == "user.created"
    stats = bus.per_engine_stats()["default"]
    assert stats.failed == 1
    await wait_for(lambda: len(harness.observed("message.failed")) == 1)
    failure = harness.observed("message.failed")[0].data
    assert failure["subscription_id"] == sub.id
    assert "ValidationError" in failure["error"]
    (logged,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert f"subscription {sub.id} failed on topic user.created" in logged
    assert "ValidationError" in logged


async def test_other_subscriptions_get_the_raw_payload(make_bus: MakeBus) -> None:
    bus = (await make_bus()).bus
    typed: list[Event] = []
    raw: list[Event] = []
    await bus.subscribe("user.created", typed.append, payload_type=UserCreated)
    await bus.subscribe("user.created", raw.append)
    event = await bus.publish("user.created", {"id": 1, "name": "Bo"})
    await wait_for(lambda: len(typed) == 1 and len(raw) == 1)
    assert raw[0].payload == {"id": 1, "name": "Bo"}
    assert event.payload == {"id": 1, "name": "Bo"}
    assert typed[0].id == event.id


async def test_unsubscribed_async_subscription_gets_nothing_still_queued(
    make_bus: MakeBus,
) -> None:
    harness = await make_bus({"workerCount": 1})
    bus = harness.bus
    gate = harness.gate()
    seen: list[int] = []

    async def blocker(event: Event) -> None:
        await gate.wait()

    async def record(event: Event) -> None:
        seen.append(event.payload)

    await bus.subscribe_async("hold", blocker)
    leaving = await bus.subscribe_async("job", record)
    await bus.publish("hold", 0)  # occupies the only worker
    await publish_all(bus, "job", 5)  # queued in the pool behind it
    await bus.unsubscribe(leaving)
    gate.set()
    await wait_for(lambda: bus.engine("default").dispatcher.pending == 0)  # type: ignore[attr-defined]
    assert seen == []
    delivered, dropped = bus.stats()
    assert (delivered, dropped) == (1, 5)


async def test_a_tight_publish_loop_to_plain_handlers_still_lets_other_tasks_run(
    make_bus: MakeBus,
) -> None:
    harness = await make_bus()
    bus = harness.bus
    seen: list[int] = []
    await bus.subscribe("tick", lambda event: seen.append(event.payload))
    ticks = 0

    async def other_task() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    before = ticks
    await publish_all(bus, "tick", 10 * YIELD_EVERY)
    other.cancel()
    assert seen == list(range(10 * YIELD_EVERY))
    assert ticks - before >= 9  # the publisher yielded now and then


async def test_a_plain_function_returning_a_coroutine_keeps_order(make_bus: MakeBus) -> None:
    harness = await make_bus()
    bus = harness.bus
    seen: list[int] = []

    async def record(event: Event) -> None:
        await asyncio.sleep(0)  # suspends: the next event must still wait its turn
        seen.append(event.payload)

    await bus.subscribe("job", lambda event: record(event))
    await publish_all(bus, "job", 50)
    await wait_for(lambda: len(seen) == 50)
    assert seen == list(range(50))
    assert bus.stats() == (50, 0)


@pytest.mark.parametrize("is_async", [False, True], ids=["ordered", "pool"])
async def test_a_handler_raising_cancelled_error_is_a_failure_not_a_dead_subscription(
    make_bus: MakeBus, caplog: pytest.LogCaptureFixture, is_async: bool
) -> None:
    harness = await make_bus({"workerCount": 1})
    bus = harness.bus
    seen: list[int] = []

    async def handler(event: Event) -> None:
        if event.payload == 0:
            cancelled = asyncio.get_running_loop().create_future()
            cancelled.cancel()
            await cancelled  # raises CancelledError inside the handler only
        seen.append(event.payload)

    subscribe = bus.subscribe_async if is_async else bus.subscribe
    await subscribe("job", handler)
    await publish_all(bus, "job", 3)
    await wait_for(lambda: seen == [1, 2])
    stats = bus.per_engine_stats()["default"]
    assert (stats.delivered, stats.dropped, stats.failed) == (3, 0, 1)
    (logged,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "failed on topic job" in logged and "CancelledError" in logged
