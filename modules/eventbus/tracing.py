"""OpenTelemetry tracing of publishes and deliveries, following the messaging conventions.

When ``opentelemetry-api`` is installed and a tracer provider is configured (the global one,
or :func:`set_tracer_provider` for the bus alone) before ``app.init()``:

- ``publish`` runs inside a PRODUCER span ``"<topic> publish"`` and puts its context in the
  event's metadata as ``traceparent`` (and ``tracestate``), which broker engines carry as
  the CloudEvents distributed-tracing extension attributes;
- every handler runs inside a CONSUMER span ``"<topic> process"``, a child of that context
  and linked to it, on every engine and across processes.

Without opentelemetry-api, or with no provider configured, the bus does none of this: no
import, no wrapper, one ``is None`` test per publish.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from .engines.base import Engine
    from .event import Event, Handler

INSTRUMENTATION = "modules.eventbus"
SYSTEM = "modular.eventbus"  # messaging.system

_provider: TracerProvider | None = None


def set_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace buses initialised from now on with ``provider`` instead of the global provider
    (None: the global one again)."""
    global _provider
    _provider = provider


def tracer() -> Tracer | None:
    """The tracer of a bus being initialised, or None when tracing is off."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = _provider or trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None  # nothing would record: spare every publish the work
    return provider.get_tracer(INSTRUMENTATION)


def start_publish(
    tracer: Tracer, topic: str, engine: str, metadata: Mapping[str, str] | None
) -> tuple[Span, dict[str, str]]:
    """A started PRODUCER span, and ``metadata`` with its context added."""
    from opentelemetry import propagate, trace

    span = tracer.start_span(
        f"{topic} publish",
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.destination.name": topic,
            "messaging.eventbus.engine": engine,
        },
    )
    carried = dict(metadata or {})
    propagate.inject(carried, context=trace.set_span_in_context(span))
    return span, carried


async def publish_in_span(span: Span, engine: Engine, event: Event) -> None:
    """``engine.publish(event)`` with ``span`` current (in-process handlers inherit it) and
    ended afterwards, with the error if the publish failed."""
    from opentelemetry import trace

    span.set_attribute("messaging.message.id", event.id)
    with trace.use_span(span, end_on_exit=True, record_exception=True):
        await engine.publish(event)


def traced_handler(tracer: Tracer, handler: Handler) -> Handler:
    """``handler`` inside a CONSUMER span per event; async stays async, so delivery treats
    the wrapper as it treats the handler."""
    from opentelemetry import trace

    call = type(handler).__call__
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call):
        run_async = handler

        async def traced_async(event: Event) -> None:
            span = _start_consumer_span(tracer, event)
            with trace.use_span(span, end_on_exit=True, record_exception=True):
                await run_async(event)  # type: ignore[misc]

        return traced_async

    def traced(event: Event) -> Awaitable[None] | None:
        span = _start_consumer_span(tracer, event)
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=True):
                result = handler(event)
        except BaseException:
            span.end()
            raise
        if result is None:
            span.end()
            return None
        # A plain function that returned an awaitable: the span lasts until that is done.
        return _finish_in_span(span, result)

    return traced


async def _finish_in_span(span: Span, awaitable: Awaitable[Any]) -> None:
    from opentelemetry import trace

    with trace.use_span(span, end_on_exit=True, record_exception=True):
        await awaitable


def _start_consumer_span(tracer: Tracer, event: Event) -> Span:
    """A CONSUMER span, child of the publisher's context carried in the metadata and linked
    to it (an event published without tracing starts a trace of its own)."""
    from opentelemetry import propagate, trace

    producer = propagate.extract(event.metadata)
    producer_span = trace.get_current_span(producer).get_span_context()
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": event.topic,
        "messaging.message.id": event.id,
    }
    if event.tenant is not None:
        attributes["messaging.eventbus.tenant"] = event.tenant
    return tracer.start_span(
        f"{event.topic} process",
        context=producer if producer_span.is_valid else None,
        kind=trace.SpanKind.CONSUMER,
        links=[trace.Link(producer_span)] if producer_span.is_valid else None,
        attributes=attributes,
    )
