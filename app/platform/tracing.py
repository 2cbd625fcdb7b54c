"""Optional OpenTelemetry tracing: a tracer provider per process, server spans, child spans.

Off by default (``ENRICH_TRACING_ENABLED``). Off, nothing here is built: the application and
the enrich cache are the untraced classes, so no request pays a check for it. On, each worker
process builds its own provider when its lifespan starts (after uvicorn forked or spawned it:
the batch processor's thread belongs to the process that runs it), exports spans over OTLP/HTTP
(protobuf) in batches, and flushes them when the lifespan ends.

What a span may hold: methods, route templates, statuses, cache levels, identifier types and
counts, our request id and the caller's correlation id. Never a path or query (they carry
identifiers), a token, a secret, an identifier's value or profile contents; an error is named by
its type, never its message (a database error's text quotes the statement's values).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import Message, Receive, Scope, Send

from app.core.parts import part
from app.core.settings import Settings

# Response headers whose values become server-span attributes (set by both doors).
ANSWER_ATTRIBUTES = {
    b"x-request-id": "enrich.request_id",
    b"x-correlation-id": "enrich.correlation_id",
    b"x-cache": "enrich.cache",
}
INSTRUMENTATION = "enrich"


@dataclass(frozen=True)
class Spans:
    """Child spans for the parts below the server span: a no-op without a tracer, and a no-op
    when the request's span is not recorded (unsampled), so they never start traces of their
    own."""

    tracer: Tracer | None = None

    @contextmanager
    def child(
        self,
        name: str,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, str | bool | int] | None = None,
    ) -> Iterator[Span]:
        if self.tracer is None or not trace.get_current_span().is_recording():
            yield INVALID_SPAN  # (its setters do nothing)
            return
        with self.tracer.start_as_current_span(
            name,
            kind=kind,
            attributes=attributes,
            record_exception=False,  # (an exception's message may quote values)
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as exc:
                failed(span, exc)
                raise


SpansDep = Annotated[Spans, Depends(part(Spans))]


def note(attribute: str, value: str) -> None:
    """Set an attribute on the current span (nothing when none is recorded)."""
    trace.get_current_span().set_attribute(attribute, value)


def recording() -> bool:
    """Whether the current request's span is recorded (a sampled request)."""
    return trace.get_current_span().is_recording()


def failed(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed by the exception's type (never its message)."""
    span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(StatusCode.ERROR)


@dataclass
class Tracing:
    """The process's tracer provider and what it hands out."""

    provider: TracerProvider
    tracer: Tracer

    async def close(self) -> None:
        """Export what is queued and stop the batch thread (it blocks: off the event loop)."""
        await asyncio.to_thread(self.provider.shutdown)


def build_provider(settings: Settings, version: str) -> TracerProvider:
    """A provider with a parent-based sampler and a batching OTLP/HTTP exporter.

    Its sampler records every root span: ``ServerSpans`` draws the sample ratio itself before it
    makes one (the only roots made here are server spans), so a request left out of the sample
    costs a random number and nothing of the SDK's. A caller's traceparent decides for its trace.

    ``Resource.create`` also reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; the settings'
    attributes win where both name one. The exporter reads the OTEL_EXPORTER_OTLP_* variables
    (headers, timeout, compression, certificates) and, without ENRICH_TRACING_ENDPOINT, the
    endpoint; the batch processor reads OTEL_BSP_*.
    """
    attributes = {
        **settings.resource_attributes,
        SERVICE_NAME: settings.tracing_service_name,
        SERVICE_VERSION: version,
    }
    provider = TracerProvider(
        resource=Resource.create(attributes),
        sampler=ParentBased(ALWAYS_ON),
    )
    exporter = OTLPSpanExporter(endpoint=settings.tracing_endpoint or None)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


@asynccontextmanager
async def open_tracing(settings: Settings, version: str) -> AsyncIterator[Tracing | None]:
    """The process's tracing when ENRICH_TRACING_ENABLED, else None; flushed at exit."""
    if not settings.tracing_enabled:
        yield None
        return
    provider = build_provider(settings, version)
    tracing = Tracing(provider, provider.get_tracer(INSTRUMENTATION, version))
    try:
        yield tracing
    finally:
        await tracing.close()


class _HeaderGetter(Getter[Iterable[tuple[bytes, bytes]]]):
    """W3C trace context headers from an ASGI scope's header list."""

    def get(self, carrier: Iterable[tuple[bytes, bytes]], key: str) -> list[str] | None:
        wanted = key.encode("latin-1")
        values = [value.decode("latin-1") for name, value in carrier if name == wanted]
        return values or None

    def keys(self, carrier: Iterable[tuple[bytes, bytes]]) -> list[str]:
        return [name.decode("latin-1") for name, _ in carrier]


_GETTER = _HeaderGetter()
_PROPAGATOR = TraceContextTextMapPropagator()  # (traceparent and tracestate, nothing else)


class ServerSpans:
    """One SERVER span per HTTP request, continuing the caller's W3C trace when it sent one
    (``traceparent``, ``tracestate``; its sampled flag decides), else starting one for a share
    ``ratio`` of requests. Named ``METHOD /route`` after the route template (HTTP semantic
    conventions); ``routes`` are templates of paths served without the router (the enrich fast
    path), which match themselves."""

    def __init__(self, tracer: Tracer, routes: Iterable[str] = (), ratio: float = 1.0) -> None:
        self.tracer = tracer
        self.routes = frozenset(routes)
        self.ratio = ratio

    async def serve(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        scope: Scope,
        r: Receive,
        s: Send,
    ) -> None:
        headers = scope["headers"]
        parent = None
        for name, _ in headers:
            if name == b"traceparent":
                parent = _PROPAGATOR.extract(headers, getter=_GETTER)
                break
        if parent is None or not trace.get_current_span(parent).get_span_context().is_valid:
            # A trace of our own (none came, or an unreadable one), if this request is drawn
            # (1.0: always, without a draw).
            if self.ratio < 1.0 and random.random() >= self.ratio:
                await app(scope, r, s)
                return
        method = scope["method"]
        span = self.tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.scheme": scope.get("scheme", "http"),
                "network.protocol.version": scope.get("http_version", "1.1"),
            },
        )
        if not span.is_recording():  # unsampled: nothing below records either
            await app(scope, r, s)
            return
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        status = 0

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    attribute = ANSWER_ATTRIBUTES.get(name)
                    if attribute is not None:
                        span.set_attribute(attribute, value.decode("latin-1"))
            await s(message)

        try:
            await app(scope, r, send)
        except BaseException as exc:
            failed(span, exc)
            raise
        finally:
            otel_context.detach(token)
            self._finish(span, scope, method, status)

    def _finish(self, span: Span, scope: Scope, method: str, status: int) -> None:
        route = scope.get("route")
        template = getattr(route, "path_format", None) if route is not None else None
        if template is None and scope["path"] in self.routes:
            template = scope["path"]
        if template is not None:
            span.update_name(f"{method} {template}")
            span.set_attribute("http.route", template)
        client = scope.get("client")  # (the caller behind a trusted proxy, once resolved)
        if client:
            span.set_attribute("client.address", client[0])
        if status:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_attribute("error.type", str(status))
                span.set_status(StatusCode.ERROR)
        span.end()
