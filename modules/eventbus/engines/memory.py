"""The in-process engine: publish hands the event straight to the local fan-out."""

from __future__ import annotations

from collections.abc import Awaitable

from ..event import Event
from .base import Capabilities, FanoutEngine


class MemoryEngine(FanoutEngine):
    """Bounded, ordered per subscription, in this process only."""

    capabilities = Capabilities(patterns=True, ordering=True, durability=False, cross_process=False)

    def publish(self, event: Event) -> Awaitable[None]:
        # The dispatcher's coroutine itself: no extra coroutine frame on the hot path.
        return self.dispatcher.dispatch(event)
