"""Steps of features/eventbus_core.feature: the module, subscriptions, retention, shutdown."""

import asyncio
from datetime import UTC
from typing import Any

from eventbus_support import (
    FakeClock,
    as_pairs,
    leftover_tasks,
    names,
    numbers,
    run,
    setting,
    table_events,
    value,
    wait,
    world,
)
from step_decorators import given, then, when

from modules.eventbus import EventBusModule, FanoutEngine
from modules.eventbus.config import parse_duration

# --- the module -------------------------------------------------------------------------


@when("the event bus application is initialised")
def when_bus_initialised(context: Any) -> None:
    state = world(context)
    run(context, (state.app or state.build()).init())


@then('the service "{service:EbText}" is the event bus module, not yet running')
def then_service_is_module(context: Any, service: str) -> None:
    state = world(context)
    provided = state.application.get_service(service)
    assert provided is state.bus, f"{service} is {provided!r}"
    assert isinstance(provided, EventBusModule)
    assert not provided.is_running


@then("the event bus is running")
def then_bus_running(context: Any) -> None:
    assert world(context).bus.is_running


@then('the event bus settings, and the same on its engine "{engine:EbText}", are:')
def then_settings(context: Any, engine: str) -> None:
    bus = world(context).bus
    engine_config = bus.engine(engine).config
    for row in context.table:
        expected = value(row["value"])
        actual = setting(bus.config, row["setting"])
        assert actual == expected, f"eventbus {row['setting']} = {actual!r}"
        if row["setting"] != "engine":  # the engine type is not a setting of the engine
            on_engine = setting(engine_config, row["setting"])
            assert on_engine == expected, f"engine {engine} {row['setting']} = {on_engine!r}"


@then(
    'the engine "{engine:EbText}" delivers with a buffer of {buffer:d}, {workers:d} workers'
    ' and mode "{mode:EbText}"'
)
def then_delivery_policy(context: Any, engine: str, buffer: int, workers: int, mode: str) -> None:
    found = world(context).bus.engine(engine)
    assert isinstance(found, FanoutEngine), found
    policy = found.dispatcher.policy
    assert (policy.buffer_size, policy.worker_count, policy.mode) == (buffer, workers, mode), policy


# --- events and subscriptions -----------------------------------------------------------


@then('the event subscriber "{name:EbText}" received is the one that was published')
def then_same_event(context: Any, name: str) -> None:
    state = world(context)
    (received,) = state.subscriber(name).received
    published = state.published[-1]
    assert received.id == published.id and received.id, (received, published)
    assert received.metadata == {} and received.tenant is None, received
    assert received.source == "eventbus", received.source
    assert received.created_at.tzinfo is UTC, received.created_at


@then('subscriber "{name:EbText}" is handling {count:d} events at once')
def then_handling_at_once(context: Any, name: str, count: int) -> None:
    subscriber = world(context).subscriber(name)
    wait(context, lambda: subscriber.in_flight() >= count, f"{name} handles {count} events")
    assert subscriber.in_flight() == count, f"{name} handles {subscriber.in_flight()} events"
    assert subscriber.finished == [], subscriber.finished


@then('subscriber "{name:EbText}" finished handling the numbers {first:d} to {last:d}')
def then_finished_numbers(context: Any, name: str, first: int, last: int) -> None:
    subscriber = world(context).subscriber(name)
    expected = list(range(first, last + 1))
    wait(context, lambda: len(subscriber.finished) >= len(expected), f"{name} finished")
    assert sorted(numbers(subscriber.finished)) == expected, numbers(subscriber.finished)


@then('subscriber "{name:EbText}" finished handling exactly the payload {payload}')
def then_finished_payload(context: Any, name: str, payload: str) -> None:
    world(context).wait_idle()
    finished = world(context).subscriber(name).finished
    assert [e.payload for e in finished] == [value(payload)], finished


@then('subscriber "{name:EbText}" finished handling nothing')
def then_finished_nothing(context: Any, name: str) -> None:
    assert world(context).subscriber(name).finished == []


@then('the subscriptions of "{subscriber_names:EbText}" have distinct ids')
def then_distinct_ids(context: Any, subscriber_names: str) -> None:
    state = world(context)
    ids = [state.subscriber(name).sub.id for name in names(subscriber_names)]
    assert all(ids) and len(set(ids)) == len(ids), ids


