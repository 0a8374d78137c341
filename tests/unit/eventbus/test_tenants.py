"""Tenants on the bus: events carry their tenant, subscriptions are isolated, routing overlays."""

from __future__ import annotations

from typing import Any

import pytest

from modular import Application, tenant_context
from modules.eventbus import Event, EventBusModule
from tests.helpers import wait_for
from tests.unit.eventbus.conftest import MakeBus

TWO_ENGINES: dict[str, Any] = {
    "engines": [
        {"name": "mem-a", "type": "memory"},
        {"name": "mem-b", "type": "memory"},
        {"name": "cust", "type": "custom"},
    ],
    "routing": [{"topics": ["analytics.*"], "engine": "cust"}],
}


async def test_events_carry_the_tenant(make_bus: MakeBus) -> None:
    bus = (await make_bus()).bus
    assert (await bus.publish("user.login", tenant="t1")).tenant == "t1"
    with tenant_context("t2"):
        assert (await bus.publish("user.login")).tenant == "t2"
        assert (await bus.publish("user.login", tenant="t3")).tenant == "t3"
    assert (await bus.publish("user.login")).tenant is None
    assert (await bus.for_tenant("t4").publish("user.login")).tenant == "t4"


async def test_a_tenant_never_sees_another_tenants_events(make_bus: MakeBus) -> None:
    bus = (await make_bus()).bus
    t1 = bus.for_tenant("t1")
    t2 = bus.for_tenant("t2")
    t1_login: list[Event] = []
    t2_login: list[Event] = []
    t2_all: list[Event] = []
    t2_async: list[Event] = []
    unscoped: list[Event] = []
    everyone: list[Event] = []
    # Every subscription exists BEFORE the first publish.
    await t1.subscribe("user.login", t1_login.append)
    await t2.subscribe("user.login", t2_login.append)
    await t2.subscribe("*", t2_all.append)
    await t2.subscribe_async("user.*", t2_async.append)
    await bus.subscribe("user.login", unscoped.append)
    await bus.subscribe("*", everyone.append, all_tenants=True)

    from_t1 = await t1.publish("user.login", {"user": "alice"})
    await wait_for(lambda: len(t1_login) == 1 and len(everyone) == 1)
    assert t1_login[0].id == from_t1.id and t1_login[0].tenant == "t1"

    # Per-subscription order: had t2 been given t1's event, it would come before this one.
    from_t2 = await t2.publish("user.login", {"user": "bob"})
    plain = await bus.publish("user.login", {"user": "carol"})
    await wait_for(
        lambda: len(t2_login) == 1 and len(t2_all) == 1 and len(t2_async) == 1,
        what="t2's own event",
    )
    await wait_for(lambda: len(unscoped) == 1 and len(everyone) == 3)

    assert [e.id for e in t2_login] == [from_t2.id]
    assert [e.id for e in t2_all] == [from_t2.id]
    assert [e.id for e in t2_async] == [from_t2.id]
    assert [e.id for e in unscoped] == [plain.id]
    assert {e.id for e in everyone} == {from_t1.id, from_t2.id, plain.id}
    assert [e.id for e in t1_login] == [from_t1.id]


async def test_subscribing_inside_a_tenant_context_is_scoped(make_bus: MakeBus) -> None:
    bus = (await make_bus()).bus
    received: list[Event] = []
    with tenant_context("t3"):
        sub = await bus.subscribe("order.*", received.append)
        all_tenants = await bus.subscribe("order.*", lambda e: None, all_tenants=True)
    assert sub.tenant == "t3"
    assert all_tenants.tenant == "t3" and not all_tenants.all_tenants
    await bus.publish("order.placed", "other", tenant="t1")
    await bus.publish("order.placed", "plain")
    with tenant_context("t3"):
        await bus.publish("order.placed", "mine")
    await wait_for(lambda: len(received) == 1)
    assert [e.payload for e in received] == ["mine"]
    assert bus.for_tenant("t3").topics() == ["order.*"]
    assert bus.for_tenant("t3").subscriber_count("order.placed") == 2
    assert bus.for_tenant("t1").subscriber_count("order.placed") == 0


@pytest.mark.parametrize("tenant", ["bad tenant", "a:b", "a.b", "x" * 41, ""])
async def test_invalid_tenant_ids_are_refused(make_bus: MakeBus, tenant: str) -> None:
    bus = (await make_bus()).bus
    with pytest.raises(ValueError):
        await bus.publish("user.login", tenant=tenant)
    with pytest.raises(ValueError):
        bus.for_tenant(tenant)
    assert bus.stats() == (0, 0)


