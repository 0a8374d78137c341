"""THE local fan-out, shared by every engine.

An engine hands each event it has (published locally, or received from its broker) to its
:class:`Dispatcher`, which finds the matching subscriptions and queues the event for each:

- an ordered subscription (``subscribe``) has its own bounded mailbox, drained by one task,
  so its handler sees events one at a time and in order;
- async subscriptions (``subscribe_async``) share one bounded mailbox drained by a pool of
  ``worker_count`` workers, so handlers run concurrently.

When a mailbox is full the policy decides: ``drop`` (after yielding once, so that consumers
that are merely waiting for the CPU can catch up), ``block`` until there is room, or
``timeout``: block at most ``block_timeout`` seconds, then drop. ``rotate`` starts each
fan-out at the next subscriber, so under pressure no subscriber is always served last.

An ordered subscription whose handler is a plain function, idle with an empty mailbox, gets
the event handed over directly: the handler runs inside ``dispatch`` (order holds; a plain
function cannot suspend, so it would block the loop just as long in its own task). The
publisher still yields every ``YIELD_EVERY`` hand-overs.

Handlers run inside the publisher's ``contextvars.Context`` (tracing ids, ...) with
``current_tenant()`` set to the event's tenant. Whatever a handler raises (``BaseException``
subclasses included, but for ``KeyboardInterrupt`` and ``SystemExit``) is a failure of that
handler: logged, counted and reported; its subscription and the workers keep going.

A handler that publishes to its own subscription (or, on the pool, to any async subscription)
while the mailbox is full never waits on itself: in ``block``/``timeout`` mode that event is
queued beyond the bound (logged once per subscription), so nothing is lost and order holds.

Each broker message handed to ``dispatch`` may come with a settlement callback: it is called
once every local delivery of the event settled, with the worst :class:`Outcome` of them.
"""

from __future__ import annotations

import asyncio
import bisect
import contextvars
import inspect
import logging
import time
import types
import typing
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from modular import mask_secrets
from modular.tenants import current_tenant_var

from .event import Event, Subscription
from .topics import TopicIndex

logger = logging.getLogger("modules.eventbus.delivery")


YIELD_EVERY = 256  # deliveries started without waiting, between two yields of a publisher
# What a handler may raise that is not its own failure: the process is being ended.
_FATAL = (KeyboardInterrupt, SystemExit)
# The mailbox whose handler is running, in that handler's context (and so in the tasks it
# starts): a publish from there must not wait for room in it (see _offer_full).
_serving: contextvars.ContextVar[Mailbox | None] = contextvars.ContextVar(
    "eventbus_serving", default=None
)


class DeliveryMode(StrEnum):
    DROP = "drop"
    BLOCK = "block"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    buffer_size: int = 10
    mode: DeliveryMode = DeliveryMode.DROP
    block_timeout: float = 0.0
    rotate: bool = True
    worker_count: int = 5
    queue_size: int = 1000


class DeliveryStats:
    """Counters of one engine. ``delivered`` = a handler ran (and finished, well or not);
    ``dropped`` = an event could not be queued or was left at shutdown; ``failed`` counts the
    delivered events whose handler raised; ``decode_errors`` the broker messages that were not
    valid events (not drops); ``reconnects`` the broker connections re-established."""

    __slots__ = ("decode_errors", "delivered", "dropped", "failed", "reconnects")

    def __init__(
        self,
        delivered: int = 0,
        dropped: int = 0,
        failed: int = 0,
        decode_errors: int = 0,
        reconnects: int = 0,
    ) -> None:
        self.delivered = delivered
        self.dropped = dropped
        self.failed = failed
        self.decode_errors = decode_errors
        self.reconnects = reconnects

    def snapshot(self) -> DeliveryStats:
        return DeliveryStats(
            self.delivered, self.dropped, self.failed, self.decode_errors, self.reconnects
        )

    def __add__(self, other: DeliveryStats) -> DeliveryStats:
        return DeliveryStats(
            self.delivered + other.delivered,
            self.dropped + other.dropped,
            self.failed + other.failed,
            self.decode_errors + other.decode_errors,
            self.reconnects + other.reconnects,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DeliveryStats) and self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in sorted(self.__slots__)}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self.as_dict().items())
        return f"DeliveryStats({fields})"


