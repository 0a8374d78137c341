"""Fixtures of the Redis engine tests: a client of the shared Redis (a missing Redis fails the
test loudly) and a fresh channel prefix per test, whose keys are deleted afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from modules.eventbus.engines.redis import glob_escape

from .helpers import check_redis, delete_keys


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = await check_redis()
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    value = f"test-{uuid.uuid4().hex[:12]}:"
    yield value
    await delete_keys(redis_client, glob_escape(value) + "*")
