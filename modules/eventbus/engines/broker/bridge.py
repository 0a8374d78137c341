"""A thread bridge for blocking clients (kafka-python, boto3).

:class:`ThreadBridge`: one dedicated thread per client, running the calls made to it in
order (a client that is not thread-safe, such as ``KafkaConsumer``, is only ever used from
its thread); each call's result comes back to the event loop through a future, resolved
with ``call_soon_threadsafe``. :class:`HandOff`: a bounded queue from such a thread to the
loop: ``put`` blocks the thread while the queue is full, so a slow loop slows the client
down (backpressure reaches the broker) instead of piling up messages.

A call stuck in the client never holds up the loop: ``close(timeout)`` returns within its
timeout, fails the calls not started with ``EngineUnavailableError``, and leaves a stuck
thread behind (a daemon thread: it does not keep the process alive).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import inspect
import logging
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, overload

from ...errors import EngineUnavailableError

logger = logging.getLogger("modules.eventbus.engines.broker")

T = TypeVar("T")

_STOP = object()


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class ThreadBridge:
    """One thread of its own for one blocking client. Create and use it on the loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._pending: set[asyncio.Future[Any]] = set()
        self._ended: asyncio.Event | None = None  # set (from the thread) when it ends

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._closed

    def start(self) -> None:
        if self.running:
            return
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._jobs = queue.SimpleQueue()
        self._ended = asyncio.Event()
        self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
        self._thread.start()

    def in_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """Run ``fn(*args, **kwargs)`` on the thread; its result (or exception) in a future."""
        if not self.running or self._loop is None:
            raise EngineUnavailableError(f"{self.name}: the client's thread is not running")
        future: asyncio.Future[T] = self._loop.create_future()
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        self._jobs.put((future, functools.partial(fn, *args, **kwargs)))
        return future

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``await`` the result of ``fn(*args, **kwargs)`` run on the thread. Cancelling the
        caller does not interrupt the call (blocking calls cannot be); its result is dropped."""
        return await self.submit(fn, *args, **kwargs)

    @overload
    def call_in_loop(
        self, fn: Callable[..., Awaitable[T]], /, *args: Any, timeout: float | None = None
    ) -> T: ...

    @overload
    def call_in_loop(
        self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None
    ) -> T: ...

    def call_in_loop(
        self, fn: Callable[..., Any], /, *args: Any, timeout: float | None = None
    ) -> Any:
        """From the thread: run ``fn(*args)`` on the event loop and wait for its result (a
        client callback such as a rebalance listener that must act before the client goes on).
        ``fn`` may return an awaitable; it is awaited on the loop."""
        if self._loop is None:
            raise EngineUnavailableError(f"{self.name}: no event loop")

        async def run() -> Any:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    async def close(self, timeout: float) -> bool:
        """No more calls; wait up to ``timeout`` for the thread to finish the current one.
        Calls not started fail with EngineUnavailableError. Whether the thread ended."""
        if self._thread is None:
            return True
        self._closed = True
        thread, self._thread = self._thread, None
        self._jobs.put(_STOP)
        ended = self._ended
        if ended is not None and thread.is_alive():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(timeout, 0.0)):
                    await ended.wait()
        for future in list(self._pending):
            if not future.done():
                future.set_exception(
                    EngineUnavailableError(f"{self.name}: closed before the call finished")
                )
        self._pending.clear()
        if thread.is_alive():
            logger.warning("%s: the client's thread is still busy after %.1fs", self.name, timeout)
            return False
        return True

    def _work(self) -> None:
        loop = self._loop
        ended = self._ended
        assert loop is not None and ended is not None
        try:
            self._run_jobs(loop, self._jobs)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(ended.set)

    def _run_jobs(self, loop: asyncio.AbstractEventLoop, jobs: queue.SimpleQueue[Any]) -> None:
        while True:
            job = jobs.get()
            if job is _STOP:
                return
            future, fn = job
            if future.done():  # cancelled before it started
                continue
            try:
                result, error = fn(), None
            except BaseException as exc:  # handed to the awaiting caller, whatever it is
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(_resolve, future, result, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                return


class HandOff(Generic[T]):
    """A bounded queue from a client's thread to the event loop.

    Thread side: ``put`` (blocks while full; False once closed). Loop side: ``get`` /
    ``get_batch``. Create it on the loop.
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._items: collections.deque[T] = collections.deque()
        self._room = threading.Condition()
        self._loop = asyncio.get_running_loop()
        self._arrival = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T, timeout: float | None = None) -> bool:
        """From the thread: queue ``item``, waiting while the queue is full (at most
        ``timeout`` seconds); whether it was queued (False: closed, or timed out)."""
        with self._room:
            if not self._room.wait_for(
                lambda: self._closed or len(self._items) < self.capacity, timeout
            ):
                return False
            if self._closed:
                return False
            self._items.append(item)
        try:
            self._loop.call_soon_threadsafe(self._arrival.set)
        except RuntimeError:  # the loop is closed
            return False
        return True

    async def get(self) -> T:
        """On the loop: the oldest item, waiting for one. EngineUnavailableError once closed
        and empty."""
        batch = await self.get_batch(1)
        return batch[0]

    async def get_batch(self, limit: int) -> list[T]:
        """On the loop: up to ``limit`` items (at least one), oldest first."""
        while True:
            with self._room:
                if self._items:
                    count = min(limit, len(self._items))
                    batch = [self._items.popleft() for _ in range(count)]
                    self._room.notify_all()
                    return batch
                if self._closed:
                    raise EngineUnavailableError("the hand-off queue is closed")
                self._arrival.clear()
            await self._arrival.wait()

    def close(self) -> None:
        """Wake everyone: puts fail, gets end once the queue is empty."""
        with self._room:
            self._closed = True
            self._room.notify_all()
        self._arrival.set()