class LatencyHistogram:
    """Seconds from publish to the start of a handler, in fixed buckets (Prometheus-style
    upper bounds). Recorded only once something asked for it (``Dispatcher.latency``): about
    0.3 us per delivery. Broker engines measure against the publisher's clock."""

    BOUNDS = (
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
        0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    )  # fmt: skip

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)  # the last: above every bound
        self.total = 0.0  # sum of the observed seconds

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.BOUNDS, seconds)] += 1
        self.total += seconds

    def snapshot(self) -> LatencyHistogram:
        copy = LatencyHistogram()
        copy.counts = list(self.counts)
        copy.total = self.total
        return copy

    @property
    def count(self) -> int:
        return sum(self.counts)


class DeliveryHooks(Protocol):
    """What the bus wants to hear about deliveries (observer events)."""

    def received(self, sub: Subscription, event: Event) -> None: ...
    def failed(self, sub: Subscription, event: Event, error: BaseException) -> None: ...


class Outcome(StrEnum):
    """How the local deliveries of one event ended, worst first when compared."""

    HANDLED = "handled"  # every handler returned (or there was nobody to deliver to)
    FAILED = "failed"  # a handler raised
    DROPPED = "dropped"  # a delivery was dropped by policy (full, timeout, unsubscribed)


_RANK = {Outcome.HANDLED: 0, Outcome.FAILED: 1, Outcome.DROPPED: 2}

SettlementCallback = Callable[[Outcome], None]


class Settlement:
    """Calls ``callback(outcome)`` once every local delivery of one event has settled, with
    the worst outcome of them. Broker engines acknowledge a message with it; deliveries still
    queued at shutdown never settle, so their message is redelivered."""

    __slots__ = ("callback", "outcome", "remaining")

    def __init__(self, remaining: int, callback: SettlementCallback) -> None:
        self.remaining = remaining
        self.callback = callback
        self.outcome = Outcome.HANDLED

    def settle(self, outcome: Outcome) -> None:
        if outcome is not Outcome.HANDLED and _RANK[outcome] > _RANK[self.outcome]:
            self.outcome = outcome
        self.remaining -= 1
        if self.remaining == 0:
            self.callback(self.outcome)


# (subscription, event, publisher context, settlement or None, the handler's awaitable when
# it was already called, or None)
_Item = tuple[Subscription, Event, contextvars.Context, Settlement | None, Any]


class Mailbox:
    """A bounded FIFO with awaitable arrival and awaitable room; cheaper than asyncio.Queue.

    Consumers take items from ``items`` and await ``arrival()`` when it is empty. Once closed,
    ``arrival`` and ``room`` return at once, so that consumers end and blocked publishers
    give up.
    """

    __slots__ = ("capacity", "closed", "getters", "items", "putters")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.closed = False
        self.items: deque[_Item] = deque()
        self.getters: deque[asyncio.Future[None]] = deque()
        self.putters: deque[asyncio.Future[None]] = deque()

    def offer(self, item: _Item) -> bool:
        if len(self.items) >= self.capacity or self.closed:
            return False
        self.items.append(item)
        if self.getters:
            _wake(self.getters)
        return True

    async def arrival(self) -> None:
        """Wait until an item arrives or the mailbox closes."""
        waiter = asyncio.get_running_loop().create_future()
        self.getters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self.getters:
                self.getters.remove(waiter)

    async def room(self) -> None:
        """Wait until an item was taken out (there may be room now) or the mailbox closed."""
        if self.closed:
            return
        waiter = asyncio.get_running_loop().create_future()
        self.putters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self.putters:
                self.putters.remove(waiter)
            elif self.putters and len(self.items) < self.capacity:
                _wake(self.putters)  # pass on a wake-up we can no longer use

    def close(self) -> None:
        self.closed = True
        for waiters in (self.getters, self.putters):
            while waiters:
                _wake(waiters)


