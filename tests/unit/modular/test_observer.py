"""Observers: CloudEvents-shaped records, filters, async observers and failure isolation."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from modular import Application, CloudEvent

from .helpers import make_module, phase

STARTED = "com.modular.application.started"
STOPPED = "com.modular.application.stopped"


def two_module_app(log: list[str]) -> Application:
    app = Application(envvar_prefix=None)
    app.register_module(make_module("web", log, dependencies=["db"]))
    app.register_module(make_module("db", log))
    return app


async def test_sync_observer_receives_cloud_events(log: list[str]) -> None:
    app = two_module_app(log)
    received: list[CloudEvent] = []
    app.register_observer(received.append)

    before = datetime.now(UTC)
    await app.start()
    after = datetime.now(UTC)

    started = [e for e in received if e.type == STARTED]
    assert len(started) == 1
    event = started[0]
    assert event.specversion == "1.0"
    assert event.source
    assert isinstance(event.id, str) and event.id
    assert event.time.tzinfo is not None
    assert before <= event.time <= after
    assert event.data == {"modules": ["db", "web"]}
    assert len({e.id for e in received}) == len(received)  # ids are unique
    await app.stop()


async def test_application_emits_module_and_application_lifecycle_events(
    log: list[str],
) -> None:
    app = two_module_app(log)
    received: list[CloudEvent] = []
    app.register_observer(received.append)

    async with app:
        pass

    assert [(e.type, e.data) for e in received] == [
        ("com.modular.module.initialized", {"module": "db"}),
        ("com.modular.module.initialized", {"module": "web"}),
        ("com.modular.module.started", {"module": "db"}),
        ("com.modular.module.started", {"module": "web"}),
        (STARTED, {"modules": ["db", "web"]}),
        ("com.modular.module.stopped", {"module": "web"}),
        ("com.modular.module.stopped", {"module": "db"}),
        (STOPPED, {"modules": ["db", "web"]}),
    ]
    times = [e.time for e in received]
    assert times == sorted(times)


async def test_event_types_filter(log: list[str]) -> None:
    app = two_module_app(log)
    lifecycle: list[str] = []
    everything: list[str] = []
    app.register_observer(lambda e: lifecycle.append(e.type), event_types=[STARTED, STOPPED])
    app.register_observer(lambda e: everything.append(e.type))

    await app.start()
    await app.stop()

    assert lifecycle == [STARTED, STOPPED]
    assert len(everything) == 8
    assert app.observers.wants(STARTED)


def test_wants_reflects_the_filters() -> None:
    app = Application(envvar_prefix=None)
    assert not app.observers.wants(STARTED)
    app.register_observer(lambda e: None, event_types=[STOPPED])
    assert app.observers.wants(STOPPED)
    assert not app.observers.wants(STARTED)

    def everything(event: CloudEvent) -> None:
        pass

    app.register_observer(everything)
    assert app.observers.wants("com.example.anything")
    app.observers.unregister(everything)
    assert not app.observers.wants("com.example.anything")
    assert app.observers.wants(STOPPED)


async def test_async_observer_receives_events(log: list[str]) -> None:
    app = two_module_app(log)
    received: list[CloudEvent] = []

    async def observe(event: CloudEvent) -> None:
        received.append(event)

    app.register_observer(observe, event_types=[STARTED, STOPPED])
    await app.start()
    await app.observers.drain()
    assert [e.type for e in received] == [STARTED]

    await app.stop()  # stop drains pending observers itself
    assert [e.type for e in received] == [STARTED, STOPPED]
    assert all(e.specversion == "1.0" for e in received)


async def test_custom_event_reaches_observers() -> None:
    app = Application(envvar_prefix=None)
    received: list[CloudEvent] = []
    app.register_observer(received.append, event_types=["com.example.thing.happened"])

    app.emit("com.example.thing.happened", "example.source", {"answer": 42})
    app.emit("com.example.other", "example.source")

    assert len(received) == 1
    event = received[0]
    assert (event.type, event.source, event.data) == (
        "com.example.thing.happened",
        "example.source",
        {"answer": 42},
    )


async def test_failing_sync_observer_is_logged_and_others_still_receive(
    log: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    app = two_module_app(log)
    before: list[str] = []
    after: list[str] = []

    def broken(event: CloudEvent) -> None:
        raise RuntimeError("observer exploded")

    app.register_observer(lambda e: before.append(e.type))
    app.register_observer(broken)
    app.register_observer(lambda e: after.append(e.type))

    with caplog.at_level(logging.ERROR, logger="modular"):
        async with app:
            pass

    assert before == after
    assert len(after) == 8
    assert phase(log, "stop") == ["web", "db"]  # the application was not disturbed
    failures = [r for r in caplog.records if r.name.startswith("modular")]
    assert len(failures) == 8
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in failures)
    assert STARTED in caplog.text


async def test_failing_async_observer_is_logged_and_others_still_receive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Application(envvar_prefix=None)
    received: list[str] = []

    async def broken(event: CloudEvent) -> None:
        raise RuntimeError("async observer exploded")

    async def fine(event: CloudEvent) -> None:
        received.append(event.type)

    app.register_observer(broken)
    app.register_observer(fine)

    with caplog.at_level(logging.ERROR, logger="modular"):
        app.emit("com.example.ping", "test")
        await app.observers.drain()

    assert received == ["com.example.ping"]
    errors = [r for r in caplog.records if r.exc_info is not None]
    assert len(errors) == 1
    assert "async observer exploded" in str(errors[0].exc_info[1])  # type: ignore[index]


async def test_unregistered_observer_receives_nothing_more() -> None:
    app = Application(envvar_prefix=None)
    received: list[str] = []

    def observe(event: CloudEvent) -> None:
        received.append(event.type)

    app.register_observer(observe)
    app.emit("one", "test")
    app.observers.unregister(observe)
    app.emit("two", "test")
    assert received == ["one"]
