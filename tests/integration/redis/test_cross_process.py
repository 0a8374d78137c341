"""Two OS processes, each its own Application with the same settings, talk through Redis."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for

from .helpers import REDIS_URL

ROOT = Path(__file__).resolve().parents[3]
DEADLINE = 30.0  # seconds for a step: starting Python and the bus takes a while on a busy box


class Peer:
    """One ``peer.py`` process: lines to its stdin; its stdout lines, collected as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.ended = False
        self._seen = 0  # lines already matched by expect()
        self._reader = asyncio.get_running_loop().create_task(self._collect())

    async def _collect(self) -> None:
        assert self.process.stdout is not None
        while raw := await self.process.stdout.readline():
            self.lines.append(raw.decode().rstrip("\n"))
        self.ended = True

    async def expect(self, prefix: str) -> str:
        """The next line starting with ``prefix``, within the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while True:
            for i in range(self._seen, len(self.lines)):
                if self.lines[i].startswith(prefix):
                    self._seen = i + 1
                    return self.lines[i]
            if self.ended:
                pytest.fail(f"peer exited before {prefix!r}; stderr:\n{await self._stderr()}")
            if loop.time() > deadline:
                pytest.fail(f"peer said no {prefix!r} within {DEADLINE}s; said {self.lines}")
            await asyncio.sleep(0.01)

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    def received(self) -> list[str]:
        """Event ids of the GOT lines so far."""
        return [line.split()[1] for line in self.lines if line.startswith("GOT ")]

    def sent(self) -> list[str]:
        return [line.split()[1] for line in self.lines if line.startswith("SENT ")]

    async def close(self) -> None:
        await asyncio.gather(self._reader, return_exceptions=True)

    async def _stderr(self) -> str:
        assert self.process.stderr is not None
        return (await self.process.stderr.read()).decode(errors="replace")[-3000:]


@asynccontextmanager
async def peer(config: dict[str, Any], *arguments: str) -> AsyncIterator[Peer]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.redis.peer",
        json.dumps(config),
        *arguments,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Peer(process)
    try:
        yield running
    finally:
        if process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                async with asyncio.timeout(DEADLINE):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        await running.close()


@pytest.mark.parametrize("mode", ["pubsub", "streams"])
async def test_a_publisher_and_a_subscriber_in_two_processes(prefix: str, mode: str) -> None:
    config = {"url": REDIS_URL, "channelPrefix": prefix, "mode": mode}
    async with (
        peer(config, "sub", "orders.*") as subscriber,
        peer(config, "pub", "orders.created", "20") as publisher,
    ):
        await subscriber.expect("READY")
        await publisher.expect("READY")
        await publisher.send("GO")
        await publisher.expect("DONE")
        sent = publisher.sent()
        assert len(sent) == 20
        await wait_for(lambda: len(subscriber.received()) >= 20, DEADLINE, "20 events")
        assert subscriber.received() == sent
        payloads = [json.loads(line.split(" ", 2)[2]) for line in subscriber.lines if "GOT" in line]
        assert payloads == [{"n": i} for i in range(20)]
        await subscriber.send("STOP")


async def test_two_processes_of_one_group_split_the_events(prefix: str) -> None:
    config = {
        "url": REDIS_URL,
        "channelPrefix": prefix,
        "mode": "streams",
        "groupName": f"{prefix}workers",
    }
    async with (
        peer(config, "sub", "jobs.run") as one,
        peer(config, "sub", "jobs.run") as two,
        peer(config, "pub", "jobs.run", "100") as publisher,
    ):
        await one.expect("READY")
        await two.expect("READY")
        await publisher.expect("READY")
        await publisher.send("GO")
        await publisher.expect("DONE")
        sent = publisher.sent()
        assert len(sent) == 100
        await wait_for(
            lambda: len(one.received()) + len(two.received()) >= 100, DEADLINE, "100 events"
        )
        await one.send("STOP")
        await two.send("STOP")
        handled = one.received() + two.received()
        assert sorted(handled) == sorted(sent), "an event was lost or handled twice"
        assert one.received() and two.received(), "one process handled everything"
