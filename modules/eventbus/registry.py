"""Engine types by name: the built-ins, imported only when used, and registered factories."""

from __future__ import annotations

import difflib
import importlib
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from modular import ConfigError, validate_section

if TYPE_CHECKING:
    from .engines.base import Engine

EngineFactory = Callable[[Mapping[str, Any], str], "Engine"]

# Built-in engines: "module:Class", imported on first use so that, e.g., the memory engine
# works without any broker client installed.
_BUILTIN: dict[str, str] = {
    "memory": "modules.eventbus.engines.memory:MemoryEngine",
    "durable-memory": "modules.eventbus.engines.memory:DurableMemoryEngine",
    "custom": "modules.eventbus.engines.custom:CustomEngine",
    "redis": "modules.eventbus.engines.redis:RedisEngine",
    "kinesis": "modules.eventbus.engines.kinesis:KinesisEngine",
    "kafka": "modules.eventbus.engines.kafka:KafkaEngine",
}

_factories: dict[str, EngineFactory] = {}
_lock = threading.Lock()


def register_engine(type_name: str, factory: EngineFactory, *, replace: bool = False) -> None:
    """Make ``type_name`` usable in ``engines[].type``.

    ``factory(config, name)`` receives the engine's config map (top-level engine settings
    overlaid by the engine's own ``config``) and its name, and returns an :class:`Engine`.
    """
    if not type_name or not isinstance(type_name, str):
        raise ValueError(f"engine type name must be a non-empty string, got {type_name!r}")
    with _lock:
        if not replace and (type_name in _factories or type_name in _BUILTIN):
            raise ValueError(
                f"engine type {type_name!r} is already registered; pass replace=True to replace it"
            )
        _factories[type_name] = factory


def unregister_engine(type_name: str) -> None:
    with _lock:
        _factories.pop(type_name, None)


def known_engine_types() -> set[str]:
    with _lock:
        return set(_BUILTIN) | set(_factories)


def create_engine(type_name: str, name: str, config: Mapping[str, Any], path: str) -> Engine:
    """A new engine; every problem is a ConfigError naming ``path``."""
    with _lock:
        factory = _factories.get(type_name)
    if factory is not None:
        try:
            return factory(config, name)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}.config: engine {name!r} ({type_name}): {exc}") from exc
    target = _BUILTIN.get(type_name)
    if target is None:
        known = sorted(known_engine_types())
        close = difflib.get_close_matches(type_name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{path}.type: unknown engine type {type_name!r}{hint} (known: {', '.join(known)})"
        )
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{path}.type: engine type {type_name!r} needs a package that is not installed "
            f"({exc.name}); install it with: pip install 'modular-eventbus[{type_name}]'"
        ) from exc
    engine_class = getattr(module, class_name)
    settings = validate_section(engine_class.config_model, config, f"{path}.config")
    engine: Engine = engine_class(name, settings)
    return engine
