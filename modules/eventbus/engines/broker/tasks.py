"""Ending tasks for sure, within a deadline.

Fact, seen on CPython 3.11 with redis-py: ``asyncio.wait_for`` inside a client can swallow a
cancellation that arrives in the same loop tick as the write it waits for completes, so one
``cancel()`` (or an ``asyncio.timeout`` around a client call) bounds nothing. Here a task is
cancelled again until it ends, and the wait for it is bounded in any case.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

logger = logging.getLogger("modules.eventbus.engines.broker")

T = TypeVar("T")

CANCEL_AGAIN_AFTER = 0.1  # seconds between two cancellations of a task that did not end


async def cancel(task: asyncio.Task[Any] | None, *, within: float = 5.0) -> bool:
    """Cancel ``task`` (again and again) until it ends, for at most ``within`` seconds;
    whether it ended. What it raised is taken, and logged when it was a bug."""
    if task is None:
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not task.done():
        left = deadline - loop.time()
        if left <= 0:
            logger.warning("task %s did not end when cancelled; left behind", task.get_name())
            return False
        task.cancel()
        await asyncio.wait([task], timeout=min(CANCEL_AGAIN_AFTER, left))
    if not task.cancelled() and isinstance(task.exception(), Exception):
        logger.error("task %s failed: %r", task.get_name(), task.exception())
    return True


async def bounded(work: Awaitable[T], timeout: float) -> T:
    """``await work`` for at most ``timeout`` seconds, for sure: TimeoutError after that
    (the work runs as a task that is cancelled until it ends, see :func:`cancel`)."""
    task: asyncio.Task[T] = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait([task], timeout=max(timeout, 0.0))
    except BaseException:  # we are cancelled ourselves: take the work down with us
        await cancel(task, within=CANCEL_AGAIN_AFTER * 5)
        raise
    if done:
        return task.result()
    await cancel(task, within=CANCEL_AGAIN_AFTER * 5)
    raise TimeoutError(f"not done within {timeout}s")


def spawn(work: Coroutine[Any, Any, Any], tasks: set[asyncio.Task[Any]], name: str) -> None:
    """Run ``work`` as a task kept in ``tasks`` until it ends (so it can be cancelled at stop
    and is not garbage-collected meanwhile)."""
    task = asyncio.get_running_loop().create_task(work, name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
