"""Checkpoints (the last handled sequence number of each shard, per application) and shard
leases, like the Kinesis Client Library keeps them.

A checkpoint is a decimal sequence number, ``SHARD_END`` once a closed shard was read to its
end and everything from it settled (its children may then be read, by any process), or, for
a shard from which nothing was read yet, ``iterator:<shard iterator>``: where its reader was
(an iterator is valid for five minutes, in any process), so that a reader that takes the
shard over (after a stop, a death, a rebalance) starts exactly there; an expired one means
the start of the shard (duplicates rather than loss).

- ``memory``: kept in this process, per (endpoint, stream, appName): an engine stopped and
  started again in the same process resumes; nothing is shared, so there are no leases.
- ``redis``: a hash of checkpoints per stream and appName, and one lease key per shard
  (``SET NX PX``, renewed while held) plus a heartbeat of each process, so that the processes
  of one appName share the shards: each is read by one process at a time, and the shards of a
  process that died are taken over once its leases expired. A checkpoint is written only by
  the holder of the shard's lease (checked in Redis, atomically with the write).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Mapping

from modular import ConfigError

SHARD_END = "SHARD_END"
ITERATOR = "iterator:"


def owner_id() -> str:
    """This process (and engine instance) as a lease owner: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class CheckpointStore:
    """Checkpoints kept in this process (``checkpointStore: memory``); the base of a shared
    store, whose leases make each shard one process's. Without a shared store every lease is
    granted at once: every process reads every shard."""

    shared = False
    _kept: dict[tuple[str, str, str], dict[str, str]] = {}  # (where, stream, app) -> checkpoints

    def __init__(self, where: str, stream: str, app: str) -> None:
        self._checkpoints = self._kept.setdefault((where, stream, app), {})

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def load(self, shards: Iterable[str]) -> dict[str, str]:
        """The checkpoints of ``shards`` that exist."""
        return {s: self._checkpoints[s] for s in shards if s in self._checkpoints}

    async def save(self, positions: Mapping[str, str]) -> set[str]:
        """Write ``positions`` (shard -> sequence number or SHARD_END); returns the shards
        whose write was refused because this process no longer holds their lease."""
        self._checkpoints.update(positions)
        return set()

    # --- leases (granted at once without a shared store) --------------------------------

    async def heartbeat(self) -> int:
        """Say this process is alive; how many processes share the shards (itself included)."""
        return 1

    async def acquire(self, shard: str) -> bool:
        return True

    async def renew(self, shards: Iterable[str]) -> set[str]:
        """Extend the leases of ``shards``; returns those this process lost."""
        return set()

    async def release(self, shards: Iterable[str]) -> None:
        pass


# Write checkpoints only for shards whose lease this owner holds. KEYS: the checkpoint hash,
# then one lease key per shard; ARGV: owner, then shard and position pairs in KEYS' order.
_SAVE = """
local refused = {}
for i = 2, #KEYS do
  local shard, position = ARGV[2 * i - 2], ARGV[2 * i - 1]
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('HSET', KEYS[1], shard, position)
  else
    table.insert(refused, shard)
  end
end
return refused
"""

# Extend the leases this owner holds. KEYS: lease keys; ARGV: owner, milliseconds.
_RENEW = """
local lost = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  else
    table.insert(lost, i)
  end
end
return lost
"""

# Delete the leases this owner holds. KEYS: lease keys; ARGV: owner.
_RELEASE = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 0
"""


class RedisCheckpointStore(CheckpointStore):
    """Checkpoints and leases in Redis (``checkpointStore: redis``), shared by every process
    with the same stream, appName and ``checkpointKeyPrefix``.

    Keys: ``<prefix><stream>:<app>:checkpoints`` (a hash: shard -> position),
    ``<prefix><stream>:<app>:lease:<shard>`` (the owner, expiring after ``leaseDuration``),
    ``<prefix><stream>:<app>:workers`` (a sorted set: owner -> heartbeat expiry).
    """

    shared = True

    def __init__(
        self, url: str, prefix: str, stream: str, app: str, owner: str, lease_duration: float
    ) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError as exc:
            raise ConfigError(
                "checkpointStore 'redis' needs the redis package; install it with: "
                "pip install 'modular-eventbus[kinesis,redis]'"
            ) from exc

        self._client = aioredis.Redis.from_url(url)
        base = f"{prefix}{stream}:{app}"
        self._hash = f"{base}:checkpoints"
        self._lease_prefix = f"{base}:lease:"
        self._workers = f"{base}:workers"
        self.owner = owner
        self._lease_ms = max(1, int(lease_duration * 1000))
        self._save = self._client.register_script(_SAVE)
        self._renew = self._client.register_script(_RENEW)
        self._release = self._client.register_script(_RELEASE)

    def lease_key(self, shard: str) -> str:
        return f"{self._lease_prefix}{shard}"

    async def open(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        try:
            await self._client.zrem(self._workers, self.owner)
        finally:
            await self._client.aclose()

    async def load(self, shards: Iterable[str]) -> dict[str, str]:
        wanted = list(shards)
        if not wanted:
            return {}
        values = await self._client.hmget(self._hash, wanted)
        return {
            shard: value.decode() if isinstance(value, bytes) else str(value)
            for shard, value in zip(wanted, values, strict=True)
            if value is not None
        }

    async def save(self, positions: Mapping[str, str]) -> set[str]:
        if not positions:
            return set()
        shards = list(positions)
        keys = [self._hash, *(self.lease_key(s) for s in shards)]
        args = [self.owner]
        for shard in shards:
            args += [shard, positions[shard]]
        refused = await self._save(keys=keys, args=args)
        return {r.decode() if isinstance(r, bytes) else str(r) for r in refused}

    async def heartbeat(self) -> int:
        now_ms = int(time.time() * 1000)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zadd(self._workers, {self.owner: now_ms + self._lease_ms})
            pipe.zremrangebyscore(self._workers, "-inf", now_ms)
            pipe.zcard(self._workers)
            results = await pipe.execute()
        return max(1, int(results[-1]))

    async def acquire(self, shard: str) -> bool:
        key = self.lease_key(shard)
        if await self._client.set(key, self.owner, nx=True, px=self._lease_ms):
            return True
        return not await self.renew([shard])

    async def renew(self, shards: Iterable[str]) -> set[str]:
        held = list(shards)
        if not held:
            return set()
        lost = await self._renew(
            keys=[self.lease_key(s) for s in held], args=[self.owner, self._lease_ms]
        )
        return {held[int(i) - 1] for i in lost}

    async def release(self, shards: Iterable[str]) -> None:
        held = list(shards)
        if held:
            await self._release(keys=[self.lease_key(s) for s in held], args=[self.owner])
