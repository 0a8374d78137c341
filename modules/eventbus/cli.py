"""The ``eventbus`` command: inspect, exercise and benchmark a configured event bus.

    eventbus route user.login --settings app.toml        which engine, and which rule says so
    eventbus publish user.created '{"id": 7}' --tenant acme
    eventbus tail 'user.*'                                 print events as they arrive
    eventbus stats --url http://127.0.0.1:9464/metrics    a running application's counters
    eventbus health                                        each engine's state; exit 1 if down
    eventbus bench --engine memory-fast --events 20000
    eventbus demo                                          the multi-engine example

Settings are read like the application reads them: ``--settings`` files (repeatable; later
ones override earlier ones; default ``./settings.toml`` when it exists), the environment
``--env`` (default ``$MODULAR_ENV``), and ``MODULAR_*`` environment variables.

Exit status: 0 success, 1 an error (one line on stderr) or an engine down, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from modular import Application, CloudEvent, LifecycleError

from .errors import EngineUnavailableError
from .event import Event
from .module import EventBusModule
from .topics import matches, validate_pattern, validate_tenant, validate_topic

PROG = "eventbus"
ENGINE_FAILED = "com.modular.eventbus.engine.failed"
STATS_FIELDS = ("delivered", "dropped", "failed", "decode_errors", "reconnects")


class CommandError(Exception):
    """A failure the user can act on; printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line instead of argparse's usage block.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- the bus, as the settings describe it ----------------------------------------------------


@dataclass
class Session:
    """An application holding one EventBusModule, built from the command's settings."""

    app: Application
    bus: EventBusModule
    failures: dict[str, str] = field(default_factory=dict)  # engine -> why it did not start

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Session:
        files = [Path(f) for f in args.settings or ()]
        if not args.settings and Path("settings.toml").is_file():
            files = [Path("settings.toml")]
        for path in files:
            if not path.is_file():
                raise CommandError(f"settings file not found: {path}")
        try:
            # absolute: dynaconf looks for relative names elsewhere than the working directory
            app = Application(settings_files=[f.resolve() for f in files], environment=args.env)
        except Exception as exc:
            raise CommandError(f"cannot load {', '.join(map(str, files))}: {exc}") from exc
        bus = EventBusModule()
        app.register_module(bus)
        session = cls(app, bus)
        app.register_observer(session._engine_failed, [ENGINE_FAILED])
        return session

    def _engine_failed(self, record: CloudEvent) -> None:
        self.failures[str(record.data.get("engine"))] = str(record.data.get("error"))

    async def init(self) -> None:
        await self.app.init()

    async def start(self) -> None:
        try:
            await self.app.start()
        except LifecycleError as exc:
            raise CommandError(_lifecycle_message(exc)) from exc

    async def stop(self) -> None:
        try:
            await self.app.stop()
        except LifecycleError as exc:
            raise CommandError(_lifecycle_message(exc)) from exc

    def engine_states(self) -> dict[str, tuple[str, str | None]]:
        """``{engine: (state, last error)}``: the bus's own health report when it has one,
        else "up" for every engine that started and "down" with its start error."""
        health = getattr(self.bus, "health", None)
        if callable(health):
            report = health()
            return {
                name: (str(getattr(h, "state", "up")), getattr(h, "error", None))
                for name, h in report.items()
            }
        return {
            name: ("down", self.failures[name]) if name in self.failures else ("up", None)
            for name in self.bus.engines()
        }

    def explain(self, exc: EngineUnavailableError) -> str:
        """The error, with the start failure of the engine it names (once)."""
        message = str(exc)
        for name, error in self.failures.items():
            if repr(name) in message and error not in message:
                return f"{message} ({error})"
        return message


def engine_type(bus: EventBusModule, name: str) -> str:
    """The configured ``type`` of an engine (its class name for a tenant's own engine)."""
    for spec in bus.config.effective_engines():
        if spec.name == name:
            return spec.type
    return type(bus.engines()[name]).__name__


