"""Layered configuration: dynaconf loads the layers, pydantic validates each module's section.

Layers, later ones win, merged key by key:

1. top-level keys of every settings file (a file without environment sections),
2. ``[default]`` / ``[global]`` sections, then the selected environment's section,
3. ``.secrets.<ext>`` files beside the settings files (same rules),
4. environment variables ``<PREFIX>_SECTION__KEY=value``.

Keys match whatever their case or underscores: ``workerCount``, ``WORKERCOUNT`` and
``worker_count`` are one key (dynaconf upper-cases what comes from the environment).
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError

from .errors import ConfigError, FieldError
from .secrets import is_secret_key, mask_secrets
from .settings_files import check_settings_file, load_files, plain

M = TypeVar("M", bound=BaseModel)

ENVIRONMENT_SECTIONS = frozenset({"default", "global", "development", "production", "testing"})
SECRET_NAMES = (".secrets.toml", ".secrets.yaml", ".secrets.yml", ".secrets.json")


def normalize_key(key: object) -> str:
    """The form under which two spellings of one key compare equal."""
    return str(key).replace("_", "").replace("-", "").lower()


def find_key(mapping: Mapping[str, Any], key: str) -> str | None:
    """The key of ``mapping`` that is spelled like ``key`` up to case and underscores."""
    if key in mapping:
        return key
    wanted = normalize_key(key)
    return next((k for k in mapping if normalize_key(k) == wanted), None)


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """A new mapping: ``overlay`` over ``base``, nested mappings merged key by key.

    A key keeps the spelling it first had, so that error messages speak the user's words.
    """
    merged: dict[str, Any] = dict(base)
    for key, value in overlay.items():
        existing = find_key(merged, key)
        if existing is None:
            merged[key] = value
        elif isinstance(value, Mapping) and isinstance(merged[existing], Mapping):
            merged[existing] = deep_merge(merged[existing], value)
        else:
            merged[existing] = value
    return merged


def _select_environment(raw: Mapping[str, Any], environment: str) -> dict[str, Any]:
    sections = ENVIRONMENT_SECTIONS | {environment.lower()}
    result: dict[str, Any] = {k: v for k, v in raw.items() if k.lower() not in sections}
    for name in ("global", "default", environment.lower()):
        for key, value in raw.items():
            if key.lower() == name and isinstance(value, Mapping):
                result = deep_merge(result, value)
    return result


def load_environment_variables(prefix: str) -> dict[str, Any]:
    from dynaconf import Dynaconf

    values = plain(Dynaconf(environments=False, envvar_prefix=prefix).as_dict())
    values.pop("ENV", None)  # <PREFIX>_ENV selects the environment; it is not a setting
    return typing.cast(dict[str, Any], values)


def load_settings(
    settings_files: Iterable[str | os.PathLike[str]] | None,
    *,
    environment: str | None = None,
    envvar_prefix: str | None = "MODULAR",
) -> dict[str, Any]:
    """Every layer merged into one plain mapping (see the module docstring)."""
    files = [Path(f) for f in settings_files or ()]
    for f in files:
        check_settings_file(f)
    env = environment or (os.environ.get(f"{envvar_prefix}_ENV") if envvar_prefix else None)
    env = env or "development"
    secrets = [f.parent / name for f in files for name in SECRET_NAMES]
    merged = _select_environment(load_files(files), env)
    merged = deep_merge(merged, _select_environment(load_files(_existing(secrets)), env))
    if envvar_prefix:
        merged = deep_merge(merged, load_environment_variables(envvar_prefix))
    return merged


def _existing(paths: list[Path]) -> list[Path]:
    seen: list[Path] = []
    for p in paths:
        if p.is_file() and p not in seen:
            seen.append(p)
    return seen


def load_file(path: str | os.PathLike[str], environment: str = "development") -> dict[str, Any]:
    """One settings file, its environment sections applied; used for tenant overlay files."""
    return _select_environment(load_files([Path(path)]), environment)


# --- validation -------------------------------------------------------------------------


def _format_path(path: str, loc: Iterable[int | str]) -> str:
    out = path
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# Spelled in capitals inside a camelCase key, as the Go settings do: eventTTL, externalBrokerURL.
_ACRONYMS = frozenset({"id", "ttl", "url"})


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.upper() if p in _ACRONYMS else p.title() for p in rest)


def _canonical_value(annotation: Any, value: Any, path: str) -> Any:
    """``value`` with the keys of every model inside it canonicalised, following
    ``annotation`` through ``Model``, ``list[...]``, ``dict[str, ...]`` and unions."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return canonical_keys(annotation, value, path)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple, set, frozenset) and args and isinstance(value, list | tuple):
        return [_canonical_value(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict and len(args) == 2 and isinstance(value, Mapping):
        return {k: _canonical_value(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if args and origin is not None and origin not in (list, tuple, set, frozenset, dict):
        # a union (``Model | None``) or an Annotated type: the first model-bearing member
        for arg in args:
            converted = _canonical_value(arg, value, path)
            if converted is not value:
                return converted
    return value


def canonical_keys(model: type[BaseModel], data: Any, path: str) -> Any:
    """``data`` with its keys renamed to what ``model`` accepts, recursively.

    Keys match a field's name or alias whatever their case or underscores. An unknown key
    raises ConfigError naming it and the closest known key, unless the model accepts extra
    keys.
    """
    if not isinstance(data, Mapping):
        return data
    by_normal: dict[str, str] = {}
    for name, field in model.model_fields.items():
        by_normal[normalize_key(name)] = name
        if field.alias:
            by_normal[normalize_key(field.alias)] = name
    allow_extra = model.model_config.get("extra") == "allow"
    out: dict[str, Any] = {}
    for key, value in data.items():
        field_name = by_normal.get(normalize_key(key))
        if field_name is None:
            if allow_extra:
                out[str(key)] = value
                continue
            raise ConfigError(_unknown_key(model, str(key), path, map(str, data)))
        field = model.model_fields[field_name]
        sub_path = _format_path(path, [field_name])
        # pydantic accepts a field by its alias (by name only with populate_by_name)
        out[field.alias or field_name] = _canonical_value(field.annotation, value, sub_path)
    return out


def _unknown_key(model: type[BaseModel], key: str, path: str, siblings: Iterable[str]) -> str:
    spell = _camel if _writes_camel_case(key, siblings) else str
    known = [spell(name) for name in model.model_fields]
    by_normal = {normalize_key(k): k for k in known}
    close = difflib.get_close_matches(normalize_key(key), by_normal, n=1, cutoff=0.6)
    hint = f"; did you mean {by_normal[close[0]]!r}?" if close else ""
    return (
        f"{_format_path(path, [key])}: unknown key {key!r}{hint} (known keys: {', '.join(known)})"
    )


def _writes_camel_case(key: str, siblings: Iterable[str]) -> bool:
    """Whether the user spells keys in camelCase: as ``key`` shows (``workerCont``,
    ``WORKERCONT`` from the environment) or, for a one-word key, as its siblings do."""

    def style(name: str) -> str | None:
        if "_" in name or "-" in name:
            return "snake"
        return "camel" if name != name.lower() else None

    own = style(key)
    if own is not None:
        return own == "camel"
    return any(style(str(other)) == "camel" for other in siblings)


def validate_section(model: type[M], data: Mapping[str, Any] | None, path: str) -> M:
    """Validate ``data`` (the section found at ``path``) into ``model``.

    Every failure is a ConfigError naming the dotted path of the bad value and the value
    (once, and never a secret: passwords inside URLs are masked too).
    """
    try:
        return model.model_validate(canonical_keys(model, data or {}, path))
    except ValidationError as exc:
        # path -> (loc, the bad value or _UNSHOWN, messages): the members of a union each
        # reject the value; that is one problem, its value shown once.
        problems: dict[str, tuple[tuple[int | str, ...], Any, list[str]]] = {}
        for err in exc.errors(include_url=False):
            loc, message = _field_loc(model, tuple(err["loc"])), err["msg"]
            message, value = message.removeprefix("Value error, "), err.get("input", _UNSHOWN)
            cause = err.get("ctx", {}).get("error")
            if isinstance(cause, FieldError):  # its message is written to be shown as it is
                loc, message, value = loc + cause.loc, str(cause), _UNSHOWN
            elif err["type"] == "missing":
                value = _UNSHOWN
            problems.setdefault(_format_path(path, loc), (loc, value, []))[2].append(message)
        lines = []
        for where, (loc, value, messages) in problems.items():
            message = ", or ".join(dict.fromkeys(messages))
            if value is not _UNSHOWN:
                message += _shown(model, loc, value, message)
            lines.append(f"{where}: {message}")
        raise ConfigError(mask_secrets("; ".join(lines))) from None


_UNSHOWN = object()


def _field_loc(model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """``loc`` without the names pydantic gives the members of a union (``int``,
    ``literal['auto']``): they are no part of the path the user wrote."""
    out: list[int | str] = []
    annotation: Any = model
    for part in loc:
        annotation = _without_none(annotation)
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = _field_named(annotation, part)
            annotation = field.annotation if field is not None else None
        elif origin in (list, tuple, set, frozenset) and args:
            annotation = args[0]
        elif origin is dict and len(args) == 2:
            annotation = args[1]
        elif origin in (typing.Union, types.UnionType) and isinstance(part, str):
            annotation = None  # which member the rest of ``loc`` is inside is not known
            continue
        else:
            annotation = None
        out.append(part)
    return tuple(out)


def _without_none(annotation: Any) -> Any:
    """``X`` for ``Annotated[X, ...]`` and ``X | None`` (pydantic names no member there)."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _without_none(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _without_none(members[0])
    return annotation


def _field_named(model: type[BaseModel], part: int | str) -> Any:
    for name, field in model.model_fields.items():
        if part in (name, field.alias):
            return field
    return None


def _shown(model: type[BaseModel], loc: tuple[int | str, ...], value: Any, message: str) -> str:
    """The offending value for an error message, unless ``message`` already shows it: never a
    secret, nor a whole table (which may hold one)."""
    if isinstance(value, Mapping | list | tuple):
        return ""
    names = [part for part in loc if isinstance(part, str)]
    last = names[-1] if names else ""
    if is_secret_key(last) or normalize_key(last) in _secret_fields(model):
        return " (got '***')"
    shown = repr(value)
    return "" if _already_shown(value, shown, message) else f" (got {mask_secrets(shown)})"


def _already_shown(value: Any, shown: str, message: str) -> bool:
    """Whether a validator's own message shows the value ("expected a duration ..., got 'abc'",
    "cannot use redis://h:x"). A number counts only after "got": "greater than 0" is no value."""
    if f"got {shown}" in message:
        return True
    if not isinstance(value, str) or not value:
        return False
    whole_word = rf"(?<![\w'\"]){re.escape(value)}(?![\w'\"])"
    return shown in message or re.search(whole_word, message) is not None


def _secret_fields(model: type[BaseModel], seen: frozenset[type] = frozenset()) -> set[str]:
    """Normalised names of the SecretStr/SecretBytes fields of ``model`` and its sub-models."""
    found: set[str] = set()
    for name, field in model.model_fields.items():
        for annotation in _flatten(field.annotation):
            if annotation in (SecretStr, SecretBytes):
                found |= {normalize_key(name), normalize_key(field.alias or name)}
            elif (
                isinstance(annotation, type)
                and issubclass(annotation, BaseModel)
                and annotation not in seen
            ):
                found |= _secret_fields(annotation, seen | {model})
    return found


def _flatten(annotation: Any) -> list[Any]:
    return [annotation, *(a for arg in typing.get_args(annotation) for a in _flatten(arg))]


def section(settings: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The section ``name`` of merged settings (any spelling), or an empty mapping."""
    key = find_key(settings, name)
    if key is None:
        return {}
    value = settings[key]
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}: expected a table of settings, got {mask_secrets(repr(value))}")
    return dict(value)
