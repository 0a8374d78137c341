from __future__ import annotations

import pytest


@pytest.fixture
def log() -> list[str]:
    return []
