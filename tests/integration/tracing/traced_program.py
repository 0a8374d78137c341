"""A program with an OpenTelemetry SDK tracer provider: publishes on a memory and a Redis
engine and prints the finished spans as JSON lines. Run in its own process by the tests,
because a tracer provider, once set, is set for the whole process."""

from __future__ import annotations

import asyncio
import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from modular import Application
from modules.eventbus import Event, EventBusModule


async def main(redis_url: str, prefix: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    config = {
        "eventbus": {
            "engines": [
                {"name": "mem", "type": "memory"},
                {
                    "name": "red",
                    "type": "redis",
                    "config": {"url": redis_url, "channelPrefix": prefix},
                },
            ],
            "routing": [{"topics": ["remote.*"], "engine": "red"}],
        }
    }
    app = Application(config, envvar_prefix=None)
    app.register_module(EventBusModule())
    handled: list[Event] = []
    done = asyncio.Event()

    async def on_event(event: Event) -> None:
        handled.append(event)
        if len(handled) == 3:
            done.set()

    def failing(event: Event) -> None:
        raise ValueError("handler failed")

    async with app:
        bus = app.get_service("eventbus.provider", EventBusModule)
        await bus.subscribe("local.made", on_event)
        await bus.for_tenant("acme").subscribe("local.made", on_event)
        await bus.subscribe_async("remote.made", on_event)
        await bus.subscribe("local.failing", failing)
        await bus.publish("local.made", {"n": 1}, metadata={"k": "v"})
        await bus.publish("remote.made", {"n": 2})
        await bus.publish("local.failing", {"n": 3})
        await bus.publish("local.made", {"n": 4}, tenant="acme")
        await asyncio.wait_for(done.wait(), 10)
    for event in handled:
        print(json.dumps({"handled": event.topic, "metadata": dict(event.metadata)}))
    for span in exporter.get_finished_spans():
        context = span.get_span_context()
        assert context is not None
        print(
            json.dumps(
                {
                    "name": span.name,
                    "kind": span.kind.name,
                    "trace_id": context.trace_id,
                    "span_id": context.span_id,
                    "parent": span.parent.span_id if span.parent else None,
                    "links": [link.context.span_id for link in span.links],
                    "attributes": dict(span.attributes or {}),
                    "status": span.status.status_code.name,
                }
            )
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
