"""Routing: which engine a topic goes to. Rules in order, first match wins, else the first
engine."""

from __future__ import annotations

from collections.abc import Sequence

from .config import RoutingRule
from .topics import covers, is_pattern, matches, overlaps


class Router:
    CACHE_LIMIT = 10_000

    def __init__(self, engine_names: Sequence[str], rules: Sequence[RoutingRule]) -> None:
        if not engine_names:
            raise ValueError("a router needs at least one engine")
        self._engines = list(engine_names)
        self._rules = [(tuple(rule.topics), rule.engine) for rule in rules]
        self._cache: dict[str, str] = {}

    def engine_for_topic(self, topic: str) -> str:
        engine = self._cache.get(topic)
        if engine is None:
            engine = next(
                (
                    name
                    for patterns, name in self._rules
                    if any(matches(p, topic) for p in patterns)
                ),
                self._engines[0],
            )
            if len(self._cache) >= self.CACHE_LIMIT:
                self._cache.clear()
            self._cache[topic] = engine
        return engine

    def engines_for_pattern(self, pattern: str) -> list[str]:
        """Every engine an event matching ``pattern`` may be routed to (routing order)."""
        if not is_pattern(pattern):
            return [self.engine_for_topic(pattern)]
        found: list[str] = []
        for patterns, name in self._rules:
            if name not in found and any(overlaps(pattern, p) for p in patterns):
                found.append(name)
            if any(covers(p, pattern) for p in patterns):
                return found  # every matching topic stops at this rule or an earlier one
        if self._engines[0] not in found:
            found.append(self._engines[0])
        return found

    def engine_names(self) -> list[str]:
        return list(self._engines)

    def rules(self) -> list[tuple[tuple[str, ...], str]]:
        return list(self._rules)
