"""Write docs/configuration.md, the reference of every key of the ``eventbus`` section, from
the pydantic models that validate it, so that the page and the code cannot disagree.

    python -m scripts.config_reference          # rewrite docs/configuration.md
    python -m scripts.config_reference --check  # exit 1 when it is out of date

Engine types come from the built-ins of ``modules/eventbus/registry.py``; a type whose module
is not there (an engine not merged yet) is left out. Every key needs a description: the
field's own ``description``, else an entry of ``DESCRIPTIONS`` in config_descriptions.py. A
key with neither, or an entry for a key that no longer exists, stops the generator with the
names to fix.
"""

from __future__ import annotations

import enum
import importlib
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: python scripts/config_reference.py
    sys.path.insert(0, str(ROOT))

from modular import is_secret_key  # noqa: E402
from modules.eventbus import registry  # noqa: E402
from modules.eventbus.config import EngineConfig, EventBusConfig  # noqa: E402
from modules.eventbus.engines.broker import BrokerEngineConfig  # noqa: E402
from scripts.config_descriptions import CAMEL, DESCRIPTIONS, TYPE_SUMMARIES  # noqa: E402

OUTPUT = ROOT / "docs" / "configuration.md"
COMMAND = "python -m scripts.config_reference"


class UndocumentedError(Exception):
    """Keys without a description, or descriptions of keys that do not exist."""


def camel(name: str) -> str:
    if name in CAMEL:
        return CAMEL[name]
    first, *rest = name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """The bare type (without ``| None``), and the metadata of any ``Annotated`` layers."""
    metadata: list[Any] = []
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *extra = get_args(annotation)
            metadata.extend(extra)
        elif origin in (Union, types.UnionType) and type(None) in get_args(annotation):
            (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
        else:
            return annotation, metadata


def is_duration(metadata: list[Any]) -> bool:
    return any(
        getattr(getattr(m, "func", None), "__name__", "") in ("parse_duration", "_duration")
        for m in metadata
    )


def type_text(annotation: Any, metadata: list[Any]) -> str:
    if is_duration(metadata):
        return "duration"
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    if origin in (list, tuple):
        item, item_metadata = unwrap(get_args(annotation)[0])
        return f"list of {type_text(item, item_metadata)}"
    if origin is dict or annotation is dict:
        return "table"
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return "one of " + ", ".join(f"`{member.value}`" for member in annotation)
        if issubclass(annotation, BaseModel):
            return "table"
        names = {bool: "bool", int: "integer", float: "number", str: "string", SecretStr: "string"}
        if annotation in names:
            return names[annotation]
    raise UndocumentedError(f"no type name for {annotation!r}: extend type_text()")


def bounds_text(metadata: list[Any]) -> str:
    signs = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "min_length": "length >="}
    found = []
    for item in metadata:
        for attribute, sign in signs.items():
            value = getattr(item, attribute, None)
            if value is not None:
                found.append(f"{sign} {value}")
        if getattr(item, "pattern", None):
            found.append(f"`{item.pattern}`")
    return ", ".join(found)


def duration_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f'"{int(seconds // size)}{unit}"'
    return f'"{round(seconds * 1000)}ms"' if seconds else "0"


def default_text(field: FieldInfo, metadata: list[Any], secret: bool) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""  # its keys follow, with their defaults
    if value is None:
        return "none"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if secret and value:
        return "`***`"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float) and is_duration(metadata):
        return f"`{duration_text(float(value))}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str | list | tuple):
        return f"`{json.dumps(list(value) if isinstance(value, tuple) else value)}`"
    return f"`{value}`"


class Reference:
    """Rows of the tables, and what is undocumented, gathered while rendering."""

    def __init__(self) -> None:
        self.missing: list[str] = []
        self.used: set[tuple[str, str]] = set()
        self.visited: set[str] = set()

    def description(self, model: type[BaseModel], name: str) -> str:
        field = model.model_fields[name]
        if field.description:
            return field.description
        for cls in model.__mro__:
            text = DESCRIPTIONS.get(cls.__name__, {}).get(name)
            if text:
                self.used.add((cls.__name__, name))
                return text
        self.missing.append(f"{model.__name__}.{name}")
        return ""

    def rows(
        self, model: type[BaseModel], names: list[str], prefix: tuple[str, str] = ("", "")
    ) -> Iterator[str]:
        """One table row per key of ``model`` in ``names``; a nested table's keys follow it."""
        self.visited.update(cls.__name__ for cls in model.__mro__)
        for name in names:
            field = model.model_fields[name]
            annotation, metadata = unwrap(field.annotation)
            metadata += field.metadata
            secret = annotation is SecretStr or is_secret_key(name)
            kind = type_text(annotation, metadata) + (", secret" if secret else "")
            key, snake = prefix[0] + camel(name), prefix[1] + name
            yield (
                f"| `{key}` | `{snake}` | {kind} | {default_text(field, metadata, secret)} "
                f"| {bounds_text(metadata)} | {self.description(model, name)} |"
            )
            nested, item = annotation, get_origin(annotation) is list
            if item:
                nested, _ = unwrap(get_args(annotation)[0])
            if isinstance(nested, type) and issubclass(nested, BaseModel):
                mark = "[]." if item else "."
                yield from self.rows(nested, list(nested.model_fields), (key + mark, snake + mark))

    def table(self, model: type[BaseModel], names: list[str]) -> list[str]:
        header = ["| key | snake_case | type | default | bounds | meaning |", "|---" * 6 + "|"]
        return [*header, *self.rows(model, names), ""]

    def stale(self) -> list[str]:
        """Descriptions of keys that the models rendered no longer have."""
        return [
            f"{cls}.{name}"
            for cls, fields in DESCRIPTIONS.items()
            if cls in self.visited
            for name in fields
            if (cls, name) not in self.used
        ]