@then("the subscriptions are:")
def then_subscriptions_are(context: Any) -> None:
    state = world(context)
    for row in context.table:
        sub = state.subscriber(row["subscriber"]).sub
        actual = (sub.topic, sub.is_async, sub.engine, sub.active)
        expected = (
            row["topic"],
            value(row["asynchronous"]),
            row["engine"],
            value(row["active"]),
        )
        assert actual == expected, f"{row['subscriber']}: {actual}, expected {expected}"


@then('the event bus lists the subscriptions of "{subscriber_names:EbText}"')
def then_lists_subscriptions(context: Any, subscriber_names: str) -> None:
    state = world(context)
    expected = {state.subscriber(name).sub.id for name in names(subscriber_names)}
    assert {s.id for s in state.bus.subscriptions()} == expected, state.bus.subscriptions()


@then('the event bus lists the topics "{topics:EbText}"')
def then_lists_topics(context: Any, topics: str) -> None:
    assert world(context).bus.topics() == names(topics), world(context).bus.topics()


@then("the event bus subscriber counts are:")
def then_subscriber_counts(context: Any) -> None:
    bus = world(context).bus
    for row in context.table:
        count = bus.subscriber_count(row["topic"])
        assert count == int(row["subscribers"]), f"{row['topic']}: {count} subscribers"


@then('subscriber "{name:EbText}" received the very payload objects that were published')
def then_same_payload_objects(context: Any, name: str) -> None:
    state = world(context)
    received = state.subscriber(name).received
    assert len(received) == len(state.published)
    for got, sent in zip(received, state.published, strict=True):
        assert got.payload is sent.payload, (got, sent)


@then(
    'the event bus logged a failure of subscriber "{name:EbText}" on "{topic:EbText}"'
    ' with "{error:EbText}"'
)
def then_logged_failure(context: Any, name: str, topic: str, error: str) -> None:
    state = world(context)
    sub_id = state.subscriber(name).sub.id
    failures = [m for m in state.logs.messages() if error in m]
    assert len(failures) == 1, state.logs.messages()
    assert sub_id in failures[0] and topic in failures[0], failures[0]


# --- retention --------------------------------------------------------------------------


@given("the event bus uses a test clock")
def given_test_clock(context: Any) -> None:
    world(context).clock = FakeClock()


@when('the test clock moves "{duration:EbText}" ahead')
def when_clock_moves(context: Any, duration: str) -> None:
    clock = world(context).clock
    assert clock is not None, "the event bus does not use a test clock"
    clock.advance(parse_duration(duration))


@then('the event bus history of "{pattern:EbText}" holds:')
def then_history_holds(context: Any, pattern: str) -> None:
    history = run(context, world(context).bus.history(pattern))
    assert as_pairs(history) == table_events(context), as_pairs(history)


@then('the event bus history of "{pattern:EbText}" is empty')
def then_history_empty(context: Any, pattern: str) -> None:
    history = run(context, world(context).bus.history(pattern))
    assert history == [], history


# --- shutdown ---------------------------------------------------------------------------


@when("the event bus application begins stopping")
def when_begins_stopping(context: Any) -> None:
    state = world(context)
    state.spawn("stop", state.application.stop())
    wait(context, lambda: not state.bus.is_running, "the bus refuses new events")


@then('the event bus is still stopping while subscriber "{name:EbText}" handles its event')
def then_still_stopping(context: Any, name: str) -> None:
    state = world(context)
    stopping = state.tasks["stop"]
    # A bounded look: a stop that did not wait for the handler would be over by now.
    run(context, asyncio.wait({stopping}, timeout=0.2))
    assert not stopping.done(), "stop() returned while a handler was still running"
    assert state.subscriber(name).in_flight() == 1


@then("the event bus application has stopped")
def then_has_stopped(context: Any) -> None:
    state = world(context)
    run(context, state.tasks["stop"])
    assert not state.bus.is_running


@then("the event bus has no topics and no subscriptions")
def then_nothing_left(context: Any) -> None:
    bus = world(context).bus
    assert bus.topics() == [] and bus.subscriptions() == [], (bus.topics(), bus.subscriptions())
    for name, engine in bus.engines().items():
        assert engine.topics() == [], f"engine {name} still has {engine.topics()}"


@then("no task of the event bus is left running")
def then_no_tasks(context: Any) -> None:
    async def leftovers() -> list[asyncio.Task[Any]]:
        return leftover_tasks()

    left = run(context, leftovers())
    assert left == [], f"tasks left running: {left}"
