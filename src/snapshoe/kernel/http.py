"""The common shape of every service's ASGI app: problem+json errors, request ids, JSON
access logs, a body size limit, ``/healthz``, ``/readyz``, ``/metrics`` and ``/openapi.json``.

Middlewares are plain ASGI (not ``BaseHTTPMiddleware``) because they sit on the drop path.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from snapshoe.kernel import gc_pauses, tracing
from snapshoe.kernel.errors import (
    BACKEND_ERRORS,
    PROBLEM_JSON,
    Problem,
    backend_down,
    install_error_handlers,
    problem_response,
    service_unavailable,
)
from snapshoe.kernel.logs import configure_logging, request_id_var, trace_var
from snapshoe.kernel.metrics import render as render_metrics
from snapshoe.kernel.openapi import install_public_openapi
from snapshoe.kernel.settings import Settings, get_settings

log = logging.getLogger("snapshoe.http")

ReadinessCheck = Callable[[], Awaitable[object]]

REQUESTS = Counter(
    "snapshoe_http_requests_total", "HTTP requests", ["service", "method", "route", "status"]
)
LATENCY = Histogram(
    "snapshoe_http_request_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

FAST_PATH = Counter(
    "snapshoe_http_fast_path_total",
    "Requests of a hot route answered by its fast path, or handed to the framework route",
    ["service", "route", "outcome"],
)

MAX_BODY_BYTES = 64 * 1024
# With SNAPSHOE_ACCESS_LOG=problems (the default) a service logs only 5xx answers and requests
# at least this slow; the gateway's log has every request, with the same request id.
SLOW_REQUEST_SECONDS = 1.0
METRICS_HOOK_SECONDS = 3.0

FastPath = Callable[[Scope, bytes], Awaitable[Response | None]]
"""A hand-written handler of one hot route (given the scope and the whole body): it answers
the common case without the framework, or returns None to hand the request, body replayed, to
the FastAPI route, which gives every unusual request (no token, a bad key, an invalid body...)
its usual answer. The FastAPI route also stays the documented contract in ``/openapi.json``.
Problems raised are answered as problem+json, backend outages as 503, like the routes."""


class RequestContextMiddleware:
    """Request id (the gateway's ``X-Request-Id`` or a new one), access log, metrics and a
    body size limit, in one pass."""

    def __init__(
        self,
        app: ASGIApp,
        service: str,
        max_body: int = MAX_BODY_BYTES,
        fast_paths: Mapping[tuple[str, str], FastPath] | None = None,
        access_log: str = "problems",
    ) -> None:
        self.app = app
        self.service = service
        self.max_body = max_body
        self.fast_paths = dict(fast_paths or {})
        self.log_every_request = access_log == "all"
        # prometheus_client resolves labels under a lock on every call; a drop repeats the
        # same few (method, route, status) thousands of times a second.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        length = None
        traceparent = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value.decode("latin-1")[:64]
            elif name == b"content-length":
                length = value
            elif name == b"traceparent":
                traceparent = value
        rid = rid or uuid.uuid4().hex
        token = request_id_var.set(rid)
        trace_tokens = _follow_trace(traceparent)
        start = time.perf_counter()
        status = 500

        status_sent = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status = message["status"]
                status_sent = True
                if tracing.enabled():
                    _name_span(scope)
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            too_big = length is not None and (not length.isdigit() or int(length) > self.max_body)
            if too_big:
                await _send_problem(send_wrapper, Problem(413, "payload_too_large"))
            elif (fast := self.fast_paths.get((scope["method"], scope["path"]))) is not None:
                await self._fast(fast, scope, _limited(receive, self.max_body), send_wrapper)
            else:
                await self.app(scope, _limited(receive, self.max_body), send_wrapper)
        except _BodyTooLarge:
            await _send_problem(send_wrapper, Problem(413, "payload_too_large"))
        except Exception:
            # Answered here rather than by Starlette's outer error middleware, so a 500 still
            # carries the request id and is logged with it.
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if status_sent:
                raise
            await _send_problem(
                send_wrapper, Problem(500, "internal_error", detail="Unexpected error")
            )
        finally:
            self._record(scope, status, time.perf_counter() - start)
            request_id_var.reset(token)
            tracing.reset(trace_tokens)

    def _record(self, scope: Scope, status: int, elapsed: float) -> None:
        """Count and time the request; log it if it was a problem (or every request is)."""
        route = scope.get("route")
        fast_route = (scope["method"], scope["path"]) in self.fast_paths
        path = getattr(route, "path", None) or (scope["path"] if fast_route else "unmatched")
        method = scope["method"]
        series = self._series.get((method, path, status))
        if series is None:
            series = (
                REQUESTS.labels(self.service, method, path, str(status)),
                LATENCY.labels(self.service, method, path),
            )
            if len(self._series) < 10_000:  # bounded: routes and statuses are few
                self._series[(method, path, status)] = series
        series[0].inc()
        series[1].observe(elapsed)
        problem = status >= 500 or elapsed >= SLOW_REQUEST_SECONDS
        if (problem or self.log_every_request) and path not in ("/healthz", "/metrics"):
            log.log(
                logging.WARNING if problem else logging.INFO,
                "%s %s %s",
                method,
                scope["path"],
                status,
                extra={"status": status, "ms": round(elapsed * 1000, 2), "route": path},
            )

    async def _fast(self, fast: FastPath, scope: Scope, receive: Receive, send: Send) -> None:
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            response = await fast(scope, body)
        except Problem as problem:
            response = problem_response(problem)
        except BACKEND_ERRORS as exc:
            response = problem_response(backend_down(scope["method"], scope["path"], exc))
        if response is None:
            FAST_PATH.labels(self.service, scope["path"], "handed_over").inc()
            await self.app(scope, _replay(body, receive), send)
        else:
            FAST_PATH.labels(self.service, scope["path"], "answered").inc()
            await response(scope, receive, send)


def _name_span(scope: Scope) -> None:
    """Name the ASGI instrumentation's server span by its route, as the response starts (it
    ends the span with the response's last byte)."""
    span = trace.get_current_span()
    path = getattr(scope.get("route"), "path", None)
    if path and span.is_recording():
        span.update_name(f"{scope['method']} {path}")
        span.set_attribute("http.route", path)


def _follow_trace(traceparent: bytes | None) -> list[Any]:
    """With export off, the trace the gateway started or continued, for logs and to pass on
    (with export on, the ASGI instrumentation continues it as a span)."""
    if traceparent is None or tracing.enabled():
        return []
    raw = traceparent.decode("latin-1")
    ids = tracing.parse(raw)
    if ids is None:
        return []
    return [tracing.incoming_var.set(raw), trace_var.set(ids)]


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, then whatever the client sends next (a disconnect)."""
    sent = False

    async def wrapped() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return wrapped


class _BodyTooLarge(Exception):
    pass


def _limited(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _BodyTooLarge
        return message

    return wrapped


async def _send_problem(send: Send, problem: Problem) -> None:
    body = orjson.dumps(problem.body())
    await send(
        {
            "type": "http.response.start",
            "status": problem.status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _watching_gc(
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None,
    settings: Settings,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The service's lifespan, with the GC tuned and watched in the serving process first,
    and the trace sample ratio followed."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        gc_pauses.install()
        stop = asyncio.Event()
        # The operator's live trace sample ratio (snapshoe tracing sample), when tracing.
        follower = asyncio.create_task(tracing.follow_sample_ratio(settings, stop))
        try:
            if lifespan is None:
                yield
            else:
                async with lifespan(app):
                    yield
        finally:
            stop.set()
            await follower

    return run


def create_service_app(
    service: str,
    *,
    routers: list[APIRouter],
    readiness: Mapping[str, ReadinessCheck] | None = None,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    title: str | None = None,
    version: str = "1.0.0",
    fast_paths: Mapping[tuple[str, str], FastPath] | None = None,
    metrics_hook: Callable[[], Awaitable[None]] | None = None,
    settings: Settings | None = None,
) -> FastAPI:
    """Build a service app. ``metrics_hook`` refreshes gauges read from elsewhere (the
    broker's DLQ depths) before ``/metrics`` answers; it is bounded and never fails a scrape.
    ``readiness`` maps a dependency name to a coroutine that raises
    when that dependency cannot be reached; ``/readyz`` runs them all. ``fast_paths`` maps
    ``(method, path)`` of a hot route to its :data:`FastPath`. ``settings`` (read from the
    environment when not given) sets the log level and format and the access log."""
    settings = settings or get_settings()
    # Logging is set here, not at import, so every uvicorn worker process gets it.
    configure_logging(service, settings.log_level, json=settings.log_json)
    app = FastAPI(
        title=title or f"SnapShoe {service}",
        version=version,
        lifespan=_watching_gc(lifespan, settings),
    )
    install_error_handlers(app)
    app.include_router(_operations_router(service, dict(readiness or {}), metrics_hook))
    for router in routers:
        app.include_router(router)
    install_public_openapi(app)
    app.add_middleware(
        RequestContextMiddleware,
        service=service,
        fast_paths=fast_paths,
        access_log=settings.access_log,
    )
    if tracing.configure_tracing(service, settings):
        _add_tracing_middleware(app)
    return app


def _add_tracing_middleware(app: FastAPI) -> None:
    """The ASGI instrumentation, outermost: a server span per request, continuing the
    gateway's traceparent (probes and scrapes left out; no spans per body chunk)."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    app.add_middleware(
        OpenTelemetryMiddleware,
        excluded_urls="/healthz,/readyz,/metrics",
        exclude_spans=["receive", "send"],
        tracer_provider=tracing.provider(),
        server_request_hook=tracing.redact_query,
    )


def _operations_router(
    service: str,
    checks: dict[str, ReadinessCheck],
    metrics_hook: Callable[[], Awaitable[None]] | None,
) -> APIRouter:
    """``/healthz``, ``/readyz`` and ``/metrics``, left out of the schema."""
    ops = APIRouter(tags=["operations"])

    @ops.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @ops.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        return await _readiness(checks)

    @ops.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        if metrics_hook is not None:
            try:
                await asyncio.wait_for(metrics_hook(), METRICS_HOOK_SECONDS)
            except Exception as exc:  # stale gauges beat a failed scrape
                log.warning("metrics refresh failed: %s", exc)
        return Response(render_metrics(), media_type=CONTENT_TYPE_LATEST)

    return ops


async def _readiness(checks: Mapping[str, ReadinessCheck]) -> Response:
    """Run every check: 200 with each ``ok``, or a 503 problem naming the unreachable ones."""
    results: dict[str, str] = {}
    ok = True
    for name, check in checks.items():
        try:
            await check()
            results[name] = "ok"
        except Exception as exc:  # a readiness probe reports, it never raises
            ok = False
            results[name] = f"unreachable: {type(exc).__name__}"
    body: dict[str, Any] = {"status": "ok" if ok else "unavailable", "checks": results}
    if not ok:
        body |= service_unavailable("A dependency is down", retry_after=None).body()
    return Response(
        orjson.dumps(body),
        status_code=200 if ok else 503,
        media_type="application/json" if ok else PROBLEM_JSON,
    )


async def noop_lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
