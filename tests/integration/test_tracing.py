"""OpenTelemetry tracing: a publish and its handlers give linked spans, on the memory engine
and through a real Redis (where the context travels in the CloudEvents envelope)."""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from modular import Application
from modules.eventbus import Event, EventBusModule, tracing
from tests.helpers import Recorder, wait_for
from tests.integration.redis.helpers import check_redis


def redis_engine() -> dict[str, Any]:
    prefix = f"test-{uuid.uuid4().hex[:12]}:"  # pub/sub: no keys to delete afterwards
    return {"type": "redis", "config": {"url": "redis://127.0.0.1:6379", "channelPrefix": prefix}}


ENGINES = {"memory": lambda: {"type": "memory"}, "redis": redis_engine}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.set_tracer_provider(provider)
    yield exporter
    tracing.set_tracer_provider(None)
    provider.shutdown()


@asynccontextmanager
async def running_bus(engine: dict[str, Any]) -> AsyncIterator[EventBusModule]:
    if engine["type"] == "redis":
        await (await check_redis()).aclose()  # a missing Redis fails the test loudly
    config = {"eventbus": {"engines": [{"name": "e", **engine}]}}
    app = Application(config, envvar_prefix=None)
    bus = EventBusModule()
    app.register_module(bus)
    async with app:
        yield bus


def finished(exporter: InMemorySpanExporter, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind == kind]


@pytest.mark.parametrize("engine", ENGINES.values(), ids=ENGINES)
async def test_handlers_run_in_consumer_spans_linked_to_the_publish(
    spans: InMemorySpanExporter, engine: Any
) -> None:
    inside: dict[str, int] = {}

    def plain(event: Event) -> None:
        inside["plain"] = trace.get_current_span().get_span_context().span_id

    async def coroutine(event: Event) -> None:
        inside["async"] = trace.get_current_span().get_span_context().span_id

    seen = Recorder()
    async with running_bus(engine()) as bus:
        await bus.subscribe("order.*", plain)
        await bus.subscribe_async("order.*", coroutine)
        await bus.subscribe("order.placed", seen)
        event = await bus.publish("order.placed", {"id": 7}, metadata={"k": "v"})
        await seen.wait_count(1)
        await wait_for(lambda: len(finished(spans, SpanKind.CONSUMER)) == 3, what="3 spans")

    (producer,) = finished(spans, SpanKind.PRODUCER)
    assert producer.name == "order.placed publish"
    assert producer.attributes is not None and producer.context is not None
    assert producer.attributes["messaging.destination.name"] == "order.placed"
    assert producer.attributes["messaging.message.id"] == event.id
    assert producer.attributes["messaging.eventbus.engine"] == "e"
    trace_id, span_id = producer.context.trace_id, producer.context.span_id

    # The context reached the handler in the event (the envelope, through Redis).
    received = seen.events[0]
    assert received.metadata["k"] == "v"
    assert received.metadata["traceparent"].startswith(f"00-{trace_id:032x}-{span_id:016x}-")

    consumers = finished(spans, SpanKind.CONSUMER)
    assert {s.context.span_id for s in consumers if s.context} >= set(inside.values())
    assert len(inside) == 2
    for span in consumers:
        assert span.name == "order.placed process"
        assert span.context is not None and span.context.trace_id == trace_id
        assert span.parent is not None and span.parent.span_id == span_id
        assert [link.context.span_id for link in span.links] == [span_id]
        assert span.attributes is not None
        assert span.attributes["messaging.message.id"] == event.id


async def test_a_failing_handler_marks_its_span_and_keeps_its_subscription(
    spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="modules.eventbus")
    handled: list[Event] = []

    def flaky(event: Event) -> None:
        handled.append(event)
        if event.payload == "bad":
            raise RuntimeError("boom")

    async with running_bus(ENGINES["memory"]()) as bus:
        await bus.subscribe("job.*", flaky)
        await bus.publish("job.run", "bad")
        await bus.publish("job.run", "good")
        await wait_for(lambda: len(handled) == 2, what="both events")
        await wait_for(lambda: len(finished(spans, SpanKind.CONSUMER)) == 2, what="2 spans")
        assert bus.per_engine_stats()["e"].failed == 1
    bad, good = finished(spans, SpanKind.CONSUMER)
    assert bad.status.status_code is StatusCode.ERROR
    assert [e.name for e in bad.events] == ["exception"]
    assert good.status.status_code is StatusCode.UNSET
    assert "boom" in caplog.text


async def test_without_a_tracer_provider_nothing_is_wrapped_or_added() -> None:
    handler = Recorder()
    async with running_bus(ENGINES["memory"]()) as bus:
        sub = await bus.subscribe("a.b", handler)
        await bus.publish("a.b", 1)
        await handler.wait_count(1)
    assert sub.handler is handler
    assert "traceparent" not in handler.events[0].metadata


def test_without_opentelemetry_the_bus_works_and_imports_none_of_it() -> None:
    code = """
import asyncio, sys
sys.modules["opentelemetry"] = None  # as if opentelemetry-api were not installed
from modular import Application
from modules.eventbus import EventBusModule

async def main():
    app = Application({}, envvar_prefix=None)
    bus = EventBusModule()
    app.register_module(bus)
    got = []
    async with app:
        await bus.subscribe("a.b", got.append)
        await bus.publish("a.b", 1)
        while not got:
            await asyncio.sleep(0.001)
    print(dict(got[0].metadata), [m for m in sys.modules if m.startswith("opentelemetry")])

asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{} ['opentelemetry']"  # only the blocked entry itself
