"""Build the users service: ``create_app(settings=None)`` is the uvicorn factory.

Everything that connects (engine, Redis) or reads key files (token issuer and verifier) is
built in the lifespan and kept on ``app.state``, never at import time.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from pwdlib import PasswordHash
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from snapshoe.kernel.auth import TokenIssuer, TokenVerifier, build_issuer, build_verifier
from snapshoe.kernel.clients.products import ProductsClient
from snapshoe.kernel.db import Sessions, create_engine, create_sessions, ping
from snapshoe.kernel.deadletters import EventGauges
from snapshoe.kernel.http import create_service_app
from snapshoe.kernel.logs import configure_logging
from snapshoe.kernel.redis import create_redis
from snapshoe.kernel.settings import Settings, get_settings
from snapshoe.users.mail import Mailer, MailQueue


@dataclass(slots=True)
class Deps:
    settings: Settings
    engine: AsyncEngine
    sessions: Sessions
    redis: Redis
    issuer: TokenIssuer
    verifier: TokenVerifier
    hasher: PasswordHash
    # A real argon2id hash of a random password: verified against when the email is unknown,
    # so a login for an unknown address costs what a wrong password costs.
    dummy_hash: str
    mailer: Mailer
    # Where signup and resend leave their mail for the users worker (users.mail).
    mail_queue: MailQueue
    # Item details for the cart view and the existence check of a new line.
    products: ProductsClient


# The cart asks products on every view. Each attempt is bounded by the client's timeouts
# (connect 1 s, then PRODUCTS_TIMEOUT_SECONDS per read/write/pool wait) and there is one
# retry, so a hung products costs a cart request about 2 x 1.5 s before the view degrades.
# No overall asyncio deadline on top: in a saturated process it fired on the event loop's
# own backlog (200 concurrent PUTs: products answered in < 150 ms, yet some calls "timed
# out"), turning load into false 503s. The pool is the kernel's default size, for the same
# reason (the timeout also bounds the wait for a pooled connection).
PRODUCTS_TIMEOUT_SECONDS = 1.5
PRODUCTS_RETRIES = 1


async def build_deps(settings: Settings) -> Deps:
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
    settings = settings or get_settings()
    configure_logging("users", settings.log_level, settings.log_json)

    from snapshoe.users.api import internal_router, router  # api imports Deps from here

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
    from snapshoe.users.consumers import QUEUES

    gauges = EventGauges(
        settings,
        "users",
        list(QUEUES),
        sessions=lambda: getattr(getattr(app.state, "deps", None), "sessions", None),
        outbox=None,
    )

    app = create_service_app(
        "users",
        routers=[router, internal_router],
        readiness={"database": check_db, "redis": check_redis},
        lifespan=lifespan,
        title="SnapShoe users",
        metrics_hook=gauges.refresh,
    )
    app.state.settings = settings  # kernel.internal.internal_caller reads it
    return app
