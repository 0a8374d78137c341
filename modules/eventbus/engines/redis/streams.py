"""Streams mode: at-least-once, with one consumer group per engine.

The group is ``groupName`` (shared by every process configured with it, and durable), or by
default one per process, ``<engine>-<host>-<pid>``, destroyed on a clean stop. An entry is
acknowledged once every local delivery of it settled (:mod:`.acks`); entries still queued
at shutdown are not, and come back (pending entries idle for ``claimIdle`` are claimed by a
live consumer of the group). Pattern subscriptions find their stream keys with SCAN, when
they subscribe and every ``scanInterval``, and at once when this process publishes to one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError, ResponseError

from ...event import Subscription
from ...topics import matches
from ..broker import MessageAcks, Session
from .connection import LINK_ERRORS, STREAM_BLOCK, Link, call
from .receiving import Receiver

if TYPE_CHECKING:
    from .engine import RedisEngine

logger = logging.getLogger(__package__)

# Default group names handed out in this process: a second engine of the same name (two
# applications in one process, as in tests) must not share, and then destroy, the first's.
_default_groups: Counter[str] = Counter()


def default_group(engine: str) -> str:
    """A new per-process group name for ``engine``: ``<engine>-<host>-<pid>[-<n>]``."""
    base = f"{engine}-{socket.gethostname()}-{os.getpid()}"
    _default_groups[base] += 1
    count = _default_groups[base]
    return base if count == 1 else f"{base}-{count}"


def consumer_name() -> str:
    """A consumer name of this process, unique to one engine instance."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class StreamsReceiver(Receiver):
    """The stream reader, the stream keys it reads in the engine's group, and their upkeep."""

    def __init__(self, engine: RedisEngine, acks: MessageAcks[bytes, bytes]) -> None:
        super().__init__(engine)
        self.group = engine.group
        self.consumer = engine.consumer
        # A shared, named group: others may read what this one skips.
        self.durable = engine.durable_group
        self.reader_id: int | None = None  # the reader's CLIENT ID, to unblock it
        self._reader_blocked = False
        self._acks = acks
        self._followed: set[Subscription] = set()
        self._keys: dict[str, bytes] = {}  # the stream keys the reader reads
        self._keys_changed = asyncio.Event()
        self._joining: dict[str, asyncio.Future[None]] = {}
        self._group_keys: set[str] = set()
        self._since: dict[Subscription, tuple[int, list[str]]] = {}  # pattern sub -> (ms, globs)
        self._unwanted: set[str] = set()
        self._pending_rereads: set[bytes] = set()  # keys whose own pending entries to re-read
        self._maintain_wakeup = asyncio.Event()

    def start(self) -> None:
        self._since.clear()
        self._followed.clear()
        self.engine.spawn(self._maintain(), "streams-maintenance")

    async def close(self) -> None:
        try:
            if self.connections.control is not None:
                await self._leave_groups()
        finally:
            self._keys.clear()
            self._joining.clear()
            self._group_keys.clear()
            self._since.clear()
            self._followed.clear()
            self._unwanted.clear()
            self._pending_rereads.clear()

    async def acknowledge(self, batch: list[tuple[bytes, bytes]]) -> None:
        """XACK the settled entries of ``batch``, in one pipeline."""
        by_key: dict[bytes, list[bytes]] = {}
        for key, entry_id in batch:
            by_key.setdefault(key, []).append(entry_id)
        async with asyncio.timeout(self._timeout):
            pipe = self.connections.control.pipeline(transaction=False)
            for key, ids in by_key.items():
                pipe.xack(key, self.group, *ids)
            results = await pipe.execute(raise_on_error=False)
        for key, result in zip(by_key, results, strict=True):
            if isinstance(result, Exception):  # e.g. the key or group was deleted
                logger.warning(
                    "redis engine %s could not acknowledge entries of %s: %s",
                    self.name,
                    key.decode(errors="replace"),
                    result,
                )

    # --- subscriptions: the keys read -------------------------------------------------

    async def attach(self, sub: Subscription) -> None:
        self._unwanted.clear()
        await self._follow(sub)

    async def detach(self, sub: Subscription) -> None:
        self._followed.discard(sub)
        self._since.pop(sub, None)
        self._unwanted.clear()
        route = self.channels.route
        dropped = [key for key in self._keys if not self._wanted(route(self._keys[key]))]
        for key in dropped:
            del self._keys[key]
        if dropped:
            self._keys_updated()

    def published(self, key: str) -> None:
        """Join ``key`` now if a pattern subscription wants it, rather than at the next
        discovery."""
        if not self._since or key in self._keys or key in self._unwanted or key in self._joining:
            return
        if not self._wanted(self.channels.route(key.encode())):
            self._unwanted.add(key)
            return
        self.engine.spawn(self._join_quietly(key), "streams-join")

    async def _follow(self, sub: Subscription) -> None:
        """Read the streams ``sub`` wants: its exact key from now on, the keys of its pattern
        from the moment it subscribed."""
        if sub in self._followed:
            return
        targets = self.channels.targets(sub)
        exact = [name for is_pattern, name, _ in targets if not is_pattern]
        globs = [name for is_pattern, name, _ in targets if is_pattern]
        if globs:
            seconds, micros = await self.connections.control.time()
            self._since[sub] = (seconds * 1000 + micros // 1000, globs)
            self._maintain_wakeup.set()
        for key in exact:
            await self._join(key, "$")
        if globs:
            await self._discover(globs)
        self._followed.add(sub)

    async def _join(self, key: str, start: str) -> None:
        """Read ``key`` from now on, in the engine's group, from ``start`` if the group is new
        (a per-process group that stopped reading the key is moved to ``start``)."""
        while key in self._joining:
            await asyncio.shield(self._joining[key])
        if key in self._keys:
            return
        done = asyncio.get_running_loop().create_future()
        self._joining[key] = done
        control = self.connections.control
        try:
            try:
                await control.xgroup_create(key, self.group, start, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
                if not self.durable:
                    await control.xgroup_setid(key, self.group, start)
                else:
                    # Entries this consumer left pending while it did not want the key.
                    self._pending_rereads.add(key.encode())
            self._group_keys.add(key)
            self._keys[key] = key.encode()
            self._keys_updated()
        finally:
            del self._joining[key]
            done.set_result(None)

    async def _join_quietly(self, key: str) -> None:
        try:
            await self._join(key, self._start_for(key))
        except LINK_ERRORS as exc:
            self.connection.mark_down(exc)  # the next discovery joins it
        except RedisError as exc:
            logger.warning("redis engine %s cannot read stream %s: %s", self.name, key, exc)

    def _start_for(self, key: str) -> str:
        """Where a pattern subscription starts reading a key it found: at the moment the
        earliest of the subscriptions that want it subscribed."""
        route = self.channels.route(key.encode())
        since = [
            ms
            for sub, (ms, _) in self._since.items()
            if matches(sub.topic, route.topic or "") and sub.accepts(route.tenant)
        ]
        return f"{min(since)}-0" if since else "$"

    async def _discover(self, globs: Iterable[str] | None = None) -> None:
        """Join the existing streams that pattern subscriptions want."""
        if globs is None:
            globs = {glob for _, found in self._since.values() for glob in found}
        for glob in globs:
            cursor = 0
            while True:
                cursor, found = await self.connections.control.scan(
                    cursor, match=glob, count=1000, _type="stream"
                )
                for raw in found:
                    key = raw.decode(errors="replace")
                    if key not in self._keys and self._wanted(self.channels.route(raw)):
                        await self._join(key, self._start_for(key))
                if not cursor:
                    break

    def _keys_updated(self) -> None:
        self._keys_changed.set()
        reader_id = self.reader_id
        if self._reader_blocked and reader_id is not None and self.connections.control is not None:
            # Wake the reader from its blocking read, so that it reads the new key set now.
            self.engine.spawn(self._unblock(reader_id), "streams-unblock")

    async def _unblock(self, reader_id: int) -> None:
        with contextlib.suppress(*LINK_ERRORS):
            await self.connections.control.client_unblock(reader_id)

    async def _leave_groups(self) -> None:
        """A per-process group goes; in a shared group, this consumer goes if it holds
        nothing pending (what it holds is claimed by the others)."""
        control = self.connections.control
        for key in sorted(self._group_keys):
            try:
                async with asyncio.timeout(self._timeout):
                    if not self.durable:
                        await control.xgroup_destroy(key, self.group)
                    elif not await control.xpending_range(
                        key, self.group, "-", "+", 1, consumername=self.consumer
                    ):
                        await control.xgroup_delconsumer(key, self.group, self.consumer)
            except (TimeoutError, *LINK_ERRORS) as exc:
                logger.warning(
                    "redis engine %s could not leave group %s on %s: %s",
                    self.name,
                    self.group,
                    key,
                    exc,
                )

    # --- reading ----------------------------------------------------------------------

    async def _session(self, conn: Link, session: Session) -> None:
        self.reader_id = int(await call(conn, self._timeout, "CLIENT", "ID"))
        try:
            await self._rejoin()
            # Subscriptions made before start (or while no session could follow them).
            for sub in list(self.dispatcher.subscriptions.items()):
                await self._follow(sub)
            session.ready()
            await self._read_own_pending(conn, list(self._keys.values()))
            await self._read(conn)
        finally:
            self.reader_id = None

    async def _read(self, conn: Link) -> None:
        """Read new entries of the keys, blocking for at most ``STREAM_BLOCK`` at a time."""
        group, consumer = self.group, self.consumer
        count = self.settings.read_count
        block_ms = int(STREAM_BLOCK * 1000)
        command = ("XREADGROUP", "GROUP", group, consumer, "COUNT", count, "BLOCK", block_ms)
        while True:
            keys = list(self._keys.values())
            self._keys_changed.clear()
            if self._pending_rereads:
                rereads = [key for key in keys if key in self._pending_rereads]
                self._pending_rereads.clear()
                await self._read_own_pending(conn, rereads)
            if not keys:
                try:
                    async with asyncio.timeout(self.settings.health_check_interval):
                        await self._keys_changed.wait()
                except TimeoutError:
                    await call(conn, self._timeout, "PING")
                continue
            self._reader_blocked = True
            try:
                reply = await call(
                    conn,
                    STREAM_BLOCK + self._timeout,
                    *command,
                    "STREAMS",
                    *keys,
                    *(">",) * len(keys),
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                logger.warning("redis engine %s: %s; creating the group again", self.name, exc)
                await self._rejoin(force=True)
                continue
            finally:
                self._reader_blocked = False
            for key, entries in reply or ():
                for entry_id, fields in entries:
                    await self._entry(key, entry_id, fields)

    async def _rejoin(self, force: bool = False) -> None:
        """After a reconnection: make sure the group still exists on every key read (a
        restarted Redis without persistence lost them, a group may have been deleted). A
        group made again starts at the beginning of what the stream holds, never at "now":
        the entries a restarted server accepted meanwhile (this process's publisher retried
        its publishes there) are delivered."""
        for key in list(self._keys):
            try:
                await self.connections.control.xgroup_create(key, self.group, "0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            else:
                if not force:
                    logger.warning(
                        "redis engine %s: group %s was gone from %s; created it again",
                        self.name,
                        self.group,
                        key,
                    )

    async def _read_own_pending(self, conn: Link, keys: list[bytes]) -> None:
        """Entries Redis delivered to this consumer that it never acknowledged (a reply lost
        with the connection, an entry of a key it did not want for a while): read them again,
        except those still being handled here."""
        cursors = dict.fromkeys(keys, b"0")
        while cursors:
            keys = list(cursors)
            reply = await call(
                conn,
                self._timeout,
                "XREADGROUP",
                "GROUP",
                self.group,
                self.consumer,
                "COUNT",
                self.settings.read_count,
                "STREAMS",
                *keys,
                *(cursors[k] for k in keys),
            )
            progressed = set()
            for key, entries in reply or ():
                if entries:
                    progressed.add(key)
                    cursors[key] = entries[-1][0]
                    for entry_id, fields in entries:
                        await self._entry(key, entry_id, fields)
            cursors = {k: v for k, v in cursors.items() if k in progressed}

    async def _entry(self, key: bytes, entry_id: bytes, fields: Any) -> None:
        """Hand one stream entry to the local fan-out; it is acknowledged once settled, and
        at once when it is not an event of the bus (so that it is not read again forever)."""
        acks = self._acks
        if acks.in_flight(key, entry_id):
            return
        route = self.channels.route(key)
        if route.error is None and not self._wanted(route):
            if not self.durable:  # nobody else reads this group
                acks.skip(key, entry_id)
            return  # in a shared group, left pending for a consumer that wants it
        origin = route._replace(where=f"{route.where} entry {entry_id.decode(errors='replace')}")
        data = _event_field(fields)
        if data is None and route.error is None:
            origin = origin._replace(error="the entry has no 'event' field")
        await self.inbound.receive(data, origin, acks.hand_out(key, entry_id))

    # --- upkeep -----------------------------------------------------------------------

    async def _maintain(self) -> None:
        """Discover pattern streams every ``scanInterval``; claim entries left pending by
        consumers that went away, every half ``claimIdle``."""
        loop = asyncio.get_running_loop()
        claim_every = min(max(self.settings.claim_idle / 2, 0.05), 30.0)
        next_scan = next_claim = loop.time()
        while True:
            now = loop.time()
            try:
                if self._since and now >= next_scan:
                    next_scan = now + self.settings.scan_interval
                    await self._discover()
                if now >= next_claim:
                    next_claim = now + claim_every
                    await self._claim()
            except LINK_ERRORS as exc:
                self.connection.mark_down(exc)
            except RedisError as exc:  # e.g. a stream deleted under the group
                logger.warning("redis engine %s: stream maintenance failed: %s", self.name, exc)
            wake = min(next_claim, next_scan) if self._since else next_claim
            # A new pattern subscription wakes the loop: its scans start now.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake - loop.time())):
                    await self._maintain_wakeup.wait()
            self._maintain_wakeup.clear()

    async def _claim(self) -> None:
        idle_ms = int(self.settings.claim_idle * 1000)
        for key, raw in list(self._keys.items()):
            cursor: Any = "0-0"
            for _ in range(100):  # bounded work per round; the next round continues
                cursor, entries, *_ = await self.connections.control.xautoclaim(
                    key, self.group, self.consumer, idle_ms, cursor, count=self.settings.read_count
                )
                for entry_id, fields in entries:
                    await self._entry(raw, entry_id, fields)
                if cursor in (b"0-0", "0-0"):
                    break


def _event_field(fields: Any) -> bytes | None:
    """The ``event`` field of an entry: a flat [field, value, ...] list from a raw read, a
    dict from redis-py's parsed replies, None for an entry deleted meanwhile."""
    if isinstance(fields, dict):
        value = fields.get(b"event")
        return value if isinstance(value, bytes) else None
    if isinstance(fields, list):
        for i in range(0, len(fields) - 1, 2):
            if fields[i] == b"event":
                value = fields[i + 1]
                return value if isinstance(value, bytes) else None
    return None
