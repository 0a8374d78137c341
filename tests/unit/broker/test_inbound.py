"""Decode-and-check, decode errors and the hand-on in the event's tenant (no broker needed:
the bytes are handed in as a reader would)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import pytest

from modular import current_tenant
from modules.eventbus import Event, Subscription
from modules.eventbus.codec import encode
from modules.eventbus.delivery import DeliveryPolicy, Dispatcher, Outcome
from modules.eventbus.engines.broker import Inbound, Origin
from tests.helpers import Recorder

TOPIC = "inbound.data"
ENVELOPE = {"specversion": "1.0", "id": "x-1", "source": "elsewhere", "type": TOPIC}
GARBAGE = {
    "deep nesting": b"[" * 100_000,
    "bad utf-8": b'{"specversion": "1.0", "id": "\xff", "source": "s", "type": "inbound.data"}',
    "not json": b"not json {",
    "not an object": b"[1, 2, 3]",
    "wrong types": json.dumps({**ENVELOPE, "id": 7, "time": 12}).encode(),
    "other topic": json.dumps({**ENVELOPE, "type": "other.topic"}).encode(),
    "other tenant": json.dumps({**ENVELOPE, "tenant": "acme"}).encode(),
    "not bytes": 12345,
    "none": None,
}


@pytest.fixture
async def dispatcher() -> AsyncIterator[Dispatcher]:
    d = Dispatcher("e", DeliveryPolicy())
    yield d
    await d.close(1.0)


def good(tenant: str | None = None) -> bytes:
    return encode(Event("ok-1", TOPIC, {"good": True}, {}, 0.0, "test", tenant))


@pytest.mark.parametrize("kind", list(GARBAGE))
async def test_garbage_of_every_kind_is_a_counted_decode_error_settled_at_once(
    dispatcher: Dispatcher, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    inbound = Inbound("test", "e", dispatcher)
    got = Recorder()
    dispatcher.add(Subscription("s1", TOPIC, got, is_async=False))
    outcomes: list[Outcome] = []
    with caplog.at_level(logging.WARNING, logger="modules.eventbus"):
        await inbound.receive(GARBAGE[kind], Origin("channel c", TOPIC), outcomes.append)
        assert outcomes == [Outcome.DROPPED]  # settled at once, before anything else
        await inbound.receive(good(), Origin("channel c", TOPIC), outcomes.append)
    assert outcomes[0] == Outcome.DROPPED  # settled: acknowledged past, never re-read
    assert dispatcher.stats.decode_errors == 1
    await got.wait_count(1)
    assert got.payloads == [{"good": True}]
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "channel c" in warning.getMessage() and warning.exc_info is None


async def test_decode_errors_are_logged_once_per_burst(
    dispatcher: Dispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    inbound = Inbound("test", "e", dispatcher)
    with caplog.at_level(logging.WARNING, logger="modules.eventbus"):
        for _ in range(50):
            await inbound.receive(b"{", Origin("channel c", TOPIC))
    assert dispatcher.stats.decode_errors == 50
    assert len(caplog.records) == 1


async def test_a_place_outside_the_bus_is_a_decode_error(dispatcher: Dispatcher) -> None:
    inbound = Inbound("test", "e", dispatcher)
    origin = Origin("channel elsewhere", error="'elsewhere' does not start with 'eventbus:'")
    assert inbound.decode(good(), origin) is None
    assert dispatcher.stats.decode_errors == 1


async def test_the_place_supplies_the_tenant_of_an_envelope_that_has_none(
    dispatcher: Dispatcher,
) -> None:
    inbound = Inbound("test", "e", dispatcher)
    event = inbound.decode(good(), Origin("channel acme:x", TOPIC, "acme"))
    assert event is not None and event.tenant == "acme"
    # A place that tells neither topic nor tenant (a Kinesis shard) takes the envelope's.
    event = inbound.decode(good("globex"), Origin("shard 1", None, None, tenant_known=False))
    assert event is not None and event.tenant == "globex"


async def test_handlers_run_in_the_events_tenant(dispatcher: Dispatcher) -> None:
    inbound = Inbound("test", "e", dispatcher)
    seen: list[tuple[str | None, str | None]] = []

    async def handler(event: Event) -> None:
        seen.append((event.tenant, current_tenant()))

    dispatcher.add(Subscription("s1", TOPIC, handler, is_async=False, tenant="acme"))
    dispatcher.add(Subscription("s2", TOPIC, handler, is_async=False))
    await inbound.receive(good("acme"), Origin("c", TOPIC, "acme"))
    await inbound.receive(good(), Origin("c", TOPIC, None))
    assert await dispatcher.drain(2.0)
    assert sorted(seen, key=str) == [("acme", "acme"), (None, None)]
    assert current_tenant() is None  # the reader's own context is untouched
