"""The service registry: named singletons held in a ``dependency_injector`` container."""

from __future__ import annotations

import threading
from typing import Any, TypeVar, overload

from dependency_injector import containers, providers

from .errors import ServiceNotFoundError

T = TypeVar("T")


class ServiceRegistry:
    """Services by name. Names are kept exactly as given, dots included (``"eventbus.provider"``).

    Each service is an ``Object`` provider inside a ``DynamicContainer``, so the registry can be
    handed to code that already speaks dependency-injector (``registry.container``).
    """

    def __init__(self) -> None:
        self.container = containers.DynamicContainer()
        self._providers: dict[str, providers.Provider[Any]] = {}
        self._descriptions: dict[str, str] = {}
        self._lock = threading.Lock()

    def register(self, name: str, instance: object, description: str = "") -> None:
        if not name or not isinstance(name, str):
            raise ValueError(f"service name must be a non-empty string, got {name!r}")
        with self._lock:
            if name in self._providers:
                raise ValueError(f"service {name!r} is already registered")
            provider: providers.Provider[Any] = providers.Object(instance)
            self._providers[name] = provider
            self._descriptions[name] = description
            # A dotted name is not an attribute name, so it is stored with setattr as given.
            self.container.set_provider(name, provider)

    def unregister(self, name: str) -> None:
        with self._lock:
            if self._providers.pop(name, None) is not None:
                self._descriptions.pop(name, None)
                delattr(self.container, name)

    def __contains__(self, name: object) -> bool:
        return name in self._providers

    def names(self) -> list[str]:
        return sorted(self._providers)

    def description(self, name: str) -> str:
        return self._descriptions.get(name, "")

    @overload
    def get(self, name: str, expected_type: None = None) -> Any: ...
    @overload
    def get(self, name: str, expected_type: type[T]) -> T: ...

    def get(self, name: str, expected_type: type[T] | None = None) -> Any:
        provider = self._providers.get(name)
        if provider is None:
            known = ", ".join(self.names()) or "none"
            raise ServiceNotFoundError(f"no service named {name!r}; registered services: {known}")
        instance = provider()
        if expected_type is not None and not isinstance(instance, expected_type):
            raise TypeError(
                f"service {name!r} is a {type(instance).__qualname__}, "
                f"not a {expected_type.__qualname__}"
            )
        return instance
