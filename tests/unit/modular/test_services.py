"""The service registry: dotted names, lookups, type checks and module-provided services."""

from __future__ import annotations

import pytest
from dependency_injector import containers, providers

from modular import (
    Application,
    ModularError,
    Module,
    ServiceDependency,
    ServiceNotFoundError,
    ServiceProvider,
    ServiceRegistry,
)

from .helpers import make_module


class Provider:
    """Stands in for a service instance."""


class OtherProvider:
    pass


def test_register_and_get_with_a_dotted_name() -> None:
    app = Application(envvar_prefix=None)
    provider = Provider()
    app.register_service("eventbus.provider", provider, "the bus")

    assert app.get_service("eventbus.provider") is provider
    assert app.get_service("eventbus.provider", Provider) is provider
    assert "eventbus.provider" in app.services
    assert app.services.names() == ["eventbus.provider"]
    assert app.services.description("eventbus.provider") == "the bus"


def test_unknown_service_names_it_and_lists_the_registered_ones() -> None:
    app = Application(envvar_prefix=None)
    app.register_service("eventbus.provider", Provider())
    app.register_service("clock", object())

    with pytest.raises(ServiceNotFoundError) as caught:
        app.get_service("eventbus.provder")

    message = str(caught.value)
    assert "eventbus.provder" in message
    assert "eventbus.provider" in message
    assert "clock" in message
    assert isinstance(caught.value, LookupError)
    assert isinstance(caught.value, ModularError)


def test_unknown_service_in_an_empty_registry() -> None:
    with pytest.raises(ServiceNotFoundError, match="'nothing'"):
        ServiceRegistry().get("nothing")


def test_expected_type_mismatch_is_a_type_error_naming_the_service() -> None:
    app = Application(envvar_prefix=None)
    app.register_service("eventbus.provider", Provider())

    with pytest.raises(TypeError) as caught:
        app.get_service("eventbus.provider", OtherProvider)

    message = str(caught.value)
    assert "eventbus.provider" in message
    assert "Provider" in message
    assert "OtherProvider" in message


def test_expected_type_accepts_subclasses() -> None:
    class Special(Provider):
        pass

    registry = ServiceRegistry()
    special = Special()
    registry.register("svc", special)
    assert registry.get("svc", Provider) is special


def test_registering_a_name_twice_is_an_error() -> None:
    registry = ServiceRegistry()
    first = Provider()
    registry.register("svc", first)
    with pytest.raises(ValueError, match="'svc'"):
        registry.register("svc", Provider())
    assert registry.get("svc") is first


def test_empty_service_name_is_refused() -> None:
    with pytest.raises(ValueError):
        ServiceRegistry().register("", object())


def test_registry_is_a_dependency_injector_container() -> None:
    app = Application(envvar_prefix=None)
    provider = Provider()
    app.register_service("eventbus.provider", provider)

    container = app.services.container
    assert isinstance(container, containers.DynamicContainer)
    held = container.providers["eventbus.provider"]
    assert isinstance(held, providers.Object)
    assert held() is provider


def test_unregister_removes_the_service_and_its_provider() -> None:
    registry = ServiceRegistry()
    registry.register("eventbus.provider", Provider())
    registry.unregister("eventbus.provider")
    registry.unregister("eventbus.provider")  # unknown names are ignored

    assert "eventbus.provider" not in registry
    assert "eventbus.provider" not in registry.container.providers
    with pytest.raises(ServiceNotFoundError):
        registry.get("eventbus.provider")
    registry.register("eventbus.provider", Provider())  # the name is free again


async def test_provided_services_are_registered_after_init_for_later_modules(
    log: list[str],
) -> None:
    provider = Provider()
    seen: dict[str, object] = {}

    class Producer(Module):
        name = "producer"

        def provides_services(self) -> list[ServiceProvider]:
            return [ServiceProvider("producer.api", provider, "the producer")]

        async def init(self, app: Application) -> None:
            seen["during own init"] = "producer.api" in app.services

    class Consumer(Module):
        name = "consumer"

        def requires_services(self) -> list[ServiceDependency]:
            return [ServiceDependency("producer.api", expected_type=Provider)]

        async def init(self, app: Application) -> None:
            seen["consumer got"] = app.get_service("producer.api", Provider)

    app = Application(envvar_prefix=None)
    app.register_module(Consumer())
    app.register_module(Producer())
    await app.init()

    assert seen == {"during own init": False, "consumer got": provider}
    assert app.get_service("producer.api") is provider
    assert app.services.description("producer.api") == "the producer"


async def test_a_service_registered_by_the_app_is_kept_over_a_module_provided_one(
    log: list[str],
) -> None:
    mine = Provider()
    app = Application(envvar_prefix=None)
    app.register_service("shared.thing", mine)
    app.register_module(
        make_module("offers", log, provides=[ServiceProvider("shared.thing", Provider())])
    )
    await app.init()
    assert app.get_service("shared.thing") is mine


async def test_a_service_built_during_init_is_the_one_registered() -> None:
    """The natural pattern: the module builds its service from its config in ``init()``.

    ``ServiceProvider`` is "a service a module offers once it is initialised", so
    ``provides_services()`` must not be asked before ``init()``.
    """

    class Client:
        def __init__(self, url: str) -> None:
            self.url = url

    class ClientModule(Module):
        name = "client"

        async def init(self, app: Application) -> None:
            self.client = Client(app.config_section(self.name)["url"])

        def provides_services(self) -> list[ServiceProvider]:
            return [ServiceProvider("client.http", self.client)]

    app = Application({"client": {"url": "http://example.test"}}, envvar_prefix=None)
    app.register_module(ClientModule())
    await app.init()

    assert app.get_service("client.http", Client).url == "http://example.test"


async def test_required_service_of_the_wrong_type_fails_init(log: list[str]) -> None:
    """``ServiceDependency.expected_type`` is declared by the consumer, so init checks it."""
    app = Application(envvar_prefix=None)
    app.register_module(
        make_module(
            "consumer",
            log,
            requires=[ServiceDependency("producer.api", expected_type=Provider)],
        )
    )
    app.register_module(
        make_module("producer", log, provides=[ServiceProvider("producer.api", "a string")])
    )

    with pytest.raises((TypeError, ModularError)) as caught:
        await app.init()

    assert "producer.api" in str(caught.value)
    assert "consumer" in str(caught.value) or "Provider" in str(caught.value)
    assert "init:consumer" not in log  # never initialised with a wrong dependency
