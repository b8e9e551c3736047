"""Trace context through the kernel with an in-memory span exporter: an incoming traceparent is
continued by a service's server span, an internal call (aiohttp, the kernel's client) carries it
and the request id to the next service, whose server span is the call's child; an event written
in a traced transaction is published as a child of that transaction's span and its consumer
continues the trace, with the request id. With export off, logs still carry the trace id that
arrived and events pass it on. Real MariaDB and RabbitMQ."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi import APIRouter, Request
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession
from tests.integration.kernel.test_messaging import Pinged, World
from tests.integration.kernel.test_messaging import world as world
from tests.support.net import free_port
from tests.support.platform import make_test_settings
from tests.support.waiting import wait_until

from snapshoe.kernel import messaging, tracing
from snapshoe.kernel.clients import InternalClient
from snapshoe.kernel.http import create_service_app
from snapshoe.kernel.logs import JsonFormatter, request_id_var

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=tracing.WorkRoots(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install_provider(provider)
    tracing.instrument_clients(provider)  # as configure_tracing does
    try:
        yield exporter
    finally:
        tracing.uninstrument_clients()
        tracing.uninstall_provider()


async def _serve(app: Any, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task


@pytest.fixture
async def two_services(spans: InMemorySpanExporter) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """``front`` (as orders) calls ``back`` (as products) through the kernel's client."""
    settings = make_test_settings(products_port=free_port())
    seen: dict[str, Any] = {}
    back_router = APIRouter()

    @back_router.get("/internal/ping")
    async def ping(request: Request) -> dict[str, str]:
        seen["headers"] = dict(request.headers)
        return {"ok": "yes"}

    client = InternalClient(settings, "products")
    front_router = APIRouter()

    @front_router.get("/api/front")
    async def front() -> dict[str, Any]:
        return await client.request(
            "GET", "/internal/ping", retry=False, params={"email": "buyer@example.com"}
        )

    back = create_service_app("back", routers=[back_router], settings=settings)
    front_app = create_service_app("front", routers=[front_router], settings=settings)
    servers = [await _serve(back, settings.products_port)]
    port = free_port()
    servers.append(await _serve(front_app, port))
    yield f"http://127.0.0.1:{port}", seen
    await client.aclose()
    for server, task in servers:
        server.should_exit = True
        await task


async def test_a_request_is_one_trace_across_two_services(
    spans: InMemorySpanExporter, two_services: tuple[str, dict[str, Any]]
) -> None:
    url, seen = two_services
    async with httpx.AsyncClient(base_url=url) as http:
        r = await http.get(
            "/api/front?email=buyer@example.com",
            headers={"traceparent": TRACEPARENT, "x-request-id": "r1"},
        )
    assert r.status_code == 200, r.text
    await wait_until(lambda: _servers_done(spans, 2), timeout=5)
    finished = spans.get_finished_spans()
    assert {f"{s.context.trace_id:032x}" for s in finished} == {TRACE_ID}
    front = next(s for s in finished if s.name == "GET /api/front")
    call = next(s for s in finished if s.kind == SpanKind.CLIENT)
    back = next(s for s in finished if s.name == "GET /internal/ping")
    assert front.kind == SpanKind.SERVER
    assert f"{front.parent.span_id:016x}" == PARENT
    assert call.parent.span_id == front.context.span_id
    assert back.parent.span_id == call.context.span_id
    # No span keeps the query string (personal data: an email searched for).
    for span in finished:
        for value in (span.attributes or {}).values():
            assert "buyer@example.com" not in str(value), (span.name, span.attributes)
    # The callee got the caller's request id and a traceparent naming the client span.
    assert seen["headers"]["x-request-id"] == "r1"
    assert seen["headers"]["traceparent"] == (f"00-{TRACE_ID}-{call.context.span_id:016x}-01")


async def _servers_done(exporter: InMemorySpanExporter, n: int) -> bool:
    return sum(1 for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER) >= n


async def _relay_once(w: World) -> None:
    relay = messaging.Relay(w.settings, w.sessions, w.outbox)
    connection = await messaging.connect(w.settings)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await messaging.declare_exchange(channel, w.settings)
        assert await relay.publish_batch(exchange) == 1


async def _consume_one(w: World, queue: str) -> dict[str, Any]:
    """Run a consumer until one event is handled; what the handler saw."""
    seen: dict[str, Any] = {}
    record = logging.makeLogRecord({"msg": "handled", "levelno": 20, "levelname": "INFO"})

    async def handle(session: AsyncSession, body: dict[str, Any]) -> None:
        seen["request_id"] = request_id_var.get()
        seen["log"] = orjson.loads(JsonFormatter("test").format(record))
        seen["carrier"] = tracing.carrier()

    stop = asyncio.Event()
    consumer = asyncio.create_task(
        messaging.consume(
            w.settings,
            w.sessions,
            w.inbox,
            queue=queue,
            handlers={Pinged.routing_key(): handle},
            stop=stop,
        )
    )
    await asyncio.sleep(1)  # queue declared and bound before the publish
    await _relay_once(w)
    await wait_until(lambda: _seen(seen), timeout=20)
    stop.set()
    await consumer
    return seen


