"""The shared fan-out pieces on their own: Mailbox, Dispatcher, Settlement, DeliveryStats."""

from __future__ import annotations

import asyncio
import contextvars
from functools import partial

import pytest

from modules.eventbus import DeliveryMode, DeliveryPolicy, DeliveryStats, Event, Subscription
from modules.eventbus.delivery import Dispatcher, Mailbox, Outcome, Settlement
from tests.helpers import wait_for


def event(topic: str, payload: object = None, tenant: str | None = None) -> Event:
    return Event(f"e-{topic}-{payload}", topic, payload, {}, 0.0, "test", tenant)


def item(payload: int) -> tuple[Subscription, Event, contextvars.Context, None, None]:
    sub = Subscription("s", "t", lambda e: None, is_async=False)
    return (sub, event("t", payload), contextvars.copy_context(), None, None)


# --- Mailbox --------------------------------------------------------------------------------


async def test_mailbox_is_bounded_and_keeps_order() -> None:
    box = Mailbox(2)
    assert box.offer(item(1)) and box.offer(item(2))
    assert not box.offer(item(3))
    assert [queued[1].payload for queued in box.items] == [1, 2]


async def test_closing_a_mailbox_refuses_items_and_frees_waiting_publishers() -> None:
    box = Mailbox(1)
    box.offer(item(1))
    waiting = asyncio.create_task(box.room())
    await asyncio.sleep(0)
    assert not waiting.done()
    box.close()
    await asyncio.wait_for(waiting, 5)
    assert not box.offer(item(2))
    await asyncio.wait_for(box.room(), 5)  # returns at once once closed


# --- Dispatcher -----------------------------------------------------------------------------


async def test_dispatcher_matches_tenants_and_counts() -> None:
    dispatcher = Dispatcher("unit", DeliveryPolicy())
    plain: list[Event] = []
    acme: list[Event] = []
    every: list[Event] = []
    dispatcher.add(Subscription("a", "user.*", plain.append, is_async=False))
    dispatcher.add(Subscription("b", "user.*", acme.append, is_async=True, tenant="acme"))
    dispatcher.add(Subscription("c", "*", every.append, is_async=False, all_tenants=True))
    try:
        await dispatcher.dispatch(event("user.x", 1))
        await dispatcher.dispatch(event("user.x", 2, tenant="acme"))
        await dispatcher.dispatch(event("user.x", 3, tenant="other"))
        await dispatcher.dispatch(event("order.x", 4))
        await wait_for(lambda: dispatcher.pending == 0)
        assert [e.payload for e in plain] == [1]
        assert [e.payload for e in acme] == [2]
        assert [e.payload for e in every] == [1, 2, 3, 4]
        assert dispatcher.stats == DeliveryStats(delivered=6)
        assert dispatcher.subscriber_count("user.x") == 3
        assert sorted(dispatcher.topics()) == ["*", "user.*"]
    finally:
        await dispatcher.close(1.0)
    assert dispatcher.topics() == []


async def test_settlement_runs_once_every_delivery_settled_drops_included() -> None:
    dispatcher = Dispatcher("unit", DeliveryPolicy(buffer_size=1, mode=DeliveryMode.DROP))
    gate = asyncio.Event()
    fast: list[Event] = []

    async def blocked(e: Event) -> None:
        await gate.wait()

    dispatcher.add(Subscription("slow", "t", blocked, is_async=False))
    dispatcher.add(Subscription("fast", "t", fast.append, is_async=False))
    settled: dict[int, Outcome] = {}
    try:
        for i in range(4):
            await dispatcher.dispatch(event("t", i), partial(settled.__setitem__, i))
        await wait_for(lambda: len(fast) == 4)
        # The slow subscription holds event 0 and queues event 1; 2 and 3 were dropped.
        assert settled == {2: Outcome.DROPPED, 3: Outcome.DROPPED}
        assert dispatcher.stats.dropped == 2
        gate.set()
        await wait_for(lambda: len(settled) == 4)
        assert settled[0] is settled[1] is Outcome.HANDLED
        assert dispatcher.stats == DeliveryStats(delivered=6, dropped=2)
        nobody: list[Outcome] = []
        await dispatcher.dispatch(event("unmatched"), nobody.append)
        assert nobody == [Outcome.HANDLED]
    finally:
        gate.set()
        await dispatcher.close(1.0)


