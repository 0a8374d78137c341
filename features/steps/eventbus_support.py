"""Shared state and helpers of the event bus features (no step definitions here).

Each scenario gets one :class:`BusWorld` on ``context.bus_world``: the configuration being
assembled, then the running application, its subscribers, observed records and background
tasks. Everything runs on the scenario's own loop (``context.loop`` from environment.py);
waiting is always on a condition with a deadline.
"""

import asyncio
import json
import logging
import re
import time
import tomllib
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar, cast

import behave
from pydantic import BaseModel

from modular import Application, CloudEvent, normalize_key, validate_section
from modules.eventbus import (
    Engine,
    EngineConfig,
    Event,
    EventBusModule,
    FanoutEngine,
    Subscription,
    register_engine,
    unregister_engine,
)

T = TypeVar("T")

EVENT_PREFIX = "com.modular.eventbus."
DEADLINE = 10.0  # generous: other test runs share these two cores


class _QuotedText:
    """Step parameter type ``EbText``: the text between two double quotes, never a quote.

    Without it ``"{topic}"`` at the end of a short step would also swallow the quoted
    arguments of a longer step that starts the same way.
    """

    pattern = r'[^"]*'
    regex_group_count = 0

    def __call__(self, text: str) -> str:
        return text


behave.register_type(EbText=_QuotedText())


# --- running coroutines on the scenario's loop -------------------------------------------


def run(context: Any, awaitable: Awaitable[T], timeout: float = DEADLINE) -> T:
    """Run ``awaitable`` on the scenario's loop; a step never hangs past ``timeout``."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await awaitable

    loop: asyncio.AbstractEventLoop = context.loop
    return loop.run_until_complete(bounded())


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what}")
        await asyncio.sleep(0.005)


def wait(context: Any, predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    run(context, wait_for(predicate, what, timeout), timeout + 5.0)


# --- values written in the feature files ------------------------------------------------


def names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def value(text: str) -> Any:
    """A table cell or step argument: JSON when it parses (numbers, objects, null), else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def toml(text: str) -> dict[str, Any]:
    return tomllib.loads(text)


def setting(config: BaseModel, key: str) -> Any:
    """The attribute of ``config`` spelled like ``key`` (camelCase or snake_case)."""
    fields = type(config).model_fields
    field = next((f for f in fields if normalize_key(f) == normalize_key(key)), None)
    assert field is not None, f"{type(config).__name__} has no setting {key!r}"
    return getattr(config, field)


# --- subscribers ------------------------------------------------------------------------


class Subscriber:
    """One named handler of a scenario and everything it saw.

    ``received`` is every event the handler was called with, in call order; ``finished``
    the ones whose handling completed. A gated handler waits for ``gate`` before finishing;
    a failing handler raises after recording.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.subscription: Subscription | None = None
        self.received: list[Event] = []
        self.finished: list[Event] = []
        self.gate: asyncio.Event | None = None
        self.fail_on: list[Any] = []
        self.always_fail = False

    async def handle(self, event: Event) -> None:
        self.received.append(event)
        if self.gate is not None:
            await self.gate.wait()
        if self.always_fail or any(event.payload == p for p in self.fail_on):
            raise ValueError(f"rejected {event.payload!r}")
        self.finished.append(event)

    @property
    def sub(self) -> Subscription:
        assert self.subscription is not None, f"subscriber {self.name!r} never subscribed"
        return self.subscription

    def in_flight(self) -> int:
        return len(self.received) - len(self.finished)


# --- engine types defined by the scenarios ----------------------------------------------


class RecordingEngine(FanoutEngine):
    """An engine type the scenarios register themselves: keeps every event handed to it."""

    def __init__(self, name: str, config: EngineConfig) -> None:
        super().__init__(name, config)
        self.published: list[Event] = []

    async def publish(self, event: Event) -> None:
        self.published.append(event)
        await self.dispatcher.dispatch(event)


class UnstartableEngine(RecordingEngine):
    """An engine whose broker is never reachable: ``start()`` raises."""

    async def start(self) -> None:
        raise ConnectionRefusedError(f"engine {self.name} cannot reach its broker")


ENGINE_CLASSES: dict[str, type[RecordingEngine]] = {
    "recording": RecordingEngine,
    "unstartable": UnstartableEngine,
}


def engine_type(engine: Engine) -> str:
    """The configured type of ``engine``, told by its class."""
    from modules.eventbus.engines.custom import CustomEngine
    from modules.eventbus.engines.memory import MemoryEngine

    classes: dict[type[Engine], str] = {MemoryEngine: "memory", CustomEngine: "custom"}
    classes.update({cls: name for name, cls in ENGINE_CLASSES.items()})
    return classes.get(type(engine), type(engine).__name__)


def engine_factory(engine_class: type[RecordingEngine]) -> Callable[..., RecordingEngine]:
    def build(config: Mapping[str, Any], name: str) -> RecordingEngine:
        settings = validate_section(EngineConfig, config, f"eventbus.engines.{name}.config")
        return engine_class(name, settings)

    return build


# --- the scenario's world ---------------------------------------------------------------


class FakeClock:
    """A clock the scenario advances by hand, for retention."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class LogRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.WARNING) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


