"""The Prometheus collector and the DogStatsD exporter against real receivers: a
prometheus_client registry rendered to text, and a UDP socket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modular import Application
from modules.eventbus import Event, EventBusModule
from modules.eventbus.exporters.datadog import DatadogExporter
from modules.eventbus.exporters.prometheus import EventBusCollector
from tests.helpers import wait_for

CONFIG = {
    "eventbus": {
        "engines": [{"name": "fast", "type": "memory"}, {"name": "other", "type": "memory"}],
        "routing": [
            {"topics": ["user.*"], "engine": "fast"},
            {"topics": ["order.*"], "engine": "other"},
        ],
    }
}


@pytest.fixture
async def bus() -> AsyncIterator[EventBusModule]:
    app = Application(CONFIG, envvar_prefix=None)
    module = EventBusModule()
    app.register_module(module)
    async with app:
        handled: list[Event] = []

        def fail_on_order(event: Event) -> None:
            handled.append(event)
            if event.topic == "order.bad":
                raise RuntimeError("boom")

        await module.subscribe("user.*", handled.append)
        await module.subscribe("order.*", fail_on_order)
        for topic in ("user.a", "user.b", "order.ok", "order.bad"):
            await module.publish(topic, {})
        await wait_for(lambda: len(handled) == 4, what="four deliveries")
        yield module


def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, sample.labels.get("engine", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_prometheus_collector_reports_every_engine_and_the_total(
    bus: EventBusModule,
) -> None:
    registry = CollectorRegistry()
    registry.register(EventBusCollector(bus, namespace="bus"))
    values = samples(registry)
    assert values[("bus_delivered_total", "fast")] == 2
    assert values[("bus_delivered_total", "other")] == 2
    assert values[("bus_delivered_total", "_all")] == 4
    assert values[("bus_failed_total", "other")] == 1
    assert values[("bus_dropped_total", "_all")] == 0
    assert values[("bus_decode_errors_total", "_all")] == 0
    assert values[("bus_subscriptions", "_all")] == 2
    # a later scrape sees later deliveries: the collector reads the bus at scrape time
    await bus.publish("user.c", {})
    await wait_for(lambda: bus.stats()[0] == 5, what="fifth delivery")
    assert samples(registry)[("bus_delivered_total", "fast")] == 3


async def test_datadog_exporter_sends_gauges_over_udp(bus: EventBusModule) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    port = receiver.getsockname()[1]
    exporter = DatadogExporter(
        bus, address=f"127.0.0.1:{port}", namespace="eb", flush_interval=0.05, tags=["env:t"]
    )
    expected = {
        "eb.delivered_total:4|g|#env:t,engine:_all",
        "eb.delivered_total:2|g|#env:t,engine:fast",
        "eb.failed_total:1|g|#env:t,engine:other",
        "eb.dropped_total:0|g|#env:t,engine:_all",
    }
    lines: set[str] = set()
    loop = asyncio.get_running_loop()
    try:
        exporter.start()
        async with asyncio.timeout(5):
            while not expected <= lines:
                data = await loop.sock_recv(receiver, 65535)
                lines.update(data.decode().splitlines())
        await exporter.close()
    finally:
        receiver.close()
    assert expected <= lines


def test_datadog_exporter_rejects_a_bad_address(bus: EventBusModule) -> None:
    with pytest.raises(ValueError, match="host:port"):
        DatadogExporter(bus, address="nowhere")
