"""A tour of the container: two modules with a dependency, a service, layered config, tenants.

Run with ``python -m examples.container_tour`` (``MODULAR_ENV=production`` changes the greeting;
``MODULAR_GREETER__PUNCTUATION=...`` overrides one key from the environment).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from modular import (
    Application,
    CloudEvent,
    Module,
    ServiceDependency,
    ServiceProvider,
    configure_logging,
)

HERE = Path(__file__).parent


class ClockConfig(BaseModel):
    timezone: str = "UTC"


class Clock:
    def now(self) -> str:
        return datetime.now(UTC).strftime("%H:%M:%S")


class ClockModule(Module):
    name = "clock"
    config_model = ClockConfig

    def provides_services(self) -> list[ServiceProvider]:
        return [ServiceProvider("clock.service", Clock(), "wall-clock time")]


class GreeterConfig(BaseModel):
    greeting: str = "Hi"
    punctuation: str = "."


class GreeterModule(Module):
    name = "greeter"
    config_model = GreeterConfig

    def requires_services(self) -> list[ServiceDependency]:
        return [ServiceDependency("clock.service", expected_type=Clock)]

    async def init(self, app: Application) -> None:
        self.app = app
        self.clock = app.get_service("clock.service", Clock)
        self.config: GreeterConfig = app.config_section(self.name)

    def greet(self, who: str, tenant: str | None = None) -> str:
        cfg = self.config if tenant is None else self.app.tenants.tenant_config(tenant, self.name)
        return f"[{self.clock.now()}] {cfg.greeting}, {who}{cfg.punctuation}"


async def main() -> None:
    app = Application(settings_files=[HERE / "settings.toml"])
    greeter = GreeterModule()
    app.register_module(greeter)  # registered first, yet initialised after the clock
    app.register_module(ClockModule())

    def show(event: CloudEvent) -> None:
        print(f"  observed {event.type} {event.data}")

    app.register_observer(
        show, ["com.modular.application.started", "com.modular.module.initialized"]
    )
    async with app:
        print("modules in order:", [m.module_name for m in app.modules])
        print("environment:", app.environment)
        print(greeter.greet("world"))
        app.tenants.register_tenant("acme")
        app.tenants.register_tenant("globex")
        print("acme:  ", greeter.greet("world", tenant="acme"))
        print("globex:", greeter.greet("world", tenant="globex"))


if __name__ == "__main__":
    configure_logging()  # INFO to stderr; MODULAR_LOG_LEVEL=WARNING quietens it
    asyncio.run(main())
