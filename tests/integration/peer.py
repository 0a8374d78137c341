"""A bus in a process of its own, driven through stdin/stdout by the cross-process tests of
every broker engine (``peers.spawn`` starts it).

    python -m tests.integration.peer '<application settings as JSON>' sub <topic> [<ms>]
    python -m tests.integration.peer '<application settings as JSON>' pub <topic> <count>

Both print ``READY`` once the bus is started (and, for ``sub``, subscribed). A subscriber
prints ``GOT <event id> <payload as JSON>`` as each event reaches its handler (then works
``ms`` milliseconds, if given: the line comes before the event is acknowledged) and stops at
the line ``STOP`` on stdin (or at its end). A publisher waits for ``GO``, publishes ``count``
events ``{"n": i}`` one after the other (partition key ``str(i)``), prints ``SENT <event
id>`` for each, then ``DONE``. ``PEER_LOG_LEVEL`` sets what the bus logs to stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys

from modular import Application
from modules.eventbus import Event, EventBusModule


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def read_line() -> str:
    line: str = await asyncio.to_thread(sys.stdin.readline)
    return line.strip()


async def main(settings: str, role: str, topic: str, number: int = 0) -> None:
    """``number``: the handler's milliseconds of work (``sub``), the events to send (``pub``)."""
    app = Application(json.loads(settings), envvar_prefix=None)
    app.register_module(EventBusModule())
    async with app:
        bus = app.get_service("eventbus.provider", EventBusModule)
        if role == "sub":

            async def handler(event: Event) -> None:
                say(f"GOT {event.id} {json.dumps(event.payload)}")
                if number:
                    await asyncio.sleep(number / 1000)

            await bus.subscribe(topic, handler)
            say("READY")
            while await read_line() not in ("STOP", ""):
                pass
        else:
            say("READY")
            await read_line()  # GO
            for i in range(number):
                event = await bus.publish(topic, {"n": i}, partition_key=str(i))
                say(f"SENT {event.id}")
            say("DONE")


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("PEER_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    arguments = sys.argv[1:]
    asyncio.run(main(arguments[0], arguments[1], arguments[2], *map(int, arguments[3:])))
