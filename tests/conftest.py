"""Fixtures of every test package."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MODULAR_* / DYNACONF_* variable of the caller's shell leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith(("MODULAR_", "DYNACONF_", "SETTINGS_FILE")):
            monkeypatch.delenv(name)
