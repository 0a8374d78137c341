"""Layered configuration: files, environments, secrets, environment variables, validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from modular import Application, ConfigError, FieldError, ModularError, validate_section

from .helpers import make_module, write


class EngineConfig(BaseModel):
    name: str = "main"
    type: Literal["memory", "redis", "kafka"] = "memory"


class SvcConfig(BaseModel):
    worker_count: int = 1
    greeting: str = "hello"
    timeout: float = 1.0
    engines: list[EngineConfig] = Field(default_factory=list)


class SecretConfig(BaseModel):
    user: str = "admin"
    password: SecretStr = SecretStr("")
    port: int = 5432


SETTINGS_TOML = """
[default.svc]
workerCount = 2
greeting = "hello from default"
timeout = 3.5

[production.svc]
workerCount = 16
"""


def svc_app(
    log: list[str],
    *,
    model: type[BaseModel] = SvcConfig,
    name: str = "svc",
    config: dict[str, Any] | None = None,
    settings_files: list[Path] | None = None,
    environment: str | None = None,
    envvar_prefix: str | None = "MODULAR",
) -> Application:
    """An application with one module ``name`` whose section is validated by ``model``."""
    app = Application(
        config,
        settings_files=settings_files,
        environment=environment,
        envvar_prefix=envvar_prefix,
    )
    app.register_module(make_module(name, log, config_model=model))
    return app


# --- sources --------------------------------------------------------------------------------


async def test_config_mapping_without_files(log: list[str]) -> None:
    app = svc_app(log, config={"svc": {"workerCount": 4, "greeting": "hi"}}, envvar_prefix=None)
    await app.init()

    config = app.config_section("svc")
    assert isinstance(config, SvcConfig)
    assert config.worker_count == 4
    assert config.greeting == "hi"
    assert config.timeout == 1.0  # the model's default


def test_no_config_at_all_gives_the_model_defaults(log: list[str]) -> None:
    app = svc_app(log, envvar_prefix=None)
    assert app.config_section("svc") == SvcConfig()


def test_toml_default_environment_is_development(log: list[str], tmp_path: Path) -> None:
    settings = write(tmp_path / "settings.toml", SETTINGS_TOML)
    app = svc_app(log, settings_files=[settings], envvar_prefix=None)

    assert app.environment == "development"
    config = app.config_section("svc")
    assert (config.worker_count, config.greeting, config.timeout) == (2, "hello from default", 3.5)


def test_toml_environment_selected_by_argument_merges_key_by_key(
    log: list[str], tmp_path: Path
) -> None:
    settings = write(tmp_path / "settings.toml", SETTINGS_TOML)
    app = svc_app(log, settings_files=[settings], environment="production", envvar_prefix=None)

    config = app.config_section("svc")
    assert config.worker_count == 16  # from [production.svc]
    assert config.greeting == "hello from default"  # the rest from [default.svc]
    assert config.timeout == 3.5


def test_toml_environment_selected_by_modular_env(
    log: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = write(tmp_path / "settings.toml", SETTINGS_TOML)
    monkeypatch.setenv("MODULAR_ENV", "production")
    app = svc_app(log, settings_files=[settings])

    assert app.environment == "production"
    config = app.config_section("svc")
    assert config.worker_count == 16
    assert config.greeting == "hello from default"
    assert "ENV" not in app.settings  # MODULAR_ENV selects; it is not a setting


def test_environment_argument_wins_over_modular_env(
    log: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = write(tmp_path / "settings.toml", SETTINGS_TOML)
    monkeypatch.setenv("MODULAR_ENV", "production")
    app = svc_app(log, settings_files=[settings], environment="development")
    assert app.config_section("svc").worker_count == 2


def test_yaml_file_without_environment_sections(log: list[str], tmp_path: Path) -> None:
    settings = write(
        tmp_path / "settings.yaml",
        "svc:\n  workerCount: 7\n  engines:\n    - name: a\n      type: redis\n",
    )
    app = svc_app(log, settings_files=[settings], envvar_prefix=None)

    config = app.config_section("svc")
    assert config.worker_count == 7
    assert config.engines == [EngineConfig(name="a", type="redis")]


def test_json_file(log: list[str], tmp_path: Path) -> None:
    settings = write(
        tmp_path / "settings.json",
        json.dumps({"default": {"svc": {"worker_count": 5, "greeting": "json"}}}),
    )
    app = svc_app(log, settings_files=[settings], envvar_prefix=None)

    config = app.config_section("svc")
    assert (config.worker_count, config.greeting) == (5, "json")


def test_later_settings_files_override_earlier_ones(log: list[str], tmp_path: Path) -> None:
    first = write(tmp_path / "a" / "settings.toml", "[svc]\nworkerCount = 1\ngreeting = 'a'\n")
    second = write(tmp_path / "b" / "override.yaml", "svc:\n  workerCount: 9\n")
    app = svc_app(log, settings_files=[first, second], envvar_prefix=None)

    config = app.config_section("svc")
    assert (config.worker_count, config.greeting) == (9, "a")


def test_secrets_file_beside_the_settings_is_layered_on_top(log: list[str], tmp_path: Path) -> None:
    settings = write(
        tmp_path / "settings.toml",
        "[default.db]\nuser = 'app'\npassword = 'placeholder'\nport = 5432\n",
    )
    write(tmp_path / ".secrets.toml", "[default.db]\npassword = 's3cr3t-value'\n")
    app = svc_app(log, name="db", model=SecretConfig, settings_files=[settings], envvar_prefix=None)

    config = app.config_section("db")
    assert config.password.get_secret_value() == "s3cr3t-value"
    assert (config.user, config.port) == ("app", 5432)  # untouched keys remain
    assert "s3cr3t-value" not in repr(config)
    assert "s3cr3t-value" not in str(config)


def test_missing_settings_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        Application(settings_files=[missing], envvar_prefix=None)


def test_environment_variable_overrides_a_camel_case_file_key_with_an_int(
    log: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = write(tmp_path / "settings.toml", SETTINGS_TOML)
    monkeypatch.setenv("MODULAR_SVC__WORKERCOUNT", "8")
    app = svc_app(log, settings_files=[settings])

    raw = app.settings
    raw_section = next(v for k, v in raw.items() if k.lower() == "svc")
    overridden = [v for k, v in raw_section.items() if k.lower() == "workercount"]
    assert overridden == [8]  # one key, not two spellings of it
    assert type(overridden[0]) is int

    config = app.config_section("svc")
    assert config.worker_count == 8
    assert config.greeting == "hello from default"


def test_environment_variables_are_ignored_without_a_prefix(
    log: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = write(tmp_path / "settings.toml", SETTINGS_TOML)
    monkeypatch.setenv("MODULAR_SVC__WORKERCOUNT", "8")
    monkeypatch.setenv("MODULAR_ENV", "production")
    app = svc_app(log, settings_files=[settings], envvar_prefix=None)
    assert app.environment == "development"
    assert app.config_section("svc").worker_count == 2


def test_custom_envvar_prefix(
    log: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = write(tmp_path / "settings.toml", SETTINGS_TOML)
    monkeypatch.setenv("MYAPP_SVC__GREETING", "from env")
    monkeypatch.setenv("MODULAR_SVC__GREETING", "wrong prefix")
    app = svc_app(log, settings_files=[settings], envvar_prefix="MYAPP")
    assert app.config_section("svc").greeting == "from env"


def test_layers_files_then_config_then_environment(
    log: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = write(tmp_path / "settings.toml", SETTINGS_TOML)
    monkeypatch.setenv("MODULAR_SVC__TIMEOUT", "9.5")
    app = svc_app(
        log,
        settings_files=[settings],
        config={"svc": {"worker_count": 3, "timeout": 4.0}},
    )
    config = app.config_section("svc")
    assert config.worker_count == 3  # config= over the file
    assert config.timeout == 9.5  # environment over config=
    assert config.greeting == "hello from default"  # file


@pytest.mark.parametrize("key", ["workerCount", "workercount", "worker_count", "WORKERCOUNT"])
def test_any_spelling_of_a_key_reaches_the_field(log: list[str], key: str) -> None:
    app = svc_app(log, config={"svc": {key: 12}}, envvar_prefix=None)
    assert app.config_section("svc").worker_count == 12


@pytest.mark.parametrize("section", ["svc", "SVC", "Svc"])
def test_any_spelling_of_a_section_name_is_found(log: list[str], section: str) -> None:
    app = svc_app(log, config={section: {"greeting": "found"}}, envvar_prefix=None)
    assert app.config_section("svc").greeting == "found"


def test_nested_list_of_models_accepts_any_spelling(log: list[str]) -> None:
    app = svc_app(
        log,
        config={"svc": {"ENGINES": [{"Name": "a", "TYPE": "kafka"}]}},
        envvar_prefix=None,
    )
    assert app.config_section("svc").engines == [EngineConfig(name="a", type="kafka")]


# --- validation -----------------------------------------------------------------------------


async def test_bad_value_fails_init_naming_the_dotted_path_and_value(
    log: list[str], tmp_path: Path
) -> None:
    settings = write(
        tmp_path / "settings.toml",
        """
        [[default.svc.engines]]
        name = "fast"
        type = "memory"

        [[default.svc.engines]]
        name = "slow"
        type = "carrier-pigeon"
        """.replace("\n        ", "\n"),
    )
    app = Application(settings_files=[settings], envvar_prefix=None)  # not validated yet
    app.register_module(make_module("first", log))
    app.register_module(make_module("svc", log, config_model=SvcConfig, dependencies=["first"]))

    with pytest.raises(ConfigError) as caught:
        await app.start()

    message = str(caught.value)
    assert "svc.engines[1].type" in message
    assert "'carrier-pigeon'" in message
    assert "engines[0]" not in message
    assert isinstance(caught.value, ModularError)
    assert isinstance(caught.value, ValueError)
    assert log == []  # nothing was initialised, let alone started


async def test_bad_scalar_value_names_path_and_value(log: list[str]) -> None:
    app = svc_app(log, config={"svc": {"workerCount": "many"}}, envvar_prefix=None)
    with pytest.raises(ConfigError) as caught:
        await app.init()
    assert "svc.worker_count" in str(caught.value)
    assert "'many'" in str(caught.value)


async def test_bad_value_from_the_environment_fails_init(
    log: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODULAR_SVC__TIMEOUT", "soon")
    app = svc_app(log)
    with pytest.raises(ConfigError) as caught:
        await app.init()
    assert "svc.timeout" in str(caught.value)
    assert "soon" in str(caught.value)


async def test_every_bad_value_is_reported(log: list[str]) -> None:
    app = svc_app(log, config={"svc": {"workerCount": "x", "timeout": "y"}}, envvar_prefix=None)
    with pytest.raises(ConfigError) as caught:
        await app.init()
    assert "svc.worker_count" in str(caught.value)
    assert "svc.timeout" in str(caught.value)


async def test_unknown_key_names_it_and_suggests_the_closest(log: list[str]) -> None:
    app = svc_app(log, config={"svc": {"workerCont": 3}}, envvar_prefix=None)
    with pytest.raises(ConfigError) as caught:
        await app.start()
    message = str(caught.value)
    assert "workerCont" in message
    assert "did you mean 'workerCount'" in message
    assert log == []


async def test_unknown_key_in_a_nested_model_names_its_path(log: list[str]) -> None:
    app = svc_app(
        log,
        config={"svc": {"engines": [{"name": "a"}, {"name": "b", "tpye": "redis"}]}},
        envvar_prefix=None,
    )
    with pytest.raises(ConfigError) as caught:
        await app.init()
    assert "svc.engines[1].tpye" in str(caught.value)
    assert "did you mean 'type'" in str(caught.value)


async def test_unknown_key_from_the_environment_suggests_the_field(
    log: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODULAR_SVC__WORKERCONT", "3")
    app = svc_app(log)
    with pytest.raises(ConfigError) as caught:
        await app.init()
    assert "WORKERCONT" in str(caught.value)
    assert "did you mean 'workerCount'" in str(caught.value)


def test_model_allowing_extra_keys_keeps_them(log: list[str]) -> None:
    class Open(BaseModel):
        model_config = ConfigDict(extra="allow")
        known: int = 0

    app = svc_app(log, model=Open, config={"svc": {"known": 1, "other": 2}}, envvar_prefix=None)
    config = app.config_section("svc")
    assert config.known == 1
    assert config.model_extra == {"other": 2}


async def test_config_section_returns_the_model_validated_at_init(log: list[str]) -> None:
    app = svc_app(log, config={"svc": {"greeting": "hey"}}, envvar_prefix=None)
    await app.init()

    module = app.modules[0]
    assert isinstance(module.config, SvcConfig)  # type: ignore[attr-defined]
    assert app.config_section("svc") is module.config  # type: ignore[attr-defined]
    assert app.config_section("svc").greeting == "hey"


def test_section_of_a_module_without_model_is_the_raw_mapping(log: list[str]) -> None:
    app = Application({"plain": {"a": 1, "nested": {"b": 2}}}, envvar_prefix=None)
    assert app.config_section("plain") == {"a": 1, "nested": {"b": 2}}
    assert app.config_section("absent") == {}


def test_section_that_is_not_a_table_is_a_config_error(log: list[str]) -> None:
    app = svc_app(log, config={"svc": 3}, envvar_prefix=None)
    with pytest.raises(ConfigError, match="svc"):
        app.config_section("svc")


def test_field_error_from_a_model_validator_names_the_full_path() -> None:
    class Bus(BaseModel):
        engines: list[EngineConfig] = Field(default_factory=list)

        @model_validator(mode="after")
        def names_are_unique(self) -> Bus:
            seen: set[str] = set()
            for index, engine in enumerate(self.engines):
                if engine.name in seen:
                    raise FieldError(("engines", index, "name"), f"duplicate name {engine.name!r}")
                seen.add(engine.name)
            return self

    engines = [{"name": "a"}, {"name": "b"}, {"name": "a", "type": "redis"}]
    with pytest.raises(ConfigError) as caught:
        validate_section(Bus, {"engines": engines}, "bus")
    assert str(caught.value) == "bus.engines[2].name: duplicate name 'a'"


# --- secrets --------------------------------------------------------------------------------


async def test_secret_value_never_appears_in_errors_or_repr(log: list[str]) -> None:
    app = svc_app(
        log,
        name="db",
        model=SecretConfig,
        config={"db": {"password": "hunter2-secret", "port": "not-a-port"}},
        envvar_prefix=None,
    )
    with pytest.raises(ConfigError) as caught:
        await app.init()
    assert "db.port" in str(caught.value)
    assert "hunter2-secret" not in str(caught.value)
    assert "hunter2-secret" not in repr(caught.value)

    good = validate_section(SecretConfig, {"password": "hunter2-secret"}, "db")
    assert "hunter2-secret" not in repr(good)
    assert good.password.get_secret_value() == "hunter2-secret"


async def test_invalid_secret_value_is_masked_in_the_error(log: list[str]) -> None:
    app = svc_app(
        log, name="db", model=SecretConfig, config={"db": {"password": 918273}}, envvar_prefix=None
    )
    with pytest.raises(ConfigError) as caught:
        await app.init()
    assert "db.password" in str(caught.value)
    assert "918273" not in str(caught.value)


def test_invalid_secret_field_is_masked_whatever_its_name() -> None:
    """Masking must follow the field's type (SecretStr), not guess from its name."""

    class Broker(BaseModel):
        dsn: SecretStr

    with pytest.raises(ConfigError) as caught:
        validate_section(Broker, {"dsn": 918273}, "broker")
    assert "broker.dsn" in str(caught.value)
    assert "918273" not in str(caught.value)


def test_model_level_error_does_not_reveal_a_secret() -> None:
    """A model validator's error has the whole section as its input: secrets included."""

    class Login(BaseModel):
        user: str
        password: SecretStr

        @model_validator(mode="after")
        def user_is_not_admin(self) -> Login:
            if self.user == "admin":
                raise ValueError("the admin account may not be used")
            return self

    with pytest.raises(ConfigError) as caught:
        validate_section(Login, {"user": "admin", "password": "hunter2-secret"}, "login")
    assert "admin account" in str(caught.value)
    assert "hunter2-secret" not in str(caught.value)


# --- shapes the key matching must understand ------------------------------------------------


def test_dict_of_models_field_validates_each_value() -> None:
    class Routes(BaseModel):
        engines: dict[str, EngineConfig] = Field(default_factory=dict)

    config = validate_section(
        Routes, {"engines": {"fast": {"type": "memory"}, "durable": {"type": "kafka"}}}, "bus"
    )
    assert config.engines["durable"].type == "kafka"


def test_field_with_an_alias_accepts_the_alias() -> None:
    class Mail(BaseModel):
        sender: str = Field(alias="from")

    assert validate_section(Mail, {"from": "me@example.test"}, "mail").sender == "me@example.test"
