"""Acknowledgement bookkeeping: what was handed to the local fan-out, what settled, and
what may be acknowledged (committed, checkpointed) now.

Two trackers, one interface (:class:`AckTracker`), for the two ways brokers count:

- :class:`MessageAcks`, per message (Redis streams: XACK of each entry id). A message is
  acknowledgeable once every local delivery of it settled, whatever the others do.
- :class:`WatermarkAcks`, a contiguous watermark per source (a Kafka partition, a Kinesis
  shard). The position of a source advances only over a run of settled messages from the
  oldest one in flight: with 5, 6, 7 in flight and 5 and 7 settled, the watermark is 5
  until 6 settles, then 7.

Both: ``hand_out(source, position)`` returns the settlement to pass to the dispatcher;
``ready()`` is what may be acknowledged now, ``acknowledged(batch)`` records that it was;
``revoke(source)`` (a rebalance, a lost lease) voids what was not settled: the late
settlements of a revoked source are ignored, so nothing is acknowledged on its behalf.
Everything here runs on the event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar

from ...delivery import Outcome

Settle = Callable[[Outcome], None]
"""Called once, when every local delivery of a message settled, with the worst outcome."""

# What a message that cannot be decoded settles as: skipped, never to be read again.
DECODE_ERROR = Outcome.DROPPED

S = TypeVar("S", bound=Hashable)  # a source: stream key, (topic, partition), shard id
P = TypeVar("P")  # a position in a source: entry id, offset, sequence number
B = TypeVar("B")


class AckTracker(Protocol[B]):
    """What the engine's acknowledgement loop needs of a tracker; ``B`` is its batch."""

    @property
    def wakeup(self) -> asyncio.Event:
        """Set when something became acknowledgeable."""
        ...

    def ready(self) -> B:
        """What may be acknowledged now (empty when nothing); stays ready until
        ``acknowledged``."""
        ...

    def acknowledged(self, batch: B) -> None:
        """``batch`` (from ``ready``) reached the broker."""
        ...

    def clear(self) -> None:
        """Forget everything (at stop: what was not acknowledged comes back)."""
        ...


class MessageAcks(Generic[S, P]):
    """Per-message acknowledgements. A batch is a list of ``(source, position)``.

    A message stays in flight from ``hand_out`` until its acknowledgement reached the broker,
    so that a re-read (after a reconnection) does not hand it out twice.
    """

    def __init__(self) -> None:
        self.wakeup = asyncio.Event()
        self._in_flight: dict[tuple[S, P], object] = {}  # -> the token of its hand-out
        self._ready: dict[tuple[S, P], None] = {}  # settled, not acknowledged; in order

    def hand_out(self, source: S, position: P) -> Settle:
        """``position`` of ``source`` goes to the local fan-out; returns its settlement."""
        key = (source, position)
        token = object()
        self._in_flight[key] = token

        def settle(outcome: Outcome) -> None:
            if self._in_flight.get(key) is token:
                self._ready[key] = None
                self.wakeup.set()

        return settle

    def skip(self, source: S, position: P) -> None:
        """Acknowledge a message that is not handed out (undecodable, or nobody's)."""
        self.hand_out(source, position)(DECODE_ERROR)

    def in_flight(self, source: S, position: P) -> bool:
        return (source, position) in self._in_flight

    @property
    def unsettled(self) -> int:
        return len(self._in_flight) - len(self._ready)

    def ready(self) -> list[tuple[S, P]]:
        return list(self._ready)

    def acknowledged(self, batch: list[tuple[S, P]]) -> None:
        for key in batch:
            self._ready.pop(key, None)
            self._in_flight.pop(key, None)

    def revoke(self, source: S) -> int:
        """Forget every message of ``source``; returns how many had not settled."""
        keys = [key for key in self._in_flight if key[0] == source]
        voided = 0
        for key in keys:
            del self._in_flight[key]
            if key in self._ready:
                del self._ready[key]
            else:
                voided += 1
        return voided

    def clear(self) -> None:
        self._in_flight.clear()
        self._ready.clear()
        self.wakeup.clear()


