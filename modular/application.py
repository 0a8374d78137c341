"""The application: registers modules, orders them by dependency and runs their lifecycle."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
from collections.abc import Awaitable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, overload

from pydantic import BaseModel

from .config import deep_merge, load_environment_variables, load_settings, section
from .config import validate_section as _validate_section
from .errors import ConfigError, DependencyError, LifecycleError
from .logging_setup import MaskingFilter, configure_logging
from .module import Module, ServiceDependency
from .observer import Observer, ObserverRegistry
from .services import ServiceRegistry
from .tenants import TenantService

logger = logging.getLogger("modular.application")
logger.addFilter(MaskingFilter())  # exception texts may quote a broker URL

T = TypeVar("T")

SOURCE = "modular.application"


class Application:
    """A container of modules, services, configuration and tenants.

    ``config`` is a plain mapping (handy in tests); ``settings_files`` are TOML/YAML/JSON files
    loaded with dynaconf. Layers: files, then ``config``, then ``<envvar_prefix>_*`` environment
    variables (pass ``envvar_prefix=None`` to ignore the environment).
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        settings_files: Iterable[str | os.PathLike[str]] | None = None,
        environment: str | None = None,
        envvar_prefix: str | None = "MODULAR",
    ) -> None:
        files = [Path(f) for f in settings_files or ()]
        self.environment = (
            environment
            or (os.environ.get(f"{envvar_prefix}_ENV") if envvar_prefix else None)
            or "development"
        )
        settings = load_settings(files, environment=self.environment, envvar_prefix=None)
        settings = deep_merge(settings, dict(config or {}))
        if envvar_prefix:
            settings = deep_merge(settings, load_environment_variables(envvar_prefix))
        self.settings: dict[str, Any] = settings
        self.services = ServiceRegistry()
        self.observers = ObserverRegistry()
        self.tenants = TenantService(
            lambda: self.settings,
            self._config_model_for,
            sorted({f.resolve().parent for f in files}),
            self.environment,
        )
        self.tenants.add_listener(self._on_tenant_change)
        self._modules: dict[str, Module] = {}
        self._order: list[Module] = []
        self._configs: dict[str, Any] = {}
        self._initialized = False
        self._started: list[Module] = []
        self._background: set[asyncio.Task[Any]] = set()

    # --- registration -------------------------------------------------------------------

    def register_module(self, module: Module) -> None:
        name = module.module_name
        if name in self._modules:
            raise ValueError(f"a module named {name!r} is already registered")
        if self._initialized:
            raise RuntimeError(f"cannot register module {name!r}: the application is initialised")
        self._modules[name] = module

    @property
    def modules(self) -> list[Module]:
        """Modules in initialisation order once initialised, else in registration order."""
        return list(self._order or self._modules.values())

    def register_service(self, name: str, instance: object, description: str = "") -> None:
        self.services.register(name, instance, description)

    @overload
    def get_service(self, name: str, expected_type: None = None) -> Any: ...
    @overload
    def get_service(self, name: str, expected_type: type[T]) -> T: ...

    def get_service(self, name: str, expected_type: type[T] | None = None) -> Any:
        return self.services.get(name, expected_type)

    def register_observer(
        self, callback: Observer, event_types: Iterable[str] | None = None
    ) -> None:
        self.observers.register(callback, event_types)

    def emit(self, event_type: str, source: str, data: dict[str, Any] | None = None) -> None:
        self.observers.emit(event_type, source, data)

    # --- configuration ------------------------------------------------------------------

    def _config_model_for(self, section_name: str) -> type[BaseModel] | None:
        module = self._modules.get(section_name)
        return module.config_model if module is not None else None

    def config_section(self, name: str) -> Any:
        """The validated model of a module's section (after ``init()``), else the raw mapping."""
        if name in self._configs:
            return self._configs[name]
        model = self._config_model_for(name)
        raw = section(self.settings, name)
        return raw if model is None else _validate_section(model, raw, name)

    # --- lifecycle ----------------------------------------------------------------------

    async def init(self) -> None:
        """Validate every module's config, order the modules, then initialise each in order."""
        if self._initialized:
            return
        # Validate everything first: a bad value fails here, before any module did anything.
        configs = {
            m.module_name: _validate_section(
                m.config_model, section(self.settings, m.module_name), m.module_name
            )
            for m in self._modules.values()
            if m.config_model is not None
        }
        self._configs.update(configs)
        order = self._resolve_order()
        for module in order:
            self._check_required_services(module)
            try:
                await module.init(self)
            except ConfigError:
                raise  # already names the config path; wrapping would hide its type
            except Exception as exc:
                raise LifecycleError("init", [(module.module_name, exc)]) from exc
            for provided in module.provides_services():
                if provided.name not in self.services:
                    self.services.register(provided.name, provided.instance, provided.description)
            self.emit("com.modular.module.initialized", SOURCE, {"module": module.module_name})
        self._order = order
        self._initialized = True

    async def start(self) -> None:
        if not self._initialized:
            await self.init()
        if self._started:
            return
        for module in self._order:
            try:
                await module.start()
            except Exception as exc:
                self._started.reverse()
                stop_errors = await self._stop_modules()
                raise LifecycleError("start", [(module.module_name, exc), *stop_errors]) from exc
            self._started.append(module)
            self.emit("com.modular.module.started", SOURCE, {"module": module.module_name})
        self.emit("com.modular.application.started", SOURCE, {"modules": self._names()})

    async def stop(self) -> None:
        """Stop started modules in reverse order; every one is attempted, errors raised together."""
        if not self._started:
            return
        self._started.reverse()
        errors = await self._stop_modules()
        self.emit("com.modular.application.stopped", SOURCE, {"modules": self._names()})
        await self.observers.drain()
        if errors:
            raise LifecycleError("stop", errors)

    async def _stop_modules(self) -> list[tuple[str, BaseException]]:
        errors: list[tuple[str, BaseException]] = []
        while self._started:
            module = self._started.pop(0)
            try:
                await module.stop()
            except Exception as exc:
                logger.exception("module %s failed to stop", module.module_name)
                errors.append((module.module_name, exc))
            self.emit("com.modular.module.stopped", SOURCE, {"module": module.module_name})
        return errors

    async def __aenter__(self) -> Application:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def run(self, *, log_level: int | str | None = None) -> None:
        """Start, wait for SIGINT or SIGTERM, stop. Blocks.

        Unless the program configured logging itself, log to stderr at ``log_level`` (else
        ``$MODULAR_LOG_LEVEL``, else INFO): see :func:`modular.configure_logging`.
        """
        configure_logging(log_level)
        asyncio.run(self._run_until_signal())

    async def _run_until_signal(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        try:
            await self.start()
            await stopping.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self.stop()

    # --- ordering -----------------------------------------------------------------------

    def _names(self) -> list[str]:
        return [m.module_name for m in self._order]

    def _resolve_order(self) -> list[Module]:
        providers: dict[str, str] = {}
        for module in self._modules.values():
            for provided in _declared_services(module):
                providers[provided] = module.module_name
        edges: dict[str, set[str]] = {name: set() for name in self._modules}
        for name, module in self._modules.items():
            for dep in module.dependencies:
                if dep not in self._modules:
                    raise DependencyError(
                        f"module {name!r} depends on module {dep!r}, which is not registered"
                    )
                edges[name].add(dep)
            for required in module.requires_services():
                edges[name] |= self._service_edge(name, required, providers)
        order: list[str] = []
        remaining = dict(edges)
        while remaining:
            ready = [n for n, deps in remaining.items() if not deps - set(order)]
            if not ready:
                cycle = _find_cycle(remaining)
                raise DependencyError(f"dependency cycle between modules: {' -> '.join(cycle)}")
            for n in ready:
                order.append(n)
                del remaining[n]
        return [self._modules[n] for n in order]

    def _check_required_services(self, module: Module) -> None:
        for required in module.requires_services():
            if required.name not in self.services:
                if required.required:
                    raise DependencyError(
                        f"module {module.module_name!r} requires service {required.name!r}, "
                        "which was not registered by the modules initialised before it"
                    )
                continue
            if required.expected_type is not None:
                instance = self.services.get(required.name)
                if not isinstance(instance, required.expected_type):
                    raise DependencyError(
                        f"module {module.module_name!r} requires service {required.name!r} "
                        f"of type {required.expected_type.__qualname__}, "
                        f"but it is a {type(instance).__qualname__}"
                    )

    def _service_edge(
        self, module: str, required: ServiceDependency, providers: dict[str, str]
    ) -> set[str]:
        provider = providers.get(required.name)
        if provider is not None and provider != module:
            return {provider}
        if provider is None and required.name not in self.services and required.required:
            raise DependencyError(
                f"module {module!r} requires service {required.name!r}, "
                "which no registered module provides"
            )
        return set()

    # --- tenants ------------------------------------------------------------------------

    def _on_tenant_change(self, tenant_id: str, registered: bool) -> None:
        hook_name = "on_tenant_registered" if registered else "on_tenant_removed"
        for module in self.modules:
            hook = getattr(module, hook_name, None)
            if hook is None:
                continue
            result = hook(tenant_id)
            if inspect.isawaitable(result):
                self._run_soon(result)

    def _run_soon(self, awaitable: Awaitable[Any]) -> None:
        async def run() -> None:
            await awaitable

        try:
            task = asyncio.get_running_loop().create_task(run())
        except RuntimeError:
            asyncio.run(run())
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _declared_services(module: Module) -> list[str]:
    """Names of the services ``module`` will provide, for ordering before its ``init()``.

    A module that builds its services in ``init()`` may not be able to list them yet; it is
    then ordered by its declared ``dependencies`` only.
    """
    try:
        return [provided.name for provided in module.provides_services()]
    except Exception:  # attributes set by init() are not there yet
        logger.debug("services of module %s are known only after init()", module.module_name)
        return []


def _find_cycle(edges: dict[str, set[str]]) -> list[str]:
    """One cycle among ``edges`` (every node there has an unresolved dependency)."""
    start = next(iter(edges))
    path: list[str] = []
    node = start
    while node not in path:
        path.append(node)
        node = sorted(d for d in edges[node] if d in edges)[0]
    return [*path[path.index(node) :], node]