async def _seen(seen: dict[str, Any]) -> bool:
    return "log" in seen


async def test_an_event_continues_the_trace_of_the_transaction_that_wrote_it(
    spans: InMemorySpanExporter,
    world: World,
) -> None:
    token = request_id_var.set("req-42")
    try:
        with tracing.tracer.start_as_current_span("POST /api/pay", kind=SpanKind.SERVER) as root:
            async with world.sessions.begin() as session:
                await messaging.add_to_outbox(session, world.outbox, Pinged(n=1))
    finally:
        request_id_var.reset(token)
    seen = await _consume_one(world, "pings")
    finished = spans.get_finished_spans()
    publish = next(s for s in finished if s.kind == SpanKind.PRODUCER)
    process = next(s for s in finished if s.kind == SpanKind.CONSUMER)
    trace_id = root.get_span_context().trace_id
    assert publish.context.trace_id == process.context.trace_id == trace_id
    assert publish.parent.span_id == root.get_span_context().span_id
    assert process.parent.span_id == publish.context.span_id
    assert process.name == f"process {Pinged.routing_key()}"
    assert seen["request_id"] == "req-42"
    assert seen["log"]["trace_id"] == f"{trace_id:032x}"
    assert seen["log"]["span_id"] == f"{process.context.span_id:016x}"
    assert seen["log"]["request_id"] == "req-42"
    # The relay's idle polling made no trace of its own: a trace starts where work starts.
    assert {s.context.trace_id for s in finished} == {trace_id}


async def test_with_export_off_the_trace_id_still_reaches_the_consumers_logs(
    world: World,
) -> None:
    assert not tracing.enabled()
    tokens = tracing.continue_from({"traceparent": TRACEPARENT, "x-request-id": "req-7"})
    try:
        async with world.sessions.begin() as session:
            await messaging.add_to_outbox(session, world.outbox, Pinged(n=2))
    finally:
        tracing.reset(tokens)
    seen = await _consume_one(world, "pings")
    assert seen["request_id"] == "req-7"
    assert seen["log"]["trace_id"] == TRACE_ID
    assert seen["log"]["span_id"] == PARENT
    # and an event the consumer writes passes the same trace on
    assert seen["carrier"] == {"traceparent": TRACEPARENT, "x-request-id": "req-7"}


async def test_the_server_span_is_named_by_route_and_probes_make_no_spans(
    spans: InMemorySpanExporter,
) -> None:
    router = APIRouter()

    @router.get("/api/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    app = create_service_app("things", routers=[router], settings=make_test_settings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.get(f"/api/things/{uuid.uuid4().hex}")).status_code == 200
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200
    names = [s.name for s in spans.get_finished_spans()]
    assert names == ["GET /api/things/{thing_id}"]


async def test_the_operators_sample_ratio_applies_without_a_restart() -> None:
    """``snapshoe tracing sample`` sets a Redis key; every process follows it within a second."""
    settings = make_test_settings(namespace=f"snapshoe_tr_{uuid.uuid4().hex[:8]}")
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=tracing.WorkRoots(tracing._ratio_sampler(1.0)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install_provider(provider)
    redis = Redis.from_url(settings.redis_url)
    stop = asyncio.Event()
    follower = asyncio.create_task(tracing.follow_sample_ratio(settings, stop))

    def recorded(n: int) -> int:
        exporter.clear()
        for _ in range(n):
            with tracing.tracer.start_as_current_span("work", kind=SpanKind.SERVER):
                pass
        return len(exporter.get_finished_spans())

    try:
        assert recorded(200) == 200
        await redis.set(tracing.sample_ratio_key(settings), "0")
        await asyncio.sleep(1.5)
        assert recorded(200) == 0
        await redis.set(tracing.sample_ratio_key(settings), "0.5")
        await asyncio.sleep(1.5)
        assert 60 < recorded(400) < 340  # by trace id: about half (binomial, p < 1e-30 outside)
        await redis.delete(tracing.sample_ratio_key(settings))
        await asyncio.sleep(1.5)
        assert recorded(100) == 100  # back to the configured ratio
    finally:
        stop.set()
        await follower
        await redis.delete(tracing.sample_ratio_key(settings))
        await redis.aclose()
        tracing.uninstall_provider()