class _Run(Generic[P]):
    """The messages of one source in flight, oldest first, and its watermarks."""

    __slots__ = ("acked", "entries", "positions", "settled_to")

    def __init__(self) -> None:
        self.entries: deque[list[object]] = deque()  # [position, settled]
        self.positions: set[object] = set()
        self.settled_to: P | None = None  # every message up to here settled
        self.acked: P | None = None  # what the broker has


class WatermarkAcks(Generic[S, P]):
    """Contiguous watermarks per source. A batch is ``{source: position}``: the last
    position of each source up to which everything settled (Kafka commits ``offset + 1`` of
    it; Kinesis checkpoints it).

    Positions of one source must be handed out in the order the broker holds them.
    """

    def __init__(self) -> None:
        self.wakeup = asyncio.Event()
        self._runs: dict[S, _Run[P]] = {}

    def hand_out(self, source: S, position: P) -> Settle:
        run = self._runs.get(source)
        if run is None:
            run = self._runs[source] = _Run()
        entry: list[object] = [position, False]
        run.entries.append(entry)
        run.positions.add(position)

        def settle(outcome: Outcome) -> None:
            if self._runs.get(source) is not run or entry[1]:
                return  # revoked meanwhile, or settled already
            entry[1] = True
            self._advance(run)

        return settle

    def skip(self, source: S, position: P) -> None:
        """A message that is not handed out (undecodable, or nobody's) settles at once."""
        self.hand_out(source, position)(DECODE_ERROR)

    def _advance(self, run: _Run[P]) -> None:
        entries = run.entries
        moved = False
        while entries and entries[0][1]:
            position = entries.popleft()[0]
            run.positions.discard(position)
            run.settled_to = position  # type: ignore[assignment]
            moved = True
        if moved:
            self.wakeup.set()

    def in_flight(self, source: S, position: P) -> bool:
        run = self._runs.get(source)
        return run is not None and position in run.positions

    @property
    def unsettled(self) -> int:
        return sum(sum(1 for e in run.entries if not e[1]) for run in self._runs.values())

    def position(self, source: S) -> P | None:
        """The watermark of ``source``: everything up to it settled (None: nothing yet)."""
        run = self._runs.get(source)
        return None if run is None else run.settled_to

    def ready(self) -> dict[S, P]:
        return {
            source: run.settled_to
            for source, run in self._runs.items()
            if run.settled_to is not None and run.settled_to != run.acked
        }

    def acknowledged(self, batch: dict[S, P]) -> None:
        for source, position in batch.items():
            run = self._runs.get(source)
            if run is not None:
                run.acked = position

    def revoke(self, source: S) -> int:
        """Forget ``source`` (its partition or lease went to another consumer): what was not
        settled is void, its late settlements are ignored. Acknowledge ``ready()`` first if
        the broker still takes it. Returns how many messages had not settled."""
        run = self._runs.pop(source, None)
        if run is None:
            return 0
        return sum(1 for e in run.entries if not e[1])

    def sources(self) -> list[S]:
        return list(self._runs)

    # --- added for the Kafka engine: a rebalance gives a revoked partition's events a
    # moment to settle before it commits and revokes.
    def unsettled_in(self, source: S) -> int:
        """How many messages of ``source`` are handed out and not settled."""
        run = self._runs.get(source)
        return 0 if run is None else sum(1 for e in run.entries if not e[1])

    def clear(self) -> None:
        self._runs.clear()
        self.wakeup.clear()


async def acknowledge_loop(
    tracker: AckTracker[B],
    send: Callable[[B], Awaitable[None]],
    on_failure: Callable[[BaseException, int], Awaitable[None]],
) -> None:
    """Send what ``tracker`` has ready with ``send``, as it becomes ready, until cancelled.

    A ``send`` that raises leaves the batch ready; ``on_failure(error, failures in a row)``
    decides what then (the engine marks the link down and backs off).
    """
    failures = 0
    while True:
        await tracker.wakeup.wait()
        tracker.wakeup.clear()
        batch = tracker.ready()
        if not batch:
            continue
        try:
            await send(batch)
        except Exception as exc:
            failures += 1
            tracker.wakeup.set()
            await on_failure(exc, failures)
            continue
        failures = 0
        tracker.acknowledged(batch)
