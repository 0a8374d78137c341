"""OpenTelemetry spans for publishing and handling, when ``opentelemetry-api`` is installed.

A publish runs inside a ``PRODUCER`` span (``publish <topic>``) whose context is injected
into the event's metadata as W3C ``traceparent`` / ``tracestate``; the wire codec carries
those as CloudEvents extension attributes (the CloudEvents distributed-tracing extension),
so they cross every engine. Each handler call runs inside a ``CONSUMER`` span
(``process <topic>``) linked to the producer's context; on the memory engines the handler
also runs in the publisher's context, so that span is the producer's child too. Attribute
names follow the OpenTelemetry messaging conventions.

Spans are made only once a real tracer provider is set (``trace.set_tracer_provider``):
publishes from then on, and subscriptions made from then on. Until then, and without the
package, publishing and handling are untouched (not even wrapped). Without
``opentelemetry-api`` this module imports nothing of it.
"""

from __future__ import annotations

import functools
import importlib.util
import time
from collections.abc import Awaitable, Mapping
from types import MappingProxyType
from typing import Any

from .delivery import is_async_callable
from .event import Event, Handler


def _installed() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry") is not None
    except (ImportError, ValueError):
        return False


AVAILABLE = _installed()

SYSTEM = "eventbus"
_TRACE_KEYS = ("traceparent", "tracestate")

if AVAILABLE:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Link, SpanKind

    _tracer = trace.get_tracer("modules.eventbus")


_CHECK_EVERY = 1.0  # seconds: asking OpenTelemetry for its provider costs ~2 us
_active = False
_next_check = 0.0


def active(*, recheck: bool = False) -> bool:
    """Whether spans are made: the package is there and a tracer provider was set (looked
    up at most once a second until it is). A global tracer provider cannot be replaced once
    set, so a True answer is kept."""
    global _active, _next_check
    if _active or not AVAILABLE:
        return _active
    now = time.monotonic()
    if recheck or now >= _next_check:
        _next_check = now + _CHECK_EVERY
        _active = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return _active


class Publishing:
    """The producer span of one publish: ``metadata`` carries its context on the event."""

    __slots__ = ("metadata", "span", "token")

    def __init__(self, topic: str, engine: str, tenant: str | None, metadata: Mapping[str, str]):
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            "eventbus.engine": engine,
        }
        if tenant is not None:
            attributes["eventbus.tenant"] = tenant
        self.span = _tracer.start_span(
            f"publish {topic}", kind=SpanKind.PRODUCER, attributes=attributes
        )
        context = trace.set_span_in_context(self.span)
        carrier = {k: v for k, v in metadata.items() if k not in _TRACE_KEYS}
        propagate.inject(carrier, context=context)
        self.metadata: Mapping[str, str] = MappingProxyType(carrier)
        self.token = otel_context.attach(context)  # handlers started now see it

    def published(self, event: Event) -> None:
        self.span.set_attribute("messaging.message.id", event.id)

    def end(self, error: BaseException | None) -> None:
        otel_context.detach(self.token)
        if error is not None:
            self.span.record_exception(error)
            self.span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
        self.span.end()


def traced(handler: Handler, subscription_id: str) -> Handler:
    """``handler`` wrapped so that each call runs in a consumer span; a plain function stays
    a plain function, an ``async def`` stays one. Unwrapped while tracing is not active."""
    if not active(recheck=True):
        return handler

    def span_for(event: Event) -> Any:
        links = []
        producer = trace.get_current_span(propagate.extract(event.metadata)).get_span_context()
        if producer.is_valid:
            links.append(Link(producer))
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.destination.name": event.topic,
            "messaging.message.id": event.id,
            "messaging.consumer.group.name": subscription_id,
        }
        if event.tenant is not None:
            attributes["eventbus.tenant"] = event.tenant
        return _tracer.start_as_current_span(
            f"process {event.topic}", kind=SpanKind.CONSUMER, links=links, attributes=attributes
        )

    if is_async_callable(handler):

        @functools.wraps(handler)
        async def traced_async(event: Event) -> None:
            with span_for(event):
                result = handler(event)
                if result is not None:
                    await result

        return traced_async

    @functools.wraps(handler)
    def traced_plain(event: Event) -> Awaitable[None] | None:
        with span_for(event):
            return handler(event)

    return traced_plain
