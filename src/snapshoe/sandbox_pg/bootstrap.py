"""Build the sandbox PG: ``create_app(settings=None)`` is the uvicorn factory.

``snapshoe serve sandbox_pg`` runs it on ``settings.sandbox_pg_port``; the gateway routes
``/pg/*`` to it with ``/pg`` stripped. The store (Redis by default), the webhook sender and
the knobs are built in the lifespan, never at import time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from snapshoe.kernel.http import create_service_app
from snapshoe.kernel.redis import create_redis
from snapshoe.kernel.settings import Settings, get_settings
from snapshoe.sandbox_pg.api import (
    DropLostResponseLogs,
    billing,
    sandbox,
    toss,
    toss_error_response,
)
from snapshoe.sandbox_pg.deps import Deps
from snapshoe.sandbox_pg.domain import TossError
from snapshoe.sandbox_pg.repository import MemoryStore, RedisStore, Store
from snapshoe.sandbox_pg.settings import SandboxSettings
from snapshoe.sandbox_pg.webhooks import WebhookSender

log = logging.getLogger("snapshoe.sandbox_pg")
_lost_filter = DropLostResponseLogs()


def build_store(settings: Settings, sandbox_settings: SandboxSettings) -> Store:
    if sandbox_settings.store == "memory":
        return MemoryStore()
    return RedisStore(
        create_redis(settings), settings.namespace, sandbox_settings.retention_seconds
    )


def create_app(
    settings: Settings | None = None, sandbox_settings: SandboxSettings | None = None
) -> FastAPI:
    settings = settings or get_settings()
    sandbox_settings = sandbox_settings or SandboxSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # uvicorn and the kernel's last-resort handler both log the planned ResponseLost.
        for name in ("uvicorn.error", "snapshoe.errors"):
            logging.getLogger(name).addFilter(_lost_filter)
        store = build_store(settings, sandbox_settings)
        webhooks = (
            WebhookSender(sandbox_settings.webhook_url, sandbox_settings.webhook_timeout_seconds)
            if sandbox_settings.webhook_url
            else None
        )
        # Run-time knobs start from the configured defaults on every start, so a benchmark's
        # decline rate never leaks into the next session; payments are kept.
        try:
            await store.set_knobs(None)
        except Exception:  # Redis down: /readyz says so; do not die at start
            log.warning("could not reset the sandbox knobs", exc_info=True)
        app.state.deps = Deps(settings, sandbox_settings, store, webhooks)
        try:
            yield
        finally:
            if webhooks is not None:
                await webhooks.close()
            await store.close()

    async def check_store() -> None:
        await app.state.deps.store.ping()

    app = create_service_app(
        "sandbox_pg",
        settings=settings,
        routers=[toss, billing, sandbox],
        readiness={"store": check_store},
        lifespan=lifespan,
        title="SnapShoe sandbox PG (Toss Payments API shape)",
    )
    app.add_exception_handler(TossError, toss_error_response)
    return app
