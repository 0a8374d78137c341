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
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from modular import configure_logging

from ..errors import EngineUnavailableError
from .bench import run_bench
from .commands import cmd_demo, cmd_health, cmd_publish, cmd_route, cmd_tail
from .session import PROG, CommandError
from .stats import cmd_stats

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line instead of argparse's usage block.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
    bench.set_defaults(run=run_bench)
    return parser


def _configure_logging(verbose: int) -> None:
    if verbose:
        configure_logging(logging.DEBUG if verbose > 1 else logging.WARNING)  # masks secrets
    else:
        # Failures reach the user as the command's one error line, not as log records.
        root = logging.getLogger()
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