async def test_a_tenant_overlay_changes_routing_for_that_tenant_only(make_bus: MakeBus) -> None:
    harness = await make_bus(TWO_ENGINES)
    bus = harness.bus
    harness.app.tenants.register_tenant(
        "t1", {"eventbus": {"routing": [{"topics": ["orders.*"], "engine": "mem-b"}]}}
    )
    harness.app.tenants.register_tenant(
        "t2", {"eventbus": {"routing": [{"topics": ["orders.*"], "engine": "cust"}]}}
    )
    harness.app.tenants.register_tenant("t3")  # no overlay: the base routing

    assert bus.for_tenant("t1").get_router().engine_for_topic("orders.new") == "mem-b"
    assert bus.for_tenant("t2").get_router().engine_for_topic("orders.new") == "cust"
    assert bus.for_tenant("t3").get_router().engine_for_topic("orders.new") == "mem-a"
    assert bus.get_router().engine_for_topic("orders.new") == "mem-a"
    assert bus.get_router().engine_for_topic("analytics.click") == "cust"
    # The overlay's routing replaces the base routing for that tenant.
    assert bus.for_tenant("t1").get_router().engine_for_topic("analytics.click") == "mem-a"

    received: dict[str, list[Event]] = {"t1": [], "t2": [], "t3": [], "base": []}
    for tenant in ("t1", "t2", "t3"):
        await bus.for_tenant(tenant).subscribe("orders.*", received[tenant].append)
    await bus.subscribe("orders.*", received["base"].append)

    await bus.for_tenant("t1").publish("orders.new", 1)
    await wait_for(lambda: len(received["t1"]) == 1)
    stats = bus.per_engine_stats()
    assert (stats["mem-b"].delivered, stats["mem-a"].delivered, stats["cust"].delivered) == (
        1,
        0,
        0,
    )

    await bus.for_tenant("t2").publish("orders.new", 2)
    await bus.for_tenant("t3").publish("orders.new", 3)
    await bus.publish("orders.new", 4)
    await wait_for(
        lambda: all(len(received[k]) == 1 for k in received), what="one event per tenant"
    )
    stats = bus.per_engine_stats()
    assert (stats["mem-b"].delivered, stats["cust"].delivered, stats["mem-a"].delivered) == (
        1,
        1,
        2,
    )
    assert [received[k][0].payload for k in ("t1", "t2", "t3", "base")] == [1, 2, 3, 4]


async def test_an_all_tenants_subscription_follows_tenant_routing(make_bus: MakeBus) -> None:
    harness = await make_bus(TWO_ENGINES)
    bus = harness.bus
    harness.app.tenants.register_tenant(
        "t1", {"eventbus": {"routing": [{"topics": ["orders.*"], "engine": "mem-b"}]}}
    )
    received: list[Event] = []
    await bus.subscribe("orders.*", received.append, all_tenants=True)
    await bus.for_tenant("t1").publish("orders.new", "t1")
    await bus.publish("orders.new", "base")
    await wait_for(lambda: len(received) == 2)
    assert sorted(e.payload for e in received) == ["base", "t1"]


async def test_a_tenant_registered_before_start_gets_its_routing() -> None:
    app = Application({"eventbus": TWO_ENGINES}, envvar_prefix=None)
    bus = EventBusModule()
    app.register_module(bus)
    app.tenants.register_tenant(
        "early", {"eventbus": {"routing": [{"topics": ["orders.*"], "engine": "mem-b"}]}}
    )
    await app.start()
    try:
        assert bus.for_tenant("early").get_router().engine_for_topic("orders.new") == "mem-b"
        assert bus.get_router().engine_for_topic("orders.new") == "mem-a"
    finally:
        await app.stop()


async def test_removing_a_tenant_drops_its_routing(make_bus: MakeBus) -> None:
    harness = await make_bus(TWO_ENGINES)
    bus = harness.bus
    harness.app.tenants.register_tenant(
        "t1", {"eventbus": {"routing": [{"topics": ["orders.*"], "engine": "mem-b"}]}}
    )
    assert bus.for_tenant("t1").get_router().engine_for_topic("orders.new") == "mem-b"
    harness.app.tenants.remove_tenant("t1")
    # A module may clean up after a removal asynchronously.
    await wait_for(
        lambda: bus.for_tenant("t1").get_router().engine_for_topic("orders.new") == "mem-a"
    )
