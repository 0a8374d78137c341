"""A custom engine type used from settings: ``python -m examples.custom_engine``.

The program registers the ``sampling`` engine type (see ``sampling.py``), starts a bus whose
settings route ``telemetry.*`` to a sampling engine with ``sampleRate = 0.25``, publishes,
and shows what was delivered; then it shows the error a typo in the engine's own key gives.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from modular import Application, ConfigError, configure_logging
from modules.eventbus import Event, EventBusModule, register_engine

from .sampling import SamplingEngine, build_sampling_engine

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
READINGS = 8
ORDERS = 2


def on_reading(event: Event) -> None:
    print(f"  telemetry handler got reading #{event.payload['n']}")


def on_order(event: Event) -> None:
    print(f"  orders handler got order #{event.payload['n']}")


async def run_bus() -> None:
    app = Application(settings_files=[ROOT / "settings.toml", HERE / "settings.toml"])
    app.register_module(EventBusModule())
    async with app:
        bus = app.get_service("eventbus.provider", EventBusModule)
        telemetry = bus.engine("telemetry")
        assert isinstance(telemetry, SamplingEngine)
        print(f"engine telemetry: {type(telemetry).__name__}, sampleRate {telemetry.sample_rate}")
        for topic in ("telemetry.cpu", "orders.created"):
            print(f"{topic} -> {bus.get_router().engine_for_topic(topic)}")

        await bus.subscribe("telemetry.*", on_reading)
        await bus.subscribe("orders.*", on_order)
        for n in range(1, READINGS + 1):
            await bus.publish("telemetry.cpu", {"n": n, "load": 0.5})
        for n in range(1, ORDERS + 1):
            await bus.publish("orders.created", {"n": n})
        print(f"published {READINGS} telemetry.cpu readings and {ORDERS} orders.created events")
    # stop() delivered what was still queued; the counts are final now.

    print(
        f"telemetry: {telemetry.published} published, {telemetry.sampled_out} sampled out, "
        f"{bus.per_engine_stats()['telemetry'].delivered} delivered"
    )
    print(f"main: {bus.per_engine_stats()['main'].delivered} delivered")


async def show_typo_error() -> None:
    engine = {"name": "telemetry", "type": "sampling", "config": {"sampelRate": 0.5}}
    app = Application({"eventbus": {"engines": [engine]}})
    app.register_module(EventBusModule())
    try:
        await app.init()
    except ConfigError as exc:
        print(f"a typo in the engine's own key fails init(): {exc}")
    else:
        raise SystemExit("the misspelt key was accepted")


async def main() -> None:
    register_engine("sampling", build_sampling_engine)
    await run_bus()
    await show_typo_error()


if __name__ == "__main__":
    configure_logging()  # INFO to stderr; MODULAR_LOG_LEVEL=WARNING quietens it
    asyncio.run(main())
