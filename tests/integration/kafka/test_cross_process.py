"""OS processes, each its own Application with the same settings, talk through Kafka."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from tests.helpers import wait_for
from tests.integration import peers

from .helpers import BROKERS, FAST_GROUP, bus_settings, running_bus

DEADLINE = 40.0  # seconds for a step: Python start-up, the bus, and a group join or two
REJOIN_DEADLINE = 90.0  # a group that must first expire a killed member


def peer(config: dict[str, Any], *arguments: str) -> AbstractAsyncContextManager[peers.Peer]:
    """A peer process with a bus of ``config``'s engine, ended on exit."""
    return peers.running(bus_settings(config), *arguments, deadline=DEADLINE)


async def test_without_a_group_every_process_gets_every_event(prefix: str) -> None:
    config = {"brokers": BROKERS, "topicPrefix": prefix, **FAST_GROUP}
    async with (
        peer(config, "sub", "orders.*") as one,
        peer(config, "sub", "orders.*") as two,
        peer(config, "pub", "orders.created", "20") as publisher,
    ):
        for process in (one, two, publisher):
            await process.expect("READY")
        await publisher.send("GO")
        await publisher.expect("DONE")
        sent = publisher.sent()
        assert len(sent) == 20
        await wait_for(lambda: len(one.received()) >= 20, DEADLINE, "the first: 20 events")
        await wait_for(lambda: len(two.received()) >= 20, DEADLINE, "the second: 20 events")
        # One partition (the default): each process sees them in publish order.
        assert one.received() == sent
        assert two.received() == sent
        await one.send("STOP")
        await two.send("STOP")


async def test_two_processes_of_one_group_split_the_events(prefix: str) -> None:
    config = {
        "brokers": BROKERS,
        "topicPrefix": prefix,
        "groupId": f"{prefix}workers",
        "partitions": 4,
        **FAST_GROUP,
    }
    async with (
        peer(config, "sub", "jobs.run") as one,
        peer(config, "sub", "jobs.run") as two,
        running_bus(config) as bus,
    ):
        await one.expect("READY")
        await two.expect("READY")
        # Publish in rounds until both processes have their share (the second join
        # rebalances the group); each round waits until everything sent so far arrived.
        sent: list[str] = []
        rounds = 0
        while len(sent) < 100 or not (one.received() and two.received()):
            rounds += 1
            assert rounds <= 100, "the group never gave both processes partitions"
            for _ in range(10):
                n = len(sent)
                sent.append((await bus.publish("jobs.run", {"n": n}, partition_key=str(n))).id)
            await wait_for(
                lambda: len(one.received()) + len(two.received()) >= len(sent),
                DEADLINE,
                f"{len(sent)} events",
            )
        await one.send("STOP")
        await two.send("STOP")
        handled = one.received() + two.received()
        assert sorted(handled) == sorted(sent), "an event was lost or handled twice"


async def test_events_not_committed_by_a_killed_process_go_to_the_next_member(
    prefix: str,
) -> None:
    config = {"brokers": BROKERS, "topicPrefix": prefix, "groupId": f"{prefix}g", **FAST_GROUP}
    async with running_bus(config) as bus, peer(config, "sub", "tasks.do", "60000") as first:
        await first.expect("READY")
        sent = [(await bus.publish("tasks.do", {"n": i})).id for i in range(5)]
        # The first process takes the first event and is killed while handling it (its
        # handler works for a minute): nothing of it was committed.
        await wait_for(lambda: len(first.received()) >= 1, DEADLINE, "the first event")
        first.kill()
        assert first.received() == sent[:1]
        async with peer(config, "sub", "tasks.do") as second:
            await second.expect("READY")
            # The group first waits for the killed member to time out (sessionTimeout), then
            # re-balances: slower than a plain join.
            await wait_for(lambda: len(second.received()) >= 5, REJOIN_DEADLINE, "all five events")
            await second.send("STOP")
            assert second.received() == sent