class BusWorld:
    def __init__(self, context: Any) -> None:
        self.context = context
        self.config: dict[str, Any] = {}
        self.clock: FakeClock | None = None
        self.app: Application | None = None
        self.module: EventBusModule | None = None
        self.observed: list[CloudEvent] = []
        self.subscribers: dict[str, Subscriber] = {}
        self.published: list[Event] = []
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.progress: dict[str, int] = {}
        self.handled_by: list[tuple[str | None, str, dict[str, int]]] = []
        self.error: BaseException | None = None
        self.logs = LogRecords()
        bus_logger = logging.getLogger("modules.eventbus")
        bus_logger.addHandler(self.logs)
        context.cleanups.append(lambda: bus_logger.removeHandler(self.logs))

    # --- lifecycle --------------------------------------------------------------------

    def build(self) -> Application:
        assert self.app is None, "the event bus application was already built"
        app = Application({"eventbus": self.config}, envvar_prefix=None)
        module = EventBusModule(clock=self.clock) if self.clock else EventBusModule()
        app.register_module(module)
        app.register_observer(self.observed.append)
        self.app, self.module = app, module
        self.context.cleanups.append(self.shutdown)
        return app

    async def shutdown(self) -> None:
        """Cleanup: open every gate so handlers can end, then stop the application."""
        for subscriber in self.subscribers.values():
            if subscriber.gate is not None:
                subscriber.gate.set()
        if self.app is not None:
            await self.app.stop()

    @property
    def bus(self) -> EventBusModule:
        assert self.module is not None, "the event bus application was never started"
        return self.module

    @property
    def application(self) -> Application:
        assert self.app is not None, "the event bus application was never started"
        return self.app

    def subscriber(self, name: str) -> Subscriber:
        if name not in self.subscribers:
            self.subscribers[name] = Subscriber(name)
        return self.subscribers[name]

    def register_engine_type(self, type_name: str) -> None:
        register_engine(type_name, engine_factory(ENGINE_CLASSES[type_name]))
        self.context.cleanups.append(lambda: unregister_engine(type_name))

    # --- observation of the bus -------------------------------------------------------

    def fanout_engines(self) -> dict[str, FanoutEngine]:
        return {k: e for k, e in self.bus.engines().items() if isinstance(e, FanoutEngine)}

    def idle(self) -> bool:
        """No delivery queued or running on any engine."""
        return all(e.dispatcher.pending == 0 for e in self.fanout_engines().values())

    def wait_idle(self) -> None:
        wait(self.context, self.idle, "every queued delivery was handled")

    def delivered_by_engine(self) -> dict[str, int]:
        return {k: s.delivered for k, s in self.bus.per_engine_stats().items()}

    def records(self, kind: str) -> list[CloudEvent]:
        return [r for r in self.observed if r.type == EVENT_PREFIX + kind]

    def resolve(self, cell: str) -> Any:
        """A table value; ``[subscription NAME]`` and ``[published event]`` name ids."""
        if match := re.fullmatch(r"\[subscription (.+)\]", cell):
            return self.subscribers[match.group(1)].sub.id
        if cell == "[published event]":
            assert self.published, "nothing was published"
            return self.published[-1].id
        return value(cell)

    # --- publishing -------------------------------------------------------------------

    async def publish(self, topic: str, payload: Any, tenant: str | None = None) -> Event:
        if tenant is None:
            event = await self.bus.publish(topic, payload)
        else:
            event = await self.bus.for_tenant(tenant).publish(topic, payload)
        self.published.append(event)
        return event

    def start_publisher(self, name: str, topic: str, count: int) -> None:
        """A background task publishing ``count`` numbered events; ``progress`` counts them."""
        self.progress[name] = 0

        async def publish_all() -> None:
            for n in range(1, count + 1):
                await self.publish(topic, {"n": n})
                self.progress[name] = n

        self.spawn(name, publish_all())

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> None:
        loop: asyncio.AbstractEventLoop = self.context.loop
        self.tasks[name] = loop.create_task(coro)


def world(context: Any) -> BusWorld:
    if not hasattr(context, "bus_world"):
        context.bus_world = BusWorld(context)
    return cast(BusWorld, context.bus_world)


def leftover_tasks() -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and not t.done()]


def numbers(events: list[Event]) -> list[int]:
    return [int(e.payload["n"]) for e in events]


def table_events(context: Any) -> list[tuple[str, Any]]:
    return [(row["topic"], value(row["payload"])) for row in context.table]


def as_pairs(events: list[Event]) -> list[tuple[str, Any]]:
    return [(e.topic, e.payload) for e in events]
