"""Fixtures of the users integration tests.

``users_platform`` is the real platform (the session ``platform`` fixture: ``snapshoe up``,
HAProxy in front). With ``SNAPSHOE_USERS_STANDALONE=1`` it is instead the users service alone
(uvicorn in a subprocess, its own namespace and port) with an in-process aiosmtpd standing in
for the mail sink; ``gateway`` then points at the service itself. That mode is for working on
this service without the rest of the platform; the tests are the same.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from tests.support.platform import ROOT, Platform
from tests.support.settings import PlatformSettings

from snapshoe.kernel.auth import ensure_dev_keys
from snapshoe.kernel.db import drop_database
from snapshoe.kernel.migrate import migrate_service
from snapshoe.kernel.settings import Settings

STANDALONE = os.environ.get("SNAPSHOE_USERS_STANDALONE") == "1"
STANDALONE_ENV = {
    "SNAPSHOE_NAMESPACE": "snapshoe_utest",
    "SNAPSHOE_USERS_PORT": "18201",
    "SNAPSHOE_SMTP_PORT": "11125",
    "SNAPSHOE_REDIS_URL": "redis://127.0.0.1:6379/14",
    "SNAPSHOE_DATA_DIR": str(ROOT / ".snapshoe" / "utest"),
    "SNAPSHOE_LOG_LEVEL": "WARNING",
}


class _Sink:
    """Collects mail like the mail sink does, newest first."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg: Message = message_from_bytes(envelope.content)
        payload = msg.get_payload(decode=True)
        body = payload.decode() if isinstance(payload, bytes) else str(msg.get_payload())
        for rcpt in envelope.rcpt_tos:
            self.messages.insert(
                0,
                {
                    "to": rcpt,
                    "subject": str(msg["Subject"]),
                    "body": body,
                    "received_at": datetime.now(UTC).isoformat(),
                },
            )
        return "250 OK"


class StandalonePlatform(Platform):
    def __init__(
        self, settings: Settings, proc: subprocess.Popen[bytes], log_path: Path, sink: _Sink
    ) -> None:
        super().__init__(settings, proc, log_path)
        self.sink = sink
        self.gateway = settings.service_url("users")

    async def messages(self, email: str) -> list[dict[str, Any]]:
        return [m for m in self.sink.messages if m["to"] == email]


def _start_standalone() -> Iterator[Platform]:
    from aiosmtpd.controller import Controller

    fields: dict[str, Any] = {
        k.removeprefix("SNAPSHOE_").lower(): v for k, v in STANDALONE_ENV.items()
    }
    settings = PlatformSettings(**fields)

    async def prepare() -> None:
        await drop_database(settings, "users")
        await migrate_service(settings, "users")
        redis = Redis.from_url(settings.redis_url)
        await redis.flushdb()
        await redis.aclose()

    asyncio.run(prepare())
    ensure_dev_keys(settings)
    sink = _Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=settings.smtp_port)
    controller.start()
    log_path = settings.data_dir / "users.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "snapshoe.users.bootstrap:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(settings.users_port),
        ],
        env={**os.environ, **STANDALONE_ENV},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{settings.service_url('users')}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"users did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield StandalonePlatform(settings, proc, log_path, sink)
    finally:
        proc.terminate()
        proc.wait(10)
        controller.stop()


@pytest.fixture(scope="session")
def users_platform(request: pytest.FixtureRequest) -> Iterator[Platform]:
    if STANDALONE:
        yield from _start_standalone()
    else:
        yield request.getfixturevalue("platform")


@pytest.fixture(scope="session")
async def users_db(users_platform: Platform) -> AsyncIterator[AsyncEngine]:
    """The users database, for tests that must reach past the API (e.g. age a code)."""
    engine = create_async_engine(users_platform.settings.database_url("users"), pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def users_redis(users_platform: Platform) -> AsyncIterator[Redis]:
    redis = Redis.from_url(users_platform.settings.redis_url, decode_responses=True)
    yield redis
    await redis.aclose()


@pytest.fixture
async def gw(users_platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the gateway from its own source address."""
    async with users_platform.client() as client:
        yield client


@pytest.fixture
async def direct(users_platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the users service itself, past the gateway (no gateway rate limits)."""
    async with users_platform.client(base_url=users_platform.url("users")) as client:
        yield client
