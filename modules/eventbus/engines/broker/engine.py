"""BrokerEngine: the lifecycle, supervision, publishing and receiving every broker engine
shares. A concrete engine implements a handful of methods (see README.md beside this file).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import abstractmethod
from collections.abc import Awaitable, Coroutine, Sequence
from typing import Any, ClassVar

from ...config import EngineConfig
from ...errors import EngineUnavailableError
from ...event import Event, Subscription
from ..base import EngineHealth, FanoutEngine
from .acks import AckTracker, acknowledge_loop
from .config import BrokerEngineConfig, Masker
from .health import Backoff, ConnectionHealth
from .inbound import Inbound
from .outbox import Outbox, Outgoing
from .tasks import bounded, cancel, spawn

# Seconds stop() keeps for closing the engine's clients once draining used up its timeout
# (the bus abandons an engine 0.5 s after shutdownTimeout).
CLOSE_GRACE = 0.3


class Session:
    """One receiving session, as the engine's :meth:`BrokerEngine.session` sees it."""

    __slots__ = ("_engine", "established", "number")

    def __init__(self, engine: BrokerEngine, number: int) -> None:
        self._engine = engine
        self.number = number  # 0 for the first session that gets established
        self.established = False

    def ready(self) -> None:
        """The connection is up and every subscription is restored on it: the engine is
        ``up``, ``start()`` may return, a later session counts as a reconnect."""
        if self.established:
            return
        self.established = True
        self._engine._session_established(self)


