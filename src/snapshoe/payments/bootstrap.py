"""Build the payments service: ``create_app(settings=None)`` is the uvicorn factory.

The composition root: it builds the dependency record of :mod:`snapshoe.payments.deps`
(``build_core`` for the workers too, ``build_deps`` for the app) and imports only downward.
Everything is built in the lifespan (or by the worker), never at import time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from fastapi import FastAPI

from snapshoe.kernel.auth import build_verifier
from snapshoe.kernel.clients import pooled_session
from snapshoe.kernel.clients.orders import OrdersClient
from snapshoe.kernel.db import create_engine, create_sessions, ping
from snapshoe.kernel.deadletters import EventGauges
from snapshoe.kernel.http import create_service_app
from snapshoe.kernel.idempotency import IdempotencyStore
from snapshoe.kernel.redis import create_redis
from snapshoe.kernel.settings import Settings, settings_for
from snapshoe.payments.api import internal_router, router
from snapshoe.payments.consumers import QUEUES
from snapshoe.payments.deps import Core, Deps
from snapshoe.payments.pg import TossPaymentsClient
from snapshoe.payments.settings import PaymentsSettings
from snapshoe.payments.tables import outbox


def build_core(shared: Settings, *, pool_size: int | None = None) -> Core:
    settings = settings_for(PaymentsSettings, shared)
    engine = create_engine(settings, "payments", pool_size=pool_size)
    # One keep-alive pool to the PG, shared by every request (built here, in the lifespan or
    # the worker's run: inside the running loop). The adapter sets each request's timeouts.
    pg_http = pooled_session(
        200,
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=3.0, sock_read=settings.pg_timeout_seconds
        ),
    )
    return Core(
        settings=settings,
        engine=engine,
        sessions=create_sessions(engine),
        pg=TossPaymentsClient.from_settings(settings, pg_http),
        pg_http=pg_http,
    )


async def close_core(core: Core) -> None:
    await core.pg_http.close()
    await core.engine.dispose()


def build_deps(shared: Settings) -> Deps:
    settings = settings_for(PaymentsSettings, shared)
    core = build_core(settings)
    redis = create_redis(settings)
    return Deps(
        settings=core.settings,
        engine=core.engine,
        sessions=core.sessions,
        pg=core.pg,
        pg_http=core.pg_http,
        redis=redis,
        idempotency=IdempotencyStore(redis, settings, "payments"),
        orders=OrdersClient(settings),
        verifier=build_verifier(settings),
    )


async def close_deps(deps: Deps) -> None:
    await deps.orders.aclose()
    await deps.idempotency.aclose()
    await deps.redis.aclose()
    await close_core(deps)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings_for(PaymentsSettings, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        deps = build_deps(settings)
        app.state.deps = deps
        app.state.settings = settings
        app.state.verifier = deps.verifier
        try:
            yield
        finally:
            await close_deps(deps)

    async def check_db() -> None:
        await ping(app.state.deps.engine)

    async def check_redis() -> None:
        await app.state.deps.redis.ping()

    # Its consumers' DLQ depths (and unroutable outbox rows) in /metrics, read at scrape time.
    gauges = EventGauges(
        settings,
        "payments",
        list(QUEUES),
        sessions=lambda: getattr(getattr(app.state, "deps", None), "sessions", None),
        outbox=outbox,
    )

    app = create_service_app(
        "payments",
        settings=settings,
        routers=[router, internal_router],
        # Not the broker: events wait in the outbox while it is down (snapshoe_broker_up says so).
        readiness={"database": check_db, "redis": check_redis},
        lifespan=lifespan,
        title="SnapShoe payments",
        metrics_hook=gauges.refresh,
    )
    return app
