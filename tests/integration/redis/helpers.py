"""Helpers of the Redis engine tests: a bus on Redis, collecting handlers, a throwaway server."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from modular import Application
from modules.eventbus import Event, EventBusModule
from modules.eventbus.engines.redis import RedisEngine

REDIS_URL = "redis://127.0.0.1:6379/0"
ENGINE = "r"


def bus_settings(engine: dict[str, Any], **eventbus: Any) -> dict[str, Any]:
    """Application settings of a bus with one redis engine named ``r``."""
    return {
        "eventbus": {
            "engines": [{"name": ENGINE, "type": "redis", "config": engine}],
            **eventbus,
        }
    }


@asynccontextmanager
async def running_bus(engine: dict[str, Any], **eventbus: Any) -> AsyncIterator[EventBusModule]:
    """A started application holding a bus with one redis engine; stopped on exit."""
    app = Application(bus_settings(engine, **eventbus), envvar_prefix=None)
    app.register_module(EventBusModule())
    async with app:
        bus = app.get_service("eventbus.provider", EventBusModule)
        yield bus


def engine_of(bus: EventBusModule) -> RedisEngine:
    engine = bus.engine(ENGINE)
    assert isinstance(engine, RedisEngine)
    return engine


async def check_redis(url: str = REDIS_URL) -> aioredis.Redis:
    """A client of the Redis the tests use; the test fails (not skips) when it does not answer."""
    client = aioredis.Redis.from_url(url)
    try:
        async with asyncio.timeout(5):
            await client.ping()
    except Exception as exc:
        await client.aclose()
        pytest.fail(
            f"Redis at {url} does not answer ({type(exc).__name__}: {exc}); "
            "start it with `make services`",
            pytrace=False,
        )
    return client


async def delete_keys(client: aioredis.Redis, glob: str) -> None:
    keys = [key async for key in client.scan_iter(match=glob, count=1000)]
    if keys:
        await client.delete(*keys)


async def raw_messages(
    raw: aioredis.client.PubSub, count: int, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """The next ``count`` messages a plain redis-py subscriber receives, within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    messages: list[dict[str, Any]] = []
    while len(messages) < count:
        left = deadline - loop.time()
        assert left > 0, f"the raw subscriber received only {messages}"
        message = await raw.get_message(ignore_subscribe_messages=True, timeout=min(left, 0.5))
        if message is not None:
            messages.append(message)
    return messages


async def close_pubsub(raw: aioredis.client.PubSub) -> None:
    await raw.aclose()  # type: ignore[no-untyped-call]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """A redis-server of a test's own, on a free port, that the test kills and restarts.

    ``persistent`` servers write an append-only file to ``directory`` (fsync on every write),
    so that streams and groups survive a kill.
    """

    def __init__(self, directory: Path, *, persistent: bool) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (run `make services`)", pytrace=False)
        self.binary = binary
        self.directory = directory
        self.persistent = persistent
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.url)

    async def start(self, *options: str) -> None:
        """Start (again) on the same port; ``options`` are more redis-server arguments, e.g.
        ``"--user", "default", "on", "nopass", "~*", "+@all", "-xgroup"``."""
        persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *(persistence if self.persistent else ["--appendonly", "no"]),
            "--dir",
            str(self.directory),
            *options,
        ]
        self.process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = aioredis.Redis.from_url(self.url)
        try:
            deadline = asyncio.get_running_loop().time() + 10.0
            while True:
                try:
                    await client.ping()
                    return
                except (OSError, aioredis.ConnectionError):
                    if self._exited() is not None:
                        pytest.fail(f"redis-server on port {self.port} exited", pytrace=False)
                    if asyncio.get_running_loop().time() > deadline:
                        pytest.fail(f"redis-server on port {self.port} did not start")
                    await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    def _exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and connects are accepted, but nothing answers."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after ``freeze``."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)


@asynccontextmanager
async def throwaway_server(directory: Path, *, persistent: bool) -> AsyncIterator[RedisServer]:
    server = RedisServer(directory, persistent=persistent)
    await server.start()
    try:
        yield server
    finally:
        server.thaw()
        server.kill()


def counted(events: list[Event], key: Callable[[Event], Any]) -> dict[Any, int]:
    counts: dict[Any, int] = {}
    for event in events:
        counts[key(event)] = counts.get(key(event), 0) + 1
    return counts


async def pending_count(client: aioredis.Redis, key: str, group: str) -> int:
    """How many entries of ``key`` the consumer group ``group`` holds unacknowledged."""
    summary = await client.xpending(key, group)
    return int(summary["pending"])
