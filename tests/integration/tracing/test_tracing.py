"""Tracing with the OpenTelemetry SDK: a publish and its handlers make linked spans, on the
memory engine and across Redis. Run in a subprocess: a tracer provider is process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
REDIS_URL = "redis://127.0.0.1:6379/0"


def run_traced_program() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    prefix = f"tracing-{os.urandom(4).hex()}:"
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.tracing.traced_program", REDIS_URL, prefix],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return [x for x in lines if "handled" in x], [x for x in lines if "name" in x]


def test_publish_and_handlers_make_linked_spans_on_memory_and_redis() -> None:
    handled, spans = run_traced_program()
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)

    producers = by_name["publish local.made"]
    consumers = by_name["process local.made"]
    assert len(producers) == len(consumers) == 2
    for producer in producers:
        assert producer["kind"] == "PRODUCER"
        assert producer["attributes"]["messaging.system"] == "eventbus"
        assert producer["attributes"]["messaging.destination.name"] == "local.made"
        assert producer["attributes"]["eventbus.engine"] == "mem"
    for consumer in consumers:
        assert consumer["kind"] == "CONSUMER"
        (link,) = consumer["links"]
        producer = next(p for p in producers if p["span_id"] == link)
        # In process, the handler also runs in the publisher's context: a child span.
        assert consumer["parent"] == producer["span_id"]
        assert consumer["trace_id"] == producer["trace_id"]
    tenanted = [c for c in consumers if c["attributes"].get("eventbus.tenant") == "acme"]
    assert len(tenanted) == 1

    (remote_producer,) = by_name["publish remote.made"]
    (remote_consumer,) = by_name["process remote.made"]
    assert remote_producer["attributes"]["eventbus.engine"] == "red"
    # Across Redis the context travelled in the envelope (traceparent): a link to the
    # producer, in the producer's trace.
    assert remote_consumer["links"] == [remote_producer["span_id"]]
    assert remote_consumer["attributes"]["messaging.message.id"]

    (failing,) = by_name["process local.failing"]
    assert failing["status"] == "ERROR"

    user = next(h for h in handled if h["handled"] == "local.made")
    assert user["metadata"]["k"] == "v"  # the user's metadata is kept beside traceparent
    assert all(h["metadata"]["traceparent"].startswith("00-") for h in handled)


def test_without_a_tracer_provider_events_carry_no_trace_context() -> None:
    # This test process has opentelemetry installed but sets no provider.
    from modules.eventbus import tracing

    assert tracing.AVAILABLE
    assert not tracing.active()


WITHOUT_OPENTELEMETRY = """
import asyncio, sys
from importlib.abc import MetaPathFinder

class Absent(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ModuleNotFoundError(name)
        return None

sys.meta_path.insert(0, Absent())
from modular import Application
from modules.eventbus import EventBusModule, tracing

async def main():
    app = Application({}, envvar_prefix=None)
    app.register_module(EventBusModule())
    got = []
    async with app:
        bus = app.get_service("eventbus.provider")
        await bus.subscribe("t", got.append)
        await bus.publish("t", 1, metadata={"k": "v"})
    assert [dict(e.metadata) for e in got] == [{"k": "v"}], got
    assert not tracing.AVAILABLE
    assert not any(m.startswith("opentelemetry") for m in sys.modules)
    print("ok")

asyncio.run(main())
"""


def test_without_opentelemetry_nothing_changes_and_nothing_is_imported() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_OPENTELEMETRY],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
