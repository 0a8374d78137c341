"""Publishing: the outbox every publish goes through, sent in batches, with a result for
each publisher and a deadline (``publishTimeout``) on each.

``publish(event)`` encodes the event, checks ``maxMessageSize`` on the encoded envelope
(``EventEncodeError`` naming the size and the limit; nothing is sent), queues it and waits.
One task per engine sends what is queued in batches of up to ``batchSize`` through the
engine's ``send_batch``; while the broker is unreachable it retries with the backoff until
each publish's deadline, which then fails with ``EngineUnavailableError`` naming the cause.
At stop, every publish still queued fails with ``EngineUnavailableError``: none is left
waiting.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ...codec import encode
from ...errors import EventEncodeError
from ...event import Event
from .health import Backoff, ConnectionHealth
from .tasks import cancel


class Outgoing:
    """One publish on its way: the event, its encoded envelope, where it goes (what the
    engine's ``destination`` said), and its publisher's future."""

    __slots__ = ("data", "deadline", "destination", "event", "future")

    def __init__(
        self,
        event: Event,
        data: bytes,
        destination: Any,
        future: asyncio.Future[None],
        deadline: float,
    ) -> None:
        self.event = event
        self.data = data
        self.destination = destination
        self.future = future
        self.deadline = deadline

    @property
    def settled(self) -> bool:
        return self.future.done()

    def succeed(self) -> None:
        """The broker has it."""
        if not self.future.done():
            self.future.set_result(None)

    def fail(self, error: BaseException) -> None:
        """The broker refused this one message (only its publisher fails)."""
        if not self.future.done():
            self.future.set_exception(error)


SendBatch = Callable[[Sequence[Outgoing]], Awaitable[None]]


class Outbox:
    """The publishes of one engine, and the task that sends them.

    ``send_batch(batch)`` (the engine's) sends every item; it calls ``item.fail(error)`` for
    a message the broker refused, and may call ``item.succeed()``; whatever it did not
    settle succeeds when it returns. Raising means the link failed: the items not settled
    are sent again (in order, first) after a backoff, until their deadline.
    """

    def __init__(
        self,
        send_batch: SendBatch,
        destination: Callable[[Event], Any],
        health: ConnectionHealth,
        backoff: Backoff,
        *,
        timeout: float,
        batch_size: int,
        max_message_size: int,
        on_success: Callable[[], None] | None = None,
    ) -> None:
        self._send_batch = send_batch
        self._destination = destination
        self.health = health
        self.backoff = backoff
        self.timeout = timeout
        self.batch_size = batch_size
        self.max_message_size = max_message_size
        self._queue: deque[Outgoing] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_error: BaseException | None = None
        self._sending: list[Outgoing] = []
        self._on_success = on_success

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def waiting(self) -> int:
        """Publishes queued or being sent, not acknowledged yet."""
        return len(self._queue) + len(self._sending)

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="outbox")

    async def publish(self, event: Event) -> None:
        """Encode, check the size, queue, and wait for the broker's acknowledgement."""
        if not self.running:
            raise self.health.unavailable(f"is not running: cannot publish to {event.topic!r}")
        data = encode(event)
        if len(data) > self.max_message_size:
            raise EventEncodeError(
                f"the event for topic {event.topic!r} is {len(data)} bytes encoded, over "
                f"maxMessageSize ({self.max_message_size} bytes); nothing was sent"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        item = Outgoing(event, data, self._destination(event), future, loop.time() + self.timeout)
        self._queue.append(item)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        await future

    def fail_all(self, why: str) -> None:
        """Fail every publish queued or being sent with EngineUnavailableError (at stop)."""
        items = [*self._sending, *self._queue]
        self._sending = []
        self._queue.clear()
        for item in items:
            item.fail(self.health.unavailable(f"{why} before publishing to {item.event.topic!r}"))

    async def stop(self, within: float) -> None:
        """Send what is queued for at most ``within`` seconds, then fail the rest."""
        task, self._task = self._task, None
        if task is not None:
            wakeup = self._wakeup
            if not self._queue and not self._sending:
                await cancel(task)
            else:
                if wakeup is not None and not wakeup.done():
                    wakeup.set_result(None)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + max(within, 0.0)
                while (self._queue or self._sending) and loop.time() < deadline and not task.done():
                    await asyncio.wait([task], timeout=min(0.05, deadline - loop.time()))
                await cancel(task)
        self.fail_all("stopped")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        failures = 0
        try:
            while True:
                if not queue:
                    self._wakeup = loop.create_future()
                    await self._wakeup
                    self._wakeup = None
                    continue
                batch = self._next_batch(loop.time())
                if not batch:
                    continue
                self._sending = batch
                try:
                    async with asyncio.timeout_at(min(item.deadline for item in batch)):
                        await self._send_batch(batch)
                except Exception as exc:
                    self._sending = []
                    self.health.mark_down(exc)
                    self._last_error = exc
                    queue.extendleft(reversed([i for i in batch if not i.settled]))
                    failures += 1
                    until = min((i.deadline for i in queue), default=None)
                    await self.backoff.sleep(failures, until=until)
                    continue
                self._sending = []
                failures = 0
                self._last_error = None
                for item in batch:
                    if not item.future.done():
                        item.future.set_result(None)
                if self._on_success is not None:
                    self._on_success()
        finally:
            self._wakeup = None

    def _next_batch(self, now: float) -> list[Outgoing]:
        batch: list[Outgoing] = []
        queue = self._queue
        while queue and len(batch) < self.batch_size:
            item = queue.popleft()
            if item.future.done():  # its publisher was cancelled
                continue
            if item.deadline <= now:
                item.fail(
                    self.health.unavailable(
                        f"could not publish to {item.event.topic!r} within {self.timeout}s",
                        self._last_error,
                    )
                )
                continue
            batch.append(item)
        return batch
