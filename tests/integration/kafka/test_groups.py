"""A named group whose subscriptions change after it formed: a new subscription, a new
topic for a pattern, an unsubscription, one member or two. kafka-python loses the
assignment of a re-join it starts itself unless the join ends within one poll; these are the
cases that left a group without its new partitions."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from modules.eventbus import EventBusModule
from tests.helpers import Recorder, wait_for

from .helpers import BROKERS, FAST_GROUP, running_bus

# A join takes about half the session timeout (6 s here), a change of two members a few
# rounds; a stalled join is started again after 3 session timeouts.
DEADLINE = 45.0


def group_config(prefix: str, **more: Any) -> dict[str, Any]:
    return {
        "brokers": BROKERS,
        "topicPrefix": prefix,
        "groupId": f"{prefix}group",
        **FAST_GROUP,
        **more,
    }


class Publisher:
    """Publishes numbered events to a topic until told to stop."""

    def __init__(self, bus: EventBusModule, topic: str) -> None:
        self.bus, self.topic = bus, topic
        self.sent: list[int] = []
        self._numbers = itertools.count()

    async def publish(self, count: int = 1) -> None:
        for _ in range(count):
            n = next(self._numbers)
            await self.bus.publish(self.topic, {"n": n}, partition_key=str(n))
            self.sent.append(n)

    def received(self, *recorders: Recorder) -> Counter[int]:
        """How often each of this publisher's events was handled by ``recorders``."""
        return Counter(e.payload["n"] for r in recorders for e in r.events if e.topic == self.topic)

    async def all_received(self, *recorders: Recorder) -> None:
        await wait_for(
            lambda: set(self.received(*recorders)) == set(self.sent),
            DEADLINE,
            f"every {self.topic} event (missing {set(self.sent) - set(self.received(*recorders))})",
        )


async def publish_until_received(publisher: Publisher, *recorders: Recorder) -> None:
    """Publish until ``recorders`` receive: the group formed and gave them partitions."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not publisher.received(*recorders):
        assert loop.time() < deadline, f"nothing of {publisher.topic} arrived"
        await publisher.publish()
        with contextlib.suppress(AssertionError):
            await wait_for(lambda: bool(publisher.received(*recorders)), 1.0)
    await publisher.all_received(*recorders)


async def test_a_subscription_made_after_the_group_formed_is_delivered(prefix: str) -> None:
    async with running_bus(group_config(prefix)) as bus:
        first, later = Recorder("first"), Recorder("later")
        await bus.subscribe("first", first)
        before = Publisher(bus, "first")
        await publish_until_received(before, first)

        await bus.subscribe("later", later)
        after = Publisher(bus, "later")
        await after.publish(5)
        await before.publish(5)  # the topic the group read before goes on being read

        await after.all_received(later)
        await before.all_received(first)
        # The change committed what was handled before leaving: nothing came twice.
        assert max(after.received(later).values()) == 1
        assert max(before.received(first).values()) == 1


async def test_a_topic_created_later_for_a_pattern_is_delivered(prefix: str) -> None:
    async with running_bus(group_config(prefix)) as bus:
        jobs = Recorder("jobs.*")
        await bus.subscribe("jobs.*", jobs)
        old = Publisher(bus, "jobs.old")
        await publish_until_received(old, jobs)

        new = Publisher(bus, "jobs.new")  # its topic is created by this publish
        await new.publish(5)

        await new.all_received(jobs)
        assert [e.payload["n"] for e in jobs.events if e.topic == "jobs.new"] == new.sent


async def test_unsubscribing_one_of_two_topics_keeps_the_other(prefix: str) -> None:
    async with running_bus(group_config(prefix)) as bus:
        kept, dropped = Recorder("kept"), Recorder("dropped")
        await bus.subscribe("kept", kept)
        subscription = await bus.subscribe("dropped", dropped)
        publisher = Publisher(bus, "kept")
        await publish_until_received(publisher, kept)

        await bus.unsubscribe(subscription)
        await bus.publish("dropped", {"n": -1})
        await publisher.publish(5)

        await publisher.all_received(kept)
        assert dropped.events == []


@asynccontextmanager
async def members(config: dict[str, Any], count: int) -> AsyncIterator[list[EventBusModule]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(running_bus(config)) for _ in range(count)]


async def test_two_members_share_a_topic_created_after_they_formed_the_group(prefix: str) -> None:
    config = group_config(prefix, partitions=4)
    producer_config = {"brokers": BROKERS, "topicPrefix": prefix, "partitions": 4}
    async with members(config, 2) as (one, two), running_bus(producer_config) as producer:
        got_one, got_two = Recorder("one"), Recorder("two")
        await one.subscribe("work.*", got_one)
        await two.subscribe("work.*", got_two)
        old = Publisher(producer, "work.old")
        # Until both members have a share of the old topic (the second join rebalances).
        await publish_until_received(old, got_one, got_two)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while not (old.received(got_one) and old.received(got_two)):
            assert loop.time() < deadline, "the group never gave both members partitions"
            await old.publish(4)
            with contextlib.suppress(AssertionError):
                await wait_for(lambda: bool(old.received(got_one) and old.received(got_two)), 1.0)
        await old.all_received(got_one, got_two)

        new = Publisher(producer, "work.new")
        await new.publish(40)

        await new.all_received(got_one, got_two)
        await old.all_received(got_one, got_two)
        assert max(new.received(got_one, got_two).values()) == 1, "a new event came twice"
