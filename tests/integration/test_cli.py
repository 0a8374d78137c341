"""The ``eventbus`` console script, run as a user runs it: a subprocess per command, settings
files written for the test, Redis for what crosses processes."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from modular import Application
from modules.eventbus import DeliveryStats, EventBusModule
from tests.helpers import wait_for

SCRIPT = Path(sys.executable).with_name("eventbus")
TIMEOUT = 60

MEMORY = """
[default.eventbus]
engines = [
  { name = "memory-fast", type = "memory" },
  { name = "memory-reliable", type = "memory", config = { deliveryMode = "block" } },
]
routing = [
  { topics = ["user.*", "auth.*"], engine = "memory-fast" },
  { topics = ["analytics.*"], engine = "memory-reliable" },
]
"""


def run(*args: str, cwd: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.exists(), f"{SCRIPT} is missing: install the project (make, or pip install -e .)"
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def ok(*args: str, cwd: Path) -> str:
    result = run(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command prints on stderr."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def settings(tmp_path: Path) -> Path:
    path = tmp_path / "memory.toml"
    path.write_text(MEMORY)
    return path


def two_engines(redis_engine: str, redis_config: str) -> str:
    """Settings of a memory engine ``local`` and a Redis engine taking ``remote.*``."""
    return f"""
[[default.eventbus.engines]]
name = "local"
type = "memory"

[[default.eventbus.engines]]
name = "{redis_engine}"
type = "redis"
config = {redis_config}

[[default.eventbus.routing]]
topics = ["remote.*"]
engine = "{redis_engine}"
"""


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A 127.0.0.1 port that refuses connections: bound (so nobody else takes it), not
    listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def broken(tmp_path: Path, closed_port: int) -> Path:
    path = tmp_path / "broken.toml"
    path.write_text(
        two_engines(
            "broken",
            f'{{ url = "redis://127.0.0.1:{closed_port}", publishTimeout = "500ms", '
            'connectTimeout = "500ms" }',
        )
    )
    return path


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A memory engine and a Redis engine (pub/sub, on a channel prefix of this test)."""
    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2)
    try:
        client.ping()  # a missing Redis fails the test, never skips it
    finally:
        client.close()
    prefix = f"test-cli-{uuid.uuid4().hex[:12]}:"
    path = tmp_path / "shared.toml"
    path.write_text(two_engines("shared", f'{{ channelPrefix = "{prefix}" }}'))
    return path


def test_help_lists_every_command(tmp_path: Path) -> None:
    out = ok("--help", cwd=tmp_path)
    for command in ("demo", "route", "publish", "tail", "stats", "health", "bench"):
        assert command in out


def test_route_names_the_rule_that_matched_or_the_fallback(settings: Path) -> None:
    out = ok("route", "auth.login", "--settings", str(settings), cwd=settings.parent)
    assert out.splitlines() == [
        "auth.login -> memory-fast (memory)",
        "  because routing[0] matches it with 'auth.*' (first matching rule wins)",
    ]
    out = ok("route", "billing.paid", "--settings", str(settings), cwd=settings.parent)
    assert out.splitlines()[0] == "billing.paid -> memory-fast (memory)"
    assert "no routing rule matches it: the first engine, 'memory-fast', takes it" in out


def test_route_reads_settings_toml_of_the_working_directory(settings: Path) -> None:
    settings.rename(settings.with_name("settings.toml"))
    out = ok("route", "analytics.view", cwd=settings.parent)
    assert out.startswith("analytics.view -> memory-reliable (memory)\n")
    assert "routing[1] matches it with 'analytics.*'" in out


def test_publish_reports_the_event_and_its_engine(settings: Path) -> None:
    out = ok(
        "publish",
        "analytics.view",
        '{"page": "/"}',
        "--tenant",
        "acme",
        "--metadata",
        "k=v",
        "--settings",
        str(settings),
        cwd=settings.parent,
    )
    assert out.startswith("published ")
    assert out.rstrip().endswith(
        " to analytics.view on engine memory-reliable (in-process: only subscribers of this"
        " command could see it)"
    )


def read_line(stream: object, timeout: float) -> str:
    assert hasattr(stream, "readline") and hasattr(stream, "fileno")
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no line within {timeout}s"
    return str(stream.readline())


