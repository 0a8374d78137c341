"""Topic names and THE topic-pattern matcher, used by the router and by every engine.

A topic is ``[A-Za-z0-9._-]+`` (Kafka's legal characters, so one topic is valid on every
engine), at most 200 characters, not starting with ``__`` (reserved for the bus). A pattern is
a topic, or a topic prefix followed by ``*``: ``user.*`` matches ``user.a`` and ``user.a.b``
but not ``user``; ``*`` alone matches every topic.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_TOPIC_LENGTH = 200
MAX_TENANT_LENGTH = 40
_TOPIC = re.compile(r"[A-Za-z0-9._-]+")
_TENANT = re.compile(r"[A-Za-z0-9_-]+")


def validate_topic(topic: object) -> str:
    """A topic to publish to; ValueError naming what is wrong otherwise."""
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"topic must be a non-empty string, got {topic!r}")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise ValueError(f"topic {topic[:40]!r}... is longer than {MAX_TOPIC_LENGTH} characters")
    if topic.startswith("__"):
        raise ValueError(f"topic {topic!r} starts with '__', which is reserved for the bus")
    if not _TOPIC.fullmatch(topic):
        raise ValueError(
            f"invalid topic {topic!r}: only letters, digits, '.', '_' and '-' are allowed"
        )
    return topic


def validate_pattern(pattern: object) -> str:
    """A topic or pattern to subscribe to; ``*`` is allowed only as the last character."""
    if pattern == "*":
        return "*"
    if isinstance(pattern, str) and pattern.endswith("*"):
        prefix = pattern[:-1]
        if "*" in prefix:
            raise ValueError(f"invalid pattern {pattern!r}: '*' may only be the last character")
        try:
            validate_topic(prefix)
        except ValueError as exc:
            raise ValueError(f"invalid pattern {pattern!r}: {exc}") from None
        return pattern
    if isinstance(pattern, str) and "*" in pattern:
        raise ValueError(f"invalid pattern {pattern!r}: '*' may only be the last character")
    return validate_topic(pattern)


def validate_tenant(tenant: object) -> str:
    if (
        not isinstance(tenant, str)
        or not _TENANT.fullmatch(tenant)
        or len(tenant) > MAX_TENANT_LENGTH
    ):
        raise ValueError(
            f"invalid tenant id {tenant!r} for the bus: use 1-{MAX_TENANT_LENGTH} letters, "
            "digits, '_' or '-'"
        )
    return tenant


def is_pattern(pattern: str) -> bool:
    return pattern.endswith("*")


def matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` matches ``pattern`` (an exact topic or a ``prefix*`` pattern)."""
    if pattern.endswith("*"):
        return topic.startswith(pattern[:-1]) and len(topic) > len(pattern) - 1
    return pattern == topic


def overlaps(a: str, b: str) -> bool:
    """Whether some topic matches both patterns."""
    if is_pattern(a) and is_pattern(b):
        return a[:-1].startswith(b[:-1]) or b[:-1].startswith(a[:-1])
    if is_pattern(a):
        return matches(a, b)
    return matches(b, a)


def covers(broad: str, narrow: str) -> bool:
    """Whether every topic matching ``narrow`` also matches ``broad``."""
    if not is_pattern(broad):
        return broad == narrow
    if is_pattern(narrow):
        return narrow[:-1].startswith(broad[:-1])
    return matches(broad, narrow)


class TopicIndex(Generic[T]):
    """Items filed under patterns, resolved by topic through a cache.

    ``resolve(topic)`` is the hot path of every publish: it answers from a dict, and only the
    first time a topic is seen after a change does it look the topic up. That look-up never
    scans the patterns: exact patterns are a dict keyed by topic, and ``prefix*`` patterns a
    dict keyed by prefix, probed with each proper prefix of the topic whose length some
    pattern has (``*`` is the empty prefix). It costs at most one probe per character of the
    topic, however many patterns there are. The cache is bounded so that a stream of
    distinct topics cannot grow it without limit.
    """

    CACHE_LIMIT = 10_000

    def __init__(self) -> None:
        # pattern -> {item: insertion number}; resolve() returns items in insertion order.
        # _exact and _prefixed share these dicts, keyed by topic and by prefix.
        self._by_pattern: dict[str, dict[T, int]] = {}
        self._exact: dict[str, dict[T, int]] = {}
        self._prefixed: dict[str, dict[T, int]] = {}
        self._prefix_lengths: dict[int, int] = {}  # length -> how many prefixes have it
        self._cache: dict[str, tuple[T, ...]] = {}
        self._added = itertools.count()

    def add(self, pattern: str, item: T) -> None:
        items = self._by_pattern.get(pattern)
        if items is None:
            items = self._by_pattern[pattern] = {}
            if is_pattern(pattern):
                prefix = pattern[:-1]
                self._prefixed[prefix] = items
                self._prefix_lengths[len(prefix)] = self._prefix_lengths.get(len(prefix), 0) + 1
            else:
                self._exact[pattern] = items
        items.pop(item, None)  # re-added: its place is at the end, as its new number says
        items[item] = next(self._added)
        self._cache.clear()

    def remove(self, pattern: str, item: T) -> bool:
        items = self._by_pattern.get(pattern)
        if not items or items.pop(item, None) is None:
            return False
        if not items:
            del self._by_pattern[pattern]
            if is_pattern(pattern):
                prefix = pattern[:-1]
                del self._prefixed[prefix]
                left = self._prefix_lengths.pop(len(prefix)) - 1
                if left:
                    self._prefix_lengths[len(prefix)] = left
            else:
                del self._exact[pattern]
        self._cache.clear()
        return True

    def resolve(self, topic: str) -> tuple[T, ...]:
        found = self._cache.get(topic)
        if found is None:
            found = self._lookup(topic)
            if len(self._cache) >= self.CACHE_LIMIT:
                self._cache.clear()
            self._cache[topic] = found
        return found

    def _lookup(self, topic: str) -> tuple[T, ...]:
        """What matches ``topic``: its exact entry and each ``prefix*`` with a proper prefix
        of it (``user.*`` does not match ``user.``), in insertion order."""
        matched: list[dict[T, int]] = []
        exact = self._exact.get(topic)
        if exact is not None:
            matched.append(exact)
        prefixed = self._prefixed
        size = len(topic)
        for length in self._prefix_lengths:
            if length < size:
                items = prefixed.get(topic[:length])
                if items is not None:
                    matched.append(items)
        if not matched:
            return ()
        if len(matched) == 1:
            return tuple(matched[0])  # a dict's order is its items' insertion order
        ranked = [(rank, item) for items in matched for item, rank in items.items()]
        ranked.sort(key=_rank)
        return tuple(item for _, item in ranked)

    def patterns(self) -> list[str]:
        return list(self._by_pattern)

    def items(self) -> Iterable[T]:
        for items in self._by_pattern.values():
            yield from items

    def clear(self) -> None:
        self._by_pattern.clear()
        self._exact.clear()
        self._prefixed.clear()
        self._prefix_lengths.clear()
        self._cache.clear()

    def __len__(self) -> int:
        return sum(len(items) for items in self._by_pattern.values())


def _rank(pair: tuple[int, object]) -> int:
    return pair[0]
