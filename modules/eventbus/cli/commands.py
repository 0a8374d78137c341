"""``route``, ``publish``, ``tail``, ``health`` and ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from ..event import Event
from ..topics import matches, validate_pattern, validate_tenant, validate_topic
from .session import PROG, CommandError, Session, engine_type, format_table, running


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
        bus = session.bus
        router = bus.for_tenant(args.tenant).get_router() if args.tenant else bus.get_router()
        engine = router.engine_for_topic(args.topic)
        local = not bus.engines()[engine].capabilities.cross_process
        note = " (in-process: only subscribers of this command could see it)" if local else ""
        print(f"published {event.id} to {args.topic} on engine {engine}{note}")
        return 0

    return await running(args, publish)


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

    return await running(args, tail)


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


async def cmd_health(args: argparse.Namespace) -> int:
    async def health(session: Session) -> int:
        states = await session.engine_states()
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

    return await running(args, health)


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
