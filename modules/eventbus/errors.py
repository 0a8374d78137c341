"""Errors raised by the event bus."""

from __future__ import annotations

from modular import ConfigError


class EventBusError(Exception):
    """Base class of the event bus's own errors."""


class EventBusNotStartedError(EventBusError, RuntimeError):
    """``publish`` on a bus that is not started (or already stopped)."""


class EngineUnavailableError(EventBusError, ConnectionError):
    """The engine's broker did not accept the operation within its bounded wait."""


class EventEncodeError(EventBusError, TypeError):
    """A payload or metadata value cannot be put on the wire; nothing was sent."""


class EventDecodeError(EventBusError, ValueError):
    """A message from a broker is not a valid event envelope."""


__all__ = [
    "ConfigError",
    "EngineUnavailableError",
    "EventBusError",
    "EventBusNotStartedError",
    "EventDecodeError",
    "EventEncodeError",
]
