"""Steps of features/eventbus_multi_engine.feature: engines, routing and their counters."""

import asyncio
from typing import Any

from eventbus_support import (
    RecordingEngine,
    names,
    numbers,
    run,
    wait,
    world,
)
from step_decorators import step, then

from modules.eventbus import EngineUnavailableError
from modules.eventbus.engines.custom import CustomEngine


@then('the engine "{engine:EbText}" logs its metrics every {seconds:d} seconds')
def then_metrics_interval(context: Any, engine: str, seconds: int) -> None:
    custom = world(context).bus.engine(engine)
    assert isinstance(custom, CustomEngine), custom
    assert custom.settings.metrics_interval == seconds, custom.settings


@then('the custom engine "{engine:EbText}" counted the topics "{topics:EbText}"')
def then_custom_counted(context: Any, engine: str, topics: str) -> None:
    custom = world(context).bus.engine(engine)
    assert isinstance(custom, CustomEngine), custom
    assert sorted(custom.events_by_topic) == names(topics), custom.metrics()


@then('the recording engine "{engine:EbText}" was handed the topics "{topics:EbText}"')
def then_recording_handed(context: Any, engine: str, topics: str) -> None:
    recording = world(context).bus.engine(engine)
    assert isinstance(recording, RecordingEngine), recording
    assert [e.topic for e in recording.published] == names(topics), recording.published


@then("the router sends these topics to these engines:")
def then_router_sends(context: Any) -> None:
    router = world(context).bus.get_router()
    for row in context.table:
        engine = router.engine_for_topic(row["topic"])
        assert engine == row["engine"], f"{row['topic']} is routed to {engine}"


@then("the subscriptions are routed to these engines:")
def then_subscription_engine(context: Any) -> None:
    state = world(context)
    for row in context.table:
        sub = state.subscriber(row["subscriber"]).sub
        assert sub.engine == row["engine"], f"{row['subscriber']} is routed to {sub.engine}"
        assert row["engine"] in sub.engines, sub.engines


@then('subscriber "{name:EbText}" listens on the engines "{engines:EbText}"')
def then_listens_on(context: Any, name: str, engines: str) -> None:
    sub = world(context).subscriber(name).sub
    assert sorted(sub.engines) == sorted(names(engines)), sub.engines


@then("the engines count these subscribers:")
def then_engine_counts(context: Any) -> None:
    bus = world(context).bus
    for row in context.table:
        count = bus.engine(row["engine"]).subscriber_count(row["topic"])
        assert count == int(row["subscribers"]), f"{row['engine']} {row['topic']}: {count}"


@then("the engines list these topics among theirs:")
def then_engine_topics(context: Any) -> None:
    bus = world(context).bus
    for row in context.table:
        topics = bus.engine(row["engine"]).topics()
        missing = set(names(row["topics"])) - set(topics)
        assert not missing, f"{row['engine']} lists {topics}, not {sorted(missing)}"


# --- delivery settings per engine -------------------------------------------------------


@then('the engine "{engine:EbText}" dropped events while subscriber "{name:EbText}" was held up')
def then_dropped_while_held(context: Any, engine: str, name: str) -> None:
    state = world(context)
    gate = state.subscriber(name).gate
    assert gate is not None and not gate.is_set()
    stats = state.bus.per_engine_stats()[engine]
    assert stats.dropped > 0 and stats.delivered == 0, stats


@then('publisher "{name:EbText}" is blocked after at most {most:d} of its {count:d} publishes')
def then_publisher_blocked(context: Any, name: str, most: int, count: int) -> None:
    state = world(context)
    task = state.tasks[name]
    wait(context, lambda: state.progress[name] >= 1, f"{name} published something")
    # A bounded look: a publisher that was not held back would have finished by now.
    run(context, asyncio.wait({task}, timeout=0.2))
    assert not task.done(), f"{name} finished all {count} publishes"
    assert 1 <= state.progress[name] <= most < count, f"{name} published {state.progress[name]}"


@then('the engine "{engine:EbText}" has dropped nothing')
def then_dropped_nothing(context: Any, engine: str) -> None:
    stats = world(context).bus.per_engine_stats()[engine]
    assert stats.dropped == 0, stats


@then('the engine "{engine:EbText}" delivered all {count:d} events and dropped none')
def then_delivered_all(context: Any, engine: str, count: int) -> None:
    state = world(context)
    state.wait_idle()
    stats = state.bus.per_engine_stats()[engine]
    assert (stats.delivered, stats.dropped) == (count, 0), stats


@then('the engine "{engine:EbText}" delivered and dropped {count:d} events in all')
def then_delivered_and_dropped(context: Any, engine: str, count: int) -> None:
    state = world(context)
    state.wait_idle()
    stats = state.bus.per_engine_stats()[engine]
    assert stats.delivered + stats.dropped == count and stats.dropped > 0, stats


@then(
    'subscriber "{name:EbText}" received the numbers {first:d} to {last:d} in order'
    ' on "{topic:EbText}"'
)
def then_numbers_on_topic(context: Any, name: str, first: int, last: int, topic: str) -> None:
    state = world(context)
    state.wait_idle()
    received = [e for e in state.subscriber(name).received if e.topic == topic]
    assert numbers(received) == list(range(first, last + 1)), numbers(received)


# --- engines in trouble -----------------------------------------------------------------


@then('the event bus logged that engine "{engine:EbText}" failed to start')
def then_logged_start_failure(context: Any, engine: str) -> None:
    messages = world(context).logs.messages()
    assert any(f"engine {engine} failed to start" in m for m in messages), messages
    assert world(context).bus.is_running


@step('subscribing to "{topic:EbText}" fails because no engine runs for it')
def step_subscribe_unavailable(context: Any, topic: str) -> None:
    state = world(context)
    try:
        run(context, state.bus.subscribe(topic, state.subscriber("refused").handle))
    except EngineUnavailableError as exc:
        assert topic in str(exc), str(exc)
    else:
        raise AssertionError(f"subscribing to {topic!r} on a broken engine did not fail")
    assert topic not in state.bus.topics(), state.bus.topics()
    assert topic not in state.bus.engine("memory").topics()
