"""The example programs run to completion and show what they promise."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.custom_engine.sampling import build_sampling_engine
from modular import Application, ConfigError
from modules.eventbus import EventBusModule, register_engine, unregister_engine

ROOT = Path(__file__).resolve().parents[2]


def run_example(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("flags", [[], ["--redis"]], ids=["memory", "redis"])
def test_multi_engine_example_routes_and_counts(flags: list[str]) -> None:
    out = run_example("examples.multi_engine_eventbus", *flags)
    assert "user.registered      -> memory-fast" in out
    assert "analytics.pageview   -> memory-reliable" in out
    assert "[memory-fast]     user user123: register" in out
    assert "[memory-reliable] page view /dashboard (session sess123)" in out
    assert "stats: delivered=5 dropped=0 handler failures=0" in out
    assert "memory-fast: delivered=3 dropped=0" in out
    assert "memory-reliable: delivered=2 dropped=0" in out
    engine = "RedisEngine" if flags else "MemoryEngine"
    assert f"memory-reliable ({engine})" in out


def test_container_tour_layers_config_and_tenants() -> None:
    out = run_example(
        "examples.container_tour",
        env={"MODULAR_ENV": "production", "MODULAR_GREETER__PUNCTUATION": "!!"},
    )
    assert "modules in order: ['clock', 'greeter']" in out
    assert "Good day, world!!" in out  # production section + environment variable
    assert "acme:   [" in out and "Howdy, world!!" in out  # settings-table overlay
    assert "globex: [" in out and "Good day, world?!" in out  # tenants/globex.toml overlay


def test_custom_engine_example_samples_what_its_settings_say() -> None:
    out = run_example("examples.custom_engine")
    assert "engine telemetry: SamplingEngine, sampleRate 0.25" in out
    assert "telemetry.cpu -> telemetry" in out and "orders.created -> main" in out
    readings = [line for line in out.splitlines() if "telemetry handler got reading" in line]
    assert sorted(readings) == [
        "  telemetry handler got reading #4",
        "  telemetry handler got reading #8",
    ]
    assert "  orders handler got order #1" in out and "  orders handler got order #2" in out
    assert "telemetry: 8 published, 6 sampled out, 2 delivered" in out
    assert "main: 2 delivered" in out
    assert "fails init(): eventbus.engines.telemetry.config.sampelRate: unknown key" in out


@pytest.fixture
def sampling_engine_type() -> Iterator[None]:
    register_engine("sampling", build_sampling_engine)
    try:
        yield
    finally:
        unregister_engine("sampling")


@pytest.mark.usefixtures("sampling_engine_type")
async def test_a_typo_in_the_custom_engines_own_key_fails_init_naming_it() -> None:
    engine = {"name": "telemetry", "type": "sampling", "config": {"sampelRate": 0.5}}
    app = Application({"eventbus": {"engines": [engine]}})
    app.register_module(EventBusModule())
    with pytest.raises(ConfigError) as caught:
        await app.init()
    message = str(caught.value)
    assert "eventbus.engines.telemetry.config.sampelRate: unknown key 'sampelRate'" in message
    assert "did you mean 'sampleRate'?" in message


@pytest.mark.usefixtures("sampling_engine_type")
async def test_a_bad_value_of_the_custom_engines_own_key_fails_init() -> None:
    engine = {"name": "telemetry", "type": "sampling", "config": {"sampleRate": 1.5}}
    app = Application({"eventbus": {"engines": [engine]}})
    app.register_module(EventBusModule())
    with pytest.raises(ConfigError, match=r"(?i)telemetry\.config\.sample_?rate: .*1\.5"):
        await app.init()
