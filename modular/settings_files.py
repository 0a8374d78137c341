"""Reading settings files with dynaconf, and saying clearly which file is wrong and where.

dynaconf's parsers raise their own exceptions (ruamel's ``DuplicateKeyError``, tomllib's
``TOMLDecodeError``, ``JSONDecodeError``) without the file's name; here each becomes a
ConfigError naming the file, the line and, where the parser says it, the key. The parsers'
own texts may quote the file (a duplicated ``password:`` is shown with both values), so only
their short problem statement is kept, and it is masked.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .secrets import mask_secrets

SUFFIXES = (".toml", ".yaml", ".yml", ".json")

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_YAML_DUPLICATE = re.compile(r'found duplicate key "(.*?)"')


def plain(value: Any) -> Any:
    """dynaconf's Box values as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def check_settings_file(path: Path) -> None:
    """Refuse a missing file or one of a type that would be read as empty."""
    if not path.is_file():
        raise ConfigError(f"settings file {str(path)!r} does not exist")
    if path.suffix.lower() not in SUFFIXES:
        raise ConfigError(
            f"settings file {str(path)!r}: unsupported file type {path.suffix!r}; "
            f"use one of {', '.join(SUFFIXES)}"
        )


def load_files(files: list[Path]) -> dict[str, Any]:
    """The files merged in order (no environment variables); a ConfigError if one is bad."""
    if not files:
        return {}
    for path in files:
        if path.suffix.lower() == ".json":
            _check_json(path)  # dynaconf lets a repeated key silently replace the first
    try:
        return _load(files)
    except Exception as exc:
        for path in files:  # the exception does not say which file it came from
            try:
                _load([path])
            except Exception as own:
                raise ConfigError(describe_parse_error(path, own)) from None
        names = ", ".join(repr(str(f)) for f in files)
        raise ConfigError(
            f"settings files {names} could not be loaded: {mask_secrets(str(exc))}"
        ) from None


def _load(files: list[Path]) -> dict[str, Any]:
    from dynaconf import Dynaconf

    # loaders=[] keeps environment variables out of this layer; they are layered last.
    settings = Dynaconf(
        settings_files=[str(f) for f in files],
        environments=False,
        merge_enabled=True,
        loaders=[],
    )
    return typing.cast(dict[str, Any], plain(settings.as_dict()))


def _check_json(path: Path) -> None:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise ConfigError(f"settings file {str(path)!r}: duplicate key {key!r}")
            seen[key] = value
        return seen

    try:
        json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(describe_parse_error(path, exc)) from None


def describe_parse_error(path: Path, exc: Exception) -> str:
    """What is wrong with a settings file, from its parser's exception."""
    where = f"settings file {str(path)!r}"
    if isinstance(exc, json.JSONDecodeError):
        return f"{where}, line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"
    problem = getattr(exc, "problem", None)
    if isinstance(problem, str):  # ruamel.yaml's MarkedYAMLError and DuplicateKeyError
        return where + _describe_yaml(path, problem, getattr(exc, "problem_mark", None))
    message = str(exc)
    position = _TOML_POSITION.search(message)
    if position is not None:
        line, column = int(position[1]), int(position[2])
        problem = message[: position.start()]
        if problem == "Cannot overwrite a value":
            problem = f"duplicate key {_toml_key(path, line)!r}"
        return f"{where}, line {line}, column {column}: invalid TOML: {mask_secrets(problem)}"
    return f"{where}: {type(exc).__name__}: {mask_secrets(message)}"


def _describe_yaml(path: Path, problem: str, mark: Any) -> str:
    line, column = getattr(mark, "line", None), getattr(mark, "column", None)
    at = f", line {line + 1}, column {(column or 0) + 1}" if line is not None else ""
    duplicate = _YAML_DUPLICATE.match(problem)
    if duplicate is None:
        return f"{at}: invalid YAML: {mask_secrets(problem)}"
    key = duplicate[1]  # the rest of the problem quotes both values: never shown
    first = _first_yaml_line(path, key, line, column) if line is not None else None
    earlier = f" (first at line {first})" if first is not None else ""
    return f"{at}: duplicate key {key!r}{earlier}; a key may appear once in a mapping"


def _first_yaml_line(path: Path, key: str, line: int, column: int | None) -> int | None:
    """The line (1-based) where ``key`` first appears at the duplicate's indentation."""
    indent = column or 0
    starts = tuple(f"{q}{key}{q}:" for q in ("", '"', "'"))
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()[:line]
    for number, text in enumerate(lines, start=1):
        if text[indent:].startswith(starts) and text[:indent].strip(" -") == "":
            return number
    return None


def _toml_key(path: Path, line: int) -> str:
    """The key assigned on ``line`` of a TOML file (``a.b = 1`` -> ``a.b``)."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    return text.split("=", 1)[0].strip()
