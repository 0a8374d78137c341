"""Errors raised by the application container."""

from __future__ import annotations

from .secrets import mask_secrets


class ModularError(Exception):
    """Base class of every error raised by :mod:`modular`."""


class ConfigError(ModularError, ValueError):
    """A configuration value is missing, unknown or invalid; the message names its dotted path."""


class FieldError(ValueError):
    """Raised by a model validator about one of its fields: ``loc`` is the field's path inside
    the model (e.g. ``("engines", 1, "type")``), so the ConfigError names the full dotted path."""

    def __init__(self, loc: tuple[int | str, ...], message: str) -> None:
        self.loc = loc
        super().__init__(message)


class ServiceNotFoundError(ModularError, LookupError):
    """No service is registered under the requested name."""


class DependencyError(ModularError):
    """Modules cannot be ordered: a cycle, or a required module or service is missing."""


class LifecycleError(ModularError):
    """One or more modules failed during a lifecycle phase; ``errors`` holds each failure."""

    def __init__(self, phase: str, errors: list[tuple[str, BaseException]]) -> None:
        self.phase = phase
        self.errors = errors
        # an engine's error may quote its broker's URL, password included
        details = "; ".join(f"{name}: {type(exc).__name__}: {exc}" for name, exc in errors)
        details = mask_secrets(details)
        super().__init__(f"{phase} failed for {len(errors)} module(s): {details}")
