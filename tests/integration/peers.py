"""Peer processes of the cross-process tests: ``tests/integration/peer.py``, a bus of its own
driven by lines on its stdin, its stdout lines collected as they come."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


class Peer:
    """One peer process. ``deadline`` bounds every wait on it, in seconds."""

    def __init__(self, process: asyncio.subprocess.Process, deadline: float) -> None:
        self.process = process
        self.deadline = deadline
        self.lines: list[str] = []
        self.ended = False
        self._seen = 0  # lines already matched by expect_next()
        self._reader = asyncio.get_running_loop().create_task(self._collect())

    async def _collect(self) -> None:
        assert self.process.stdout is not None
        while raw := await self.process.stdout.readline():
            self.lines.append(raw.decode().rstrip("\n"))
        self.ended = True

    async def expect(self, line: str) -> None:
        """Wait until the peer has said ``line``."""
        await self._until(lambda: line in self.lines, repr(line))

    async def expect_next(self, prefix: str) -> str:
        """The next line (after those this returned before) that starts with ``prefix``."""
        found: list[str] = []

        def next_line() -> bool:
            for i in range(self._seen, len(self.lines)):
                if self.lines[i].startswith(prefix):
                    self._seen = i + 1
                    found.append(self.lines[i])
                    return True
            return False

        await self._until(next_line, f"a line starting {prefix!r}")
        return found[0]

    async def _until(self, said: Any, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline
        while not said():
            if self.ended:
                pytest.fail(f"peer exited before {what}; stderr:\n{await self.stderr()}")
            if loop.time() > deadline:
                pytest.fail(f"peer said no {what} within {self.deadline}s; said {self.lines[-5:]}")
            await asyncio.sleep(0.01)

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    def words(self, prefix: str) -> list[str]:
        """The second word of every line starting with ``prefix`` (an event id, say)."""
        return [line.split()[1] for line in self.lines if line.startswith(prefix)]

    def received(self) -> list[str]:
        """Event ids of the GOT lines so far."""
        return self.words("GOT ")

    def numbers(self) -> list[int]:
        """The ``n`` of every event received so far (``GOT <id> <payload>``)."""
        return [
            json.loads(line.split(" ", 2)[2])["n"] for line in self.lines if line.startswith("GOT ")
        ]

    def sent(self) -> list[str]:
        """Event ids of the SENT lines so far."""
        return self.words("SENT ")

    def kill(self) -> None:
        self.process.kill()

    async def stderr(self) -> str:
        assert self.process.stderr is not None
        return (await self.process.stderr.read()).decode(errors="replace")[-3000:]

    async def end(self, command: str | None = None) -> None:
        """Ask the peer to end (``command`` on its stdin, else its stdin closed), kill it if
        it does not within the deadline, and collect what it said."""
        if self.process.returncode is None:
            try:
                if command is not None:
                    await self.send(command)
                else:
                    assert self.process.stdin is not None
                    self.process.stdin.close()
                async with asyncio.timeout(self.deadline):
                    await self.process.wait()
            except (TimeoutError, ConnectionError):
                self.process.kill()
                await self.process.wait()
        await asyncio.gather(self._reader, return_exceptions=True)


async def spawn(settings: dict[str, Any], *arguments: str, deadline: float) -> Peer:
    """``python -m tests.integration.peer <settings as JSON> <arguments...>`` (a bus with the
    application settings ``settings``) from the repository root."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.peer",
        json.dumps(settings),
        *arguments,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Peer(process, deadline)


@asynccontextmanager
async def running(
    settings: dict[str, Any], *arguments: str, deadline: float
) -> AsyncIterator[Peer]:
    """A peer (see ``spawn``) that is ended on exit."""
    peer = await spawn(settings, *arguments, deadline=deadline)
    try:
        yield peer
    finally:
        await peer.end()
