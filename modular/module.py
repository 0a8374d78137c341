"""The module contract: what a module declares and the hooks the application calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from .application import Application


@dataclass(frozen=True, slots=True)
class ServiceProvider:
    """A service a module offers once it is initialised."""

    name: str
    instance: Any
    description: str = ""


@dataclass(frozen=True, slots=True)
class ServiceDependency:
    """A service a module needs; a required one missing at ``init()`` is an error."""

    name: str
    required: bool = True
    expected_type: type | None = None


class Module:
    """Base class of application modules. Override what you need; every hook is optional.

    ``name`` identifies the module and its config section; ``config_model`` (a pydantic model)
    validates that section at ``init()``; ``dependencies`` names modules initialised first.
    """

    name: ClassVar[str] = ""
    config_model: ClassVar[type[BaseModel] | None] = None
    dependencies: ClassVar[tuple[str, ...]] = ()

    def provides_services(self) -> list[ServiceProvider]:
        return []

    def requires_services(self) -> list[ServiceDependency]:
        return []

    async def init(self, app: Application) -> None:
        """Called in dependency order; the module's config is ``app.config_section(name)``."""

    async def start(self) -> None:
        """Called in dependency order after every module was initialised."""

    async def stop(self) -> None:
        """Called in reverse dependency order; should be idempotent."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.module_name!r}>"

    @property
    def module_name(self) -> str:
        return self.name or type(self).__name__
