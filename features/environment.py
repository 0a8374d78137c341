"""behave hooks shared by every feature file.

Each scenario gets a fresh asyncio event loop on ``context.loop`` (steps run coroutines with
``context.loop.run_until_complete(...)``) and a ``context.cleanups`` list. Cleanups run in
reverse order after the scenario, even when it failed; a cleanup may return an awaitable,
which is run on the scenario's loop. Then the loop's leftover tasks are cancelled and the
loop is closed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("features")

Cleanup = Callable[[], Any]


def before_all(context: Any) -> None:
    """Replaces behave's default, which calls ``logging.basicConfig()``: that console handler
    prints every log record of passing scenarios too, beside behave's own capture. Without it,
    records reach only the capture, which is shown with a failing step or hook."""
    if not context.config.capture_log:  # behave --no-capture-log: show records as they come
        context.config.setup_logging()


def before_scenario(context: Any, scenario: Any) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    context.loop = loop
    context.cleanups = []


def after_scenario(context: Any, scenario: Any) -> None:
    loop: asyncio.AbstractEventLoop = context.loop
    cleanups: list[Cleanup] = context.cleanups
    failures: list[BaseException] = []
    try:
        while cleanups:
            cleanup = cleanups.pop()
            try:
                result = cleanup()
                if inspect.isawaitable(result):
                    loop.run_until_complete(_await(result))
            except Exception as exc:
                logger.exception("cleanup %r failed", cleanup)
                failures.append(exc)
        _cancel_leftover_tasks(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    if failures:
        raise failures[0]


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _cancel_leftover_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
