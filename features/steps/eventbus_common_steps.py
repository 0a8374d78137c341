"""Steps shared by every event bus feature: configuring and starting the bus, subscribing,
publishing, and what subscribers received."""

import asyncio
from collections import Counter
from typing import Any

from eventbus_support import (
    DEADLINE,
    as_pairs,
    engine_type,
    names,
    numbers,
    run,
    table_events,
    toml,
    value,
    wait,
    world,
)
from step_decorators import given, step, then, when

from modular import tenant_context
from modules.eventbus import EngineUnavailableError, EventBusNotStartedError

# --- configuration and lifecycle --------------------------------------------------------


@given("an event bus with the default configuration")
def given_default_bus(context: Any) -> None:
    world(context).config = {}


@given("an event bus configured with:")
def given_configured_bus(context: Any) -> None:
    world(context).config = toml(context.text)


@given("a running event bus with the default configuration")
def given_running_default_bus(context: Any) -> None:
    given_default_bus(context)
    when_bus_starts(context)


@given("a running event bus configured with:")
def given_running_configured_bus(context: Any) -> None:
    given_configured_bus(context)
    when_bus_starts(context)


@given('the engine type "{type_name:EbText}" is registered from the test')
def given_engine_type(context: Any, type_name: str) -> None:
    world(context).register_engine_type(type_name)


@when("the event bus application starts")
def when_bus_starts(context: Any) -> None:
    state = world(context)
    app = state.app or state.build()
    run(context, app.start())


@when("the event bus application stops")
def when_bus_stops(context: Any) -> None:
    run(context, world(context).application.stop())


# --- subscribing ------------------------------------------------------------------------


def subscribe(
    context: Any,
    name: str,
    pattern: str,
    *,
    is_async: bool = False,
    gated: bool = False,
    fail_on: Any = None,
    always_fail: bool = False,
    tenant: str | None = None,
    in_context: bool = False,
    replay: bool = False,
) -> None:
    state = world(context)
    subscriber = state.subscriber(name)
    if gated:
        subscriber.gate = subscriber.gate or asyncio.Event()
    if fail_on is not None:
        subscriber.fail_on.append(fail_on)
    subscriber.always_fail = always_fail
    if tenant is not None and not in_context:
        target: Any = state.bus.for_tenant(tenant)
    else:
        target = state.bus
    method = target.subscribe_async if is_async else target.subscribe
    with tenant_context(tenant if in_context else None):
        subscriber.subscription = run(context, method(pattern, subscriber.handle, replay=replay))


@step('subscriber "{name:EbText}" subscribes to "{pattern:EbText}"')
def step_subscribe(context: Any, name: str, pattern: str) -> None:
    subscribe(context, name, pattern)


@step('subscriber "{name:EbText}" subscribes asynchronously to "{pattern:EbText}"')
def step_subscribe_async(context: Any, name: str, pattern: str) -> None:
    subscribe(context, name, pattern, is_async=True)


@step(
    'subscriber "{name:EbText}" subscribes to "{pattern:EbText}"'
    " with a handler that waits for a signal"
)
def step_subscribe_gated(context: Any, name: str, pattern: str) -> None:
    subscribe(context, name, pattern, gated=True)


@step(
    'subscriber "{name:EbText}" subscribes asynchronously to "{pattern:EbText}"'
    " with a handler that waits for a signal"
)
def step_subscribe_async_gated(context: Any, name: str, pattern: str) -> None:
    subscribe(context, name, pattern, is_async=True, gated=True)


@step(
    'subscriber "{name:EbText}" subscribes to "{pattern:EbText}"'
    " with a handler that fails on payload {payload}"
)
def step_subscribe_failing(context: Any, name: str, pattern: str, payload: str) -> None:
    subscribe(context, name, pattern, fail_on=value(payload))


@step(
    'subscriber "{name:EbText}" subscribes asynchronously to "{pattern:EbText}"'
    " with a handler that fails on payload {payload}"
)
def step_subscribe_async_failing(context: Any, name: str, pattern: str, payload: str) -> None:
    subscribe(context, name, pattern, is_async=True, fail_on=value(payload))


@step(
    'subscriber "{name:EbText}" subscribes to "{pattern:EbText}" with a handler that always fails'
)
def step_subscribe_always_failing(context: Any, name: str, pattern: str) -> None:
    subscribe(context, name, pattern, always_fail=True)


