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
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import ConfigError, FieldError

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


def _plain(value: Any) -> Any:
    """dynaconf's Box values as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _load_files(files: list[Path]) -> dict[str, Any]:
    from dynaconf import Dynaconf

    if not files:
        return {}
    # loaders=[] keeps environment variables out of this layer; they are layered last.
    settings = Dynaconf(
        settings_files=[str(f) for f in files],
        environments=False,
        merge_enabled=True,
        loaders=[],
    )
    return typing.cast(dict[str, Any], _plain(settings.as_dict()))


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

    values = _plain(Dynaconf(environments=False, envvar_prefix=prefix).as_dict())
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
        if not f.is_file():
            raise ConfigError(f"settings file {str(f)!r} does not exist")
    env = environment or (os.environ.get(f"{envvar_prefix}_ENV") if envvar_prefix else None)
    env = env or "development"
    secrets = [f.parent / name for f in files for name in SECRET_NAMES]
    merged = _select_environment(_load_files(files), env)
    merged = deep_merge(merged, _select_environment(_load_files(_existing(secrets)), env))
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
    return _select_environment(_load_files([Path(path)]), environment)


# --- validation -------------------------------------------------------------------------


def _models_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``Model``, ``list[Model]``, ``Model | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _models_in(arg)
        if found is not None:
            return found
    return None


def _format_path(path: str, loc: Iterable[int | str]) -> str:
    out = path
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def canonical_keys(model: type[BaseModel], data: Any, path: str) -> Any:
    """``data`` with its keys renamed to ``model``'s field names, recursively.

    An unknown key raises ConfigError naming it and the closest known key, unless the model
    accepts extra keys.
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
            known = list(model.model_fields)
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6) or (
                difflib.get_close_matches(normalize_key(key), by_normal, n=1, cutoff=0.6)
            )
            hint = f"; did you mean {by_normal.get(close[0], close[0])!r}?" if close else ""
            raise ConfigError(
                f"{_format_path(path, [str(key)])}: unknown key {str(key)!r}{hint} "
                f"(known keys: {', '.join(known)})"
            )
        sub = _models_in(model.model_fields[field_name].annotation)
        sub_path = _format_path(path, [field_name])
        if sub is not None and isinstance(value, list | tuple):
            value = [canonical_keys(sub, v, f"{sub_path}[{i}]") for i, v in enumerate(value)]
        elif sub is not None:
            value = canonical_keys(sub, value, sub_path)
        out[field_name] = value
    return out


def validate_section(model: type[M], data: Mapping[str, Any] | None, path: str) -> M:
    """Validate ``data`` (the section found at ``path``) into ``model``.

    Every failure is a ConfigError naming the dotted path of the bad value and the value.
    """
    try:
        return model.model_validate(canonical_keys(model, data or {}, path))
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc, message = tuple(err["loc"]), err["msg"].removeprefix("Value error, ")
            cause = err.get("ctx", {}).get("error")
            if isinstance(cause, FieldError):
                loc, message = loc + cause.loc, str(cause)
            elif err["type"] != "missing":
                message += f" (got {_shown(loc, err.get('input'))})"
            problems.append(f"{_format_path(path, loc)}: {message}")
        raise ConfigError("; ".join(problems)) from None


_SECRET_WORDS = ("password", "secret", "token", "apikey", "appkey")


def _shown(loc: Iterable[int | str], value: Any) -> str:
    """A value for an error message; never a secret's value."""
    last = normalize_key(next(iter(reversed(list(loc))), ""))
    return "'***'" if any(word in last for word in _SECRET_WORDS) else repr(value)


def section(settings: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The section ``name`` of merged settings (any spelling), or an empty mapping."""
    key = find_key(settings, name)
    if key is None:
        return {}
    value = settings[key]
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}: expected a table of settings, got {value!r}")
    return dict(value)