def _wake(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


async def _resume_in_context(
    coro: Coroutine[Any, Any, Any], ctx: contextvars.Context, yielded: Any
) -> None:
    """Carry on ``coro`` (suspended on ``yielded``) with every step inside ``ctx``, as a Task
    created in ``ctx`` would. A task per event would cost several microseconds."""
    while True:
        send_value: Any = None
        error: BaseException | None = None
        try:
            if yielded is None:  # a bare yield, as in asyncio.sleep(0)
                await asyncio.sleep(0)
            else:
                yielded._asyncio_future_blocking = False
                send_value = await yielded
        except BaseException as exc:  # handed to the coroutine, as a Task would
            error = exc
        try:
            if error is None:
                yielded = ctx.run(coro.send, send_value)
            else:
                yielded = ctx.run(coro.throw, error)
        except StopIteration:
            return


def invoke(sub: Subscription, event: Event, ctx: contextvars.Context) -> Any:
    """Start ``sub``'s handler on ``event`` inside ``ctx``; returns what the handler returned
    (a coroutine for ``async def`` handlers, to be awaited with :func:`finish`).

    A ``payload_type`` subscription gets the payload validated into its model first, so a
    payload that does not validate fails here and the handler never sees it.
    """
    return ctx.run(_start, sub, event)


def _start(sub: Subscription, event: Event) -> Any:
    if sub.payload_type is not None:
        event = event._replace(payload=sub.payload_type.model_validate(event.payload))
    return sub.handler(event)


def _begin(
    sub: Subscription, event: Event, mailbox: Mailbox, ctx: contextvars.Context
) -> Awaitable[None] | None:
    """Inside ``ctx``, the handler's context: mark ``mailbox`` as the one being served, start
    the handler and take the first step of an ``async def`` one; returns what remains to
    await, as :func:`finish` does (one ``Context.run`` for all of it: the consumers' hot
    path)."""
    _serving.set(mailbox)
    result = _start(sub, event)
    if type(result) is types.CoroutineType:
        try:
            yielded = result.send(None)
        except StopIteration:
            return None
        return _resume_in_context(result, ctx, yielded)
    return finish(result, ctx)


def finish(result: Any, ctx: contextvars.Context) -> Awaitable[None] | None:
    """Drive what a handler returned inside ``ctx``: None when that finished it already (an
    ``async def`` that did not suspend: the common case, with no await at all), else what
    remains to await."""
    if type(result) is types.CoroutineType:
        try:
            yielded = ctx.run(result.send, None)
        except StopIteration:
            return None
        return _resume_in_context(result, ctx, yielded)
    if not inspect.isawaitable(result):
        return None  # a plain function that returned a value: it has finished
    return typing.cast(Awaitable[None], result)


async def call_handler(
    sub: Subscription, event: Event, ctx: contextvars.Context
) -> BaseException | None:
    """Run ``sub``'s handler on ``event`` to the end; return what it raised, if anything."""
    try:
        result = invoke(sub, event, ctx)
        if result is not None and (remaining := finish(result, ctx)) is not None:
            await remaining
    except asyncio.CancelledError as exc:
        if _being_cancelled():
            raise
        return exc
    except _FATAL:
        raise
    except BaseException as exc:  # a handler's failure, whatever it raised
        return exc
    return None


def context_for(event: Event) -> contextvars.Context:
    """The publisher's context, with ``current_tenant()`` set to the event's tenant."""
    ctx = contextvars.copy_context()
    if ctx.get(current_tenant_var) != event.tenant:
        ctx.run(current_tenant_var.set, event.tenant)
    return ctx


def _being_cancelled() -> bool:
    """Whether the running task was asked to stop (rather than a handler raising
    CancelledError of its own, which is just a failure of that handler)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def report_failure(
    sub: Subscription,
    event: Event,
    error: BaseException,
    engine: str,
    hooks: DeliveryHooks | None,
) -> None:
    logger.warning(
        "handler of subscription %s failed on topic %s (engine %s): %s",
        sub.id,
        event.topic,
        engine,
        describe_error(error),
        exc_info=error if logger.isEnabledFor(logging.DEBUG) else None,
    )
    if hooks is not None:
        hooks.failed(sub, event, error)


def describe_error(error: BaseException) -> str:
    """``Type: message`` of a handler's error, credentials masked (a handler's exception
    may quote a connection URL)."""
    return mask_secrets(f"{type(error).__name__}: {error}")


def is_async_callable(handler: Callable[..., Any]) -> bool:
    call = type(handler).__call__  # an object whose __call__ is ``async def``
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


class Dispatcher:
    """Subscriptions of one engine and the delivery of events to them."""

    # Seconds ``close`` waits for cancelled consumers to end before it abandons them (a
    # handler may swallow its cancellation and run on).
    CANCEL_GRACE = 0.25

    def __init__(
        self,
        engine: str,
        policy: DeliveryPolicy,
        stats: DeliveryStats | None = None,
        hooks: DeliveryHooks | None = None,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.stats = stats or DeliveryStats()
        self.hooks = hooks
        self.latency: LatencyHistogram | None = None  # set to record publish-to-handler time
        self.subscriptions: TopicIndex[Subscription] = TopicIndex()
        self._mailboxes: dict[Subscription, Mailbox] = {}
        self._drainers: dict[Subscription, asyncio.Task[None]] = {}
        self._pool = Mailbox(policy.queue_size)
        self._pooled: set[Subscription] = set()  # async subscriptions, served by the pool
        self._workers: list[asyncio.Task[None]] = []
        self._overflowed: set[Subscription] = set()  # logged once each
        self._turn = 0
        self._pending = 0  # queued or running deliveries
        self._idle: asyncio.Event | None = None
        # ordered subscriptions whose handler is a plain function (see _hand_over)
        self._direct: set[Subscription] = set()
        self._unyielded = 0  # deliveries started since the publisher last yielded
        self._generation = 0  # +1 at each close: consumers of an older one are abandoned
        # (topic, tenant) -> where an event goes: (subscription, its mailbox) pairs; cleared
        # on any change of subscriptions
        self._targets: dict[tuple[str, str | None], tuple[tuple[Subscription, Mailbox], ...]] = {}

    # --- subscriptions ------------------------------------------------------------------

    def add(self, sub: Subscription) -> None:
        if sub.is_async:
            self._pooled.add(sub)
            self._ensure_workers()
        else:
            mailbox = Mailbox(self.policy.buffer_size)
            self._mailboxes[sub] = mailbox
            if not is_async_callable(sub.handler):
                self._direct.add(sub)
            self._drainers[sub] = self._start_consumer(mailbox)
        self.subscriptions.add(sub.topic, sub)
        self._targets.clear()

    def remove(self, sub: Subscription) -> bool:
        """Stop delivering to ``sub``; what is still queued for it is dropped."""
        if not self.subscriptions.remove(sub.topic, sub):
            return False
        self._targets.clear()
        self._pooled.discard(sub)  # what the pool still holds for it is dropped when taken
        self._direct.discard(sub)
        self._overflowed.discard(sub)
        mailbox = self._mailboxes.pop(sub, None)
        self._drainers.pop(sub, None)
        if mailbox is not None:  # its drainer ends after the event it may be handling
            mailbox.close()
            while mailbox.items:
                self._drop(mailbox.items.popleft())
        return True

    def subscriber_count(self, topic: str) -> int:
        return len(self.subscriptions.resolve(topic))

    def topics(self) -> list[str]:
        return self.subscriptions.patterns()

    # --- dispatch -----------------------------------------------------------------------

    async def dispatch(self, event: Event, settlement: SettlementCallback | None = None) -> None:
        """Queue ``event`` for every matching subscription of its tenant.

        ``settlement(outcome)`` is called once all of them settled (at once, ``HANDLED``, when
        there are none).
        """
        key = (event.topic, event.tenant)
        targets = self._targets.get(key)
        if targets is None:
            targets = self._resolve(key)
        count = len(targets)
        if count == 0:
            if settlement is not None:
                settlement(Outcome.HANDLED)
            self._unyielded += 1
        else:
            # The fan-out, inlined: a coroutine call per publish is a measurable cost.
            base = contextvars.copy_context()
            if base.get(current_tenant_var) != event.tenant:  # context_for(), inlined
                base.run(current_tenant_var.set, event.tenant)
            settle = Settlement(count, settlement) if settlement is not None else None
            start = 0
            if count > 1 and self.policy.rotate:
                start = self._turn % count
                self._turn += 1
            self._unyielded += count
            for i in range(count):
                sub, mailbox = targets[(start + i) % count]
                # Each handler gets a context of its own: what one sets is not another's.
                ctx = base if count == 1 else base.copy()
                if not mailbox.items and sub in self._direct and not mailbox.closed:
                    self._hand_over(sub, event, ctx, settle, mailbox)
                    continue
                item = (sub, event, ctx, settle, None)
                self._pending += 1
                if not mailbox.offer(item):
                    try:
                        await self._offer_full(mailbox, item)
                    except asyncio.CancelledError:
                        # The publisher gave up while waiting for room: this delivery and
                        # those not reached yet are dropped, and left unsettled (a broker
                        # redelivers them).
                        self._pending -= 1
                        self.stats.dropped += count - i
                        if self._pending == 0 and self._idle is not None:
                            self._idle.set()
                        raise
        if self._unyielded >= YIELD_EVERY:
            # Deliveries that did not wait (hand-overs, room in a queue, nobody subscribed)
            # never suspend the publisher: yield now and then, so that a tight publish loop
            # cannot starve the rest of the event loop.
            self._unyielded = 0
            await asyncio.sleep(0)

    def _hand_over(
        self,
        sub: Subscription,
        event: Event,
        ctx: contextvars.Context,
        settle: Settlement | None,
        mailbox: Mailbox,
    ) -> None:
        """Run a plain-function handler right here. Its subscription's queue is empty and its
        consumer cannot be inside the handler (a plain function cannot suspend), so order and
        one-at-a-time hold, and the event skips a queue round trip."""
        if self.latency is not None:
            self.latency.observe(time.time() - event.timestamp)
        try:
            if sub.payload_type is None:  # invoke(), inlined for the common case
                result = ctx.run(sub.handler, event)
            else:
                result = invoke(sub, event, ctx)
        except asyncio.CancelledError as exc:
            if _being_cancelled():  # the publisher itself is cancelled
                raise
            self._settled(sub, event, settle, exc)
            return
        except _FATAL:
            raise
        except BaseException as exc:  # never into the publisher: a failure of the handler
            self._settled(sub, event, settle, exc)
            return
        if result is None or not inspect.isawaitable(result):
            self._settled(sub, event, settle, None)
            return
        # A plain function that returned an awaitable: its consumer awaits that, and the
        # subscription is queued from now on.
        self._direct.discard(sub)
        self._pending += 1
        mailbox.items.append((sub, event, ctx, settle, result))
        _wake(mailbox.getters)

    def _resolve(self, key: tuple[str, str | None]) -> tuple[tuple[Subscription, Mailbox], ...]:
        topic, tenant = key
        targets = tuple(
            (sub, self._pool if sub.is_async else self._mailboxes[sub])
            for sub in self.subscriptions.resolve(topic)
            if sub.accepts(tenant)
        )
        if len(self._targets) >= self.subscriptions.CACHE_LIMIT:
            self._targets.clear()
        self._targets[key] = targets
        return targets

    async def _offer_full(self, mailbox: Mailbox, item: _Item) -> None:
        mode = self.policy.mode
        if mode is DeliveryMode.DROP:
            await asyncio.sleep(0)  # consumers ready to run get the CPU before we decide
            if self._place(mailbox, item):
                return
        elif _serving.get() is mailbox:
            # A handler publishing into its own full mailbox would wait on itself for ever.
            self._overflow(mailbox, item)
            return
        elif mode is DeliveryMode.BLOCK:
            if await self._wait_for_room(mailbox, item):
                return
        else:
            try:
                async with asyncio.timeout(self.policy.block_timeout):
                    if await self._wait_for_room(mailbox, item):
                        return
            except TimeoutError:
                pass
        self._drop(item)

    def _overflow(self, mailbox: Mailbox, item: _Item) -> None:
        sub = item[0]
        if mailbox.closed:
            self._drop(item)
            return
        if sub not in self._overflowed:
            self._overflowed.add(sub)
            logger.warning(
                "a handler of engine %s published into its own full mailbox (subscription "
                "%s, topic %s); the event is queued beyond the bound of %d instead of waiting "
                "on itself (logged once per subscription)",
                self.engine,
                sub.id,
                item[1].topic,
                mailbox.capacity,
            )
        mailbox.items.append(item)
        _wake(mailbox.getters)

    async def _wait_for_room(self, mailbox: Mailbox, item: _Item) -> bool:
        while not self._place(mailbox, item):
            if mailbox.closed:
                return False
            await mailbox.room()
        return True

    def _place(self, mailbox: Mailbox, item: _Item) -> bool:
        """After a wait: hand the event over if its subscription has gone idle meanwhile (so
        that a publisher that once outran it returns to direct hand-overs), else queue it."""
        sub, event, ctx, settle, _ = item
        if not mailbox.items and sub in self._direct and not mailbox.closed:
            self._pending -= 1
            self._hand_over(sub, event, ctx, settle, mailbox)
            return True
        return mailbox.offer(item)

    # --- consumers ----------------------------------------------------------------------

    def _start_consumer(self, mailbox: Mailbox) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self._consume(mailbox))

    def _ensure_workers(self) -> None:
        if not self._workers:
            self._workers = [
                self._start_consumer(self._pool) for _ in range(self.policy.worker_count)
            ]

    async def _consume(self, mailbox: Mailbox) -> None:
        """Deliver what arrives in ``mailbox`` until it is closed (one task per ordered
        subscription; ``worker_count`` tasks share the async pool)."""
        items = mailbox.items
        stats = self.stats
        generation = self._generation
        unyielded = 0
        while True:
            if not items:
                if mailbox.closed:
                    return
                unyielded = 0
                await mailbox.arrival()
                continue
            unyielded += 1
            if unyielded >= YIELD_EVERY:
                # A backlog of handlers that never suspend must not hold the loop either.
                unyielded = 0
                await asyncio.sleep(0)
                continue
            item = items.popleft()
            if mailbox.putters:
                _wake(mailbox.putters)
            sub, event, ctx, settle, result = item
            if sub.is_async and sub not in self._pooled:  # unsubscribed meanwhile
                self._drop(item)
                continue
            if self.latency is not None:
                self.latency.observe(time.time() - event.timestamp)
            error: BaseException | None = None
            try:
                if result is None:
                    remaining = ctx.run(_begin, sub, event, mailbox, ctx)
                else:  # a plain function's awaitable, already started
                    ctx.run(_serving.set, mailbox)
                    remaining = finish(result, ctx)
                if remaining is not None:
                    await remaining
            except asyncio.CancelledError as exc:
                if not _being_cancelled():  # the handler's own, e.g. from a task it awaited
                    error = exc
                else:
                    # Stopped mid-handler at shutdown: a drop, never settled (a broker
                    # redelivers it); not counted again when close() abandoned it already.
                    if generation == self._generation:
                        stats.dropped += 1
                        self._done()
                    raise
            except _FATAL:
                raise
            except BaseException as exc:  # a handler's failure, whatever it raised
                error = exc
            if generation != self._generation:
                return  # abandoned by close(), which counted this event as dropped
            if error is None:  # as _settled(), inlined: this loop is the consumers' hot path
                stats.delivered += 1
                if self.hooks is not None:
                    self.hooks.received(sub, event)
                if settle is not None:
                    settle.settle(Outcome.HANDLED)
            else:
                self._settled(sub, event, settle, error)
            self._pending -= 1  # as _done(), inlined
            if self._pending == 0 and self._idle is not None:
                self._idle.set()

    def _settled(
        self,
        sub: Subscription,
        event: Event,
        settle: Settlement | None,
        error: BaseException | None,
    ) -> None:
        """A handler ran: count it, report a failure (or the reception), settle."""
        self.stats.delivered += 1
        if error is not None:
            self.stats.failed += 1
            report_failure(sub, event, error, self.engine, self.hooks)
            if settle is not None:
                settle.settle(Outcome.FAILED)
            return
        if self.hooks is not None:
            self.hooks.received(sub, event)
        if settle is not None:
            settle.settle(Outcome.HANDLED)

    def _drop(self, item: _Item) -> None:
        self.stats.dropped += 1
        settle = item[3]
        if settle is not None:
            settle.settle(Outcome.DROPPED)
        self._done()

    def _done(self) -> None:
        self._pending -= 1
        if self._pending == 0 and self._idle is not None:
            self._idle.set()

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Deliveries queued or running."""
        return self._pending

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every queued delivery to finish."""
        if self._pending == 0:
            return True
        self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._idle = None

    async def close(self, timeout: float) -> None:
        """Drain up to ``timeout``, then cancel what is left (counted as dropped, never
        settled) and forget every subscription. Returns within ``timeout`` plus
        ``CANCEL_GRACE``: a handler that does not end when cancelled is abandoned."""
        await self.drain(timeout)
        mailboxes = [*self._mailboxes.values(), self._pool]
        for mailbox in mailboxes:
            left = len(mailbox.items)
            mailbox.items.clear()
            mailbox.close()
            self.stats.dropped += left
            self._pending -= left
        tasks = [*self._drainers.values(), *self._workers]
        await self._cancel_all(tasks)
        self._mailboxes.clear()
        self._drainers.clear()
        self._workers = []
        self._pool = Mailbox(self.policy.queue_size)
        self.subscriptions.clear()
        self._targets.clear()
        self._pooled.clear()
        self._direct.clear()
        self._overflowed.clear()
        self._pending = 0

    async def _cancel_all(self, tasks: list[asyncio.Task[None]]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.CANCEL_GRACE
        running = [t for t in tasks if not t.done()]
        while running and loop.time() < deadline:
            for task in running:
                task.cancel()  # again, each round: a handler may have swallowed the last one
            await asyncio.wait(running, timeout=min(0.05, max(0.0, deadline - loop.time())))
            running = [t for t in running if not t.done()]
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                logger.error("engine %s: a consumer failed: %r", self.engine, task.exception())
        if running:
            # Handlers that would not end: their events count as dropped, and whatever they
            # finish later is not counted (see the generation check in _consume).
            self._generation += 1
            self.stats.dropped += len(running)
            logger.error(
                "engine %s: %d handler(s) did not end when cancelled at stop; abandoned "
                "(their events are counted as dropped)",
                self.engine,
                len(running),
            )
