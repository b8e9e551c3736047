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
from snapshoe.kernel.db import Sessions, create_engine, create_sessions, ping
from snapshoe.kernel.http import create_service_app
from snapshoe.kernel.logs import configure_logging
from snapshoe.kernel.redis import create_redis
from snapshoe.kernel.settings import Settings, get_settings
from snapshoe.users.mail import Mailer


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


async def build_deps(settings: Settings) -> Deps:
    hasher = PasswordHash.recommended()
    dummy_hash = await asyncio.to_thread(hasher.hash, secrets.token_urlsafe(16))
    engine = create_engine(settings, "users")
    verifier = build_verifier(settings)
    return Deps(
        settings=settings,
        engine=engine,
        sessions=create_sessions(engine),
        redis=create_redis(settings),
        issuer=build_issuer(settings),
        verifier=verifier,
        hasher=hasher,
        dummy_hash=dummy_hash,
        mailer=Mailer(settings),
    )


async def close_deps(deps: Deps) -> None:
    await deps.redis.aclose()
    await deps.engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging("users", settings.log_level, settings.log_json)

    from snapshoe.users.api import router  # api imports Deps from here

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

    app = create_service_app(
        "users",
        routers=[router],
        readiness={"database": check_db, "redis": check_redis},
        lifespan=lifespan,
        title="SnapShoe users",
    )
    return app
