"""Multi-engine event bus demo: two engines, routing by topic, typed events, stats.

python -m examples.multi_engine_eventbus            # two memory engines
python -m examples.multi_engine_eventbus --redis    # memory-reliable on Redis (streams)
python -m examples.multi_engine_eventbus --failing-handler   # how a handler failure shows

Logs go to stderr at INFO; MODULAR_LOG_LEVEL=WARNING (or ERROR, DEBUG) changes that.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from pydantic import BaseModel

from modular import Application, CloudEvent, configure_logging
from modules.eventbus import Event, EventBusModule

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


class UserEvent(BaseModel):
    user_id: str
    action: str


class PageView(BaseModel):
    page: str
    session: str


class SystemEvent(BaseModel):
    component: str
    message: str


EXPECTED = 5  # events published below


def build_app(environment: str | None) -> Application:
    app = Application(
        settings_files=[ROOT / "settings.toml", HERE / "settings.toml"],
        environment=environment,
    )
    app.register_module(EventBusModule())
    return app


async def main(environment: str | None, failing_handler: bool = False) -> None:
    app = build_app(environment)
    failures: list[CloudEvent] = []
    app.register_observer(failures.append, ["com.modular.eventbus.message.failed"])
    handled: list[str] = []
    all_handled = asyncio.Event()

    def note(topic: str) -> None:
        handled.append(topic)
        if len(handled) == EXPECTED:
            all_handled.set()

    async def on_user(event: Event) -> None:
        user: UserEvent = event.payload
        note(event.topic)
        print(f"  [memory-fast]     user {user.user_id}: {user.action}")

    async def on_auth(event: Event) -> None:
        note(event.topic)
        print(f"  [memory-fast]     auth event for {event.payload['user_id']}")

    async def on_analytics(event: Event) -> None:
        view: PageView = event.payload
        note(event.topic)
        print(f"  [memory-reliable] page view {view.page} (session {view.session})")

    def on_system(event: Event) -> None:
        info: SystemEvent = event.payload
        note(event.topic)
        print(f"  [memory-reliable] {info.component}: {info.message}")

    def on_system_audit(event: Event) -> None:
        raise RuntimeError(f"audit log unavailable for {event.topic}")

    async with app:
        bus: EventBusModule = app.get_service("eventbus.provider", EventBusModule)
        router = bus.get_router()
        print(f"environment: {app.environment}")
        print("engines:", ", ".join(f"{n} ({type(e).__name__})" for n, e in bus.engines().items()))

        subs = [
            await bus.subscribe("user.*", on_user, payload_type=UserEvent),
            await bus.subscribe("auth.*", on_auth),
            await bus.subscribe_async("analytics.*", on_analytics, payload_type=PageView),
            await bus.subscribe("system.*", on_system, payload_type=SystemEvent),
        ]
        if failing_handler:  # logged as a WARNING and counted; the others carry on
            subs.append(await bus.subscribe("system.*", on_system_audit))
        published = [
            ("user.registered", UserEvent(user_id="user123", action="register")),
            ("user.login", UserEvent(user_id="user123", action="login")),
            ("auth.token_issued", {"user_id": "user123"}),
            ("analytics.pageview", PageView(page="/dashboard", session="sess123")),
            ("system.health", SystemEvent(component="database", message="connection ok")),
        ]
        print("\nroutes:")
        for topic, _ in published:
            print(f"  {topic:<20} -> {router.engine_for_topic(topic)}")
        print("\nhandling:")
        for topic, payload in published:
            await bus.publish(topic, payload)
        async with asyncio.timeout(10):
            await all_handled.wait()

        print("\ntopics:", ", ".join(bus.topics()))
        for topic, _ in published:
            print(f"  subscribers of {topic}: {bus.subscriber_count(topic)}")
        delivered, dropped = bus.stats()
        print(f"\nstats: delivered={delivered} dropped={dropped} handler failures={len(failures)}")
        for name, stats in bus.per_engine_stats().items():
            print(f"  {name}: delivered={stats.delivered} dropped={stats.dropped}")
        for sub in subs:
            await sub.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis", action="store_true", help="put memory-reliable on Redis")
    parser.add_argument(
        "--failing-handler", action="store_true", help="add a handler that raises on system.*"
    )
    args = parser.parse_args()
    configure_logging()
    env = "redis" if args.redis else os.environ.get("MODULAR_ENV")
    asyncio.run(main(env, args.failing_handler))
