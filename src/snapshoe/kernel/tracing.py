"""Trace context across the platform: W3C ``traceparent`` from the gateway through every
service, internal call, database and Redis command, and through events (the outbox keeps the
context of the transaction that wrote each event; consumers continue it).

Library: OpenTelemetry (the SDK, its OTLP/HTTP exporter and the project's own ASGI, aiohttp
client, SQLAlchemy and Redis instrumentations). Export is off unless
``SNAPSHOE_OTLP_ENDPOINT`` is set: then each process builds a tracer provider at startup (never
at import) and instruments the libraries. Off, nothing is instrumented and a request pays one
header parse: the gateway's ``traceparent`` is still read, so every log line carries the trace
id and internal calls and events pass the trace on (docs/operations.md, "Tracing").

Sampling is by trace id (``TraceIdRatioBased``) for traces that arrive from elsewhere as well as
for new ones, so every process takes the same decision for a trace, and a client that sends a
``traceparent`` with the sampled flag cannot make the platform record everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import re
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from prometheus_client import Gauge
from redis.exceptions import RedisError

from snapshoe.kernel.logs import request_id_var, trace_var
from snapshoe.kernel.settings import Settings

log = logging.getLogger("snapshoe.tracing")

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
# With export off: the traceparent this request or event arrived with, passed on verbatim.
incoming_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "incoming_traceparent", default=None
)

tracer: trace.Tracer = trace.NoOpTracer()
_provider: Any = None
_enabled = False
_pending_engines: weakref.WeakSet[Any] = weakref.WeakSet()


def enabled() -> bool:
    return _enabled


def configure_tracing(service: str, settings: Settings) -> bool:
    """Build this process's tracer provider and instrument the libraries, once, when an OTLP
    endpoint is set. Returns whether tracing exports."""
    global _enabled
    if _enabled or not settings.otlp_endpoint:
        return _enabled
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": service, "service.namespace": settings.namespace}
        ),
        sampler=WorkRoots(_ratio_sampler(settings.trace_sample_ratio)),
    )
    endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=5)))
    trace.set_tracer_provider(provider)
    install_provider(provider)
    instrument_clients(provider)
    _instrument_sqlalchemy(provider)
    log.info("tracing to %s (sample ratio %s)", endpoint, settings.trace_sample_ratio)
    return True


def _ratio_sampler(ratio: float) -> Sampler:
    """Sampled by trace id whether the trace is new or came with a parent (local parents are
    followed): every process decides the same for a trace, whatever flag a client sent."""
    by_id = TraceIdRatioBased(ratio)
    return ParentBased(root=by_id, remote_parent_sampled=by_id, remote_parent_not_sampled=by_id)


class WorkRoots(Sampler):
    """A trace starts where work starts (a request, an event, a worker's batch that moves
    something), never at a database, Redis or HTTP call with no parent: a worker's idle
    polling (the relay's claim every 50 ms, the lifecycle's due query) is not a trace."""

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def set_ratio(self, ratio: float) -> None:
        """Sample ``ratio`` of traces from now on (one reference swap: safe with the export
        thread and every task reading it)."""
        self.delegate = _ratio_sampler(ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if not parent.is_valid and kind == SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return self.delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"WorkRoots({self.delegate.get_description()})"


def install_provider(provider: Any) -> None:
    """Record spans with ``provider`` (also how tests install an in-memory exporter)."""
    global _enabled, tracer, _provider
    _provider = provider
    tracer = provider.get_tracer("snapshoe")
    _enabled = True


def uninstall_provider() -> None:
    """Stop recording (tests)."""
    global _enabled, tracer, _provider
    _provider, tracer, _enabled = None, trace.NoOpTracer(), False


def provider() -> Any:
    return _provider


def sample_ratio_key(settings: Settings) -> str:
    """The Redis key an operator sets to change every process's sample ratio at once
    (``snapshoe tracing sample``), without a restart: during a drop, for instance."""
    return f"{settings.namespace}:tracing:sample_ratio"


SAMPLE_RATIO = Gauge(
    "snapshoe_tracing_sample_ratio",
    "Share of traces recorded and exported (-1: tracing export off in this process)",
    multiprocess_mode="mostrecent",
)
RATIO_REFRESH_SECONDS = 1.0


async def follow_sample_ratio(settings: Settings, stop: asyncio.Event) -> None:
    """Apply the operator's ratio (Redis) to this process's sampler, read every second, until
    ``stop``; without the key, the configured ``SNAPSHOE_TRACE_SAMPLE_RATIO``. Only runs when
    tracing exports. A Redis outage keeps the last ratio."""
    from redis.asyncio import Redis

    sampler = getattr(_provider, "sampler", None)
    if not _enabled or not isinstance(sampler, WorkRoots):
        SAMPLE_RATIO.set(-1)
        return
    client = Redis.from_url(settings.redis_url, socket_timeout=1, socket_connect_timeout=1)
    current = settings.trace_sample_ratio
    SAMPLE_RATIO.set(current)
    try:
        while not stop.is_set():
            try:
                raw = await client.get(sample_ratio_key(settings))
                wanted = settings.trace_sample_ratio if raw is None else float(raw)
                if 0.0 <= wanted <= 1.0 and wanted != current:
                    sampler.set_ratio(wanted)
                    current = wanted
                    SAMPLE_RATIO.set(current)
                    log.info("trace sample ratio now %s", current)
            except (RedisError, OSError, ValueError) as exc:
                log.debug("sample ratio not read: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RATIO_REFRESH_SECONDS)
    finally:
        await client.aclose()


def instrument_clients(provider: Any) -> None:
    """Client spans of aiohttp (URLs without their query) and redis-py (commands without
    their arguments: the instrumentation's own sanitising)."""
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    AioHttpClientInstrumentor().instrument(tracer_provider=provider, url_filter=without_query)
    RedisInstrumentor().instrument(tracer_provider=provider)


def uninstrument_clients() -> None:
    """Undo :func:`instrument_clients` (tests)."""
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    AioHttpClientInstrumentor().uninstrument()
    RedisInstrumentor().uninstrument()


def without_query(url: Any) -> str:
    """A URL as spans keep it: no query string (an email searched for, a cursor)."""
    return str(url.with_query(None))


def redact_query(span: Any, scope: Mapping[str, Any]) -> None:
    """The ASGI server span's hook: the request's attributes without its query string, which
    can carry personal data (``?email=`` on the store's pages and the console's search)."""
    if not scope.get("query_string") or not span.is_recording():
        return
    path = scope.get("path", "")
    span.set_attribute("http.target", path)
    span.set_attribute("url.query", "redacted")
    url = span.attributes.get("http.url") if hasattr(span, "attributes") else None
    if isinstance(url, str):
        span.set_attribute("http.url", url.split("?", 1)[0])


def instrument_engine(engine: Any) -> None:
    """Remember an engine made before tracing is configured (a service's deps are built
    before its app): configuring instruments it, and every engine made after is instrumented
    as it is made (the instrumentation wraps ``create_async_engine``, which ``kernel.db``
    calls through its module for that reason)."""
    if not _enabled:
        _pending_engines.add(engine)


def _instrument_sqlalchemy(provider: Any) -> None:
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    engines = [e.sync_engine for e in _pending_engines]
    # Its declared range stops below SQLAlchemy 2.1; the engine events it uses are unchanged
    # in 2.1 (tests/integration/kernel/test_tracing.py and tests/e2e/test_tracing.py).
    SQLAlchemyInstrumentor().instrument(
        tracer_provider=provider, engines=engines, skip_dep_check=True
    )
    _pending_engines.clear()


def parse(traceparent: str | None) -> tuple[str, str] | None:
    """``(trace_id, parent_id)`` of a well-formed traceparent, else None."""
    if not traceparent:
        return None
    match = TRACEPARENT.match(traceparent)
    if match is None or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return None
    return match.group(1), match.group(2)


def carrier() -> dict[str, str]:
    """The headers that carry the current trace and request id to an internal call or an
    event: the current span's context when exporting, else the traceparent that arrived."""
    headers: dict[str, str] = {}
    if _enabled:
        propagate.inject(headers)
    else:
        incoming = incoming_var.get()
        if incoming:
            headers["traceparent"] = incoming
    rid = request_id_var.get()
    if rid:
        headers["x-request-id"] = rid
    return headers


def current_traceparent() -> str | None:
    """The current span as a traceparent (exporting only): stored with a row so that later
    work on it (the lifecycle worker) can link back to the request that made it."""
    if not _enabled:
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def current_span_context() -> SpanContext | None:
    """The current span's context (exporting only), to link later batch work to it."""
    if not _enabled:
        return None
    ctx = trace.get_current_span().get_span_context()
    return ctx if ctx.is_valid else None


def batch_span(
    name: str, callers: Sequence[SpanContext | None]
) -> contextlib.AbstractContextManager[Any]:
    """A span for work done for several callers at once (a group commit): the child of the
    first caller's span, so a quiet platform's request trace shows its own write, and linked
    to every caller's span (at most 128, the SDK's default limit)."""
    known = [c for c in callers if c is not None]
    if not _enabled or not known:
        return contextlib.nullcontext()
    parent = trace.set_span_in_context(trace.NonRecordingSpan(known[0]))
    return tracer.start_as_current_span(
        name,
        context=parent,
        links=[Link(c) for c in known[:128]],
        attributes={"snapshoe.batch_size": len(callers)},
    )


def link_to(traceparent: str | None) -> Link | None:
    """A span link to a stored traceparent, or None when it is absent or malformed."""
    ids = parse(traceparent)
    if ids is None:
        return None
    flags = TraceFlags(int(traceparent[-2:], 16)) if traceparent else TraceFlags(0)
    return Link(SpanContext(int(ids[0], 16), int(ids[1], 16), is_remote=True, trace_flags=flags))


def extracted(headers: Mapping[str, Any] | None) -> Context | None:
    """The context an event's headers carry (exporting only)."""
    if not _enabled or not headers or "traceparent" not in headers:
        return None
    return propagate.extract({str(k): str(v) for k, v in headers.items()})


def continue_from(headers: Mapping[str, Any] | None) -> list[contextvars.Token[Any]]:
    """Set the request id and, with export off, the log's trace ids from an event's headers.
    Returns the tokens to reset."""
    tokens: list[contextvars.Token[Any]] = []
    if not headers:
        return tokens
    rid = headers.get("x-request-id")
    if rid:
        tokens.append(request_id_var.set(str(rid)[:64]))
    if not _enabled:
        raw = headers.get("traceparent")
        ids = parse(str(raw)) if raw else None
        if ids is not None:
            tokens.append(incoming_var.set(str(raw)))
            tokens.append(trace_var.set(ids))
    return tokens


def reset(tokens: list[contextvars.Token[Any]]) -> None:
    for token in reversed(tokens):
        token.var.reset(token)


CONSUMER = SpanKind.CONSUMER
PRODUCER = SpanKind.PRODUCER
INTERNAL = SpanKind.INTERNAL
