"""Publishing through the outbox: batches, a result per publisher, deadlines, the size limit,
stop. ``send_batch`` here is a list standing in for a broker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from modules.eventbus import EngineUnavailableError, Event, EventEncodeError
from modules.eventbus.engines.broker import Backoff, ConnectionHealth, Masker, Outbox, Outgoing
from tests.helpers import wait_for


def event(n: int, payload: object = None) -> Event:
    return Event(f"e{n}", f"topic.{n % 3}", payload if payload is not None else n, {}, 0.0, "t")


class Broker:
    """Takes batches; fails the next ``down`` sends as a lost link; refuses topic.2."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.down = 0

    async def send_batch(self, batch: Sequence[Outgoing]) -> None:
        await asyncio.sleep(0)
        if self.down:
            self.down -= 1
            raise ConnectionError("link lost (secret-token)")
        self.batches.append([item.event.id for item in batch])
        for item in batch:
            if item.destination == "dest:topic.2":
                item.fail(EngineUnavailableError("refused"))


def outbox(broker: Broker, *, timeout: float = 2.0, size: int = 1024) -> Outbox:
    health = ConnectionHealth("test", "e", "test://host", Masker(["secret-token"]))
    health.starting()
    health.mark_up()
    return Outbox(
        broker.send_batch,
        lambda e: f"dest:{e.topic}",
        health,
        Backoff(0.001, 0.01),
        timeout=timeout,
        batch_size=4,
        max_message_size=size,
    )


async def test_concurrent_publishes_go_in_batches_each_with_its_own_result() -> None:
    broker = Broker()
    box = outbox(broker)
    box.start()
    results = await asyncio.gather(
        *(box.publish(event(n)) for n in range(10)), return_exceptions=True
    )
    await box.stop(1.0)
    assert [len(b) for b in broker.batches] == [4, 4, 2]
    refused = [n for n, r in enumerate(results) if isinstance(r, EngineUnavailableError)]
    assert refused == [2, 5, 8]  # only the refused ones fail
    assert all(r is None for n, r in enumerate(results) if n not in refused)


async def test_a_lost_link_is_retried_until_it_works() -> None:
    broker = Broker()
    broker.down = 3
    box = outbox(broker)
    box.start()
    await box.publish(event(0))
    assert broker.batches == [["e0"]]
    assert box.health.state == "down"  # the outbox reported it; the receiving side ends it
    await box.stop(1.0)


async def test_a_publish_fails_after_its_deadline_naming_the_cause_masked() -> None:
    broker = Broker()
    broker.down = 10**9
    box = outbox(broker, timeout=0.1)
    box.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(EngineUnavailableError) as caught:
        await box.publish(event(0))
    assert loop.time() - started < 1.0
    message = str(caught.value)
    assert "test engine 'e' (test://host)" in message and "within 0.1s" in message
    assert "ConnectionError: link lost (***)" in message
    await box.stop(0.0)


async def test_an_oversized_event_is_refused_before_anything_is_sent() -> None:
    broker = Broker()
    box = outbox(broker, size=200)
    box.start()
    with pytest.raises(EventEncodeError, match=r"is \d+ bytes encoded, over maxMessageSize \(200"):
        await box.publish(event(0, "x" * 300))
    await box.stop(1.0)
    assert broker.batches == []


async def test_stop_fails_what_is_still_waiting_and_refuses_new_publishes() -> None:
    broker = Broker()
    broker.down = 10**9
    box = outbox(broker, timeout=30.0)
    box.start()
    waiting = [asyncio.ensure_future(box.publish(event(n))) for n in range(6)]
    await wait_for(lambda: broker.down < 10**9, what="a send attempt")  # being retried
    await box.stop(0.05)
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, EngineUnavailableError) for r in results), results
    assert "stopped before publishing" in str(results[0])
    with pytest.raises(EngineUnavailableError, match="not running"):
        await box.publish(event(9))
