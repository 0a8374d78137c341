"""Capability marks of the contract suite."""

from __future__ import annotations

import pytest

CAPABILITIES = ("patterns", "ordering", "durability", "cross_process")


def requires(*capabilities: str) -> pytest.MarkDecorator:
    """Collect the test only for engines that declare every one of ``capabilities``."""
    unknown = set(capabilities) - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"unknown capabilities {sorted(unknown)}; known: {CAPABILITIES}")
    return pytest.mark.requires(*capabilities)
