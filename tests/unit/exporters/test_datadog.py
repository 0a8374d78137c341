"""DatadogStatsdExporter against a real UDP socket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator

import pytest
from pydantic import ValidationError

from modules.eventbus import DeliveryStats
from modules.eventbus.exporters import DatadogExporterConfig, DatadogStatsdExporter
from tests.unit.exporters.conftest import Traffic, bus_config, running_bus

FIELDS = ("delivered", "dropped", "failed", "decode_errors", "reconnects")
# (metric name, tags) -> last value received
Gauges = dict[tuple[str, frozenset[str]], float]


class Agent:
    """A DogStatsD agent stand-in: a UDP socket that keeps every datagram it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.packets: list[bytes] = []
        self.gauges: Gauges = {}

    def _take(self, packet: bytes) -> None:
        self.packets.append(packet)
        for line in packet.decode().splitlines():
            name_value, kind, *rest = line.split("|")
            name, value = name_value.rsplit(":", 1)
            assert kind == "g", line
            tags = next((r[1:].split(",") for r in rest if r.startswith("#")), [])
            self.gauges[(name, frozenset(tags))] = float(value)

    async def receive_until(self, done: Callable[[], bool], timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while not done():
                self._take(await loop.sock_recv(self.sock, 65535))

    def drain(self) -> None:
        """Take what has already arrived (after a synchronous send)."""
        while True:
            try:
                self._take(self.sock.recv(65535))
            except BlockingIOError:
                return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def agent() -> Iterator[Agent]:
    receiver = Agent()
    yield receiver
    receiver.close()


def expected_gauges(
    prefix: str, per_engine: dict[str, DeliveryStats], tags: tuple[str, ...]
) -> Gauges:
    total = sum(per_engine.values(), DeliveryStats())
    return {
        (f"{prefix}{field}_total", frozenset({*tags, f"engine:{engine}"})): getattr(stats, field)
        for engine, stats in [("_all", total), *per_engine.items()]
        for field in FIELDS
    }


def matches(agent: Agent, expected: Gauges) -> bool:
    return all(agent.gauges.get(key) == value for key, value in expected.items())


async def test_gauges_per_engine_and_total_then_a_final_flush_on_close(
    agent: Agent, traffic: Traffic, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_bus(bus_config()) as bus:
        await traffic.subscribe(bus)
        await traffic.send(bus, "user.a", "user.b", "order.ok", "order.bad")
        config = DatadogExporterConfig(
            address=agent.address,
            namespace="eb.",
            flush_interval=60,  # one flush at start; the next one can only be close()'s
            max_packet_size=256,
            tags=("env:test", "service:bus"),
        )
        exporter = DatadogStatsdExporter(bus, config)
        task = asyncio.create_task(exporter.run())
        first = expected_gauges("eb.", bus.per_engine_stats(), config.tags)
        assert (
            first[("eb.delivered_total", frozenset({"env:test", "service:bus", "engine:_all"}))]
            == 4
        )
        await agent.receive_until(lambda: matches(agent, first))
        runtime_tags = frozenset({"env:test", "service:bus"})
        await agent.receive_until(lambda: ("eb.runtime.threads", runtime_tags) in agent.gauges)
        assert agent.gauges[("eb.runtime.threads", runtime_tags)] >= 1
        assert agent.gauges[("eb.runtime.asyncio_tasks", runtime_tags)] >= 2  # test + run()

        # Lines are packed into packets no bigger than max_packet_size.
        assert all(len(packet) <= 256 for packet in agent.packets)
        assert any(packet.count(b"\n") >= 1 for packet in agent.packets)

        await traffic.send(bus, "user.c", "order.ok")
        final = expected_gauges("eb.", bus.per_engine_stats(), config.tags)
        assert not matches(agent, final)
        await exporter.close()
        assert task.done()
        agent.drain()
        assert matches(agent, final)
        assert (
            agent.gauges[
                ("eb.delivered_total", frozenset({"env:test", "service:bus", "engine:fast"}))
            ]
            == 3
        )
        await exporter.close()  # idempotent
    assert "boom" in caplog.text


async def test_periodic_flushes_follow_traffic_without_per_engine_gauges(
    agent: Agent, traffic: Traffic, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_bus(bus_config()) as bus:
        await traffic.subscribe(bus)
        config = DatadogExporterConfig(
            address=agent.address,
            flush_interval="20ms",
            include_per_engine=False,
            include_runtime=False,
        )
        exporter = DatadogStatsdExporter(bus, config)
        exporter.start()
        total = ("modular.eventbus.delivered_total", frozenset({"engine:_all"}))
        await agent.receive_until(lambda: agent.gauges.get(total) == 0)
        await traffic.send(bus, "user.a", "order.ok", "order.bad")
        await agent.receive_until(lambda: agent.gauges.get(total) == 3)
        failed = ("modular.eventbus.failed_total", frozenset({"engine:_all"}))
        assert agent.gauges[failed] == 1
        await exporter.close()
    engines = {tag for _, tags in agent.gauges for tag in tags}
    assert engines == {"engine:_all"}
    assert not any("runtime" in name for name, _ in agent.gauges)
    assert "boom" in caplog.text


async def test_the_bus_runs_the_exporter_configured_in_its_section(
    agent: Agent, traffic: Traffic
) -> None:
    metrics = {"datadog": {"address": agent.address, "flushInterval": "1h", "tags": ["env:t"]}}
    async with running_bus(bus_config(metrics=metrics)) as bus:
        await traffic.subscribe(bus)
        key = ("modular.eventbus.delivered_total", frozenset({"env:t", "engine:fast"}))
        await agent.receive_until(lambda: key in agent.gauges)  # the flush at start
        assert agent.gauges[key] == 0
        await traffic.send(bus, "user.a", "user.b")
    # stop() sent the final values (the next periodic flush was an hour away)
    agent.drain()
    assert agent.gauges[key] == 2


def test_config_rejects_a_bad_address_and_tags() -> None:
    with pytest.raises(ValidationError, match="host:port"):
        DatadogExporterConfig(address="nowhere")
    with pytest.raises(ValidationError, match="host:port"):
        DatadogExporterConfig(address="127.0.0.1:99999")
    with pytest.raises(ValidationError, match="a tag must be"):
        DatadogExporterConfig(tags=("a,b",))


async def test_deprecated_keyword_form_still_sends(agent: Agent) -> None:
    from modules.eventbus.exporters import DatadogExporter

    async with running_bus(bus_config()) as bus:
        exporter = DatadogExporter(bus, address=agent.address, namespace="old")
        await exporter.close()
    agent.drain()
    assert agent.gauges[("old.delivered_total", frozenset({"engine:_all"}))] == 0


def test_the_bus_imports_no_exporter_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys, modules.eventbus, modules.eventbus.exporters;"
        "print(sorted(m for m in ('prometheus_client', 'datadog') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