def own_fields(model: type[BaseModel], base: type[BaseModel]) -> list[str]:
    """The keys ``model`` adds to ``base``, or declares with another default."""
    inherited = base.model_fields
    return [
        name
        for name, field in model.model_fields.items()
        if name not in inherited or field.default != inherited[name].default
    ]


def engine_types() -> Iterator[tuple[str, type[Any]]]:
    """(type name, engine class) of every built-in whose module exists."""
    for type_name, target in registry._BUILTIN.items():
        module_name, class_name = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # the engine's own module is not there yet
            raise UndocumentedError(
                f"engine type {type_name!r} needs {exc.name}, which is not installed: "
                f"pip install -e '.[all]' so that every engine is documented"
            ) from exc
        yield type_name, getattr(module, class_name)


INTRODUCTION = """\
# Configuration reference

<!-- Generated by scripts/config_reference.py from the config models: do not edit by hand;
run `python -m scripts.config_reference` after changing a model. -->

Every key of the `eventbus` section, as validated at `app.init()`. Keys are written in
camelCase or snake_case, in any case (`workerCount`, `worker_count`, `WORKERCOUNT`).
A *duration* is `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"2d"` or a number of seconds. A *secret*
never appears in an error, a log or a repr. An unknown key is an error naming the closest
known one.

Settings layers, later wins: settings files (`[default.eventbus]`, then the environment's
section), `.secrets.toml`, the `config=` mapping of `Application`, environment variables
(`MODULAR_EVENTBUS__WORKERCOUNT=8`).
"""


def render() -> str:
    """The whole of docs/configuration.md."""
    ref = Reference()
    engine_keys = list(EngineConfig.model_fields)
    section = [name for name in EventBusConfig.model_fields if name not in engine_keys]
    broker = own_fields(BrokerEngineConfig, EngineConfig)
    lines = [
        INTRODUCTION,
        "## The `eventbus` section",
        "",
        "Besides these, the top of the section takes every setting of the next table: there",
        "it is the default of every engine (only the settings written there are passed on, so",
        "an engine type's own defaults hold otherwise). Without `engines`, the top of the",
        "section is the legacy single-engine form: `engine` and these settings make one engine",
        "named `default`.",
        "",
        *ref.table(EventBusConfig, section),
        "## Settings of every engine",
        "",
        "At the top of the section (for every engine) or in an engine's `config`.",
        "",
        *ref.table(EngineConfig, engine_keys),
        "## Settings of every broker engine",
        "",
        "In the `config` of a broker engine (`redis`, `kafka`, `kinesis`), besides the above.",
        "",
        *ref.table(BrokerEngineConfig, broker),
        "## Engine types",
        "",
    ]
    for type_name, engine_class in engine_types():
        model = engine_class.config_model
        base = BrokerEngineConfig if issubclass(model, BrokerEngineConfig) else EngineConfig
        summary = TYPE_SUMMARIES.get(type_name)
        if summary is None:
            ref.missing.append(f"TYPE_SUMMARIES[{type_name!r}]")
        lines += [f'### `type = "{type_name}"`', "", summary or "", ""]
        names = own_fields(model, base)
        lines += ref.table(model, names) if names else []
    problems = [f"no description of {key}" for key in ref.missing]
    problems += [
        f"unused description (no such key, or it has its own): {key}" for key in ref.stale()
    ]
    if problems:
        raise UndocumentedError("in scripts/config_descriptions.py: " + "; ".join(problems))
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    try:
        text = render()
    except UndocumentedError as exc:
        print(f"config_reference: {exc}", file=sys.stderr)
        return 1
    current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
    if "--check" in argv:
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    if current != text:
        OUTPUT.write_text(text, encoding="utf-8")
        print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