def test_tail_prints_events_published_by_other_processes(shared: Path) -> None:
    where = ["--settings", str(shared)]
    tail = subprocess.Popen(
        [str(SCRIPT), "tail", "*", "--all-tenants", "--json", "--count", "3", *where],
        cwd=shared.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = read_line(tail.stderr, TIMEOUT)
        assert ready.startswith("eventbus: tailing '*' on shared, local;"), ready
        assert "local: this process only" in ready
        published = ok("publish", "remote.a", '{"n": 1}', *where, cwd=shared.parent)
        assert published.rstrip().endswith(" to remote.a on engine shared")
        ok("publish", "remote.b", "[1, 2]", "--tenant", "acme", *where, cwd=shared.parent)
        ok("publish", "remote.c", '"text"', "--partition-key", "k7", *where, cwd=shared.parent)
        out, err = tail.communicate(timeout=TIMEOUT)
    finally:
        tail.kill()
        tail.wait()
    assert tail.returncode == 0, err
    assert err == ""
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["topic"], e["payload"], e["tenant"]) for e in events] == [
        ("remote.a", {"n": 1}, None),
        ("remote.b", [1, 2], "acme"),
        ("remote.c", "text", None),
    ]
    assert events[2]["partition_key"] == "k7"


def test_tail_gives_up_after_its_timeout(settings: Path) -> None:
    args = ["tail", "user.*", "--count", "1", "--timeout", "0.3", "--settings", str(settings)]
    result = run(*args, cwd=settings.parent)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[-1] == "eventbus: error: timed out after 0.3s with 0 of 1 events"