async def test_close_counts_what_is_left_and_never_settles_it() -> None:
    dispatcher = Dispatcher("unit", DeliveryPolicy(buffer_size=5))
    never = asyncio.Event()
    started: list[int] = []

    async def stuck(e: Event) -> None:
        started.append(e.payload)
        await never.wait()

    dispatcher.add(Subscription("s", "t", stuck, is_async=False))
    settled: list[Outcome] = []
    for i in range(3):
        await dispatcher.dispatch(event("t", i), settled.append)
    await wait_for(lambda: started == [0])
    assert dispatcher.pending == 3
    assert not await dispatcher.drain(0.01)

    await dispatcher.close(0.01)
    assert dispatcher.stats == DeliveryStats(dropped=3)
    assert settled == []  # a broker engine would get these messages again
    assert dispatcher.pending == 0


async def test_removing_a_subscription_drops_what_is_queued_for_it() -> None:
    dispatcher = Dispatcher("unit", DeliveryPolicy(buffer_size=5))
    gate = asyncio.Event()
    started: list[int] = []

    async def blocked(e: Event) -> None:
        started.append(e.payload)
        await gate.wait()

    sub = Subscription("s", "t", blocked, is_async=False)
    dispatcher.add(sub)
    try:
        for i in range(4):
            await dispatcher.dispatch(event("t", i))
        await wait_for(lambda: started == [0])
        assert dispatcher.remove(sub)
        assert not dispatcher.remove(sub)
        assert dispatcher.stats.dropped == 3  # the one in the handler still finishes
        gate.set()
        await wait_for(lambda: dispatcher.pending == 0)
        assert dispatcher.stats == DeliveryStats(delivered=1, dropped=3)
        await dispatcher.dispatch(event("t", 9))
        assert dispatcher.pending == 0 and started == [0]
    finally:
        gate.set()
        await dispatcher.close(1.0)


async def test_block_mode_publisher_gives_up_when_the_subscription_is_removed() -> None:
    dispatcher = Dispatcher("unit", DeliveryPolicy(buffer_size=1, mode=DeliveryMode.BLOCK))
    gate = asyncio.Event()

    async def blocked(e: Event) -> None:
        await gate.wait()

    sub = Subscription("s", "t", blocked, is_async=False)
    dispatcher.add(sub)
    try:
        await dispatcher.dispatch(event("t", 0))
        await dispatcher.dispatch(event("t", 1))
        publisher = asyncio.create_task(dispatcher.dispatch(event("t", 2)))
        for _ in range(10):
            await asyncio.sleep(0)
        assert not publisher.done()
        dispatcher.remove(sub)
        await asyncio.wait_for(publisher, 5)
        assert dispatcher.stats.dropped == 2
    finally:
        gate.set()
        await dispatcher.close(1.0)


# --- DeliveryStats and Settlement -----------------------------------------------------------


def test_delivery_stats_add_compare_and_show() -> None:
    total = DeliveryStats(1, 2, 3, 4, 5) + DeliveryStats(10, 20, 30, 40, 50)
    assert total == DeliveryStats(11, 22, 33, 44, 55)
    assert total.as_dict() == {
        "decode_errors": 44,
        "delivered": 11,
        "dropped": 22,
        "failed": 33,
        "reconnects": 55,
    }
    snapshot = total.snapshot()
    total.delivered += 1
    assert snapshot.delivered == 11
    assert "delivered=11" in repr(snapshot)
    with pytest.raises(TypeError):
        hash(total)


def test_settlement_calls_back_exactly_once_with_the_worst_outcome() -> None:
    calls: list[Outcome] = []
    settlement = Settlement(3, calls.append)
    settlement.settle(Outcome.FAILED)
    settlement.settle(Outcome.HANDLED)
    assert calls == []
    settlement.settle(Outcome.HANDLED)
    assert calls == [Outcome.FAILED]
    worst: list[Outcome] = []
    dropped = Settlement(3, worst.append)
    for outcome in (Outcome.DROPPED, Outcome.FAILED, Outcome.HANDLED):
        dropped.settle(outcome)
    assert worst == [Outcome.DROPPED]