@step('subscriber "{name:EbText}" subscribes to "{pattern:EbText}" with replay')
def step_subscribe_replay(context: Any, name: str, pattern: str) -> None:
    subscribe(context, name, pattern, replay=True)


@step('subscriber "{name:EbText}" of tenant "{tenant:EbText}" subscribes to "{pattern:EbText}"')
def step_subscribe_tenant(context: Any, name: str, tenant: str, pattern: str) -> None:
    subscribe(context, name, pattern, tenant=tenant)


@step(
    'inside the tenant context of "{tenant:EbText}",'
    ' subscriber "{name:EbText}" subscribes to "{pattern:EbText}"'
)
def step_subscribe_in_tenant_context(context: Any, tenant: str, name: str, pattern: str) -> None:
    subscribe(context, name, pattern, tenant=tenant, in_context=True)


@step('subscriber "{name:EbText}" unsubscribes')
def step_unsubscribe(context: Any, name: str) -> None:
    state = world(context)
    run(context, state.bus.unsubscribe(state.subscriber(name).sub))


@step('subscriber "{name:EbText}" unsubscribes again, through the bus and the subscription')
def step_unsubscribe_again(context: Any, name: str) -> None:
    state = world(context)
    sub = state.subscriber(name).sub
    run(context, state.bus.unsubscribe(sub))
    run(context, sub.cancel())


@step('subscriber "{name:EbText}" is signalled')
def step_signal(context: Any, name: str) -> None:
    gate = world(context).subscriber(name).gate
    assert gate is not None, f"subscriber {name!r} does not wait for a signal"
    gate.set()


# --- publishing -------------------------------------------------------------------------


@step('the event bus publishes "{topic:EbText}" with payload {payload}')
def step_publish(context: Any, topic: str, payload: str) -> None:
    run(context, world(context).publish(topic, value(payload)))


@step('the event bus publishes {count:d} numbered events on "{topic:EbText}"')
def step_publish_numbered(context: Any, count: int, topic: str) -> None:
    state = world(context)

    async def publish_all() -> None:
        for n in range(1, count + 1):
            await state.publish(topic, {"n": n})

    run(context, publish_all())


@step('tenant "{tenant:EbText}" publishes "{topic:EbText}" with payload {payload}')
def step_tenant_publishes(context: Any, tenant: str, topic: str, payload: str) -> None:
    run(context, world(context).publish(topic, value(payload), tenant=tenant))


@step(
    'inside the tenant context of "{tenant:EbText}",'
    ' the event bus publishes "{topic:EbText}" with payload {payload}'
)
def step_publish_in_tenant_context(context: Any, tenant: str, topic: str, payload: str) -> None:
    state = world(context)
    with tenant_context(tenant):
        event = run(context, state.bus.publish(topic, value(payload)))
    state.published.append(event)


@step("the event bus publishes these events one at a time:")
def step_publish_one_at_a_time(context: Any) -> None:
    """Publish each row, let it be handled, and note which engines' counters moved."""
    state = world(context)
    headings = context.table.headings
    for row in context.table:
        tenant = row["tenant"] or None if "tenant" in headings else None
        payload = value(row["payload"]) if "payload" in headings else None
        before = state.delivered_by_engine()
        run(context, state.publish(row["topic"], payload, tenant=tenant))
        state.wait_idle()
        after = state.delivered_by_engine()
        grown = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        state.handled_by.append((tenant, row["topic"], grown))


@step(
    'publisher "{name:EbText}" publishes {count:d} numbered events on "{topic:EbText}"'
    " in the background"
)
def step_background_publisher(context: Any, name: str, count: int, topic: str) -> None:
    world(context).start_publisher(name, topic, count)


# --- what subscribers received ----------------------------------------------------------


def assert_received(context: Any, name: str, expected: list[tuple[str, Any]]) -> None:
    state = world(context)
    state.wait_idle()
    subscriber = state.subscriber(name)
    actual = as_pairs(subscriber.received)
    if subscriber.sub.is_async:  # a worker pool: concurrent, so compare without order
        assert Counter(map(repr, actual)) == Counter(map(repr, expected)), (
            f"{name} received {actual}, expected {expected}"
        )
    else:
        assert actual == expected, f"{name} received {actual}, expected {expected}"


