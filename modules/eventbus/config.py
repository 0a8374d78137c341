"""EventBusConfig: the ``eventbus`` section, legacy (one engine) or multi-engine.

Keys are accepted in camelCase (``maxEventQueueSize``) or snake_case, in any case (the
container matches them that way). Durations are ``"250ms"``, ``"30s"``, ``"5m"``, ``"1h"``,
``"2d"`` or a number of seconds.

Every delivery and retention setting may be given at the top level and in an engine's
``config``: the top level is the default of every engine. Legacy config (no ``engines``)
becomes one engine named ``default`` of type ``engine`` that keeps every field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)

from modular import FieldError, mask_secrets, normalize_key

from .delivery import DeliveryMode, DeliveryPolicy

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from ``"250ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"2d"`` or a number."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"expected a duration such as '250ms', '30s' or '1h', got {value!r}")
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveInt = Annotated[int, Field(gt=0)]

# Upper bounds of sizes and counts: each queue slot and worker costs memory up front, and a
# typo of a few zeros should fail at init(), not at the first publish.
MAX_QUEUE_SIZE = 10_000_000
MAX_WORKERS = 10_000
QueueSize = Annotated[int, Field(gt=0, le=MAX_QUEUE_SIZE)]
WorkerCount = Annotated[int, Field(gt=0, le=MAX_WORKERS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineConfig(_Strict):
    """Settings every engine understands: delivery of its local fan-out and retention."""

    max_event_queue_size: QueueSize = 1000
    default_event_buffer_size: QueueSize = 10
    worker_count: WorkerCount = 5
    event_ttl: Duration = 3600.0
    retention_days: Annotated[float, Field(gt=0, le=36_500, allow_inf_nan=False)] = 7
    delivery_mode: DeliveryMode = DeliveryMode.DROP
    publish_block_timeout: Duration = 0.0
    rotate_subscriber_order: bool = True
    external_broker_url: str = ""
    external_broker_user: str = ""
    external_broker_password: SecretStr = SecretStr("")

    @model_validator(mode="after")
    def _timeout_needs_a_timeout(self) -> EngineConfig:
        if self.delivery_mode is DeliveryMode.TIMEOUT and self.publish_block_timeout <= 0:
            raise ValueError("deliveryMode 'timeout' needs a positive publishBlockTimeout")
        return self

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # A broker URL may carry a password (user-info or ?password=): never shown.
        for name, value in super().__repr_args__():
            yield name, mask_secrets(value) if isinstance(value, str) else value

    def delivery_policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(
            buffer_size=self.default_event_buffer_size,
            mode=self.delivery_mode,
            block_timeout=self.publish_block_timeout,
            rotate=self.rotate_subscriber_order,
            worker_count=self.worker_count,
            queue_size=self.max_event_queue_size,
        )

    @property
    def history_ttl(self) -> float:
        """How long an event stays in history: ``eventTTL``, capped by ``retentionDays``."""
        return min(self.event_ttl, self.retention_days * 86400.0)


ENGINE_DEFAULT_FIELDS = tuple(EngineConfig.model_fields)


class EngineSpec(_Strict):
    name: Annotated[str, Field(min_length=1)]
    type: Annotated[str, Field(min_length=1)]
    # Raw and possibly holding secrets: the engine's validated config is the one to show.
    config: dict[str, Any] = Field(default_factory=dict, repr=False)


class RoutingRule(_Strict):
    topics: Annotated[list[str], Field(min_length=1)]
    engine: Annotated[str, Field(min_length=1)]

    @model_validator(mode="before")
    @classmethod
    def _one_topic_is_a_list(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("topics"), str):
            return {**data, "topics": [data["topics"]]}
        return data


class EventBusConfig(EngineConfig):
    """The ``eventbus`` section. See the module docstring for layering and legacy config."""

    engine: str = "memory"
    engines: list[EngineSpec] = Field(default_factory=list)
    routing: list[RoutingRule] = Field(default_factory=list)
    shutdown_timeout: Duration = 30.0
    source: Annotated[str, Field(min_length=1)] = "eventbus"

    @model_validator(mode="after")
    def _check_engines_and_routes(self) -> EventBusConfig:
        from .registry import known_engine_types
        from .topics import validate_pattern

        if "engines" in self.model_fields_set and not self.engines:
            raise FieldError(
                ("engines",),
                "an empty engine list runs nothing: list at least one engine, or leave "
                "'engines' out for the single engine of 'engine'",
            )
        known = known_engine_types()
        seen: set[str] = set()
        for i, spec in enumerate(self.effective_engines()):
            where: tuple[int | str, ...] = ("engines", i) if self.engines else ()
            if spec.type not in known:
                raise FieldError(
                    (*where, "type") if where else ("engine",),
                    f"unknown engine type {spec.type!r}; known types: {', '.join(sorted(known))}",
                )
            if spec.name in seen:
                raise FieldError((*where, "name"), f"duplicate engine name {spec.name!r}")
            seen.add(spec.name)
        for i, rule in enumerate(self.routing):
            if rule.engine not in seen:
                raise FieldError(
                    ("routing", i, "engine"),
                    f"route to unknown engine {rule.engine!r}; engines: {', '.join(sorted(seen))}",
                )
            for j, pattern in enumerate(rule.topics):
                try:
                    validate_pattern(pattern)
                except ValueError as exc:
                    raise FieldError(("routing", i, "topics", j), str(exc)) from None
        return self

    def effective_engines(self) -> list[EngineSpec]:
        """The engines to run: the configured list, or the legacy single engine ``default``."""
        if self.engines:
            return list(self.engines)
        return [EngineSpec(name="default", type=self.engine, config={})]

    def engine_settings(self, spec: EngineSpec) -> dict[str, Any]:
        """An engine's raw config: the top-level engine settings the user set, overlaid by
        its own map. Settings nobody set are left out, so that an engine type's own defaults
        apply (``durable-memory`` and durable broker modes default to ``block``).

        Top-level fields are passed by field name; the engine map keeps the user's spelling,
        so the engine's own validation names keys as they were written.
        """
        chosen = self.model_fields_set
        base = {name: getattr(self, name) for name in ENGINE_DEFAULT_FIELDS if name in chosen}
        own = {normalize_key(k) for k in spec.config}
        merged = {k: v for k, v in base.items() if normalize_key(k) not in own}
        merged.update(spec.config)
        return merged
