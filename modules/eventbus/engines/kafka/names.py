"""Names on the wire: the Kafka topic of each event, and back; the regular expression that
selects the Kafka topics a set of subscriptions reads.

An untenanted event goes to ``<topicPrefix><topic>``, a tenanted one to
``<topicPrefix>__<tenant>.<topic>``. Bus topics never start with ``__`` and tenant ids never
hold ``.``, so the two cannot collide, and an untenanted pattern never reads ``__`` topics.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ...event import Subscription
from ...topics import validate_tenant, validate_topic
from ..broker import Origin

MAX_KAFKA_TOPIC = 249  # Kafka refuses longer topic names
ROUTE_CACHE_LIMIT = 10_000  # entries of the per-name cache before it starts over
_ANY_TENANT = r"__[A-Za-z0-9_-]{1,40}\."


class KafkaTopics:
    """The Kafka topics of one engine, under its ``topicPrefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._origins: dict[str, Origin] = {}

    def name(self, tenant: str | None, topic: str) -> str:
        """The Kafka topic of events of ``topic`` published by ``tenant``; ValueError when
        Kafka cannot name it."""
        name = self.prefix + topic if tenant is None else f"{self.prefix}__{tenant}.{topic}"
        if len(name) > MAX_KAFKA_TOPIC or name in (".", ".."):
            raise ValueError(
                f"topic {topic!r} maps to the Kafka topic {name[:60]!r}"
                f"{'...' if len(name) > 60 else ''}, which Kafka cannot name (at most "
                f"{MAX_KAFKA_TOPIC} characters, not '.' or '..')"
            )
        return name

    def check(self, sub: Subscription) -> None:
        """ValueError when Kafka cannot name the topics of ``sub``."""
        literal = sub.topic[:-1] if sub.topic.endswith("*") else sub.topic
        if not sub.topic.endswith("*"):
            self.name(sub.tenant, literal)
        elif len(self.prefix) + len(literal) > MAX_KAFKA_TOPIC:
            self.name(sub.tenant, literal)  # raises: even the fixed part is too long

    def exact(self, sub: Subscription) -> str | None:
        """The one Kafka topic an exact subscription reads (None for a pattern; an
        ``all_tenants`` subscription also reads other tenants' topics, found as a pattern's)."""
        if sub.topic.endswith("*"):
            return None
        return self.name(sub.tenant, sub.topic)

    def regex(self, sub: Subscription) -> str:
        """A regular expression matching the whole names of the Kafka topics ``sub`` reads."""
        is_pattern = sub.topic.endswith("*")
        literal = sub.topic[:-1] if is_pattern else sub.topic
        rest = (
            re.escape(literal) + (".*" if literal else ".+") if is_pattern else re.escape(literal)
        )
        prefix = re.escape(self.prefix)
        if sub.tenant is not None:
            return f"{prefix}{re.escape(f'__{sub.tenant}.')}{rest}"
        if sub.all_tenants:
            return f"{prefix}(?:(?!__)|{_ANY_TENANT}){rest}"
        return f"{prefix}(?!__){rest}"

    def union(self, subs: Iterable[Subscription]) -> str | None:
        """One regular expression for every subscription of ``subs`` (None: no subscription),
        anchored at both ends: which Kafka topics the engine reads."""
        parts = sorted({self.regex(sub) for sub in subs})
        if not parts:
            return None
        return "^(?:" + "|".join(parts) + ")$"

    def origin(self, name: str) -> Origin:
        """What an event found in the Kafka topic ``name`` must be (or why the topic is no
        place of the bus)."""
        origin = self._origins.get(name)
        if origin is None:
            origin = self._parse(name)
            if len(self._origins) >= ROUTE_CACHE_LIMIT:
                self._origins.clear()
            self._origins[name] = origin
        return origin

    def _parse(self, name: str) -> Origin:
        where = f"topic {name}"
        if not name.startswith(self.prefix):
            return Origin(where, "", error=f"{name!r} does not start with {self.prefix!r}")
        rest = name[len(self.prefix) :]
        tenant: str | None = None
        try:
            if rest.startswith("__"):
                tenant, dot, rest = rest[2:].partition(".")
                if not dot:
                    raise ValueError("a tenant's topic is __<tenant>.<topic>")
                validate_tenant(tenant)
            validate_topic(rest)
        except ValueError as exc:
            return Origin(where, "", error=f"{name!r} is not a topic of the bus: {exc}")
        return Origin(where, rest, tenant)
