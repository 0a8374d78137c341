"""Names on the wire: the channel (or stream key) of each event, and back.

An untenanted event goes to ``<channelPrefix><topic>``, a tenanted one to
``<channelPrefix><tenant>:<topic>``; topics never contain ``:``, so the two cannot collide.
"""

from __future__ import annotations

from collections.abc import Callable

from ...event import Subscription
from ...topics import validate_tenant, validate_topic
from ..broker import Origin

ROUTE_CACHE_LIMIT = 10_000  # entries of a per-name cache before it starts over

Target = tuple[bool, str, Callable[[str], bool] | None]  # (is pattern, name, matcher)

_GLOB_ESCAPES = str.maketrans({c: "\\" + c for c in "\\*?[]"})


def glob_escape(text: str) -> str:
    """``text`` as a Redis glob that matches only itself."""
    return text.translate(_GLOB_ESCAPES)


class Channels:
    """The names of one engine's channels, under its ``channelPrefix``."""

    def __init__(self, prefix: str, what: str = "channel") -> None:
        self.prefix = prefix
        self.what = what  # "channel" or "stream": how a name is shown in logs
        self._routes: dict[bytes, Origin] = {}

    def channel(self, tenant: str | None, topic: str) -> str:
        """The channel (or stream key) of events of ``topic`` published by ``tenant``."""
        if tenant is None:
            return self.prefix + topic
        return f"{self.prefix}{tenant}:{topic}"

    def targets(self, sub: Subscription) -> list[Target]:
        """The channels (exact) and glob patterns that carry ``sub``'s events."""
        prefix = self.prefix
        topic = sub.topic
        is_pattern = topic.endswith("*")
        literal = topic[:-1] if is_pattern else topic
        head = prefix if sub.tenant is None else f"{prefix}{sub.tenant}:"
        found: list[Target] = []
        if is_pattern:
            found.append((True, glob_escape(head + literal) + "*", _starts_with(head + literal)))
        else:
            found.append((False, head + literal, None))
        if sub.all_tenants and sub.tenant is None and topic != "*":
            glob = f"{glob_escape(prefix)}*:{glob_escape(literal)}{'*' if is_pattern else ''}"
            found.append((True, glob, _any_tenant(prefix, literal, is_pattern)))
        return found

    def route(self, raw: bytes) -> Origin:
        """The tenant and topic of the channel (or stream key) ``raw``: what a message found
        there must be (or ``error``: why it is no place of the bus)."""
        route = self._routes.get(raw)
        if route is None:
            route = self._parse(raw)
            if len(self._routes) >= ROUTE_CACHE_LIMIT:
                self._routes.clear()
            self._routes[raw] = route
        return route

    def _parse(self, raw: bytes) -> Origin:
        where = f"{self.what} {raw.decode(errors='replace')}"
        try:
            name = raw.decode()
        except UnicodeDecodeError:
            return Origin(where, "", error=f"name {raw!r} is not UTF-8")
        if not name.startswith(self.prefix):
            return Origin(where, "", error=f"{name!r} does not start with {self.prefix!r}")
        tenant, colon, topic = name[len(self.prefix) :].rpartition(":")
        try:
            validate_topic(topic)
            if colon:
                validate_tenant(tenant)
        except ValueError as exc:
            return Origin(where, "", error=f"{name!r} is not a {self.what} of the bus: {exc}")
        return Origin(where, topic, tenant if colon else None)


def _starts_with(literal: str) -> Callable[[str], bool]:
    return lambda channel: channel.startswith(literal)


def _any_tenant(prefix: str, literal: str, is_pattern: bool) -> Callable[[str], bool]:
    """The channels ``<prefix>*:<literal>`` (or ``...*:<literal>*``) matches as a glob."""
    needle = ":" + literal
    start = len(prefix)
    if is_pattern:
        return lambda channel: channel.startswith(prefix) and needle in channel[start:]
    return lambda channel: channel.startswith(prefix) and channel[start:].endswith(needle)
