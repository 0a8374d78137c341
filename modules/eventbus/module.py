"""EventBusModule: the ``eventbus.provider`` service. Wires config -> engines -> router."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from modular import Application, Module, ServiceProvider, current_tenant, mask_secrets
from modular.observer import ObserverRegistry
from modular.tenants import current_tenant_var

from . import tracing
from .config import EngineSpec, EventBusConfig
from .delivery import DeliveryStats, call_handler, context_for, report_failure
from .engines.base import Engine, EngineHealth
from .errors import EngineUnavailableError, EventBusNotStartedError
from .event import (
    EMPTY_METADATA,
    Event,
    Handler,
    Subscription,
    check_handler,
    describe,
    make_event,
)
from .history import History
from .registry import create_engine
from .router import Router
from .topics import matches, validate_pattern, validate_tenant, validate_topic

if TYPE_CHECKING:
    from .tenant import TenantEventBus

logger = logging.getLogger("modules.eventbus")

SOURCE = "modular.eventbus"
EVENT_PREFIX = "com.modular.eventbus."

MESSAGE_PUBLISHED = EVENT_PREFIX + "message.published"
MESSAGE_RECEIVED = EVENT_PREFIX + "message.received"

_ROUTE_CACHE_LIMIT = 10_000
# Seconds stop() may take beyond shutdownTimeout: engines drain for shutdownTimeout, then
# get this long to cancel what is left and close before they are abandoned.
STOP_GRACE = 0.5


class EventBusModule(Module):
    """A publish/subscribe bus over one or more engines. See ``DESIGN.md`` for the contract."""

    name: ClassVar[str] = "eventbus"
    config_model: ClassVar[type[BaseModel] | None] = EventBusConfig

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._app: Application | None = None
        self._observers = ObserverRegistry()  # the application's, from init() on
        self._source = "eventbus"
        self.config = EventBusConfig()
        self._engines: dict[str, Engine] = {}
        self._histories: dict[str, History] = {}
        self._router: Router | None = None
        self._tenant_routers: dict[str, Router] = {}
        self._tenant_engines: dict[str, dict[str, str]] = {}  # tenant -> name -> engine key
        self._base_engines: list[str] = []
        self._started_engines: set[str] = set()
        self._subscriptions: dict[str, Subscription] = {}
        self._topic_counts: dict[str, int] = {}
        self._sub_ids = itertools.count(1)
        self._running = False
        # (topic, tenant) -> (engine, its history): cleared whenever routing or engines change
        self._routes: dict[tuple[str, str | None], tuple[Engine, History]] = {}
        self._observe_published = False
        self._observe_received = False
        self._start_lock = asyncio.Lock()
        self._stopped_at = time.time()  # since when engines not started are "stopped"

    # --- module lifecycle ---------------------------------------------------------------

    def provides_services(self) -> list[ServiceProvider]:
        return [ServiceProvider("eventbus.provider", self, "the event bus")]

    async def init(self, app: Application) -> None:
        self._app = app
        self._observers = app.observers
        self._observers.add_change_listener(self._observers_changed)
        self._observers_changed()
        self.config = app.config_section(self.name)
        self._source = self.config.source
        specs = self.config.effective_engines()
        for i, spec in enumerate(specs):
            path = f"eventbus.engines[{i}]" if self.config.engines else "eventbus"
            self._add_engine(spec.name, spec, self.config, path)
        self._base_engines = [s.name for s in specs]
        self._router = Router(self._base_engines, self.config.routing)
        self._emit(
            "config.loaded",
            engines=[{"name": s.name, "type": s.type} for s in specs],
            routing=[{"topics": list(r.topics), "engine": r.engine} for r in self.config.routing],
        )
        for tenant in app.tenants.tenants():  # registered before the bus was initialised
            self._configure_tenant(tenant)

    def _add_engine(self, key: str, spec: EngineSpec, config: EventBusConfig, path: str) -> Engine:
        engine = create_engine(spec.type, key, config.engine_settings(spec), path)
        self._engines[key] = engine
        self._histories[key] = History(
            engine.config.max_event_queue_size, engine.config.history_ttl, self._clock
        )
        engine.attach(_Hooks(self, key), config.source)
        return engine

    def _observers_changed(self) -> None:
        # Per-message observer events cost a lookup per event: decide once per change.
        self._observe_published = self._observers.wants(MESSAGE_PUBLISHED)
        self._observe_received = self._observers.wants(MESSAGE_RECEIVED)

    async def start(self) -> None:
        if self._running:
            return
        if self._router is None:
            raise EventBusNotStartedError("the event bus is not initialised: call app.init()")
        try:
            for key in list(self._engines):
                await self._start_engine(key)
        except BaseException:  # an engine with requireAtStart: the bus does not start
            started = [self._engines[k] for k in self._started_engines]
            await _stop_engines(started, self.config.shutdown_timeout)
            self._started_engines.clear()
            raise
        self._running = True
        self._emit("bus.started", engines=list(self._engines))

    async def _start_engine(self, key: str) -> None:
        if key in self._started_engines:
            return
        engine = self._engines[key]
        try:
            await engine.start()
        except Exception as exc:
            # One engine failing must not take the others down: its topics fail loudly
            # at publish/subscribe instead; unless it is configured with requireAtStart.
            required = bool(getattr(engine.config, "require_at_start", False))
            error = mask_secrets(f"{type(exc).__name__}: {exc}")
            if not required:
                logger.error("engine %s failed to start: %s", key, error)
            self._emit("engine.failed", engine=key, error=error)
            if required:
                raise
            return
        self._started_engines.add(key)

    async def stop(self) -> None:
        """Refuse publishes, drain every engine up to ``shutdownTimeout``, close them."""
        if not self._running and not self._started_engines and not self._subscriptions:
            return
        self._running = False
        engines = list(self._engines.values())  # also never-started ones holding subscriptions
        await _stop_engines(engines, self.config.shutdown_timeout)
        self._started_engines.clear()
        self._stopped_at = time.time()
        self._routes.clear()
        for sub in self._subscriptions.values():
            sub.active = False
        self._subscriptions.clear()
        self._topic_counts.clear()
        self._emit("bus.stopped", engines=list(self._engines))

    # --- tenants ------------------------------------------------------------------------

    def on_tenant_registered(self, tenant_id: str) -> None:
        self._configure_tenant(tenant_id)

    async def on_tenant_removed(self, tenant_id: str) -> None:
        self._tenant_routers.pop(tenant_id, None)
        self._routes.clear()
        for key in self._tenant_engines.pop(tenant_id, {}).values():
            if key in self._base_engines:
                continue
            engine = self._engines.pop(key)
            self._histories.pop(key, None)
            self._started_engines.discard(key)
            await engine.stop(self.config.shutdown_timeout)

    def _configure_tenant(self, tenant: str) -> None:
        """Build the tenant's router from its config overlay (and its own engines, if any)."""
        if self._app is None or self._router is None:
            return
        self._routes.clear()
        overlay = self._app.tenants.overlay(tenant, self.name)
        if not overlay:
            self._tenant_routers.pop(tenant, None)
            return
        path = f"tenants.{tenant}.eventbus"
        config: EventBusConfig = self._app.tenants.tenant_config(tenant, self.name)
        names: dict[str, str] = {}
        for i, spec in enumerate(config.effective_engines()):
            if spec.name in self._base_engines:
                names[spec.name] = spec.name
                continue
            key = f"{tenant}/{spec.name}"
            if key not in self._engines:
                self._add_engine(key, spec, config, f"{path}.engines[{i}]")
            names[spec.name] = key
        # (EventBusConfig has checked that every rule names one of these engines)
        engine_order = [names[s.name] for s in config.effective_engines()]
        rules = [rule.model_copy(update={"engine": names[rule.engine]}) for rule in config.routing]
        self._tenant_engines[tenant] = names
        self._tenant_routers[tenant] = Router(engine_order, rules)

    def _router_for(self, tenant: str | None) -> Router:
        router = self._router
        if router is None:
            raise EventBusNotStartedError("the event bus is not initialised: call app.init()")
        if tenant is not None:
            return self._tenant_routers.get(tenant, router)
        return router

    # --- publishing ---------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: Any = None,
        *,
        metadata: Mapping[str, str] | None = None,
        partition_key: str | None = None,
        tenant: str | None = None,
    ) -> Event:
        """Publish ``payload`` on ``topic``; returns the Event. The tenant is ``tenant=`` or
        the current tenant context."""
        if not self._running:
            raise EventBusNotStartedError(
                f"cannot publish to {topic!r}: the event bus is not started"
            )
        if tenant is None:
            tenant = current_tenant_var.get()
        route = self._routes.get((topic, tenant))
        if route is None:
            route = await self._route(topic, tenant)
        engine, history = route
        frozen = describe(metadata) if metadata else EMPTY_METADATA  # no call without metadata
        if tracing.AVAILABLE and tracing.active():
            event = await self._publish_traced(
                engine, topic, payload, frozen, tenant, partition_key
            )
        else:
            event = make_event(
                topic, payload, frozen, self._clock(), self._source, tenant, partition_key
            )
            await engine.publish(event)
        history.record(event)
        if self._observe_published:
            self._emit(
                "message.published",
                topic=topic,
                event_id=event.id,
                engine=engine.name,
                tenant=tenant,
            )
        return event

    async def _publish_traced(
        self,
        engine: Engine,
        topic: str,
        payload: Any,
        metadata: Mapping[str, str],
        tenant: str | None,
        partition_key: str | None,
    ) -> Event:
        """``publish`` inside a producer span whose context the event carries."""
        span = tracing.Publishing(topic, engine.name, tenant, metadata)
        error: BaseException | None = None
        try:
            event = make_event(
                topic, payload, span.metadata, self._clock(), self._source, tenant, partition_key
            )
            span.published(event)
            await engine.publish(event)
            return event
        except BaseException as exc:
            error = exc
            raise
        finally:
            span.end(error)

    async def _route(self, topic: str, tenant: str | None) -> tuple[Engine, History]:
        """Validate ``topic`` and ``tenant``, find their engine (started) and remember it, so
        that the next publish of this pair is one dict lookup."""
        validate_topic(topic)
        if tenant is not None:
            validate_tenant(tenant)
        key = self._router_for(tenant).engine_for_topic(topic)
        if key not in self._started_engines:
            await self._ensure_engine(key, topic)
        if len(self._routes) >= _ROUTE_CACHE_LIMIT:
            self._routes.clear()
        route = self._routes[(topic, tenant)] = (self._engines[key], self._histories[key])
        return route

    async def _ensure_engine(self, key: str, topic: str) -> None:
        """Start a tenant's own engine on first use; refuse an engine that failed to start."""
        if key not in self._base_engines:
            async with self._start_lock:
                await self._start_engine(key)
        if key not in self._started_engines:
            raise EngineUnavailableError(
                f"engine {key!r} (for topic {topic!r}) is not running: it failed to start"
            )

    # --- subscribing --------------------------------------------------------------------

    async def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        payload_type: type[BaseModel] | None = None,
        replay: bool = False,
        all_tenants: bool = False,
    ) -> Subscription:
        """Ordered subscription: the handler sees matching events one at a time, in order."""
        return await self._subscribe(
            topic, handler, False, payload_type, replay, all_tenants, current_tenant()
        )

    async def subscribe_async(
        self,
        topic: str,
        handler: Handler,
        *,
        payload_type: type[BaseModel] | None = None,
        replay: bool = False,
        all_tenants: bool = False,
    ) -> Subscription:
        """Concurrent subscription: handlers run on the engine's worker pool."""
        return await self._subscribe(
            topic, handler, True, payload_type, replay, all_tenants, current_tenant()
        )

    async def _subscribe(
        self,
        topic: str,
        handler: Handler,
        is_async: bool,
        payload_type: type[BaseModel] | None,
        replay: bool,
        all_tenants: bool,
        tenant: str | None,
    ) -> Subscription:
        pattern = validate_pattern(topic)
        check_handler(pattern, handler)
        if tenant is not None:
            validate_tenant(tenant)
            all_tenants = False
        if self._router is None:
            raise EventBusNotStartedError("the event bus is not initialised: call app.init()")
        sub_id = f"sub-{next(self._sub_ids)}"
        sub = Subscription(
            sub_id,
            pattern,
            tracing.traced(handler, sub_id),
            is_async=is_async,
            tenant=tenant,
            all_tenants=all_tenants,
            payload_type=payload_type,
            cancel=self.unsubscribe,
        )
        keys = await self._live_engines(self._engines_for(sub), pattern)
        sub.engine, sub.engines = keys[0], tuple(keys)
        if replay:
            await self._replay(sub)
        for key in keys:
            await self._engines[key].subscribe(sub)
        self._subscriptions[sub.id] = sub
        self._emit(
            "subscription.created",
            subscription_id=sub.id,
            topic=pattern,
            engine=sub.engine,
            engines=list(keys),
            is_async=is_async,
            tenant=tenant,
        )
        count = self._topic_counts.get(pattern, 0)
        self._topic_counts[pattern] = count + 1
        if count == 0:
            self._emit("topic.created", topic=pattern, engine=sub.engine)
        return sub

    def _engines_for(self, sub: Subscription) -> list[str]:
        """The engines ``sub`` must listen on: where its topics route for its tenant(s)."""
        routers = [self._router_for(sub.tenant)]
        if sub.all_tenants:
            routers.extend(self._tenant_routers.values())
        keys: list[str] = []
        for router in routers:
            for key in router.engines_for_pattern(sub.topic):
                if key not in keys:
                    keys.append(key)
        return keys

    async def _live_engines(self, keys: list[str], pattern: str) -> list[str]:
        """``keys`` without engines that failed to start (a pattern still listens on the
        others); EngineUnavailableError when none is left."""
        if not self._running:
            return keys  # subscribing before start: engines start with the bus
        live: list[str] = []
        for key in keys:
            try:
                if key not in self._started_engines:
                    await self._ensure_engine(key, pattern)
                live.append(key)
            except EngineUnavailableError:
                if len(keys) == 1:
                    raise
                logger.warning("subscription to %r skips engine %s: not running", pattern, key)
        if not live:
            raise EngineUnavailableError(f"no running engine for {pattern!r}: {keys}")
        return live

    async def _replay(self, sub: Subscription) -> None:
        """Deliver retained matching events, oldest first, until caught up. The caller then
        registers the subscription; an in-process engine does that without yielding, so no
        live event falls in between (a broker engine waits for its broker meanwhile, and an
        event published in that window reaches the subscription only if the broker had
        confirmed it in time)."""
        last: float | None = None
        delivered: set[str] = set()
        while True:
            pending = [
                e
                for e in self._read_history(sub.topic, sub.accepts, since=last)
                if e.id not in delivered
            ]
            if not pending:
                return
            for event in pending:
                delivered.add(event.id)
                error = await call_handler(sub, event, context_for(event))
                if error is not None:
                    report_failure(sub, event, error, sub.engine, _Hooks(self, sub.engine))
                last = event.timestamp

    async def unsubscribe(self, sub: Subscription) -> None:
        """End ``sub``; idempotent, and harmless after ``stop()``."""
        if self._subscriptions.pop(sub.id, None) is None:
            sub.active = False
            return
        sub.active = False
        for key in sub.engines:
            engine = self._engines.get(key)  # a removed tenant's engine is gone already
            if engine is not None:
                await engine.unsubscribe(sub)
        self._emit(
            "subscription.removed", subscription_id=sub.id, topic=sub.topic, engine=sub.engine
        )
        count = self._topic_counts.get(sub.topic, 0) - 1
        if count <= 0:
            self._topic_counts.pop(sub.topic, None)
            self._emit("topic.deleted", topic=sub.topic, engine=sub.engine)
        else:
            self._topic_counts[sub.topic] = count

    # --- introspection ------------------------------------------------------------------

    def topics(self) -> list[str]:
        """Topics and patterns with at least one subscription."""
        return sorted(self._topic_counts)

    def subscriber_count(self, topic: str) -> int:
        """Subscriptions that match ``topic``, pattern subscriptions included."""
        return sum(1 for sub in self._subscriptions.values() if matches(sub.topic, topic))

    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions.values())

    def stats(self) -> tuple[int, int]:
        """``(delivered, dropped)`` summed over every engine."""
        total = sum(self.per_engine_stats().values(), DeliveryStats())
        return total.delivered, total.dropped

    def per_engine_stats(self) -> dict[str, DeliveryStats]:
        return {key: engine.stats() for key, engine in self._engines.items()}

    def engine(self, name: str) -> Engine:
        try:
            return self._engines[name]
        except KeyError:
            raise KeyError(
                f"no engine named {name!r}; engines: {', '.join(self._engines)}"
            ) from None

    def engines(self) -> dict[str, Engine]:
        return dict(self._engines)

    # --- health (broker kit) --------------------------------------------------------------

    def health(self) -> dict[str, EngineHealth]:
        """``{engine name: EngineHealth}``: ``up``, ``down`` (with the last connection error,
        masked) or ``stopped`` (not started, or failed to start)."""
        return {
            key: engine.health()
            if key in self._started_engines
            else EngineHealth("stopped", None, self._stopped_at)
            for key, engine in self._engines.items()
        }

    # --- end of health ----------------------------------------------------------------------

    def get_router(self) -> Router:
        return self._router_for(None)

    @property
    def is_running(self) -> bool:
        return self._running

    async def history(
        self, pattern: str = "*", *, limit: int | None = None, since: float | None = None
    ) -> list[Event]:
        """Retained events matching ``pattern`` (untenanted ones here), oldest first."""
        return self._history(pattern, None, limit, since)

    def _history(
        self, pattern: str, tenant: str | None, limit: int | None, since: float | None
    ) -> list[Event]:
        validate_pattern(pattern)
        events = self._read_history(pattern, lambda t: t == tenant, since)
        return events[-limit:] if limit else events

    def _read_history(
        self, pattern: str, accepts: Callable[[str | None], bool], since: float | None
    ) -> list[Event]:
        """Retained events of every engine whose tenant ``accepts``, oldest first."""
        events = [
            event
            for history in self._histories.values()
            for event in history.read(pattern, lambda e: accepts(e.tenant), since)
        ]
        events.sort(key=lambda e: e.timestamp)
        return events

    def for_tenant(self, tenant_id: str) -> TenantEventBus:
        """The same API, scoped to ``tenant_id``."""
        from .tenant import TenantEventBus

        return TenantEventBus(self, validate_tenant(tenant_id))

    # --- observation --------------------------------------------------------------------

    def _emit(self, kind: str, **data: Any) -> None:
        if self._app is not None:
            self._app.emit(EVENT_PREFIX + kind, SOURCE, data)


