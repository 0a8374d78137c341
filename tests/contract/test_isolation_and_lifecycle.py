"""Contract: tenant isolation, stats, undecodable messages, restart, durability."""

from __future__ import annotations

import pytest

from modular import tenant_context
from modules.eventbus import DeliveryStats, EventBusModule
from tests.helpers import DEADLINE, Recorder, wait_for

from .conftest import ENGINE, ContractEnv
from .helpers import bus_warnings, requires


async def test_tenant_subscription_never_sees_another_tenants_event(
    bus: EventBusModule,
) -> None:
    acme, globex = bus.for_tenant("acme"), bus.for_tenant("globex")
    acme_login, globex_login = Recorder("acme login"), Recorder("globex login")
    untenanted = Recorder("untenanted")
    # Everyone is subscribed BEFORE acme publishes.
    await acme.subscribe("user.login", acme_login)
    await globex.subscribe("user.login", globex_login)
    await bus.subscribe("user.login", untenanted)

    published = await acme.publish("user.login", {"who": "acme-user"})
    await acme_login.wait_count(1)
    # globex's own event flushes globex's queue: an acme event would be in front of it.
    await globex.publish("user.login", {"who": "globex-user"})
    await globex_login.wait_count(1)
    await bus.publish("user.login", {"who": "nobody"})
    await untenanted.wait_count(1)

    assert acme_login.events[0].id == published.id
    assert acme_login.events[0].tenant == "acme"
    assert acme_login.payloads == [{"who": "acme-user"}]
    assert globex_login.payloads == [{"who": "globex-user"}]
    assert [e.tenant for e in globex_login.events] == ["globex"]
    assert untenanted.payloads == [{"who": "nobody"}]


@requires("patterns")
async def test_tenant_wildcards_stay_inside_the_tenant(bus: EventBusModule) -> None:
    globex_all, acme_all, unscoped_all = Recorder("globex *"), Recorder("acme *"), Recorder("*")
    with tenant_context("globex"):
        await bus.subscribe("*", globex_all)  # scoped by the context, like publish
    await bus.for_tenant("acme").subscribe("*", acme_all)
    await bus.subscribe("*", unscoped_all)

    with tenant_context("acme"):
        await bus.publish("user.login", {"from": "acme"})
        await bus.publish("order.x", {"from": "acme"})
    await acme_all.wait_count(2)
    await bus.for_tenant("globex").publish("user.login", {"from": "globex"})
    await globex_all.wait_count(1)
    await bus.publish("user.login", {"from": "untenanted"})
    await unscoped_all.wait_count(1)

    assert sorted(acme_all.topics) == ["order.x", "user.login"]
    assert {e.tenant for e in acme_all.events} == {"acme"}
    assert globex_all.payloads == [{"from": "globex"}]
    assert unscoped_all.payloads == [{"from": "untenanted"}]


@requires("patterns")
async def test_all_tenants_subscription_sees_every_tenant(bus: EventBusModule) -> None:
    everyone = Recorder("all tenants")
    await bus.subscribe("audit.*", everyone, all_tenants=True)

    await bus.for_tenant("acme").publish("audit.login", {"n": 1})
    await bus.for_tenant("globex").publish("audit.login", {"n": 2})
    await bus.publish("audit.login", {"n": 3})

    await everyone.wait_count(3)
    assert sorted(e.tenant or "" for e in everyone.events) == ["", "acme", "globex"]


async def test_stats_count_deliveries_and_failures(
    bus: EventBusModule, caplog: pytest.LogCaptureFixture
) -> None:
    received = Recorder()

    def failing(event: object) -> None:
        raise RuntimeError("handler failure on purpose")

    await bus.subscribe("counted", received)
    await bus.subscribe("counted", failing)
    for i in range(5):
        await bus.publish("counted", {"i": i})

    await received.wait_count(5)
    await wait_for(lambda: bus.stats() == (10, 0), DEADLINE, f"stats (10, 0), got {bus.stats()}")
    stats = bus.per_engine_stats()[ENGINE]
    assert isinstance(stats, DeliveryStats)
    assert (stats.delivered, stats.dropped, stats.failed) == (10, 0, 5)
    assert (stats.decode_errors, stats.reconnects) == (0, 0)
    assert set(stats.as_dict()) == {"decode_errors", "delivered", "dropped", "failed", "reconnects"}
    # Failures leave the subscription running.
    await bus.publish("counted", {"i": "after"})
    await received.wait_payload({"i": "after"})
    await wait_for(lambda: bus.per_engine_stats()[ENGINE].failed == 6)
    failures = bus_warnings(caplog)
    assert len(failures) == 6
    assert all("failed on topic counted" in m for m in failures)
    assert all("RuntimeError: handler failure on purpose" in m for m in failures)


@requires("cross_process")
async def test_undecodable_message_is_counted_and_not_fatal(
    bus: EventBusModule, env: ContractEnv, caplog: pytest.LogCaptureFixture
) -> None:
    received = Recorder()
    await bus.subscribe("inbound", received)

    await env.inject("inbound", b"\x00\xffnot an event{")
    await env.inject("inbound", b'{"specversion": "1.0"}')  # JSON, but not an envelope
    await bus.publish("inbound", {"ok": True})

    await received.wait_payload({"ok": True})
    await wait_for(
        lambda: bus.per_engine_stats()[ENGINE].decode_errors == 2,
        DEADLINE,
        f"2 decode errors, got {bus.per_engine_stats()[ENGINE]}",
    )
    stats = bus.per_engine_stats()[ENGINE]
    assert received.payloads == [{"ok": True}]
    assert (stats.delivered, stats.dropped) == (1, 0)  # decode errors are not drops
    # logged once per burst: the first of the two is reported
    (logged,) = bus_warnings(caplog)
    assert "skipped a message it cannot decode" in logged


async def test_restart_after_stop(bus: EventBusModule, env: ContractEnv) -> None:
    before = Recorder("before")
    await bus.subscribe("restart.topic", before)
    await bus.publish("restart.topic", {"phase": 1})
    await before.wait_count(1)

    await env.main_app.stop()
    assert not bus.is_running
    assert bus.topics() == []
    await env.main_app.start()

    after = Recorder("after")
    await bus.subscribe("restart.topic", after)
    await bus.publish("restart.topic", {"phase": 2})
    await after.wait_count(1)
    assert after.payloads == [{"phase": 2}]
    assert before.payloads == [{"phase": 1}]  # stop forgot the old subscription
    assert bus.subscriber_count("restart.topic") == 1


@requires("durability", "cross_process")
async def test_durable_group_gets_events_published_while_it_was_away(
    bus: EventBusModule, env: ContractEnv
) -> None:
    first = Recorder("first run")
    await bus.subscribe("orders.durable", first)
    await bus.publish("orders.durable", {"n": 0})
    await first.wait_count(1)
    await env.main_app.stop()  # the consuming process goes away

    publisher = await env.new_bus()
    for n in range(1, 4):
        await publisher.publish("orders.durable", {"n": n})

    await env.main_app.start()  # and comes back
    second = Recorder("second run")
    await bus.subscribe("orders.durable", second)
    await second.wait_count(3)
    assert second.payloads == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert first.payloads == [{"n": 0}]
