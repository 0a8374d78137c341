"""Modules that record what the application does to them, shared by the modular tests."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel

from modular import Application, Module, ServiceDependency, ServiceProvider


class RecordingModule(Module):
    """Appends ``"<phase>:<name>"`` to a shared log on each hook; fails on request."""

    def __init__(
        self,
        log: list[str],
        *,
        requires: Iterable[ServiceDependency] = (),
        provides: Iterable[ServiceProvider] = (),
        fail_in: str | None = None,
    ) -> None:
        self.log = log
        self.requires = list(requires)
        self.provides = list(provides)
        self.fail_in = fail_in
        self.app: Application | None = None
        self.config: Any = None

    def provides_services(self) -> list[ServiceProvider]:
        return list(self.provides)

    def requires_services(self) -> list[ServiceDependency]:
        return list(self.requires)

    async def init(self, app: Application) -> None:
        self.app = app
        self.config = app.config_section(self.module_name)
        self._record("init")

    async def start(self) -> None:
        self._record("start")

    async def stop(self) -> None:
        self._record("stop")

    def _record(self, phase: str) -> None:
        self.log.append(f"{phase}:{self.module_name}")
        if self.fail_in == phase:
            raise RuntimeError(f"{self.module_name} failed to {phase}")


def make_module(
    name: str,
    log: list[str],
    *,
    dependencies: Iterable[str] = (),
    config_model: type[BaseModel] | None = None,
    requires: Iterable[ServiceDependency] = (),
    provides: Iterable[ServiceProvider] = (),
    fail_in: str | None = None,
) -> RecordingModule:
    """A RecordingModule of a fresh subclass, since name/dependencies are class attributes."""
    attributes = {"name": name, "dependencies": tuple(dependencies), "config_model": config_model}
    cls = cast(type[RecordingModule], type(f"Module_{name}", (RecordingModule,), attributes))
    return cls(log, requires=requires, provides=provides, fail_in=fail_in)


def phase(log: list[str], name: str) -> list[str]:
    """The module names the log recorded for one phase, in order."""
    prefix = f"{name}:"
    return [entry.removeprefix(prefix) for entry in log if entry.startswith(prefix)]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
