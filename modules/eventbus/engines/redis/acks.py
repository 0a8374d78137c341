"""Acknowledging stream entries once every local delivery of them settled."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from ...delivery import Outcome
from .connection import LINK_ERRORS, Connections

logger = logging.getLogger(__package__)

Entry = tuple[bytes, bytes]  # (stream key, entry id)


class Acknowledgements:
    """The entries handed to the local fan-out and not acknowledged yet, and the XACKs of
    those that settled, sent in batches by ``run``.

    An acknowledgement that cannot reach Redis stays queued, and its entry in flight, so
    that a re-read after reconnecting does not hand the entry out twice.
    """

    def __init__(self, connections: Connections, group: str) -> None:
        self.connections = connections
        self.group = group
        self._inflight: set[Entry] = set()
        self._queued: list[Entry] = []
        self._wakeup = asyncio.Event()

    @property
    def queued(self) -> int:
        return len(self._queued)

    def in_flight(self, entry: Entry) -> bool:
        return entry in self._inflight

    def hand_out(self, entry: Entry) -> Callable[[Outcome], None]:
        """``entry`` goes to the local fan-out; the settlement returned acknowledges it."""
        self._inflight.add(entry)
        return functools.partial(self._settled, entry)

    def _settled(self, entry: Entry, outcome: Outcome) -> None:
        self.ack(entry)

    def ack(self, entry: Entry) -> None:
        self._queued.append(entry)
        self._wakeup.set()

    def clear(self) -> None:
        self._inflight.clear()
        self._queued.clear()

    async def run(self) -> None:
        """Send the acknowledgements as entries settle; retry with backoff while Redis is
        unreachable."""
        failures = 0
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self.flush()
                failures = 0
            except LINK_ERRORS as exc:
                self.connections.mark_down(exc)
                failures += 1
                await asyncio.sleep(self.connections.backoff.compute(failures))
                self._wakeup.set()

    async def flush(self) -> None:
        """XACK what settled, in one pipeline per batch."""
        while self._queued:
            batch, self._queued = self._queued, []
            by_key: dict[bytes, list[bytes]] = {}
            for key, entry_id in batch:
                by_key.setdefault(key, []).append(entry_id)
            try:
                async with asyncio.timeout(self.connections.timeout):
                    pipe = self.connections.control.pipeline(transaction=False)
                    for key, ids in by_key.items():
                        pipe.xack(key, self.group, *ids)
                    results = await pipe.execute(raise_on_error=False)
            except BaseException:
                self._queued[:0] = batch
                raise
            for key, result in zip(by_key, results, strict=True):
                if isinstance(result, Exception):  # e.g. the key or group was deleted
                    logger.warning(
                        "redis engine %s could not acknowledge entries of %s: %s",
                        self.connections.engine,
                        key.decode(errors="replace"),
                        result,
                    )
            self._inflight.difference_update(batch)
