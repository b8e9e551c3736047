"""The mail sink app: the HTTP API plus, in its lifespan, a real SMTP server (aiosmtpd).

``snapshoe serve mail_sink`` runs this factory on ``settings.mail_sink_http_port``; the SMTP
server listens on ``settings.host:settings.mail_sink_smtp_port``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiosmtpd.controller import Controller
from fastapi import FastAPI

from snapshoe.kernel.http import create_service_app
from snapshoe.kernel.settings import Settings, get_settings
from snapshoe.mail_sink.api import router
from snapshoe.mail_sink.domain import DEFAULT_CAPACITY, MailStore
from snapshoe.mail_sink.handlers import SinkHandler

MAX_MESSAGE_BYTES = 10 * 1024 * 1024


def build_controller(settings: Settings, store: MailStore) -> Controller:
    return Controller(
        SinkHandler(store),
        hostname=settings.host,
        port=settings.mail_sink_smtp_port,
        server_hostname="mail-sink.snapshoe.local",
        data_size_limit=MAX_MESSAGE_BYTES,
        enable_SMTPUTF8=True,
        ready_timeout=10,
    )


def create_app(settings: Settings | None = None, capacity: int = DEFAULT_CAPACITY) -> FastAPI:
    settings = settings or get_settings()
    store = MailStore(capacity)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # aiosmtpd logs every SMTP command at INFO; our handler logs one line per message.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        controller = build_controller(settings, store)
        # start() blocks until the SMTP thread answers; keep the event loop free meanwhile.
        await asyncio.to_thread(controller.start)
        app.state.controller = controller
        try:
            yield
        finally:
            await asyncio.to_thread(controller.stop)

    app = create_service_app("mail_sink", routers=[router], lifespan=lifespan, settings=settings)
    app.state.settings = settings
    app.state.store = store
    return app