def _lifecycle_message(exc: LifecycleError) -> str:
    return "; ".join(f"{type(e).__name__}: {e}" for _, e in exc.errors) or str(exc)


async def _running(args: argparse.Namespace, work: Callable[[Session], Awaitable[int]]) -> int:
    """Start the bus, run ``work``, always stop the bus."""
    session = Session.from_args(args)
    await session.start()
    try:
        return await work(session)
    except EngineUnavailableError as exc:
        raise CommandError(session.explain(exc)) from exc
    finally:
        await session.stop()


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[str(h) for h in headers], *([_cell(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(row, widths, numeric, strict=True)
        ]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 100 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


# --- commands ----------------------------------------------------------------------------


async def cmd_route(args: argparse.Namespace) -> int:
    validate_topic(args.topic)
    session = Session.from_args(args)
    await session.init()
    bus = session.bus
    router = bus.get_router()
    if args.tenant:
        validate_tenant(args.tenant)
        router = bus.for_tenant(args.tenant).get_router()
    engine = router.engine_for_topic(args.topic)
    print(f"{args.topic} -> {engine} ({engine_type(bus, engine)})")
    for i, (patterns, _) in enumerate(router.rules()):
        pattern = next((p for p in patterns if matches(p, args.topic)), None)
        if pattern is not None:
            print(f"  because routing[{i}] matches it with {pattern!r} (first matching rule wins)")
            break
    else:
        print(f"  because no routing rule matches it: the first engine, {engine!r}, takes it")
    return 0


async def cmd_publish(args: argparse.Namespace) -> int:
    validate_topic(args.topic)
    if args.tenant:
        validate_tenant(args.tenant)
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise CommandError(f"invalid JSON payload {_short(args.payload)}: {exc}") from None
    metadata = dict(_key_value(item) for item in args.metadata or ())

    async def publish(session: Session) -> int:
        event = await session.bus.publish(
            args.topic,
            payload,
            metadata=metadata or None,
            partition_key=args.partition_key,
            tenant=args.tenant,
        )
        engine = session.bus.get_router().engine_for_topic(args.topic)
        if args.tenant:
            engine = session.bus.for_tenant(args.tenant).get_router().engine_for_topic(args.topic)
        print(f"published {event.id} to {args.topic} on engine {engine}")
        return 0

    return await _running(args, publish)


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise CommandError(f"--metadata takes KEY=VALUE, got {item!r}")
    return key, value


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


async def cmd_tail(args: argparse.Namespace) -> int:
    validate_pattern(args.pattern)
    if args.tenant:
        validate_tenant(args.tenant)
    if args.count is not None and args.count <= 0:
        raise CommandError(f"--count must be positive, got {args.count}")

    async def tail(session: Session) -> int:
        bus = session.bus
        done = asyncio.Event()
        seen = 0

        def show(event: Event) -> None:
            nonlocal seen
            print(_event_line(event, as_json=args.json), flush=True)
            seen += 1
            if args.count is not None and seen >= args.count:
                done.set()

        if args.tenant:
            sub = await bus.for_tenant(args.tenant).subscribe(args.pattern, show)
        else:
            sub = await bus.subscribe(args.pattern, show, all_tenants=args.all_tenants)
        local = [n for n in sub.engines if not bus.engines()[n].capabilities.cross_process]
        note = f"; {', '.join(local)}: this process only" if local else ""
        skipped = [
            n for n in bus.get_router().engines_for_pattern(args.pattern) if n not in sub.engines
        ]
        if skipped:
            note += f"; not on {', '.join(skipped)}: not running"
        print(
            f"{PROG}: tailing {args.pattern!r} on {', '.join(sub.engines)}{note} (Ctrl-C stops)",
            file=sys.stderr,
            flush=True,
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, done.set)
        try:
            async with asyncio.timeout(args.timeout):
                await done.wait()
        except TimeoutError:
            if args.count is not None:
                raise CommandError(
                    f"timed out after {args.timeout}s with {seen} of {args.count} events"
                ) from None
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            await sub.cancel()
        return 0

    return await _running(args, tail)


def _event_line(event: Event, *, as_json: bool) -> str:
    payload = event.payload
    if hasattr(payload, "model_dump"):
        payload = payload.model_dump(mode="json")
    if as_json:
        record = {
            "id": event.id,
            "topic": event.topic,
            "time": event.created_at.isoformat(),
            "source": event.source,
            "tenant": event.tenant,
            "partition_key": event.partition_key,
            "metadata": dict(event.metadata),
            "payload": payload,
        }
        return json.dumps(record, default=str)
    tenant = f" tenant={event.tenant}" if event.tenant else ""
    stamp = event.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"{stamp} {event.topic}{tenant} {json.dumps(payload, default=str)}"


async def cmd_stats(args: argparse.Namespace) -> int:
    url, namespace = args.url, args.namespace
    if url is None:
        session = Session.from_args(args)
        await session.init()
        server = session.bus.config.metrics.prometheus
        if server is None:
            raise CommandError(
                "stats reads a running application's /metrics: pass --url, or set "
                "eventbus.metrics.prometheus in the settings (see --settings)"
            )
        host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
        url = f"http://{host}:{server.port}/metrics"
        namespace = namespace or server.namespace
    text = await asyncio.to_thread(_fetch, url)
    stats = _parse_stats(text, namespace, url)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        rows = [[name, *(int(values[f]) for f in STATS_FIELDS)] for name, values in stats.items()]
        print(format_table(["engine", *STATS_FIELDS], rows))
    return 0


def _fetch(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise CommandError(f"--url must be an http:// or https:// address, got {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        raise CommandError(f"cannot read {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(f"cannot read {url}: {reason}") from None


def _parse_stats(text: str, namespace: str | None, url: str) -> dict[str, dict[str, float]]:
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        raise CommandError(
            "stats needs prometheus-client: pip install 'modular-eventbus[prometheus]'"
        ) from None
    samples: dict[str, dict[str, float]] = {}  # sample name -> engine -> value
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if "engine" in sample.labels:
                    samples.setdefault(sample.name, {})[sample.labels["engine"]] = sample.value
    except ValueError as exc:
        raise CommandError(f"{url} is not Prometheus text: {exc}") from None
    if namespace is None:
        found = sorted(
            n.removesuffix("_delivered_total") for n in samples if n.endswith("_delivered_total")
        )
        if len(found) > 1:
            raise CommandError(f"{url} has several buses ({', '.join(found)}): pass --namespace")
        namespace = found[0] if found else "modular_eventbus"
    if f"{namespace}_delivered_total" not in samples:
        raise CommandError(f"{url} has no {namespace}_delivered_total: is it an event bus?")
    engines = sorted(samples[f"{namespace}_delivered_total"], key=lambda e: (e != "_all", e))
    return {
        engine: {
            f: samples.get(f"{namespace}_{f}_total", {}).get(engine, 0.0) for f in STATS_FIELDS
        }
        for engine in engines
    }


async def cmd_health(args: argparse.Namespace) -> int:
    async def health(session: Session) -> int:
        states = session.engine_states()
        if args.json:
            report = {
                name: {"type": engine_type(session.bus, name), "state": state, "error": error}
                for name, (state, error) in states.items()
            }
            print(json.dumps(report, indent=2))
        else:
            rows = [
                [name, engine_type(session.bus, name), state, error]
                for name, (state, error) in states.items()
            ]
            print(format_table(["engine", "type", "state", "error"], rows))
        down = [name for name, (state, _) in states.items() if state != "up"]
        if down:
            print(
                f"{PROG}: {len(down)} of {len(states)} engines not up: {', '.join(down)}",
                file=sys.stderr,
            )
            return 1
        return 0

    return await _running(args, health)


async def cmd_bench(args: argparse.Namespace) -> int:
    from .cli_bench import run_bench

    return await run_bench(args)


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from examples.multi_engine_eventbus.__main__ import main as demo
    except ImportError:
        raise CommandError(
            "the demo lives in the source checkout (examples/multi_engine_eventbus): "
            "run it from an editable install (pip install -e .) or with `make demo`"
        ) from None
    asyncio.run(demo("redis" if args.redis else args.env))
    return 0


# --- the command line --------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    settings = _Parser(add_help=False)
    settings.add_argument(
        "--settings",
        action="append",
        metavar="FILE",
        help="a settings file (TOML/YAML/JSON); repeat to layer (default: ./settings.toml)",
    )
    settings.add_argument("--env", help="settings environment (default: $MODULAR_ENV)")

    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="show log warnings (-vv: debug)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, *, uses_settings: bool = True) -> argparse.ArgumentParser:
        parents = [settings] if uses_settings else []
        return commands.add_parser(name, help=help, description=help, parents=parents)

    demo = command("demo", "run the multi-engine example", uses_settings=False)
    demo.add_argument("--redis", action="store_true", help="put memory-reliable on Redis")
    demo.add_argument("--env", help="settings environment of the example")
    demo.set_defaults(run=cmd_demo, sync=True)

    route = command("route", "which engine a topic goes to, and why")
    route.add_argument("topic")
    route.add_argument("--tenant", help="route as this tenant (its config overlay applies)")
    route.set_defaults(run=cmd_route)

    publish = command("publish", "publish one event")
    publish.add_argument("topic")
    publish.add_argument("payload", metavar="JSON", help="the payload, as JSON")
    publish.add_argument("--tenant", help="publish as this tenant")
    publish.add_argument("--metadata", action="append", metavar="KEY=VALUE")
    publish.add_argument("--partition-key")
    publish.set_defaults(run=cmd_publish)

    tail = command("tail", "print events matching a pattern as they arrive")
    tail.add_argument("pattern", help="a topic or pattern, e.g. 'user.*' or '*'")
    tenants = tail.add_mutually_exclusive_group()
    tenants.add_argument("--tenant", help="only this tenant's events")
    tenants.add_argument("--all-tenants", action="store_true", help="every tenant's events")
    tail.add_argument("--count", type=_positive_int, help="exit after this many events")
    tail.add_argument("--timeout", type=_positive_float, help="exit after this many seconds")
    tail.add_argument("--json", action="store_true", help="one JSON object per event")
    tail.set_defaults(run=cmd_tail)

    stats = command("stats", "a running application's delivery counters, from its /metrics")
    stats.add_argument("--url", help="its /metrics (default: from eventbus.metrics.prometheus)")
    stats.add_argument("--namespace", help="metric name prefix (default: found in the page)")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(run=cmd_stats)

    health = command("health", "start the bus, show each engine's state; exit 1 if one is down")
    health.add_argument("--json", action="store_true")
    health.set_defaults(run=cmd_health)

    bench = command("bench", "publish events through each engine and measure them")
    bench.add_argument("--engine", action="append", help="only this engine (repeatable)")
    bench.add_argument("--events", type=_positive_int, default=10_000, help="per engine")
    bench.add_argument(
        "--timeout", type=_positive_float, default=60.0, help="wait for deliveries (s)"
    )
    bench.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    bench.set_defaults(run=cmd_bench)
    return parser


def _configure_logging(verbose: int) -> None:
    root = logging.getLogger()
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)
    else:
        # Failures reach the user as the command's one error line, not as log records.
        root.addHandler(logging.NullHandler())
        root.setLevel(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        if getattr(args, "sync", False):
            return int(args.run(args))
        return int(asyncio.run(args.run(args)))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.verbose:
            logging.getLogger(PROG).exception("%s failed", args.command)
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, CommandError | ValueError | LookupError | EngineUnavailableError):
        text = exc.args[0] if isinstance(exc, LookupError) and exc.args else str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(str(text).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
