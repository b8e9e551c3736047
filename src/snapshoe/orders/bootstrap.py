"""Build the orders service: ``create_app(settings=None)`` is the uvicorn factory.

Everything that connects (engine, Redis, HTTP pools of products and users) is built in the
lifespan and kept on ``app.state``, never at import time. The worker process builds the same
:class:`Deps` (``deps.py``) with :func:`build_deps`. This is the composition root: it imports
the modules below it and none imports it back (but the worker's entry point, ``workers.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from snapshoe.kernel.auth import build_verifier
from snapshoe.kernel.batching import GroupCommit
from snapshoe.kernel.clients.payments import PaymentsClient
from snapshoe.kernel.clients.products import ProductsClient
from snapshoe.kernel.clients.users import UsersClient
from snapshoe.kernel.db import Sessions, create_engine, create_sessions, ping
from snapshoe.kernel.deadletters import EventGauges
from snapshoe.kernel.http import create_service_app
from snapshoe.kernel.idempotency import IdempotencyStore
from snapshoe.kernel.redis import create_redis
from snapshoe.kernel.settings import Settings, settings_for
from snapshoe.orders.admission import ItemSnapshots, SoldOutHints
from snapshoe.orders.api import (
    admin_router,
    fast_create_order,
    figures_router,
    internal_router,
    router,
)
from snapshoe.orders.baseline import floor_router
from snapshoe.orders.consumers import QUEUES
from snapshoe.orders.deps import Deps, Placement
from snapshoe.orders.order_metrics import OrdersGauges
from snapshoe.orders.placing import PLACEMENT_BATCH_MAX, write_placements
from snapshoe.orders.refusals import ItemProducts
from snapshoe.orders.settings import OrdersSettings
from snapshoe.orders.tables import outbox


def build_deps(shared: Settings) -> Deps:
    settings = settings_for(OrdersSettings, shared)
    engine = create_engine(settings, "orders")
    redis = create_redis(settings)
    products = ProductsClient(settings)
    deps = Deps(
        settings=settings,
        engine=engine,
        sessions=create_sessions(engine),
        redis=redis,
        idempotency=IdempotencyStore(redis, settings, "orders"),
        products=products,
        users=UsersClient(settings),
        payments=PaymentsClient(settings, timeout=2.0, retries=0),
        items=ItemSnapshots(products),
        item_products=ItemProducts(products),
        sold_out=SoldOutHints(settings.sold_out_hint_seconds),
        reserve_slots=asyncio.Semaphore(settings.reserve_concurrency),
    )

    async def write(batch: list[Placement]) -> list[BaseException | None]:
        return await write_placements(deps, batch)

    deps.placements = GroupCommit(
        "orders_placements",
        write,
        writers=settings.order_write_concurrency,
        max_batch=PLACEMENT_BATCH_MAX,
    )
    return deps


async def close_deps(deps: Deps) -> None:
    if deps.background:
        await asyncio.wait(deps.background, timeout=5)
    await deps.placements.close()
    await deps.products.aclose()
    await deps.users.aclose()
    await deps.payments.aclose()
    await deps.idempotency.aclose()
    await deps.redis.aclose()
    await deps.engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings_for(OrdersSettings, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        deps = build_deps(settings)
        deps.placements.start()
        app.state.deps = deps
        app.state.settings = settings
        app.state.verifier = build_verifier(settings)
        try:
            yield
        finally:
            await close_deps(deps)

    async def check_db() -> None:
        await ping(app.state.deps.engine)

    async def check_redis() -> None:
        await app.state.deps.redis.ping()

    # Its consumers' DLQ depths (and unroutable outbox rows) in /metrics, read at scrape time.
    def sessions() -> Sessions | None:
        return getattr(getattr(app.state, "deps", None), "sessions", None)

    events = EventGauges(settings, "orders", list(QUEUES), sessions=sessions, outbox=outbox)
    gauges = OrdersGauges(events, sessions)

    app = create_service_app(
        "orders",
        settings=settings,
        routers=_routers(settings),
        # Not the broker: events wait in the outbox while it is down (snapshoe_broker_up says so).
        readiness={"database": check_db, "redis": check_redis},
        lifespan=lifespan,
        title="SnapShoe orders",
        fast_paths={("POST", "/api/orders"): fast_create_order},
        metrics_hook=gauges.refresh,
    )
    return app


def _routers(settings: Settings) -> list[APIRouter]:
    """The buyer's, the operator's and the internal routes; the benchmark's floor route only
    behind ``settings.bench_baselines`` (first: the orders router's ``/{order_id}`` would take
    it)."""
    routers = [router, admin_router, figures_router, internal_router]
    return [floor_router, *routers] if settings.bench_baselines else routers
