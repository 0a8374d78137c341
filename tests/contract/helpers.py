"""Capability marks of the contract suite, and what its tests read from the logs."""

from __future__ import annotations

import logging

import pytest

CAPABILITIES = ("patterns", "ordering", "durability", "cross_process")


def requires(*capabilities: str) -> pytest.MarkDecorator:
    """Collect the test only for engines that declare every one of ``capabilities``."""
    unknown = set(capabilities) - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"unknown capabilities {sorted(unknown)}; known: {CAPABILITIES}")
    return pytest.mark.requires(*capabilities)


def bus_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings and errors the bus logged (not those of a broker's client library, such
    as kafka-python's notes about its own I/O loop)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("modules.eventbus")
    ]
