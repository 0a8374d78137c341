"""Tenants: ids, per-tenant config overlays and the current tenant of a context."""

from __future__ import annotations

import contextvars
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from .config import deep_merge, load_file, section, validate_section

M = TypeVar("M", bound=BaseModel)

# The variable behind current_tenant(); hot paths may call its .get() directly.
current_tenant_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "modular_current_tenant", default=None
)
_INVALID_TENANT = re.compile(r"[\s/]")


def validate_tenant_id(tenant_id: object) -> str:
    if not isinstance(tenant_id, str) or not tenant_id or _INVALID_TENANT.search(tenant_id):
        raise ValueError(
            f"invalid tenant id {tenant_id!r}: must be a non-empty string without whitespace or '/'"
        )
    return tenant_id


def current_tenant() -> str | None:
    """The tenant of the current context, or None."""
    return current_tenant_var.get()


@contextmanager
def tenant_context(tenant_id: str | None) -> Iterator[str | None]:
    """Run the body as ``tenant_id``; tasks created inside inherit it."""
    token = current_tenant_var.set(None if tenant_id is None else validate_tenant_id(tenant_id))
    try:
        yield tenant_id
    finally:
        current_tenant_var.reset(token)


TenantListener = Callable[[str, bool], None]


class TenantService:
    """Registered tenants and their config overlays.

    A tenant's overlay for a section comes from, in increasing precedence: the
    ``[tenants.<id>.<section>]`` table of the settings, a ``tenants/<id>.toml`` (or .yaml/.json)
    file beside a settings file, and the ``config`` given to :meth:`register_tenant`.
    """

    def __init__(
        self,
        settings: Callable[[], Mapping[str, Any]],
        models: Callable[[str], type[BaseModel] | None],
        settings_dirs: list[Path],
        environment: str,
    ) -> None:
        self._settings = settings
        self._models = models
        self._settings_dirs = settings_dirs
        self._environment = environment
        self._overlays: dict[str, dict[str, Any]] = {}
        self._listeners: list[TenantListener] = []
        self._lock = threading.Lock()

    def add_listener(self, listener: TenantListener) -> None:
        """``listener(tenant_id, registered)`` is called on every register/remove."""
        self._listeners.append(listener)

    def register_tenant(self, tenant_id: str, config: Mapping[str, Any] | None = None) -> None:
        validate_tenant_id(tenant_id)
        overlay = deep_merge(self._file_overlay(tenant_id), dict(config or {}))
        with self._lock:
            if tenant_id in self._overlays:
                raise ValueError(f"tenant {tenant_id!r} is already registered")
            self._overlays[tenant_id] = overlay
        for listener in list(self._listeners):
            listener(tenant_id, True)

    def remove_tenant(self, tenant_id: str) -> None:
        with self._lock:
            if self._overlays.pop(tenant_id, None) is None:
                raise KeyError(f"tenant {tenant_id!r} is not registered")
        for listener in list(self._listeners):
            listener(tenant_id, False)

    def tenants(self) -> list[str]:
        return sorted(self._overlays)

    def __contains__(self, tenant_id: object) -> bool:
        return tenant_id in self._overlays

    def overlay(self, tenant_id: str, section_name: str) -> dict[str, Any]:
        """The tenant's raw overlay for one section (settings table, file, then API)."""
        if tenant_id not in self._overlays:
            raise KeyError(f"tenant {tenant_id!r} is not registered")
        from_settings = section(section(self._settings(), "tenants"), tenant_id)
        merged = deep_merge(from_settings, self._overlays[tenant_id])
        return section(merged, section_name)

    def tenant_config(self, tenant_id: str, section_name: str) -> Any:
        """The section with the tenant's overlay deep-merged, validated like the base section.

        Returns the section's model when a registered module declares one, else a mapping.
        """
        base = section(self._settings(), section_name)
        merged = deep_merge(base, self.overlay(tenant_id, section_name))
        model = self._models(section_name)
        if model is None:
            return merged
        return validate_section(model, merged, f"tenants.{tenant_id}.{section_name}")

    def _file_overlay(self, tenant_id: str) -> dict[str, Any]:
        overlay: dict[str, Any] = {}
        for directory in self._settings_dirs:
            for suffix in (".toml", ".yaml", ".yml", ".json"):
                path = directory / "tenants" / f"{tenant_id}{suffix}"
                if path.is_file():
                    overlay = deep_merge(overlay, load_file(path, self._environment))
        return overlay
