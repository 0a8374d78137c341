"""Retention: per topic, the last N events, each kept at most ``ttl`` seconds."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable

from .event import Event
from .topics import matches


class History:
    """Ring buffers of recent events by topic, the topics kept in order of their last event.

    Expired events leave a topic's buffer when that topic is published to again or read.
    Every ``SWEEP_EVERY`` records, the topics gone quiet for ``ttl`` are dropped from the
    least recently written end (work in proportion to what is dropped, however many topics
    there are), and at most ``MAX_TOPICS`` topics are kept (the quietest go first).
    """

    SWEEP_EVERY = 4096
    MAX_TOPICS = 100_000

    def __init__(self, max_per_topic: int, ttl: float, clock: Callable[[], float]) -> None:
        self.max_per_topic = max_per_topic
        self.ttl = ttl
        self.clock = clock
        self._topics: OrderedDict[str, deque[Event]] = OrderedDict()
        self._until_sweep = self.SWEEP_EVERY

    def record(self, event: Event) -> None:
        topics = self._topics
        buffer = topics.get(event.topic)
        if buffer is None:
            if len(topics) >= self.MAX_TOPICS:
                topics.popitem(last=False)
            buffer = topics[event.topic] = deque(maxlen=self.max_per_topic)
        else:
            topics.move_to_end(event.topic)
        buffer.append(event)
        cutoff = event.timestamp - self.ttl
        while buffer[0].timestamp < cutoff:
            buffer.popleft()
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self._until_sweep = self.SWEEP_EVERY
            self._drop_quiet(self.clock() - self.ttl)

    def _drop_quiet(self, cutoff: float) -> None:
        """Drop the topics whose newest event is older than ``cutoff``: they are at the
        front, as the topics are in order of their last event."""
        topics = self._topics
        while topics:
            topic, buffer = next(iter(topics.items()))
            if buffer and buffer[-1].timestamp >= cutoff:
                return
            del topics[topic]

    def read(
        self,
        pattern: str,
        accepts: Callable[[Event], bool],
        since: float | None = None,
    ) -> list[Event]:
        """Unexpired events on topics matching ``pattern`` that ``accepts``, oldest first."""
        cutoff = self.clock() - self.ttl
        if since is not None:
            cutoff = max(cutoff, since)
        self._sweep(self.clock() - self.ttl)
        found = [
            event
            for topic, buffer in self._topics.items()
            if matches(pattern, topic)
            for event in buffer
            if event.timestamp >= cutoff and accepts(event)
        ]
        found.sort(key=lambda e: e.timestamp)
        return found

    def _sweep(self, cutoff: float) -> None:
        for topic in list(self._topics):
            buffer = self._topics[topic]
            while buffer and buffer[0].timestamp < cutoff:
                buffer.popleft()
            if not buffer:
                del self._topics[topic]

    def clear(self) -> None:
        self._topics.clear()

    def __len__(self) -> int:
        return sum(len(b) for b in self._topics.values())