async def _stop_engines(engines: list[Engine], timeout: float) -> None:
    """Stop ``engines`` together, within ``timeout`` plus STOP_GRACE whatever they (or their
    handlers) do: an engine whose stop does not end by then is cancelled, then abandoned."""
    loop = asyncio.get_running_loop()
    tasks = {loop.create_task(engine.stop(timeout)): engine for engine in engines}
    if not tasks:
        return
    deadline = loop.time() + timeout + STOP_GRACE
    _, running = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time() - 0.1))
    while running and loop.time() < deadline:
        for task in running:
            task.cancel()
        _, running = await asyncio.wait(running, timeout=max(0.0, deadline - loop.time()))
    for task, engine in tasks.items():
        if task in running or task.cancelled():
            logger.error(
                "engine %s did not stop within shutdownTimeout (%ss); %s",
                engine.name,
                timeout,
                "abandoned" if task in running else "cancelled",
            )
        elif task.exception() is not None:
            logger.error("engine %s failed to stop: %r", engine.name, task.exception())


class _Hooks:
    """Delivery reports of one engine, turned into observer events (only when observed)."""

    __slots__ = ("bus", "engine")

    def __init__(self, bus: EventBusModule, engine: str) -> None:
        self.bus = bus
        self.engine = engine

    def received(self, sub: Subscription, event: Event) -> None:
        if self.bus._observe_received:
            self.bus._emit(
                "message.received",
                topic=event.topic,
                event_id=event.id,
                subscription_id=sub.id,
                engine=self.engine,
                tenant=event.tenant,
            )

    def failed(self, sub: Subscription, event: Event, error: BaseException) -> None:
        self.bus._emit(
            "message.failed",
            topic=event.topic,
            event_id=event.id,
            subscription_id=sub.id,
            engine=self.engine,
            tenant=event.tenant,
            error=f"{type(error).__name__}: {error}",
        )
