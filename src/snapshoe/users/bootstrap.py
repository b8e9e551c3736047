"""Build the users service: ``create_app(settings=None)`` is the uvicorn factory.

Everything that connects (engine, Redis) or reads key files (token issuer and verifier) is
built in the lifespan and kept on ``app.state``, never at import time.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pwdlib import PasswordHash

from snapshoe.kernel.auth import build_issuer, build_verifier
from snapshoe.kernel.clients.products import ProductsClient
from snapshoe.kernel.db import create_engine, create_sessions, ping
from snapshoe.kernel.deadletters import EventGauges
from snapshoe.kernel.http import create_service_app
from snapshoe.kernel.redis import create_redis
from snapshoe.kernel.settings import Settings, settings_for
from snapshoe.users.api import internal_router, router
from snapshoe.users.consumers import QUEUES
from snapshoe.users.deps import Deps
from snapshoe.users.mail import Mailer, MailQueue
from snapshoe.users.settings import UsersSettings

# The cart asks products on every view. Each attempt is bounded by the client's timeouts
# (connect 1 s, then PRODUCTS_TIMEOUT_SECONDS per read/write/pool wait) and there is one
# retry, so a hung products costs a cart request about 2 x 1.5 s before the view degrades.
# No overall asyncio deadline on top: in a saturated process it fired on the event loop's
# own backlog (200 concurrent PUTs: products answered in < 150 ms, yet some calls "timed
# out"), turning load into false 503s. The pool is the kernel's default size, for the same
# reason (the timeout also bounds the wait for a pooled connection).
PRODUCTS_TIMEOUT_SECONDS = 1.5
PRODUCTS_RETRIES = 1


async def build_deps(shared: Settings) -> Deps:
    settings = settings_for(UsersSettings, shared)
    hasher = PasswordHash.recommended()
    dummy_hash = await asyncio.to_thread(hasher.hash, secrets.token_urlsafe(16))
    engine = create_engine(settings, "users")
    verifier = build_verifier(settings)
    redis = create_redis(settings)
    return Deps(
        settings=settings,
        engine=engine,
        sessions=create_sessions(engine),
        redis=redis,
        issuer=build_issuer(settings),
        verifier=verifier,
        hasher=hasher,
        dummy_hash=dummy_hash,
        mailer=Mailer(settings),
        mail_queue=MailQueue(settings, redis),
        products=ProductsClient(
            settings,
            timeout=PRODUCTS_TIMEOUT_SECONDS,
            retries=PRODUCTS_RETRIES,
        ),
    )


async def close_deps(deps: Deps) -> None:
    await deps.products.aclose()
    await deps.redis.aclose()
    await deps.engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings_for(UsersSettings, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        deps = await build_deps(settings)
        app.state.deps = deps
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
        "users",
        list(QUEUES),
        sessions=lambda: getattr(getattr(app.state, "deps", None), "sessions", None),
        outbox=None,
    )

    app = create_service_app(
        "users",
        settings=settings,
        routers=[router, internal_router],
        readiness={"database": check_db, "redis": check_redis},
        lifespan=lifespan,
        title="SnapShoe users",
        metrics_hook=gauges.refresh,
    )
    app.state.settings = settings  # kernel.internal.internal_caller reads it
    return app
