"""PrometheusCollector, and /metrics served by the module, scraped over real HTTP."""

from __future__ import annotations

import asyncio
import logging
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modular import Application, ConfigError, LifecycleError
from modules.eventbus import DeliveryStats, EventBusModule
from modules.eventbus.exporters import EventBusCollector, PrometheusCollector
from tests.unit.exporters.conftest import Traffic, bus_config, running_bus

FIELDS = ("delivered", "dropped", "failed", "decode_errors", "reconnects")
Samples = dict[tuple[str, str], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, sample.labels.get("engine", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "engine" in sample.labels
    }


async def scrape(address: tuple[str, int]) -> str:
    host, port = address

    def get() -> str:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
            assert response.status == 200
            return str(response.read().decode())

    return await asyncio.to_thread(get)


def expected_samples(namespace: str, per_engine: dict[str, DeliveryStats]) -> Samples:
    total = sum(per_engine.values(), DeliveryStats())
    expected: Samples = {}
    for field in FIELDS:
        for engine, stats in [("_all", total), *per_engine.items()]:
            expected[(f"{namespace}_{field}_total", engine)] = getattr(stats, field)
    return expected


async def test_metrics_served_over_http_match_per_engine_stats(
    traffic: Traffic, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="modules.eventbus")
    config = bus_config(metrics={"prometheus": {"port": 0, "namespace": "bus"}})
    async with running_bus(config) as bus:
        await traffic.subscribe(bus)
        await traffic.send(bus, "user.a", "user.b", "user.c", "order.ok", "order.bad")
        served = bus.metrics.prometheus_address
        assert served is not None and served[0] == "127.0.0.1" and served[1] > 0
        address = served

        text = await scrape(address)
        per_engine = bus.per_engine_stats()
        assert per_engine["fast"].delivered == 3 and per_engine["custom"].delivered == 2
        assert per_engine["custom"].failed == 1
        values = parse(text)
        for key, value in expected_samples("bus", per_engine).items():
            assert values[key] == value, key
        assert values[("bus_subscriptions", "_all")] == 2
        assert "process_cpu_seconds_total" in text or "python_info" in text

        # Counters are read at scrape time: a later scrape sees later traffic.
        await traffic.send(bus, "user.d")
        assert parse(await scrape(address))[("bus_delivered_total", "fast")] == 4
    assert "order.bad" in caplog.text and "boom" in caplog.text

    # Stopping the bus stops the server.
    assert bus.metrics.prometheus_address is None
    with pytest.raises(urllib.error.URLError):
        await scrape(address)


async def test_collector_registers_with_any_registry(traffic: Traffic) -> None:
    async with running_bus(bus_config()) as bus:
        await traffic.subscribe(bus)
        await traffic.send(bus, "user.a", "order.ok")
        registry = CollectorRegistry()
        registry.register(PrometheusCollector(bus))
        values = parse(generate_latest(registry).decode())
        assert values[("modular_eventbus_delivered_total", "fast")] == 1
        assert values[("modular_eventbus_delivered_total", "custom")] == 1
        assert values[("modular_eventbus_delivered_total", "_all")] == 2
        assert values[("modular_eventbus_dropped_total", "_all")] == 0
        # describe() names the families, so a second collector of the same names clashes
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            registry.register(PrometheusCollector(bus))
    assert EventBusCollector is PrometheusCollector


def test_collector_rejects_a_namespace_prometheus_cannot_name() -> None:
    with pytest.raises(ValueError, match="namespace must be"):
        PrometheusCollector(EventBusModule(), namespace="my-bus")


async def test_port_in_use_fails_start_with_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = Application(bus_config(metrics={"prometheus": {"port": port}}), envvar_prefix=None)
        bus = EventBusModule()
        app.register_module(bus)
        with pytest.raises(LifecycleError, match=f"cannot serve /metrics on 127.0.0.1:{port}"):
            await app.start()
        assert not bus.is_running


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"prometheus": {"prot": 9464}}, "unknown key 'prot'; did you mean 'port'"),
        ({"prometheus": {"port": 70000}}, "eventbus.metrics.prometheus.port"),
        ({"datadog": {"address": "nowhere"}}, "eventbus.metrics.datadog.address"),
        ({"datadog": {"flushInterval": "soon"}}, "eventbus.metrics.datadog.flush_interval"),
        ({"statsd": {}}, "unknown key 'statsd'"),
    ],
)
async def test_bad_metrics_config_fails_init_naming_the_key(
    metrics: dict[str, object], message: str
) -> None:
    app = Application(bus_config(metrics=metrics), envvar_prefix=None)
    app.register_module(EventBusModule())
    with pytest.raises(ConfigError, match=message):
        await app.init()


async def test_publish_to_handler_latency_histogram_per_engine(
    traffic: Traffic, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_bus(bus_config()) as bus:
        await traffic.subscribe(bus)
        await traffic.send(bus, "user.before")  # not recorded: no collector yet
        registry = CollectorRegistry()
        registry.register(PrometheusCollector(bus, namespace="bus"))
        await traffic.send(bus, "user.a", "user.b", "order.ok", "order.bad")
        families = {
            family.name: family
            for family in text_string_to_metric_families(generate_latest(registry).decode())
        }
        latency = families["bus_delivery_latency_seconds"]
        assert latency.type == "histogram"
        samples = [(s.name, s.labels, s.value) for s in latency.samples]
        counts = {
            labels["engine"]: value for name, labels, value in samples if name.endswith("_count")
        }
        assert counts == {"fast": 2, "custom": 2}
        for engine in ("fast", "custom"):
            buckets = [
                (float(labels["le"]), value)
                for name, labels, value in samples
                if name.endswith("_bucket") and labels["engine"] == engine
            ]
            assert buckets[-1] == (float("inf"), 2)
            assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
            (total,) = [
                value
                for name, labels, value in samples
                if name.endswith("_sum") and labels["engine"] == engine
            ]
            assert 0 <= total < 5  # seconds, from publish to the handler
    (failure,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "failed on topic order.bad" in failure and "RuntimeError: boom" in failure
