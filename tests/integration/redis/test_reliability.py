"""Reliability of what the Redis engine receives and sends, each against a redis-server of the
test's own: nothing lost under the streams defaults, nothing a reader receives stalls it, a
restarted server's events are delivered, oversized events are refused, handlers run in their
event's tenant."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from modular import current_tenant
from modules.eventbus import Event, EventBusModule, EventEncodeError
from tests.helpers import DEADLINE, Recorder, wait_for, wait_until

from .helpers import (
    RedisServer,
    engine_of,
    pending_count,
    raw_messages,
    running_bus,
    throwaway_server,
)
from .test_cross_process import peer

PREFIX = "rel:"
MODES = ["pubsub", "streams"]


def engine_config(server: RedisServer, **config: Any) -> dict[str, Any]:
    """Default settings, except for quick reconnection (an outage ends in milliseconds)."""
    return {
        "url": server.url,
        "channelPrefix": PREFIX,
        "reconnectMinDelay": "20ms",
        "reconnectMaxDelay": "200ms",
        **config,
    }


async def publish_all(bus: EventBusModule, topic: str, count: int) -> list[Event]:
    """``count`` events published concurrently, as a busy producer would."""
    return list(await asyncio.gather(*(bus.publish(topic, {"n": i}) for i in range(count))))


# --- 1. streams with their defaults lose nothing ---------------------------------------


async def test_streams_defaults_lose_nothing_behind_a_slow_handler(tmp_path: Path) -> None:
    """No ``deliveryMode`` set: the reader waits for the slow handler instead of dropping
    (and acknowledging) what does not fit in its mailbox."""
    async with (
        throwaway_server(tmp_path, persistent=False) as server,
        running_bus(engine_config(server, mode="streams")) as bus,
    ):
        engine = engine_of(bus)
        handled: list[str] = []

        async def slow(event: Event) -> None:
            await asyncio.sleep(0.002)  # the handler's work
            handled.append(event.id)

        await bus.subscribe("work.item", slow)
        sent = await publish_all(bus, "work.item", 1000)
        await wait_for(
            lambda: len(handled) + engine.stats().dropped >= 1000,
            DEADLINE,
            f"1000 events settled (handled {len(handled)}, stats {engine.stats()})",
        )
        assert engine.stats().dropped == 0, f"{engine.stats().dropped} of 1000 events dropped"
        assert sorted(handled) == sorted(e.id for e in sent)

        client = server.client()
        try:

            async def all_acknowledged() -> bool:
                return await pending_count(client, f"{PREFIX}work.item", engine.group) == 0

            await wait_until(all_acknowledged, what="every entry acknowledged")
        finally:
            await client.aclose()


async def test_a_subscriber_killed_mid_stream_loses_nothing_of_its_group(tmp_path: Path) -> None:
    """Two consumers of a named group, one of them slow, in another process, and killed
    (SIGKILL) mid-stream: the other handles what it left, so every event is handled by someone.
    An event is handled twice only if the killed process handled it without acknowledging it."""
    key, group = f"{PREFIX}jobs.run", "rel-workers"
    async with throwaway_server(tmp_path, persistent=False) as server:
        config = engine_config(
            server, mode="streams", groupName=group, claimIdle="1s", publishTimeout="10s"
        )
        async with (
            peer(config, "sub", "jobs.run", "1") as doomed,  # 1 ms of work per event
            running_bus(config) as bus,
        ):
            engine = engine_of(bus)
            survivor: list[str] = []

            async def handler(event: Event) -> None:
                await asyncio.sleep(0)
                survivor.append(event.id)

            await doomed.expect("READY")
            await bus.subscribe("jobs.run", handler)
            sent = {e.id for e in await publish_all(bus, "jobs.run", 3000)}
            await wait_for(lambda: len(doomed.received()) >= 20, DEADLINE, "the peer at work")
            doomed.process.kill()
            await doomed.process.wait()
            await wait_for(lambda: doomed.ended, DEADLINE, "the peer's last lines read")
            before_kill = doomed.received()
            client = server.client()
            try:

                async def handled_or_settled() -> bool:
                    """Every event handled, or the group has nothing more to hand out: all
                    read and acknowledged (what is missing then is lost for good)."""
                    if sent <= {*before_kill, *survivor}:
                        return True
                    [info] = [
                        g for g in await client.xinfo_groups(key) if g["name"] == group.encode()
                    ]
                    last = (await client.xinfo_stream(key))["last-generated-id"]
                    return bool(info["pending"] == 0 and info["last-delivered-id"] == last)

                await wait_until(handled_or_settled, 30.0, "3000 events handled")
            finally:
                await client.aclose()
            assert engine.stats().dropped == 0, f"the survivor dropped {engine.stats().dropped}"
            lost = sent - {*before_kill, *survivor}
            assert not lost, f"{len(lost)} of 3000 events handled by no consumer"
            assert max(Counter(survivor).values()) == 1, "the survivor handled an event twice"
            assert max(Counter(before_kill).values()) == 1, "the peer handled an event twice"


# --- 2. nothing a reader receives stalls it --------------------------------------------

TOPIC = "inbound.data"
ENVELOPE = {"specversion": "1.0", "id": "other-1", "source": "elsewhere", "type": TOPIC}
GARBAGE: dict[str, bytes] = {
    "deep-nesting": b"[" * 100_000,  # json.loads raises RecursionError
    "bad-utf8": b'{"specversion": "1.0", "id": "\xff\xfe", "source": "s", "type": "inbound.data"}',
    "not-json": b"not json {",
    "json-not-an-object": b"[1, 2, 3]",
    "wrong-types": json.dumps({**ENVELOPE, "id": 7, "time": 12}).encode(),
    "contradicts-topic": json.dumps({**ENVELOPE, "type": "other.topic"}).encode(),
    "contradicts-tenant": json.dumps({**ENVELOPE, "tenant": "acme"}).encode(),
}


def warnings_of_the_bus(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("modules.eventbus") and r.levelno >= logging.WARNING
    ]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", list(GARBAGE))
async def test_a_malformed_message_is_counted_skipped_and_delivery_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str, kind: str
) -> None:
    caplog.set_level(logging.WARNING, logger="modules.eventbus")
    async with (
        throwaway_server(tmp_path, persistent=False) as server,
        running_bus(engine_config(server, mode=mode)) as bus,
    ):
        engine = engine_of(bus)
        got = Recorder()
        await bus.subscribe(TOPIC, got)
        client = server.client()
        try:
            if mode == "streams":
                await client.xadd(PREFIX + TOPIC, {"event": GARBAGE[kind]})
            else:
                assert await client.publish(PREFIX + TOPIC, GARBAGE[kind]) == 1
            await bus.publish(TOPIC, {"good": True})
            await got.wait_count(1, timeout=10.0)
            assert got.payloads == [{"good": True}]
            await wait_for(lambda: engine.stats().decode_errors == 1, 5.0, "1 decode error")
            stats = engine.stats()
            assert (stats.decode_errors, stats.dropped, stats.reconnects) == (1, 0, 0)
            if mode == "streams":

                async def all_acknowledged() -> bool:
                    return await pending_count(client, PREFIX + TOPIC, engine.group) == 0

                await wait_until(all_acknowledged, what="the malformed entry acknowledged")
        finally:
            await client.aclose()
    # Logged once, as a warning: not a traceback of a torn-down session.
    logged = warnings_of_the_bus(caplog)
    assert [r.levelno for r in logged] == [logging.WARNING], [r.getMessage() for r in logged]


# --- 4. a restarted Redis ---------------------------------------------------------------

# The default user of a restarted server, until the test allows the rest: it may publish,
# not (re)create or read consumer groups. So the engine's own publisher fills the new server
# before its reader can create the group again, every time.
NO_GROUPS_YET = ["--user", "default", "on", "nopass", "~*", "&*", "+@all", "-xgroup", "-xreadgroup"]


@pytest.mark.parametrize("group", ["per-process", "named"])
async def test_events_a_restarted_redis_accepted_before_the_group_came_back_are_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, group: str
) -> None:
    caplog.set_level(logging.INFO, logger="modules.eventbus")  # the outage is logged
    async with throwaway_server(tmp_path, persistent=False) as server:
        named = {"groupName": "rel-restart"} if group == "named" else {}
        config = engine_config(server, mode="streams", **named)
        async with running_bus(config) as bus:
            engine = engine_of(bus)
            got = Recorder()
            await bus.subscribe("orders.placed", got)
            first = await publish_all(bus, "orders.placed", 5)
            await got.wait_count(5)

            server.kill()  # no persistence: the restarted server has no stream, no group
            await server.start(*NO_GROUPS_YET)
            after = await publish_all(bus, "orders.placed", 300)
            client = server.client()
            try:
                assert await client.xlen(f"{PREFIX}orders.placed") == 300
                await client.acl_setuser("default", enabled=True, categories=["+@all"])

                async def group_is_back() -> bool:
                    groups = await client.xinfo_groups(f"{PREFIX}orders.placed")
                    return engine.group in [g["name"].decode() for g in groups]

                await wait_until(group_is_back, what="the consumer group created again")
            finally:
                await client.aclose()
            # Published after the group is back: it arrives whatever the group's start was.
            last = await bus.publish("orders.placed", {"n": "last"})
            await got.wait_payload({"n": "last"})

            received = {e.id for e in got.events}
            missing = [e for e in after if e.id not in received]
            assert not missing, f"{len(missing)} of the 300 events the new server accepted lost"
            assert len(got.events) == len(received), "an event was delivered twice"
            assert received == {e.id for e in [*first, *after, last]}


# --- 6. oversized messages ----------------------------------------------------------------


def numbers_in(text: str) -> list[int]:
    return [int(n.replace(",", "").replace("_", "")) for n in re.findall(r"\d[\d,_]*", text)]


@pytest.mark.parametrize("mode", MODES)
async def test_an_oversized_event_is_refused_and_nothing_is_sent(tmp_path: Path, mode: str) -> None:
    limit = 1024 * 1024  # the default maxMessageSize
    async with (
        throwaway_server(tmp_path, persistent=False) as server,
        running_bus(engine_config(server, mode=mode)) as bus,
    ):
        client = server.client()
        raw = client.pubsub()
        try:
            await raw.subscribe(f"{PREFIX}big.blob")
            got = Recorder()
            await bus.subscribe("big.blob", got)
            with pytest.raises(EventEncodeError) as caught:
                await bus.publish("big.blob", {"blob": "x" * (2 * limit)})
            message = str(caught.value)
            sizes = numbers_in(message)
            assert limit in sizes or "1 MiB" in message, f"the limit is not named: {message}"
            assert any(n > 2 * limit for n in sizes), f"the size is not named: {message}"

            await bus.publish("big.blob", {"small": True})
            await got.wait_count(1)
            assert got.payloads == [{"small": True}]
            if mode == "streams":
                assert await client.xlen(f"{PREFIX}big.blob") == 1
            else:
                [first] = await raw_messages(raw, 1)
                assert json.loads(first["data"])["data"] == {"small": True}
        finally:
            await raw.aclose()  # type: ignore[no-untyped-call]
            await client.aclose()


async def test_max_message_size_is_configurable(tmp_path: Path) -> None:
    async with (
        throwaway_server(tmp_path, persistent=False) as server,
        running_bus(engine_config(server, maxMessageSize=4096)) as bus,
    ):
        got = Recorder()
        await bus.subscribe("sized", got)
        with pytest.raises(EventEncodeError, match="4096"):
            await bus.publish("sized", {"blob": "x" * 5000})
        await bus.publish("sized", {"blob": "x" * 3000})  # the envelope stays under the limit
        await got.wait_count(1)
        assert len(got.payloads[0]["blob"]) == 3000


# --- 8. handlers run in their event's tenant ----------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_every_kind_of_handler_runs_in_its_events_tenant(tmp_path: Path, mode: str) -> None:
    seen: list[tuple[str, str | None, str | None]] = []  # (handler, event's tenant, current)

    def plain(label: str) -> Callable[[Event], None]:
        def handler(event: Event) -> None:
            seen.append((label, event.tenant, current_tenant()))

        return handler

    def coroutine(label: str) -> Callable[[Event], Awaitable[None]]:
        async def handler(event: Event) -> None:
            await asyncio.sleep(0)  # the tenant survives a suspension
            seen.append((label, event.tenant, current_tenant()))

        return handler

    async with (
        throwaway_server(tmp_path, persistent=False) as server,
        running_bus(engine_config(server, mode=mode)) as bus,
    ):
        acme = bus.for_tenant("acme")
        for scope in (acme, bus):
            await scope.subscribe("who.am.i", plain("ordered plain"))
            await scope.subscribe("who.am.i", coroutine("ordered async def"))
            await scope.subscribe_async("who.am.i", plain("pool plain"))
            await scope.subscribe_async("who.am.i", coroutine("pool async def"))
        await acme.publish("who.am.i", None)  # from an untenanted context
        await bus.publish("who.am.i", None)
        await wait_for(lambda: len(seen) == 8, DEADLINE, f"8 deliveries, got {seen}")
        wrong = [s for s in seen if s[1] != s[2]]
        assert not wrong, f"handlers outside their event's tenant: {wrong}"
        assert sorted(t or "" for _, t, _ in seen) == [""] * 4 + ["acme"] * 4
