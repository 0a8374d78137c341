"""The bus as a command's settings describe it, and what every command shares: errors the
user can act on, starting and stopping the bus around the work, tables."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modular import Application, CloudEvent, ConfigError, LifecycleError

from ..errors import EngineUnavailableError
from ..module import EventBusModule

PROG = "eventbus"
ENGINE_FAILED = "com.modular.eventbus.engine.failed"


class CommandError(Exception):
    """A failure the user can act on; printed as one line, exit status 1."""


@dataclass
class Session:
    """An application holding one EventBusModule, built from the command's settings."""

    app: Application
    bus: EventBusModule
    failures: dict[str, str] = field(default_factory=dict)  # engine -> why it did not start

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Session:
        files = [Path(f) for f in args.settings or ()]
        if not args.settings and Path("settings.toml").is_file():
            files = [Path("settings.toml")]
        for path in files:
            if not path.is_file():
                raise CommandError(f"settings file not found: {path}")
        try:
            # absolute: dynaconf looks for relative names elsewhere than the working directory
            app = Application(settings_files=[f.resolve() for f in files], environment=args.env)
        except ConfigError:
            raise  # it names the file already
        except Exception as exc:
            raise CommandError(f"cannot load {', '.join(map(str, files))}: {exc}") from exc
        bus = EventBusModule()
        app.register_module(bus)
        session = cls(app, bus)
        app.register_observer(session._engine_failed, [ENGINE_FAILED])
        return session

    def _engine_failed(self, record: CloudEvent) -> None:
        self.failures[str(record.data.get("engine"))] = str(record.data.get("error"))

    async def init(self) -> None:
        try:
            await self.app.init()
        except LifecycleError as exc:
            raise CommandError(_lifecycle_message(exc)) from exc

    async def start(self) -> None:
        try:
            await self.app.start()
        except LifecycleError as exc:
            raise CommandError(_lifecycle_message(exc)) from exc

    async def stop(self) -> None:
        try:
            await self.app.stop()
        except LifecycleError as exc:
            raise CommandError(_lifecycle_message(exc)) from exc

    async def engine_states(self) -> dict[str, tuple[str, str | None]]:
        """``{engine: (state, last error)}``: the bus's own health report when it has one
        (``bus.health()``), else "up" for every engine that started and "down" with the
        error it failed to start with."""
        health = getattr(self.bus, "health", None)
        if callable(health):
            report = health()
            if inspect.isawaitable(report):
                report = await report
            states: dict[str, tuple[str, str | None]] = {}
            for name, h in report.items():
                # a "stopped" engine that failed to start: the error it failed with
                error = getattr(h, "error", None) or self.failures.get(name)
                states[name] = (
                    str(getattr(h, "state", "up")),
                    None if error is None else str(error),
                )
            return states
        return {
            name: ("down", self.failures[name]) if name in self.failures else ("up", None)
            for name in self.bus.engines()
        }

    def explain(self, exc: EngineUnavailableError) -> str:
        """The error, with the start failure of the engine it names (once)."""
        message = str(exc)
        for name, error in self.failures.items():
            if repr(name) in message and error not in message:
                return f"{message} ({error})"
        return message


def engine_type(bus: EventBusModule, name: str) -> str:
    """The configured ``type`` of an engine (its class name for a tenant's own engine)."""
    for spec in bus.config.effective_engines():
        if spec.name == name:
            return spec.type
    return type(bus.engines()[name]).__name__


def _lifecycle_message(exc: LifecycleError) -> str:
    return "; ".join(f"{type(e).__name__}: {e}" for _, e in exc.errors) or str(exc)


async def running(args: argparse.Namespace, work: Callable[[Session], Awaitable[int]]) -> int:
    """Start the bus, run ``work``, always stop the bus."""
    session = Session.from_args(args)
    await session.start()
    try:
        return await work(session)
    except EngineUnavailableError as exc:
        raise CommandError(session.explain(exc)) from exc
    finally:
        await session.stop()


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[str(h) for h in headers], *([_cell(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(row, widths, numeric, strict=True)
        ]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 100 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)