class BrokerEngine(FanoutEngine):
    """An engine that moves encoded events to and from a broker; the local fan-out, health,
    reconnection, decode-and-check, acknowledgements, publishing and bounded stop are here.

    Implement: :meth:`session`, :meth:`send_batch`, :meth:`destination`; usually
    :meth:`broker_subscribe` / :meth:`broker_unsubscribe` (broker-side subscriptions),
    :meth:`open` / :meth:`close` (clients), and for acknowledged reading ``self.acks`` and
    :meth:`send_acks`.
    """

    kind: ClassVar[str] = "broker"  # names the engine type in messages: "redis", "kafka"
    config_model: ClassVar[type[EngineConfig]] = BrokerEngineConfig
    # Failures of the link to the broker (logged without a traceback, then reconnected);
    # anything else a session raises is a bug: logged with its traceback, then reconnected.
    link_errors: ClassVar[tuple[type[BaseException], ...]] = (OSError,)

    def __init__(self, name: str, config: BrokerEngineConfig, *, address: str) -> None:
        """``address``: where the broker is, secrets masked (see ``config.mask_url``)."""
        super().__init__(name, config)
        self.settings = config
        # Messages go to the engine type's logger (``modules.eventbus.engines.redis``).
        self.log = logging.getLogger(f"modules.eventbus.engines.{self.kind}")
        self.mask = Masker(config.secrets())
        self.connection = ConnectionHealth(self.kind, name, address, self.mask, self.log)
        self.backoff = Backoff(config.reconnect_min_delay, config.reconnect_max_delay)
        self.inbound = Inbound(self.kind, name, self.dispatcher, self.log)
        self.outbox = Outbox(
            self.send_batch,
            self.destination,
            self.connection,
            self.backoff,
            timeout=config.publish_timeout,
            batch_size=config.batch_size,
            max_message_size=config.max_message_size,
            on_success=self._link_ok,
        )
        # An engine that acknowledges what it reads sets this (MessageAcks or WatermarkAcks)
        # in its __init__, and implements send_acks.
        self.acks: AckTracker[Any] | None = None
        self._started = False
        self._receiver: asyncio.Task[None] | None = None
        self._session: Session | None = None
        self._sessions = 0  # sessions established since start
        self._first_session: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- what an engine implements ------------------------------------------------------

    @abstractmethod
    async def session(self, session: Session) -> None:
        """One receiving session: connect, restore every subscription of
        ``self.dispatcher.subscriptions``, call ``session.ready()``, then receive until the
        link breaks (raise) or the task is cancelled (at stop). Hand each message to
        ``self.inbound.receive(data, origin, settle)``. The kit reconnects with backoff and
        calls this again; it never ends a session itself for what a message holds."""

    @abstractmethod
    async def send_batch(self, batch: Sequence[Outgoing]) -> None:
        """Send ``batch`` (``item.data`` to ``item.destination``) to the broker, in one round
        trip when the client allows it. ``item.fail(error)`` for a message the broker
        refused; raise when the link failed (the kit retries until each deadline). Items
        left unsettled succeed when this returns."""

    @abstractmethod
    def destination(self, event: Event) -> Any:
        """Where ``event`` goes (a channel, a topic, a stream and partition key); validated
        names on the wire, computed once per publish."""

    async def broker_subscribe(self, sub: Subscription) -> None:
        """While running and up: make the broker deliver ``sub``'s events (it is in the
        dispatcher already); return once an event published from now on will be received.
        The kit bounds the wait by ``publishTimeout``. Subscriptions made while no session
        runs are restored by the next session."""

    async def broker_unsubscribe(self, sub: Subscription) -> None:
        """Stop receiving what only ``sub`` (out of the dispatcher already) wanted."""

    async def open(self) -> None:
        """At start, before any session: create the clients (without waiting on the broker:
        a broker down at start is the session loop's business)."""

    async def close(self) -> None:
        """At stop, after receiving and publishing ended and acknowledgements were flushed:
        leave the broker (consumer groups, leases) and release every client. Bounded by the
        kit; what cannot be done in time is abandoned."""

    async def send_acks(self, batch: Any) -> None:
        """Acknowledge ``batch`` (from ``self.acks.ready()``) to the broker: XACK, commit,
        checkpoint. Raise when it did not reach the broker (it stays ready)."""
        raise NotImplementedError(f"{type(self).__name__} sets acks but not send_acks")

    # --- what it gets -------------------------------------------------------------------

    def health(self) -> EngineHealth:
        return self.connection.snapshot()

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        """Run ``work`` in the background until it ends or the engine stops."""
        spawn(work, self._tasks, f"{self.name}:{name}")

    @property
    def receiving(self) -> bool:
        """A receiving session is established now."""
        return self._session is not None and self._session.established

    def publish(self, event: Event) -> Awaitable[None]:
        # The outbox's coroutine itself: no extra coroutine frame on the hot path.
        return self.outbox.publish(event)

    async def start(self) -> None:
        """Connect within ``connectTimeout``. If the broker cannot be reached: with
        ``requireAtStart``, EngineUnavailableError; otherwise one WARNING, and the engine is
        ``down`` and keeps reconnecting in the background."""
        if self._started:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        self.connection.starting()
        self._sessions = 0
        self._first_session = loop.create_future()
        try:
            await self.open()
            self.outbox.start()
            if self.acks is not None:
                self.spawn(acknowledge_loop(self.acks, self.send_acks, self._ack_failed), "acks")
            self._receiver = loop.create_task(self._receive_loop(), name=f"{self.name}:receive")
            done, _ = await asyncio.wait(
                [self._first_session], timeout=self.settings.connect_timeout
            )
        except BaseException:
            await self._shut(loop.time() + CLOSE_GRACE)
            raise
        self.connection.announce()
        if done:
            return
        if self.settings.require_at_start:
            error = self.connection.unavailable(
                f"could not connect within connectTimeout ({self.settings.connect_timeout}s) "
                "and requireAtStart is set"
            )
            await self._shut(loop.time() + CLOSE_GRACE)
            raise error
        self.log.warning(
            "%s engine %s cannot reach %s at start (%s); it is down and keeps reconnecting",
            self.kind,
            self.name,
            self.connection.address,
            self.connection.error or f"no connection within {self.settings.connect_timeout}s",
        )

    async def stop(self, timeout: float) -> None:
        """Within ``timeout`` (plus CLOSE_GRACE) whatever the broker does: stop receiving,
        drain the fan-out, acknowledge what settled, send or fail the publishes still queued
        (EngineUnavailableError), then close. What is left unacknowledged comes back."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not self._started:
            await super().stop(timeout)  # subscriptions made before a start
            return
        await cancel(self._receiver, within=max(deadline - loop.time(), CLOSE_GRACE))
        self._receiver = None
        self._session = None
        await self.dispatcher.drain(max(0.0, deadline - loop.time()))
        await self._flush_acks(deadline)
        await self._shut(max(deadline, loop.time() + CLOSE_GRACE))

    async def _shut(self, deadline: float) -> None:
        """Fail or send the publishes, close the fan-out and the clients, by ``deadline``."""
        loop = asyncio.get_running_loop()
        await cancel(self._receiver, within=max(deadline - loop.time(), 0.05))
        self._receiver = None
        self._session = None
        await self.outbox.stop(max(0.0, deadline - loop.time() - CLOSE_GRACE))
        await self.dispatcher.close(0.0)
        for task in list(self._tasks):
            await cancel(task, within=max(deadline - loop.time(), 0.05))
        try:
            await bounded(self.close(), max(deadline - loop.time(), 0.05))
        except TimeoutError:
            self.log.warning(
                "%s engine %s could not close its connections to %s in time; abandoned",
                self.kind,
                self.name,
                self.connection.address,
            )
        except Exception as exc:
            self.log.warning("%s engine %s: closing failed: %s", self.kind, self.name, exc)
        if self.acks is not None:
            self.acks.clear()  # type: ignore[attr-defined]
        self._started = False
        self.connection.stopped()

    async def _flush_acks(self, deadline: float) -> None:
        acks = self.acks
        if acks is None:
            return
        batch = acks.ready()
        if not batch:
            return
        loop = asyncio.get_running_loop()
        try:
            await bounded(self.send_acks(batch), max(deadline - loop.time(), CLOSE_GRACE))
        except Exception as exc:
            self.log.warning(
                "%s engine %s could not acknowledge %d messages at stop (they will be "
                "delivered again): %s",
                self.kind,
                self.name,
                len(batch),
                self.mask.error(exc),
            )
            return
        acks.acknowledged(batch)

    async def subscribe(self, sub: Subscription) -> None:
        """Live once the broker confirmed it; while the broker is unreachable, wait at most
        ``publishTimeout``, then EngineUnavailableError naming the cause."""
        self.dispatcher.add(sub)
        if not self._started:
            return  # the first session subscribes it
        timeout = self.settings.publish_timeout
        try:
            if not await self.connection.wait_up(timeout):
                raise self.connection.unavailable(
                    f"could not subscribe to {sub.topic!r} within publishTimeout ({timeout}s)"
                )
            await bounded(self.broker_subscribe(sub), timeout)
        except BaseException as exc:
            self.dispatcher.remove(sub)
            # The subscription failed; leftovers on the broker go with the session.
            with contextlib.suppress(Exception):
                await bounded(self.broker_unsubscribe(sub), CLOSE_GRACE)
            if not isinstance(exc, EngineUnavailableError) and isinstance(
                exc, (TimeoutError, *self.link_errors)
            ):
                raise self.connection.unavailable(
                    f"could not subscribe to {sub.topic!r}", exc
                ) from exc
            raise

    async def unsubscribe(self, sub: Subscription) -> None:
        if not self.dispatcher.remove(sub) or not self._started:
            return
        try:
            await bounded(self.broker_unsubscribe(sub), self.settings.publish_timeout)
        except Exception as exc:
            if not isinstance(exc, (TimeoutError, *self.link_errors)):
                raise
            # The next session subscribes only what is left.
            self.connection.mark_down(exc)

    # --- the receiving loop -------------------------------------------------------------

    async def _receive_loop(self) -> None:
        """Keep one receiving session: run it, and when it breaks start over after a backoff."""
        failures = 0
        while True:
            session = Session(self, self._sessions)
            self._session = session
            try:
                await self.session(session)
                raise ConnectionError("the receiving session ended")
            except self.link_errors as exc:
                self.connection.mark_down(exc)
            except Exception as exc:  # a bug must not end the engine's reception for good
                self.log.exception(
                    "%s engine %s: receiving failed; reconnecting", self.kind, self.name
                )
                self.connection.mark_down(exc)
            finally:
                self._session = None
            if session.established:
                failures = 0
            failures += 1
            await self.backoff.sleep(failures)

    def _session_established(self, session: Session) -> None:
        if self._session is not session:
            return
        if self._sessions:
            self.dispatcher.stats.reconnects += 1
        self._sessions += 1
        self.connection.mark_up()
        first = self._first_session
        if first is not None and not first.done():
            first.set_result(None)

    def _link_ok(self) -> None:
        """A round trip to the broker worked: up again, if the receiving side is too."""
        if self.receiving and not self.connection.is_up:
            self.connection.mark_up()

    async def _ack_failed(self, error: BaseException, failures: int) -> None:
        if isinstance(error, self.link_errors):
            self.connection.mark_down(error)
        else:
            self.log.warning("%s engine %s could not acknowledge: %s", self.kind, self.name, error)
        await self.backoff.sleep(failures)
