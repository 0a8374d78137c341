"""Pub/sub mode: at-most-once, over SUBSCRIBE and PSUBSCRIBE on the receiving connection.

A local subscription maps to SUBSCRIBE (exact topic) or PSUBSCRIBE (pattern, with the glob
characters of its literal part escaped); Redis-side subscriptions are reference counted and
``attach`` returns once Redis confirmed them. A message that reaches the connection through
several Redis subscriptions (``user.created`` and ``user.*``) is handed to the local fan-out
once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from redis.exceptions import ConnectionError as RedisConnectionError

from ...event import Subscription
from ..broker import Session
from .channels import ROUTE_CACHE_LIMIT
from .connection import LINK_ERRORS, Link
from .receiving import Receiver

if TYPE_CHECKING:
    from .engine import RedisEngine


class _Wire:
    """One Redis-side pub/sub subscription (a channel, or a glob pattern), shared by every
    local subscription that needs it."""

    __slots__ = ("confirmed", "is_pattern", "link", "raw", "refs", "ticket")

    def __init__(self, is_pattern: bool, raw: bytes, confirmed: asyncio.Future[None]) -> None:
        self.is_pattern = is_pattern
        self.raw = raw
        self.confirmed = confirmed
        self.refs = 0
        self.link: _PubSubLink | None = None
        self.ticket = 0  # the n-th (UN)SUBSCRIBE of this name on ``link``: its confirmation


class _PubSubLink:
    """The pub/sub connection, and what Redis confirmed on it so far.

    Redis confirms every (P)SUBSCRIBE and (P)UNSUBSCRIBE, per name and in order, so counting
    commands sent and confirmations received per name tells when a given one took effect.
    """

    __slots__ = (
        "acked",
        "awaiting",
        "channels",
        "conn",
        "lock",
        "owners",
        "patterns",
        "sent",
        "session",
    )

    def __init__(self, conn: Link, session: Session) -> None:
        self.conn = conn
        self.session = session
        # Subscriptions to be confirmed before the session counts as established; None after.
        self.awaiting: set[tuple[bool, bytes]] | None = set()
        self.lock = asyncio.Lock()
        self.sent: dict[tuple[bool, bytes], int] = {}
        self.acked: dict[tuple[bool, bytes], int] = {}
        self.channels: set[bytes] = set()  # confirmed, as Redis has them
        self.patterns: dict[bytes, Callable[[str], bool]] = {}
        self.owners: dict[bytes, bytes | None] = {}  # channel -> the pattern that delivers it


class PubSubReceiver(Receiver):
    """The pub/sub connection and the Redis-side subscriptions on it."""

    def __init__(self, engine: RedisEngine) -> None:
        super().__init__(engine)
        self._link: _PubSubLink | None = None
        self._wires: dict[tuple[bool, bytes], _Wire] = {}
        self._sub_wires: dict[Subscription, list[_Wire]] = {}
        self._matchers: dict[bytes, Callable[[str], bool]] = {}

    def start(self) -> None:
        # Subscriptions made before start: the first session subscribes them all.
        self._wires.clear()
        self._sub_wires.clear()
        for sub in list(self.dispatcher.subscriptions.items()):
            self._register_wires(sub)

    async def close(self) -> None:
        self._link = None
        self._wires.clear()
        self._sub_wires.clear()

    # --- subscriptions ----------------------------------------------------------------

    async def attach(self, sub: Subscription) -> None:
        new = self._register_wires(sub)
        if self._link is not None and new:
            await self._request(self._link, new, subscribe=True)
        # (The engine bounds the wait; a session that breaks meanwhile is followed by one
        # that subscribes everything again.)
        for wire in self._sub_wires[sub]:
            if not wire.confirmed.done():
                await asyncio.shield(wire.confirmed)

    def _register_wires(self, sub: Subscription) -> list[_Wire]:
        """Count ``sub`` in the Redis-side subscriptions it needs; returns those it creates."""
        loop = asyncio.get_running_loop()
        wires = self._sub_wires.setdefault(sub, [])
        new: list[_Wire] = []
        for is_pattern, name, matcher in self.channels.targets(sub):
            raw = name.encode()
            wire = self._wires.get((is_pattern, raw))
            if wire is None:
                wire = _Wire(is_pattern, raw, loop.create_future())
                self._wires[(is_pattern, raw)] = wire
                if matcher is not None:
                    self._matchers[raw] = matcher
                new.append(wire)
            wire.refs += 1
            wires.append(wire)
        return new

    async def detach(self, sub: Subscription) -> None:
        for wire in self._sub_wires.pop(sub, ()):
            wire.refs -= 1
            key = (wire.is_pattern, wire.raw)
            if wire.refs == 0 and self._wires.get(key) is wire:
                del self._wires[key]
                link = self._link
                if link is not None:
                    if link.awaiting:
                        link.awaiting.discard(key)
                        self._check_ready(link)
                    await self._request(link, [wire], subscribe=False)

    async def _request(self, link: _PubSubLink, wires: list[_Wire], subscribe: bool) -> None:
        """Send (P)SUBSCRIBE or (P)UNSUBSCRIBE for ``wires``, noting which confirmation will
        tell that each took effect. A broken link is left to the receive loop."""
        for is_pattern in (False, True):
            names = [w for w in wires if w.is_pattern is is_pattern]
            if not names:
                continue
            verb = ("P" if is_pattern else "") + ("SUBSCRIBE" if subscribe else "UNSUBSCRIBE")
            async with link.lock:
                if self._link is not link or not link.conn.is_connected:
                    return
                for wire in names:
                    key = (is_pattern, wire.raw)
                    link.sent[key] = ticket = link.sent.get(key, 0) + 1
                    if subscribe:
                        wire.link, wire.ticket = link, ticket
                try:
                    await link.conn.send_command(verb, *(w.raw for w in names), check_health=False)
                except LINK_ERRORS:
                    return

    # --- receiving --------------------------------------------------------------------

    async def _session(self, conn: Link, session: Session) -> None:
        link = _PubSubLink(conn, session)
        self._link = link
        try:
            wires = list(self._wires.values())
            link.awaiting = {(w.is_pattern, w.raw) for w in wires}
            await self._request(link, wires, subscribe=True)
            self._check_ready(link)
            await self._read(link)
        finally:
            self._link = None

    def _check_ready(self, link: _PubSubLink) -> None:
        if link.awaiting is not None and not link.awaiting:
            link.awaiting = None
            link.session.ready()

    async def _read(self, link: _PubSubLink) -> None:
        conn = link.conn
        interval = self.settings.health_check_interval
        route_of = self.channels.route
        receive = self.inbound.receive
        wanted = self.inbound.wanted
        awaiting_pong = False
        while True:
            reply = await conn.read_response(timeout=interval)
            if reply is None:  # quiet for a while: is the connection still alive?
                if awaiting_pong:
                    raise RedisConnectionError(f"no answer to PING within {interval}s")
                awaiting_pong = True
                await conn.send_command("PING", check_health=False)
                continue
            awaiting_pong = False
            if type(reply) is not list:
                continue  # PONG
            kind = reply[0]
            if kind == b"message":
                channel, data = reply[1], reply[2]
            elif kind == b"pmessage":
                if not self._owns(link, reply[1], reply[2]):
                    continue
                channel, data = reply[2], reply[3]
            else:
                if kind in (b"subscribe", b"psubscribe", b"unsubscribe", b"punsubscribe"):
                    self._confirmation(link, kind, reply[1])
                continue
            route = route_of(channel)
            # Not wanted: e.g. another tenant's event under a broad pattern.
            if route.error is not None or wanted(route.topic or "", route.tenant):
                await receive(data, route)

    def _confirmation(self, link: _PubSubLink, kind: bytes, raw: bytes) -> None:
        is_pattern = kind[0] == 0x70  # b"p"
        key = (is_pattern, raw)
        link.acked[key] = count = link.acked.get(key, 0) + 1
        subscribed = kind == b"subscribe" or kind == b"psubscribe"
        if is_pattern:
            link.owners.clear()
            if subscribed:
                link.patterns[raw] = self._matchers.get(raw, _never)
            else:
                link.patterns.pop(raw, None)
        elif subscribed:
            link.channels.add(raw)
        else:
            link.channels.discard(raw)
        wire = self._wires.get(key)
        if subscribed and wire is not None and wire.link is link and wire.ticket <= count:
            if not wire.confirmed.done():
                wire.confirmed.set_result(None)
            if link.awaiting:
                link.awaiting.discard(key)
                self._check_ready(link)

    def _owns(self, link: _PubSubLink, pattern: bytes, channel: bytes) -> bool:
        """Whether the copy of a message that came through ``pattern`` is the one to hand on.

        Redis sends one copy per matching subscription of the connection; the exact channel's
        copy wins, else the smallest matching pattern's. The sets are those Redis confirmed,
        so they are the ones it used for this message.
        """
        if channel in link.channels:
            return False
        owner = link.owners.get(channel, b"")
        if owner == b"":
            text = channel.decode(errors="replace")
            owner = min((p for p, match in link.patterns.items() if match(text)), default=None)
            if len(link.owners) >= ROUTE_CACHE_LIMIT:
                link.owners.clear()
            link.owners[channel] = owner
        return owner is None or owner == pattern


def _never(channel: str) -> bool:
    return False
