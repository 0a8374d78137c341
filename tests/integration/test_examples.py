"""The example programs run to completion and show what they promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