@then('subscriber "{name:EbText}" received exactly:')
def then_received_exactly(context: Any, name: str) -> None:
    assert_received(context, name, table_events(context))


@then('subscribers "{subscriber_names:EbText}" each received exactly:')
def then_each_received_exactly(context: Any, subscriber_names: str) -> None:
    expected = table_events(context)
    for name in names(subscriber_names):
        assert_received(context, name, expected)


@then('subscriber "{name:EbText}" received nothing')
def then_received_nothing(context: Any, name: str) -> None:
    assert_received(context, name, [])


@then('subscriber "{name:EbText}" received the numbers {first:d} to {last:d} in order')
def then_received_numbers(context: Any, name: str, first: int, last: int) -> None:
    state = world(context)
    subscriber = state.subscriber(name)
    expected = list(range(first, last + 1))
    wait(
        context,
        lambda: len(subscriber.received) >= len(expected),
        f"{name} received {len(expected)} events",
    )
    state.wait_idle()
    assert numbers(subscriber.received) == expected, numbers(subscriber.received)


@then("the event bus counts deliveries: {delivered:d}, drops: {dropped:d}, failures: {failed:d}")
def then_counts(context: Any, delivered: int, dropped: int, failed: int) -> None:
    state = world(context)
    state.wait_idle()
    stats = state.bus.per_engine_stats().values()
    actual = (
        sum(s.delivered for s in stats),
        sum(s.dropped for s in stats),
        sum(s.failed for s in stats),
    )
    assert actual == (delivered, dropped, failed), f"(delivered, dropped, failed) = {actual}"
    assert state.bus.stats() == (delivered, dropped), state.bus.stats()


@then("the events were handled on these engines:")
def then_handled_on(context: Any) -> None:
    state = world(context)
    headings = context.table.headings
    expected = [
        ((row["tenant"] or None) if "tenant" in headings else None, row["topic"], row["engine"])
        for row in context.table
    ]
    assert len(state.handled_by) == len(expected), state.handled_by
    for (tenant, topic, engine), (seen_tenant, seen_topic, grown) in zip(
        expected, state.handled_by, strict=True
    ):
        assert (tenant, topic) == (seen_tenant, seen_topic), (seen_tenant, seen_topic)
        assert list(grown) == [engine], (
            f"{topic} (tenant {tenant}) was handled on {grown or 'no engine'}, expected {engine}"
        )


@then("the per-engine delivery counts are:")
def then_per_engine_counts(context: Any) -> None:
    state = world(context)
    state.wait_idle()
    stats = state.bus.per_engine_stats()
    for row in context.table:
        engine = row["engine"]
        assert engine in stats, f"no engine {engine!r}: {sorted(stats)}"
        for column in context.table.headings[1:]:
            actual = getattr(stats[engine], column)
            assert actual == int(row[column]), f"{engine} {column} = {actual}: {stats[engine]}"


@then('publishing "{topic:EbText}" fails because the bus is not started')
def then_publish_refused(context: Any, topic: str) -> None:
    state = world(context)
    try:
        run(context, state.bus.publish(topic, None))
    except EventBusNotStartedError as exc:
        assert topic in str(exc) and "not started" in str(exc), str(exc)
    else:
        raise AssertionError(f"publishing {topic!r} on a stopped bus did not fail")


@then('publishing "{topic:EbText}" fails because engine "{engine:EbText}" is unavailable')
def then_publish_unavailable(context: Any, topic: str, engine: str) -> None:
    state = world(context)
    try:
        run(context, state.bus.publish(topic, None))
    except EngineUnavailableError as exc:
        assert topic in str(exc) and repr(engine) in str(exc), str(exc)
    else:
        raise AssertionError(f"publishing {topic!r} to a broken engine did not fail")


@then('publisher "{name:EbText}" finishes all its publishes')
def then_publisher_finishes(context: Any, name: str) -> None:
    task = world(context).tasks[name]
    run(context, task, DEADLINE)
    assert task.done() and task.exception() is None


@then("the event bus runs the engines:")
def then_runs_engines(context: Any) -> None:
    engines = world(context).bus.engines()
    expected = [(row["name"], row["type"]) for row in context.table]
    actual = [(name, engine_type(engine)) for name, engine in engines.items()]
    assert actual == expected, f"engines: {actual}"
