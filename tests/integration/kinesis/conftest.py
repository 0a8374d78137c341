"""Fixtures of the Kinesis engine tests: a fresh stream on the kinesalite of `make services`
(a missing server fails the test loudly), deleted afterwards; a Redis key prefix for
checkpoints, whose keys are deleted afterwards."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from .helpers import check_kinesalite, delete_stream, stream_name

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def stream() -> AsyncIterator[str]:
    await asyncio.to_thread(check_kinesalite)
    name = stream_name()
    yield name
    await asyncio.to_thread(delete_stream, name)


@pytest.fixture
async def checkpoint_prefix() -> AsyncIterator[str]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        async with asyncio.timeout(5):
            await client.ping()
    except Exception as exc:
        await client.aclose()
        pytest.fail(f"Redis at {REDIS_URL} does not answer ({exc}); run `make services`")
    prefix = f"test-kinesis-{os.urandom(5).hex()}:"
    yield prefix
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
