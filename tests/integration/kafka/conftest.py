"""Fixtures of the Kafka engine tests: the shared broker must answer (a missing broker fails
the test loudly), and each test gets a topic prefix of its own, deleted afterwards."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from .helpers import check_kafka, delete_topics


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    await asyncio.to_thread(check_kafka)
    value = f"test-{uuid.uuid4().hex[:12]}."
    yield value
    await asyncio.to_thread(delete_topics, value)
