"""Tenants: registration, config overlays from three sources, hooks and the current tenant."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel

from modular import (
    Application,
    ConfigError,
    Module,
    current_tenant,
    tenant_context,
    validate_tenant_id,
)

from .helpers import make_module, write


class Limits(BaseModel):
    rate: int = 10
    burst: int = 20


class GreeterConfig(BaseModel):
    greeting: str = "Hello"
    punctuation: str = "."
    signature: str = "-- base"
    farewell: str = "Bye"
    limits: Limits = Limits()


SETTINGS = """
[default.greeter]
greeting = "Hello"
punctuation = "!"
signature = "-- base"
farewell = "Bye"

[default.greeter.limits]
rate = 100
burst = 200

[tenants.acme.greeter]
greeting = "from settings table"
punctuation = "from settings table"
signature = "from settings table"

[tenants.acme.greeter.limits]
rate = 1
"""

TENANT_FILE = """
[greeter]
greeting = "from tenant file"
punctuation = "from tenant file"
"""


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    settings = write(tmp_path / "settings.toml", SETTINGS)
    write(tmp_path / "tenants" / "acme.toml", TENANT_FILE)
    return settings


def greeter_app(log: list[str], settings_file: Path, *, with_model: bool = True) -> Application:
    app = Application(settings_files=[settings_file], envvar_prefix=None)
    model = GreeterConfig if with_model else None
    app.register_module(make_module("greeter", log, config_model=model))
    return app


# --- registration ---------------------------------------------------------------------------


def test_register_list_and_remove_tenants() -> None:
    app = Application(envvar_prefix=None)
    assert app.tenants.tenants() == []

    app.tenants.register_tenant("globex")
    app.tenants.register_tenant("acme")
    assert app.tenants.tenants() == ["acme", "globex"]
    assert "acme" in app.tenants

    app.tenants.remove_tenant("acme")
    assert app.tenants.tenants() == ["globex"]
    assert "acme" not in app.tenants


def test_registering_a_tenant_twice_is_an_error() -> None:
    app = Application(envvar_prefix=None)
    app.tenants.register_tenant("acme")
    with pytest.raises(ValueError, match="acme"):
        app.tenants.register_tenant("acme")


def test_removing_an_unknown_tenant_is_an_error() -> None:
    app = Application(envvar_prefix=None)
    with pytest.raises(KeyError, match="ghost"):
        app.tenants.remove_tenant("ghost")


@pytest.mark.parametrize("bad", ["", " ", "   ", "two words", "tab\there", "a/b", "/", "new\nline"])
def test_invalid_tenant_ids_are_refused(bad: str) -> None:
    app = Application(envvar_prefix=None)
    with pytest.raises(ValueError, match="invalid tenant id"):
        app.tenants.register_tenant(bad)
    with pytest.raises(ValueError, match="invalid tenant id"):
        validate_tenant_id(bad)
    with pytest.raises(ValueError), tenant_context(bad):
        pass
    assert app.tenants.tenants() == []
    assert current_tenant() is None


@pytest.mark.parametrize("good", ["acme", "acme-eu", "tenant_42", "Acme.Corp"])
def test_valid_tenant_ids(good: str) -> None:
    assert validate_tenant_id(good) == good


def test_tenant_config_of_an_unregistered_tenant_is_an_error(
    log: list[str], settings_file: Path
) -> None:
    app = greeter_app(log, settings_file)
    with pytest.raises(KeyError, match="acme"):
        app.tenants.tenant_config("acme", "greeter")


# --- overlays -------------------------------------------------------------------------------


async def test_overlays_merge_with_api_over_file_over_settings_table(
    log: list[str], settings_file: Path
) -> None:
    app = greeter_app(log, settings_file)
    await app.init()
    app.tenants.register_tenant("acme", {"greeter": {"greeting": "from api"}})

    config = app.tenants.tenant_config("acme", "greeter")

    assert isinstance(config, GreeterConfig)
    assert config.greeting == "from api"  # API beats file and table
    assert config.punctuation == "from tenant file"  # file beats table
    assert config.signature == "from settings table"  # table beats the base
    assert config.farewell == "Bye"  # base, no overlay touches it
    assert config.limits == Limits(rate=1, burst=200)  # nested tables merge key by key


async def test_overlay_does_not_change_the_base_section_or_other_tenants(
    log: list[str], settings_file: Path
) -> None:
    app = greeter_app(log, settings_file)
    await app.init()
    base_before = app.config_section("greeter").model_copy(deep=True)
    settings_before = repr(app.settings)

    app.tenants.register_tenant("acme", {"greeter": {"limits": {"burst": 5}}})
    app.tenants.register_tenant("globex")
    acme = app.tenants.tenant_config("acme", "greeter")

    assert acme.limits == Limits(rate=1, burst=5)
    assert app.config_section("greeter") == base_before
    assert app.config_section("greeter").limits == Limits(rate=100, burst=200)
    assert repr(app.settings) == settings_before
    assert app.tenants.tenant_config("globex", "greeter") == base_before


def test_tenant_config_without_a_model_is_the_merged_mapping(
    log: list[str], settings_file: Path
) -> None:
    app = greeter_app(log, settings_file, with_model=False)
    app.tenants.register_tenant("acme", {"greeter": {"greeting": "from api"}})

    config = app.tenants.tenant_config("acme", "greeter")
    assert isinstance(config, dict)
    assert config["greeting"] == "from api"
    assert config["punctuation"] == "from tenant file"
    assert config["farewell"] == "Bye"
    assert config["limits"] == {"rate": 1, "burst": 200}


def test_api_overlay_keys_match_whatever_their_spelling(
    log: list[str], settings_file: Path
) -> None:
    app = greeter_app(log, settings_file)
    app.tenants.register_tenant("globex", {"GREETER": {"PUNCTUATION": "?"}})
    config = app.tenants.tenant_config("globex", "greeter")
    assert (config.greeting, config.punctuation) == ("Hello", "?")


def test_tenant_without_any_overlay_gets_the_base_section(
    log: list[str], settings_file: Path
) -> None:
    app = greeter_app(log, settings_file)
    app.tenants.register_tenant("initech")
    assert app.tenants.tenant_config("initech", "greeter") == app.config_section("greeter")


def test_bad_tenant_overlay_value_names_the_tenant_path(
    log: list[str], settings_file: Path
) -> None:
    app = greeter_app(log, settings_file)
    app.tenants.register_tenant("acme", {"greeter": {"limits": {"rate": "lots"}}})
    with pytest.raises(ConfigError) as caught:
        app.tenants.tenant_config("acme", "greeter")
    assert "tenants.acme.greeter.limits.rate" in str(caught.value)
    assert "'lots'" in str(caught.value)


def test_tenant_file_in_yaml_is_found(log: list[str], tmp_path: Path) -> None:
    settings = write(tmp_path / "settings.toml", "[default.greeter]\ngreeting = 'Hello'\n")
    write(tmp_path / "tenants" / "umbrella.yaml", "greeter:\n  greeting: Hi from yaml\n")
    app = greeter_app(log, settings)
    app.tenants.register_tenant("umbrella")
    assert app.tenants.tenant_config("umbrella", "greeter").greeting == "Hi from yaml"


# --- hooks ----------------------------------------------------------------------------------


async def test_tenant_aware_modules_are_told_about_tenants() -> None:
    calls: list[tuple[str, str]] = []

    class Aware(Module):
        name = "aware"

        def on_tenant_registered(self, tenant_id: str) -> None:
            calls.append(("registered", tenant_id))

        def on_tenant_removed(self, tenant_id: str) -> None:
            calls.append(("removed", tenant_id))

    class Unaware(Module):
        name = "unaware"

    app = Application(envvar_prefix=None)
    app.register_module(Unaware())
    app.register_module(Aware())
    await app.start()

    app.tenants.register_tenant("acme")
    app.tenants.register_tenant("globex")
    app.tenants.remove_tenant("acme")

    assert calls == [("registered", "acme"), ("registered", "globex"), ("removed", "acme")]
    await app.stop()


async def test_async_tenant_hooks_are_run() -> None:
    registered = asyncio.Event()
    removed = asyncio.Event()
    seen: list[str] = []

    class AsyncAware(Module):
        name = "async-aware"

        async def on_tenant_registered(self, tenant_id: str) -> None:
            seen.append(f"+{tenant_id}")
            registered.set()

        async def on_tenant_removed(self, tenant_id: str) -> None:
            seen.append(f"-{tenant_id}")
            removed.set()

    app = Application(envvar_prefix=None)
    app.register_module(AsyncAware())
    async with app:
        app.tenants.register_tenant("acme")
        await asyncio.wait_for(registered.wait(), 5)
        app.tenants.remove_tenant("acme")
        await asyncio.wait_for(removed.wait(), 5)

    assert seen == ["+acme", "-acme"]


# --- the current tenant ---------------------------------------------------------------------


def test_tenant_context_nests_and_resets() -> None:
    assert current_tenant() is None
    with tenant_context("acme") as entered:
        assert entered == "acme"
        assert current_tenant() == "acme"
        with tenant_context("globex"):
            assert current_tenant() == "globex"
            with tenant_context(None):
                assert current_tenant() is None
            assert current_tenant() == "globex"
        assert current_tenant() == "acme"
    assert current_tenant() is None


def test_tenant_context_resets_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError), tenant_context("acme"):
        raise RuntimeError("boom")
    assert current_tenant() is None


async def test_tenant_propagates_into_tasks_created_inside() -> None:
    async def tenant_seen_later(started: asyncio.Event) -> str | None:
        await started.wait()
        return current_tenant()

    started = asyncio.Event()
    with tenant_context("acme"):
        inside = asyncio.create_task(tenant_seen_later(started))
    outside = asyncio.create_task(tenant_seen_later(started))
    # The task keeps the tenant of its creation, even though the context has been left.
    started.set()
    assert await inside == "acme"
    assert await outside is None


async def test_concurrent_tasks_keep_their_own_tenants() -> None:
    both_inside = asyncio.Barrier(2)

    async def as_tenant(tenant_id: str) -> tuple[str | None, str | None]:
        with tenant_context(tenant_id):
            before = current_tenant()
            await both_inside.wait()  # the other task has set its tenant by now
            return before, current_tenant()

    results = await asyncio.gather(as_tenant("acme"), as_tenant("globex"))
    assert list(results) == [("acme", "acme"), ("globex", "globex")]
    assert current_tenant() is None
