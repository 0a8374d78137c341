"""Connection supervision: one backoff policy, and the health state of one engine.

Every loop of a broker engine that talks to its broker (receiving, publishing,
acknowledging) reports what it sees to the engine's one :class:`ConnectionHealth`: an outage
is logged once when it starts (WARNING) and once when it ends (INFO), whichever loop noticed
it, and waiting for the broker is waiting on this object.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from ...errors import EngineUnavailableError
from ..base import EngineHealth, HealthState
from .config import Masker

logger = logging.getLogger("modules.eventbus.engines.broker")


class Backoff:
    """THE reconnection backoff of every broker engine: exponential from ``min_delay``,
    capped at ``max_delay``, with jitter (between half and all of the step) so that many
    clients of one broker do not reconnect in step."""

    def __init__(self, min_delay: float, max_delay: float) -> None:
        self.min_delay = min_delay
        self.max_delay = max_delay

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (1, 2, ...)."""
        step = min(self.max_delay, self.min_delay * 2.0 ** min(max(failures - 1, 0), 30))
        return step / 2 + random.random() * step / 2

    async def sleep(self, failures: int, *, until: float | None = None) -> None:
        """Sleep ``delay(failures)``, but not past the loop time ``until``."""
        pause = self.delay(failures)
        if until is not None:
            pause = min(pause, max(0.0, until - asyncio.get_running_loop().time()))
        await asyncio.sleep(pause)


class ConnectionHealth:
    """Whether one engine reaches its broker: ``up``, ``down`` (with the last error, masked)
    or ``stopped``; and waiting until it is up.

    ``kind`` ("redis", "kafka", ...) and ``address`` (masked) name the engine in messages.
    """

    def __init__(
        self,
        kind: str,
        engine: str,
        address: str,
        masker: Masker,
        log: logging.Logger | None = None,
    ) -> None:
        self.kind = kind
        self.log = log or logger
        self.engine = engine
        self.address = address
        self.mask = masker
        self.state: HealthState = "stopped"
        self.error: str | None = None
        self.since = time.time()
        self._announce = False  # log state changes (not while start() is still waiting)
        self._down_at = 0.0
        self._up: asyncio.Event | None = None

    # --- what the engine's loops report -------------------------------------------------

    def starting(self) -> None:
        """start() begins: down until a first connection, and quiet until start() gives up
        waiting (it logs the one warning then)."""
        self._set("down", None)
        self._announce = False
        self._up = asyncio.Event()

    def announce(self) -> None:
        """From now on, log every change of state (start() is over)."""
        self._announce = True

    def mark_up(self) -> None:
        if self.state == "up":
            return
        was_down = self.state == "down"
        self._set("up", None)
        if self._up is not None:
            self._up.set()
        if was_down and self._announce:
            self.log.info(
                "%s engine %s reconnected to %s after %.1fs",
                self.kind,
                self.engine,
                self.address,
                time.monotonic() - self._down_at,
            )

    def mark_down(self, error: BaseException) -> None:
        """A link to the broker failed with ``error``."""
        text = self.mask.error(error)
        if self.state == "down":
            self.error = text  # the latest cause; the outage is logged already
            return
        if self.state == "stopped":
            return
        self._set("down", text)
        self._down_at = time.monotonic()
        if self._up is not None:
            self._up.clear()
        if self._announce:
            self.log.warning(
                "%s engine %s lost its connection to %s (%s); reconnecting",
                self.kind,
                self.engine,
                self.address,
                text,
            )

    def stopped(self) -> None:
        self._set("stopped", self.error)
        if self._up is not None:
            self._up.set()  # waiters give up: the engine is not up, and will not be
        self._up = None

    def _set(self, state: HealthState, error: str | None) -> None:
        self.state = state
        self.error = error
        self.since = time.time()

    # --- what the engine asks -----------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return self.state == "up"

    def snapshot(self) -> EngineHealth:
        return EngineHealth(self.state, self.error, self.since)

    async def wait_up(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the engine to be up; whether it is."""
        if self.state == "up":
            return True
        up = self._up
        if up is None:
            return False
        try:
            async with asyncio.timeout(timeout):
                await up.wait()
        except TimeoutError:
            return False
        return self.is_up

    def unavailable(self, what: str, error: BaseException | None = None) -> EngineUnavailableError:
        """An error naming the engine, its (masked) address, ``what`` failed and the cause:
        ``error``, or else the last connection error."""
        cause = self.mask.error(error) if error is not None else self.error
        suffix = f": {cause}" if cause else ""
        return EngineUnavailableError(
            f"{self.kind} engine {self.engine!r} ({self.address}) {what}{suffix}"
        )
