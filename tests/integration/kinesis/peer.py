"""A bus in a process of its own, driven through stdin/stdout by the cross-process tests.

    python -m tests.integration.kinesis.peer '<engine config as JSON>' sub <pattern>
    python -m tests.integration.kinesis.peer '<engine config as JSON>' pub <topic> <count>

Both print ``READY`` once the bus is started (and, for ``sub``, subscribed). A subscriber
prints ``GOT <payload as JSON>`` per event and stops cleanly at the line ``STOP`` on stdin; a
publisher waits for ``GO``, publishes ``count`` events ``{"n": i}`` (partition key
``key-<i>``), then prints ``DONE``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys

from modular import Application
from modules.eventbus import Event, EventBusModule

from .helpers import bus_settings


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def read_line() -> str:
    line: str = await asyncio.to_thread(sys.stdin.readline)
    return line.strip()


async def main(config: str, role: str, topic: str, count: int = 0) -> None:
    app = Application(bus_settings(json.loads(config)), envvar_prefix=None)
    app.register_module(EventBusModule())
    async with app:
        bus = app.get_service("eventbus.provider", EventBusModule)
        if role == "sub":

            def handler(event: Event) -> None:
                say(f"GOT {json.dumps(event.payload)}")

            await bus.subscribe(topic, handler)
            say("READY")
            while await read_line() not in ("STOP", ""):
                pass
        else:
            say("READY")
            await read_line()  # GO
            await asyncio.gather(
                *(bus.publish(topic, {"n": i}, partition_key=f"key-{i}") for i in range(count))
            )
            say("DONE")


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("PEER_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    arguments = sys.argv[1:]
    asyncio.run(main(arguments[0], arguments[1], arguments[2], *map(int, arguments[3:])))
