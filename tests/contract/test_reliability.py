"""Contract: handlers run in their event's tenant; health follows the lifecycle; nothing a
broker delivers, however malformed, stops delivery."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

import pytest

from modular import current_tenant, tenant_context
from modules.eventbus import Event, EventBusModule
from modules.eventbus.engines.base import EngineHealth
from tests.helpers import DEADLINE, Recorder, wait_for

from .conftest import ENGINE, ContractEnv
from .helpers import bus_warnings, requires

Seen = list[tuple[str, str | None, str | None]]  # (handler, its event's tenant, current tenant)


def plain_handler(label: str, seen: Seen) -> Callable[[Event], None]:
    def handler(event: Event) -> None:
        seen.append((label, event.tenant, current_tenant()))

    return handler


def async_def_handler(label: str, seen: Seen) -> Callable[[Event], Awaitable[None]]:
    async def handler(event: Event) -> None:
        await asyncio.sleep(0)  # the tenant survives a suspension
        seen.append((label, event.tenant, current_tenant()))

    return handler


async def test_every_kind_of_handler_runs_in_its_events_tenant(bus: EventBusModule) -> None:
    seen: Seen = []
    acme = bus.for_tenant("acme")
    for scope in (acme, bus):
        await scope.subscribe("who.am.i", plain_handler("ordered plain", seen))
        await scope.subscribe("who.am.i", async_def_handler("ordered async def", seen))
        await scope.subscribe_async("who.am.i", plain_handler("pool plain", seen))
        await scope.subscribe_async("who.am.i", async_def_handler("pool async def", seen))

    await acme.publish("who.am.i", None)  # from an untenanted context
    with tenant_context("acme"):
        await bus.publish("who.am.i", None)
    await bus.publish("who.am.i", None)

    await wait_for(lambda: len(seen) == 12, DEADLINE, f"12 deliveries, got {seen}")
    wrong = [s for s in seen if s[1] != s[2]]
    assert not wrong, f"handlers outside their event's tenant: {wrong}"
    assert sorted(tenant or "" for _, tenant, _ in seen) == [""] * 4 + ["acme"] * 8


async def test_a_publish_inside_a_handler_belongs_to_the_events_tenant(
    bus: EventBusModule,
) -> None:
    acme_audit, untenanted_audit = Recorder("acme audit"), Recorder("untenanted audit")
    await bus.for_tenant("acme").subscribe("audit.log", acme_audit)
    await bus.subscribe("audit.log", untenanted_audit)

    async def forward(event: Event) -> None:
        await bus.publish("audit.log", {"seen": event.payload})

    await bus.subscribe("user.login", forward, all_tenants=True)
    await bus.for_tenant("acme").publish("user.login", "acme-user")
    await bus.publish("user.login", "nobody")

    await wait_for(
        lambda: len(acme_audit.events) + len(untenanted_audit.events) == 2,
        DEADLINE,
        f"2 forwarded events, got {acme_audit.payloads} and {untenanted_audit.payloads}",
    )
    assert acme_audit.payloads == [{"seen": "acme-user"}]
    assert untenanted_audit.payloads == [{"seen": "nobody"}]


def health(bus: EventBusModule) -> EngineHealth:
    return bus.health()[ENGINE]


async def test_health_is_up_while_started_and_stopped_after_stop(
    bus: EventBusModule, env: ContractEnv
) -> None:
    up = health(bus)
    assert up.state == "up"
    assert up.error is None
    assert up.since is not None

    await env.main_app.stop()
    stopped = health(bus)
    assert stopped.state == "stopped"

    await env.main_app.start()
    assert health(bus).state == "up"


# --- malformed messages on the wire --------------------------------------------------------

TOPIC = "inbound"
ENVELOPE = {"specversion": "1.0", "id": "other-1", "source": "elsewhere", "type": TOPIC}
GARBAGE: dict[str, bytes] = {
    "not-json": b"\x00not an event{",
    "bad-utf8": b'{"specversion": "1.0", "id": "\xff\xfe", "source": "s", "type": "inbound"}',
    "deep-nesting": b"[" * 100_000,
    "json-not-an-object": b'"just a string"',
    "not-an-envelope": b'{"specversion": "1.0"}',
    "wrong-types": json.dumps({**ENVELOPE, "id": 7, "source": ["s"]}).encode(),
    "bad-time": json.dumps({**ENVELOPE, "time": "yesterday"}).encode(),
    "contradicts-type": json.dumps({**ENVELOPE, "type": "other.topic"}).encode(),
    "contradicts-tenant": json.dumps({**ENVELOPE, "tenant": "acme"}).encode(),
}


# An envelope can contradict only a place that names a topic and a tenant.
PLACED = {"contradicts-type", "contradicts-tenant"}


@requires("cross_process")
@pytest.mark.parametrize(
    "kind",
    [pytest.param(k, marks=pytest.mark.wire_names_place) if k in PLACED else k for k in GARBAGE],
)
async def test_a_malformed_message_is_counted_and_delivery_goes_on(
    bus: EventBusModule, env: ContractEnv, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    received = Recorder()
    await bus.subscribe(TOPIC, received)

    await env.inject(TOPIC, GARBAGE[kind])
    await bus.publish(TOPIC, {"ok": True})

    await received.wait_payload({"ok": True}, timeout=10.0)
    await wait_for(
        lambda: bus.per_engine_stats()[ENGINE].decode_errors == 1,
        DEADLINE,
        f"1 decode error, got {bus.per_engine_stats()[ENGINE]}",
    )
    stats = bus.per_engine_stats()[ENGINE]
    assert received.payloads == [{"ok": True}]
    assert (stats.delivered, stats.dropped, stats.reconnects) == (1, 0, 0)
    (logged,) = bus_warnings(caplog)
    assert "skipped a message it cannot decode" in logged


@requires("cross_process")
async def test_a_burst_of_every_kind_of_garbage_is_counted_and_delivery_goes_on(
    bus: EventBusModule, env: ContractEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="modules.eventbus")
    received = Recorder()
    await bus.subscribe(TOPIC, received)

    garbage = [d for k, d in GARBAGE.items() if env.case.wire_names_place or k not in PLACED]
    for data in garbage:
        await env.inject(TOPIC, data)
    await bus.publish(TOPIC, {"ok": True})
    for data in garbage:  # and again: nothing was left to be re-read forever
        await env.inject(TOPIC, data)
    await bus.publish(TOPIC, {"ok": "still"})

    await received.wait_payload({"ok": "still"}, timeout=10.0)
    await wait_for(
        lambda: bus.per_engine_stats()[ENGINE].decode_errors == 2 * len(garbage),
        DEADLINE,
        f"{2 * len(garbage)} decode errors, got {bus.per_engine_stats()[ENGINE]}",
    )
    assert received.payloads == [{"ok": True}, {"ok": "still"}]
    assert bus.per_engine_stats()[ENGINE].reconnects == 0
    # Logged once per burst, as warnings: never a traceback per message.
    logged = [r for r in caplog.records if r.name.startswith("modules.eventbus")]
    assert 1 <= len(logged) <= 2, [r.getMessage() for r in logged]
    assert {r.levelno for r in logged} == {logging.WARNING}
