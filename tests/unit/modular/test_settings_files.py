"""A settings file that cannot be parsed is a ConfigError naming the file, the line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from modular import Application, ConfigError

from .helpers import write

# The seed's migration example pasted as one file: two top-level ``eventbus:`` sections.
TWO_EVENTBUS_SECTIONS = """\
eventbus:
  engine: memory
  workerCount: 5

eventbus:
  engines:
    - name: memory
      type: memory
"""


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        Application(settings_files=[path], envvar_prefix=None)
    assert caught.value.__cause__ is None  # not a parser traceback behind it
    return str(caught.value)


def test_yaml_duplicate_top_level_section(tmp_path: Path) -> None:
    path = write(tmp_path / "settings.yaml", TWO_EVENTBUS_SECTIONS)
    assert load_error(path) == (
        f"settings file {str(path)!r}, line 5, column 1: duplicate key 'eventbus' "
        "(first at line 1); a key may appear once in a mapping"
    )


def test_yaml_duplicate_nested_key_never_shows_its_values(tmp_path: Path) -> None:
    path = write(
        tmp_path / "settings.yaml",
        "eventbus:\n  engines:\n    - name: r\n      config:\n"
        "        password: first-secret\n        password: second-secret\n",
    )
    message = load_error(path)
    assert message == (
        f"settings file {str(path)!r}, line 6, column 9: duplicate key 'password' "
        "(first at line 5); a key may appear once in a mapping"
    )


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path / "settings.yml", "eventbus:\n  workerCount: [1, 2\n")
    message = load_error(path)
    assert message.startswith(f"settings file {str(path)!r}, line 3, column 1: invalid YAML: ")
    assert "expected ',' or ']'" in message


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path / "settings.toml", "[eventbus]\nworkerCount = \n")
    assert load_error(path) == (
        f"settings file {str(path)!r}, line 2, column 15: invalid TOML: Invalid value"
    )


def test_toml_duplicate_key_names_the_key(tmp_path: Path) -> None:
    path = write(
        tmp_path / "settings.toml",
        '[eventbus]\nworkerCount = 2\npassword = "a"\npassword = "b-secret"\n',
    )
    assert load_error(path) == (
        f"settings file {str(path)!r}, line 4, column 22: invalid TOML: duplicate key 'password'"
    )


def test_toml_duplicate_table(tmp_path: Path) -> None:
    path = write(tmp_path / "settings.toml", "[eventbus]\na = 1\n\n[eventbus]\nb = 2\n")
    message = load_error(path)
    assert message.startswith(f"settings file {str(path)!r}, line 4, column 10: invalid TOML: ")
    assert "('eventbus',) twice" in message


def test_json_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path / "settings.json", '{"eventbus": {"workerCount": 2,}}\n')
    assert load_error(path) == (
        f"settings file {str(path)!r}, line 1, column 32: invalid JSON: "
        "Expecting property name enclosed in double quotes"
    )


def test_json_duplicate_key(tmp_path: Path) -> None:
    """JSON parsers keep the last of two equal keys; a whole section would vanish silently."""
    path = write(
        tmp_path / "settings.json",
        '{"eventbus": {"workerCount": 5},\n "eventbus": {"engine": "memory"}}\n',
    )
    assert load_error(path) == f"settings file {str(path)!r}: duplicate key 'eventbus'"


def test_the_bad_file_is_named_among_several(tmp_path: Path) -> None:
    good = write(tmp_path / "base.toml", "[eventbus]\nworkerCount = 2\n")
    bad = write(tmp_path / "override.yaml", TWO_EVENTBUS_SECTIONS)
    with pytest.raises(ConfigError) as caught:
        Application(settings_files=[good, bad], envvar_prefix=None)
    assert str(caught.value).startswith(f"settings file {str(bad)!r}, line 5")
    assert str(good) not in str(caught.value)


def test_a_bad_secrets_file_is_named(tmp_path: Path) -> None:
    settings = write(tmp_path / "settings.toml", "[eventbus]\nworkerCount = 2\n")
    secrets = write(tmp_path / ".secrets.toml", '[eventbus]\npassword = "unterminated\n')
    with pytest.raises(ConfigError) as caught:
        Application(settings_files=[settings], envvar_prefix=None)
    assert str(caught.value).startswith(f"settings file {str(secrets)!r}, line 2")
    assert "unterminated" not in str(caught.value)


def test_a_file_of_an_unsupported_type_is_refused(tmp_path: Path) -> None:
    """dynaconf would read it as empty: the settings would silently be the defaults."""
    path = write(tmp_path / "settings.txt", "[eventbus]\nworkerCount = 2\n")
    assert load_error(path) == (
        f"settings file {str(path)!r}: unsupported file type '.txt'; "
        "use one of .toml, .yaml, .yml, .json"
    )


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    assert load_error(path) == f"settings file {str(path)!r} does not exist"


def test_a_bad_tenant_file_is_named(tmp_path: Path) -> None:
    settings = write(tmp_path / "settings.toml", "[eventbus]\nworkerCount = 2\n")
    tenant = write(tmp_path / "tenants" / "acme.yaml", TWO_EVENTBUS_SECTIONS)
    app = Application(settings_files=[settings], envvar_prefix=None)
    with pytest.raises(ConfigError) as caught:
        app.tenants.register_tenant("acme")
        app.tenants.tenant_config("acme", "eventbus")
    assert str(caught.value).startswith(f"settings file {str(tenant)!r}, line 5")
