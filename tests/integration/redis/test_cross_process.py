"""Two OS processes, each its own Application with the same settings, talk through Redis."""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from tests.helpers import wait_for
from tests.integration import peers

from .helpers import REDIS_URL, bus_settings

DEADLINE = 30.0  # seconds for a step: starting Python and the bus takes a while on a busy box


def peer(config: dict[str, Any], *arguments: str) -> AbstractAsyncContextManager[peers.Peer]:
    """A peer process with a bus of ``config``'s engine, ended on exit."""
    return peers.running(bus_settings(config), *arguments, deadline=DEADLINE)


@pytest.mark.parametrize("mode", ["pubsub", "streams"])
async def test_a_publisher_and_a_subscriber_in_two_processes(prefix: str, mode: str) -> None:
    config = {"url": REDIS_URL, "channelPrefix": prefix, "mode": mode}
    async with (
        peer(config, "sub", "orders.*") as subscriber,
        peer(config, "pub", "orders.created", "20") as publisher,
    ):
        await subscriber.expect_next("READY")
        await publisher.expect_next("READY")
        await publisher.send("GO")
        await publisher.expect_next("DONE")
        sent = publisher.sent()
        assert len(sent) == 20
        await wait_for(lambda: len(subscriber.received()) >= 20, DEADLINE, "20 events")
        assert subscriber.received() == sent
        payloads = [json.loads(line.split(" ", 2)[2]) for line in subscriber.lines if "GOT" in line]
        assert payloads == [{"n": i} for i in range(20)]
        await subscriber.send("STOP")


async def test_two_processes_of_one_group_split_the_events(prefix: str) -> None:
    config = {
        "url": REDIS_URL,
        "channelPrefix": prefix,
        "mode": "streams",
        "groupName": f"{prefix}workers",
    }
    async with (
        peer(config, "sub", "jobs.run") as one,
        peer(config, "sub", "jobs.run") as two,
        peer(config, "pub", "jobs.run", "100") as publisher,
    ):
        await one.expect_next("READY")
        await two.expect_next("READY")
        await publisher.expect_next("READY")
        await publisher.send("GO")
        await publisher.expect_next("DONE")
        sent = publisher.sent()
        assert len(sent) == 100
        await wait_for(
            lambda: len(one.received()) + len(two.received()) >= 100, DEADLINE, "100 events"
        )
        await one.send("STOP")
        await two.send("STOP")
        handled = one.received() + two.received()
        assert sorted(handled) == sorted(sent), "an event was lost or handled twice"
        assert one.received() and two.received(), "one process handled everything"