async def test_stats_reads_a_running_application(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free port for the settings file
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "served.toml"
    path.write_text(MEMORY + f"\n[default.eventbus.metrics.prometheus]\nport = {port}\n")
    app = Application(settings_files=[path], envvar_prefix=None)
    bus = EventBusModule()
    app.register_module(bus)
    async with app:
        handled: list[object] = []
        await bus.subscribe("*", handled.append)
        for topic in ("user.a", "user.b", "analytics.c"):
            await bus.publish(topic, {})
        await wait_for(lambda: len(handled) == 3, what="three deliveries")
        expected = bus.per_engine_stats()
        assert bus.metrics.prometheus_address == ("127.0.0.1", port)

        table = await _cli("stats", "--settings", str(path), cwd=tmp_path)
        url = f"http://127.0.0.1:{port}/metrics"
        report = json.loads(await _cli("stats", "--url", url, "--json", cwd=tmp_path))
    lines = table.splitlines()
    assert lines[0].split() == ["engine", *FIELDS]
    assert lines[1].split() == ["_all", "3", "0", "0", "0", "0"]
    assert lines[2].split() == ["memory-fast", "2", "0", "0", "0", "0"]
    assert lines[3].split() == ["memory-reliable", "1", "0", "0", "0", "0"]
    total = sum(expected.values(), DeliveryStats())
    for engine, stats in [("_all", total), *expected.items()]:
        assert report[engine] == {f: float(getattr(stats, f)) for f in FIELDS}


FIELDS = ["delivered", "dropped", "failed", "decode_errors", "reconnects"]


async def _cli(*args: str, cwd: Path) -> str:
    """The command's stdout, run without blocking the event loop of the bus it reads."""
    import asyncio

    process = await asyncio.create_subprocess_exec(
        str(SCRIPT), *args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 0, err.decode()
    return out.decode()


def test_health_of_memory_engines_is_up(settings: Path) -> None:
    out = ok("health", "--settings", str(settings), cwd=settings.parent)
    rows = [line.split() for line in out.splitlines()]
    assert rows == [
        ["engine", "type", "state", "error"],
        ["memory-fast", "memory", "up", "-"],
        ["memory-reliable", "memory", "up", "-"],
    ]


def test_health_reports_a_broker_that_is_down(broken: Path, closed_port: int) -> None:
    result = run("health", "--json", "--settings", str(broken), cwd=broken.parent)
    assert error_line(result) == "eventbus: 1 of 2 engines not up: broken"
    report = json.loads(result.stdout)
    assert report["local"] == {"type": "memory", "state": "up", "error": None}
    assert report["broken"]["state"] == "down"
    assert f"127.0.0.1:{closed_port}" in report["broken"]["error"]


def test_bench_measures_every_engine_with_a_progress_bar(settings: Path) -> None:
    result = run(
        "bench", "--events", "400", "--progress", "--settings", str(settings), cwd=settings.parent
    )
    assert result.returncode == 0, result.stderr
    header, *rows = (line.split() for line in result.stdout.splitlines())
    assert header[:8] == [
        *("engine", "type", "events", "published/s", "handled/s", "handled", "dropped", "lost")
    ]
    assert [row[:3] for row in rows] == [
        ["memory-fast", "memory", "400"],
        ["memory-reliable", "memory", "400"],
    ]
    for row in rows:
        handled, dropped, lost = (int(v.replace(",", "")) for v in row[5:8])
        assert handled + dropped == 400 and lost == 0
    assert "100% 400/400" in result.stderr
    assert "memory-fast     [" in result.stderr  # the labels are padded to one width


def test_bench_one_engine_without_progress_bar(settings: Path) -> None:
    args = ["--engine", "memory-reliable", "--events", "200", "--no-progress"]
    out = ok("bench", *args, "--settings", str(settings), cwd=settings.parent)
    (row,) = (line.split() for line in out.splitlines()[1:])
    assert row[:3] == ["memory-reliable", "memory", "200"]
    assert row[5] == "200"  # handled: block mode drops nothing


def test_demo_runs_the_example(tmp_path: Path) -> None:
    out = ok("demo", cwd=tmp_path)
    assert "user.registered      -> memory-fast" in out
    assert "stats: delivered=5 dropped=0 handler failures=0" in out


BAD_INPUT = {
    "unknown-engine": (
        "bench --engine nope",
        "eventbus: error: no engine named 'nope'; engines: memory-fast, memory-reliable",
    ),
    "invalid-json": (
        "publish user.x {bad",
        "eventbus: error: invalid JSON payload '{bad': Expecting",
    ),
    "invalid-topic": ("publish user:x {}", "eventbus: error: invalid topic 'user:x'"),
    "invalid-tenant": (
        "publish user.x {} --tenant a:b",
        "eventbus: error: invalid tenant id 'a:b'",
    ),
    "bad-metadata": (
        "publish user.x {} --metadata novalue",
        "eventbus: error: --metadata takes KEY=VALUE",
    ),
    "no-metrics": ("stats", "eventbus: error: stats reads a running application's /metrics"),
    "bad-count": (
        "bench --events 0",
        "eventbus bench: error: argument --events: expected a positive",
    ),
    "unknown-command": ("launch", "eventbus: error: argument COMMAND: invalid choice: 'launch'"),
}


@pytest.mark.parametrize(("command", "message"), BAD_INPUT.values(), ids=BAD_INPUT)
def test_bad_input_is_one_clear_line(settings: Path, command: str, message: str) -> None:
    line = error_line(run(*command.split(), "--settings", str(settings), cwd=settings.parent))
    assert line.startswith(message), line


def test_a_missing_settings_file_is_one_clear_line(tmp_path: Path) -> None:
    line = error_line(run("route", "user.x", "--settings", "missing.toml", cwd=tmp_path))
    assert line == "eventbus: error: settings file not found: missing.toml"


def test_a_settings_file_that_is_not_toml_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[default.eventbus]\nengines = [ { name = "x",\n type = "memory" } ]\n')
    line = error_line(run("route", "a.b", "--settings", str(path), cwd=tmp_path))
    assert line.startswith(f"eventbus: error: settings file '{path}', line 2"), line
    assert "invalid TOML" in line


def test_unknown_engine_type_in_settings_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text('[default.eventbus]\nengines = [ { name = "x", type = "memroy" } ]\n')
    line = error_line(run("route", "a.b", "--settings", str(path), cwd=tmp_path))
    assert line.startswith(
        "eventbus: error: eventbus.engines[0].type: unknown engine type 'memroy'"
    )


@pytest.mark.parametrize(
    "args",
    [["publish", "remote.a", "{}"], ["tail", "remote.*"], ["bench", "--engine", "broken"]],
    ids=["publish", "tail", "bench"],
)
def test_an_unreachable_broker_is_one_clear_line(
    broken: Path, closed_port: int, args: list[str]
) -> None:
    line = error_line(run(*args, "--settings", str(broken), cwd=broken.parent))
    assert line.startswith("eventbus: error: ") and "engine 'broken'" in line, line
    assert f"127.0.0.1:{closed_port}" in line  # the cause, with the address it could not reach


def test_stats_of_an_unreachable_application_is_one_clear_line(
    tmp_path: Path, closed_port: int
) -> None:
    url = f"http://127.0.0.1:{closed_port}/metrics"
    line = error_line(run("stats", "--url", url, cwd=tmp_path))
    assert line.startswith(f"eventbus: error: cannot read {url}: "), line
    assert "refused" in line


def test_the_module_runs_as_python_dash_m(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modules.eventbus.cli", "route", "a.b"],
        cwd=tmp_path,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("a.b -> default (memory)")
