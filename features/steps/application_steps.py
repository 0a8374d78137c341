"""Steps of features/application.feature: the modular container seen from a user's side.

No ``from __future__ import annotations`` here: behave executes step files outside
``sys.modules``, where pydantic could not resolve postponed annotations of the models below.
"""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, Field
from step_decorators import given, then, when

from modular import (
    Application,
    ConfigError,
    LifecycleError,
    Module,
    ServiceDependency,
    ServiceProvider,
)

# --- the modules the scenarios use ----------------------------------------------------------


class EngineConfig(BaseModel):
    type: Literal["memory", "redis", "kafka", "kinesis"]


class PipelineConfig(BaseModel):
    worker_count: int = 1
    engines: list[EngineConfig] = Field(default_factory=list)


class GreeterConfig(BaseModel):
    greeting: str = "Hi"
    punctuation: str = "."


CONFIG_MODELS: dict[str, type[BaseModel]] = {
    "pipeline": PipelineConfig,
    "greeter": GreeterConfig,
}


class ScenarioModule(Module):
    """A module named at runtime that records its lifecycle in a shared journal."""

    def __init__(self, name: str, journal: list[tuple[str, str]]) -> None:
        self._name = name
        self.journal = journal
        self.depends_on: tuple[str, ...] = ()
        self.provided: list[ServiceProvider] = []
        self.required: list[ServiceDependency] = []
        self.fails_on_stop = False
        self.received: dict[str, Any] = {}

    @property
    def module_name(self) -> str:
        return self._name

    @property
    def dependencies(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.depends_on

    @property
    def config_model(self) -> type[BaseModel] | None:  # type: ignore[override]
        return CONFIG_MODELS.get(self._name)

    def provides_services(self) -> list[ServiceProvider]:
        return self.provided

    def requires_services(self) -> list[ServiceDependency]:
        return self.required

    async def init(self, app: Application) -> None:
        self.journal.append(("init", self._name))
        for dependency in self.required:
            self.received[dependency.name] = app.get_service(dependency.name)

    async def start(self) -> None:
        self.journal.append(("start", self._name))

    async def stop(self) -> None:
        self.journal.append(("stop", self._name))
        if self.fails_on_stop:
            raise RuntimeError(f"{self._name} cannot stop")


# --- helpers --------------------------------------------------------------------------------


def names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def journal(context: Any) -> list[tuple[str, str]]:
    if not hasattr(context, "journal"):
        context.journal = []
    return cast(list[tuple[str, str]], context.journal)


def modules(context: Any) -> dict[str, ScenarioModule]:
    if not hasattr(context, "modules"):
        context.modules = {}
    return cast(dict[str, ScenarioModule], context.modules)


def module(context: Any, name: str) -> ScenarioModule:
    known = modules(context)
    if name not in known:
        known[name] = ScenarioModule(name, journal(context))
    return known[name]


def settings_dir(context: Any) -> Path:
    if not hasattr(context, "settings_dir"):
        directory = Path(tempfile.mkdtemp(prefix="modular-feature-"))
        context.cleanups.append(lambda: shutil.rmtree(directory, ignore_errors=True))
        context.settings_dir = directory
    return cast(Path, context.settings_dir)


def build_app(context: Any, settings_files: list[Path] | None = None) -> Application:
    app = Application(
        settings_files=settings_files,
        envvar_prefix=getattr(context, "envvar_prefix", None),
    )
    for registered in modules(context).values():
        app.register_module(registered)
    context.app = app
    return app


def application(context: Any) -> Application:
    if not hasattr(context, "app"):
        build_app(context)
    return cast(Application, context.app)


def phase_order(context: Any, phase: str) -> list[str]:
    return [name for recorded, name in journal(context) if recorded == phase]


def assert_no_error(context: Any) -> None:
    error = getattr(context, "error", None)
    assert error is None, f"the application failed: {error!r}"


async def stop_quietly(app: Application) -> None:
    with contextlib.suppress(LifecycleError):  # the scenario already looked at it
        await app.stop()


# --- Given ----------------------------------------------------------------------------------


@given("an application with these modules:")
def given_modules_table(context: Any) -> None:
    for row in context.table:
        module(context, row["module"]).depends_on = tuple(names(row["depends on"]))


@given('an application with a "{name}" module that requires the service "{service}"')
def given_module_requiring(context: Any, name: str, service: str) -> None:
    module(context, name).required.append(ServiceDependency(service))


@given('a "{name}" module that provides the service "{service}"')
def given_module_providing(context: Any, name: str, service: str) -> None:
    provider = module(context, name)
    provider.provided.append(ServiceProvider(service, object()))


@given('the "{name}" module fails when stopped')
def given_module_fails_on_stop(context: Any, name: str) -> None:
    modules(context)[name].fails_on_stop = True


@given('a settings file "{relative}":')
def given_settings_file(context: Any, relative: str) -> None:
    path = settings_dir(context) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(context.text, encoding="utf-8")
    if not hasattr(context, "settings_files"):
        context.settings_files = [path]  # tenant files beside it are found, not listed


@given('the environment variable "{variable}" is "{value}"')
def given_environment_variable(context: Any, variable: str, value: str) -> None:
    previous = os.environ.get(variable)
    os.environ[variable] = value

    def restore() -> None:
        if previous is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = previous

    context.cleanups.append(restore)
    context.envvar_prefix = "MODULAR"


@given('an application using the settings with the modules "{module_names}"')
def given_app_with_settings(context: Any, module_names: str) -> None:
    for name in names(module_names):
        module(context, name)
    build_app(context, context.settings_files)


# --- When -----------------------------------------------------------------------------------


@when("the application starts")
def when_app_starts(context: Any) -> None:
    app = application(context)
    context.cleanups.append(lambda: stop_quietly(app))
    context.error = None
    try:
        context.loop.run_until_complete(app.start())
    except Exception as exc:
        context.error = exc


@when("the application stops")
def when_app_stops(context: Any) -> None:
    assert_no_error(context)
    try:
        context.loop.run_until_complete(application(context).stop())
    except Exception as exc:
        context.error = exc


@when('the tenants "{tenant_ids}" are registered')
def when_tenants_registered(context: Any, tenant_ids: str) -> None:
    for tenant_id in names(tenant_ids):
        application(context).tenants.register_tenant(tenant_id)


# --- Then -----------------------------------------------------------------------------------


@then('the modules were {phase_word} in the order "{expected}"')
def then_phase_order(context: Any, phase_word: str, expected: str) -> None:
    phase = {"initialised": "init", "started": "start", "stopped": "stop"}[phase_word]
    if phase != "stop":
        assert_no_error(context)
    actual = phase_order(context, phase)
    assert actual == names(expected), f"{phase_word} in the order {actual}"


@then('the "{first}" module was initialised before the "{second}" module')
def then_initialised_before(context: Any, first: str, second: str) -> None:
    assert_no_error(context)
    order = phase_order(context, "init")
    assert first in order and second in order, f"initialised: {order}"
    assert order.index(first) < order.index(second), f"initialised in the order {order}"


@then('the "{consumer}" module holds the very service the "{producer}" module provided')
def then_consumer_holds_service(context: Any, consumer: str, producer: str) -> None:
    provided = modules(context)[producer].provided
    assert provided, f"{producer} provides nothing"
    received = modules(context)[consumer].received
    for service in provided:
        assert service.name in received, f"{consumer} received {sorted(received)}"
        assert received[service.name] is service.instance


@then('the application lists the service "{service}"')
def then_app_lists_service(context: Any, service: str) -> None:
    app = application(context)
    assert service in app.services.names(), app.services.names()
    assert service in app.services.container.providers


@then('starting fails with a config error naming "{path}" and "{value}"')
def then_config_error(context: Any, path: str, value: str) -> None:
    error = getattr(context, "error", None)
    assert isinstance(error, ConfigError), f"expected a ConfigError, got {error!r}"
    assert path in str(error), str(error)
    assert repr(value) in str(error), str(error)


@then("no module was initialised")
def then_nothing_initialised(context: Any) -> None:
    assert journal(context) == [], journal(context)


@then('the "{name}" config has {workers:d} workers and {engines:d} engine')
def then_pipeline_config(context: Any, name: str, workers: int, engines: int) -> None:
    assert_no_error(context)
    config = application(context).config_section(name)
    assert isinstance(config, PipelineConfig), repr(config)
    assert config.worker_count == workers, config
    assert type(config.worker_count) is int
    assert len(config.engines) == engines, config


@then('the greeter of tenant "{tenant}" says "{greeting}" with "{punctuation}"')
def then_tenant_greeter(context: Any, tenant: str, greeting: str, punctuation: str) -> None:
    assert_no_error(context)
    config = application(context).tenants.tenant_config(tenant, "greeter")
    assert isinstance(config, GreeterConfig), repr(config)
    assert (config.greeting, config.punctuation) == (greeting, punctuation), config


@then('the greeter without a tenant says "{greeting}" with "{punctuation}"')
def then_base_greeter(context: Any, greeting: str, punctuation: str) -> None:
    config = application(context).config_section("greeter")
    assert isinstance(config, GreeterConfig), repr(config)
    assert (config.greeting, config.punctuation) == (greeting, punctuation), config


@then('stopping fails with a lifecycle error naming "{name}"')
def then_lifecycle_error(context: Any, name: str) -> None:
    error = getattr(context, "error", None)
    assert isinstance(error, LifecycleError), f"expected a LifecycleError, got {error!r}"
    assert error.phase == "stop"
    assert [failed for failed, _ in error.errors] == [name], error.errors
