"""The products service's composition root: the app, and the dependencies (deps.Deps) its
lifespan builds. It imports every room below it; none of them imports it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from snapshoe.kernel.auth import build_verifier
from snapshoe.kernel.batching import GroupCommit
from snapshoe.kernel.clients.orders import OrdersClient
from snapshoe.kernel.clients.payments import PaymentsClient
from snapshoe.kernel.clients.users import UsersClient
from snapshoe.kernel.db import create_engine, create_sessions, ping
from snapshoe.kernel.deadletters import EventGauges
from snapshoe.kernel.http import create_service_app
from snapshoe.kernel.redis import create_redis
from snapshoe.kernel.settings import Settings, settings_for
from snapshoe.products import queue_metrics
from snapshoe.products.admission_tokens import signing_key
from snapshoe.products.api import admin_router, internal_router, public_router
from snapshoe.products.deps import Admitted, Deps
from snapshoe.products.gate import Gate
from snapshoe.products.ledger import LEDGER_BATCH_MAX, write_admitted
from snapshoe.products.queue_hub import QueueHub
from snapshoe.products.queue_stream import product_tickets
from snapshoe.products.rebuild import watch_gate
from snapshoe.products.schemas import ReservationOut
from snapshoe.products.settings import ProductsSettings
from snapshoe.products.tables import outbox

SERVICE = "products"


@asynccontextmanager
async def open_deps(shared: Settings) -> AsyncIterator[Deps]:
    settings = settings_for(ProductsSettings, shared)
    engine = create_engine(settings, SERVICE)
    gates: list[Gate] = []
    # Every new connection tells the gate which Redis it reached (gate.Gate.seen).
    redis = create_redis(settings, on_run_id=lambda run_id: gates[0].seen(run_id))
    gates.append(Gate(redis, settings.namespace))
    deps = Deps(
        settings=settings,
        engine=engine,
        sessions=create_sessions(engine),
        redis=redis,
        gate=gates[0],
        admission_key=signing_key(settings.internal_token),
        queue_hub=QueueHub(redis, settings.namespace),
        users=UsersClient(settings),
        orders=OrdersClient(settings),
        payments=PaymentsClient(settings),
    )

    deps.queue_hub.reader = functools.partial(product_tickets, deps)

    async def write(batch: list[Admitted]) -> list[ReservationOut | BaseException]:
        return await write_admitted(deps, batch)

    deps.ledger = GroupCommit(
        "products_ledger",
        write,
        writers=settings.ledger_write_concurrency,
        max_batch=LEDGER_BATCH_MAX,
    )
    deps.ledger.start()
    watcher = asyncio.create_task(watch_gate(deps))
    try:
        yield deps
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await deps.ledger.close()
        await deps.queue_hub.aclose()
        await deps.users.aclose()
        await deps.orders.aclose()
        await deps.payments.aclose()
        await redis.aclose()
        await engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings_for(ProductsSettings, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_deps(settings) as deps:
            app.state.deps = deps
            app.state.settings = settings
            app.state.verifier = build_verifier(settings)
            yield

    async def db_ready() -> None:
        await ping(app.state.deps.engine)

    async def redis_ready() -> None:
        await app.state.deps.redis.ping()

    # Its outbox figures, the queues' and the gate's drift in /metrics, read at scrape time.
    events = EventGauges(
        settings,
        SERVICE,
        [],
        sessions=lambda: getattr(getattr(app.state, "deps", None), "sessions", None),
        outbox=outbox,
    )
    gauges = queue_metrics.ProductsGauges(events)

    app = create_service_app(
        SERVICE,
        settings=settings,
        routers=[public_router, admin_router, internal_router],
        readiness={"database": db_ready, "redis": redis_ready},
        lifespan=lifespan,
        metrics_hook=lambda: gauges.refresh(getattr(app.state, "deps", None)),
    )
    return app
