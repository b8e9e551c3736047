"""Fixtures of the products integration tests.

``products_env`` talks to the real products service over HTTP: by default the one the session
``platform`` fixture started (``snapshoe up``); with ``SNAPSHOE_PRODUCTS_STANDALONE=1`` the
service alone (uvicorn in a subprocess, its own namespace, port and Redis db), for working on
this service without the rest of the platform. The tests are the same either way.

Tests also reach past the API where they must: the ledger is read from the products database
and the gate from Redis, to check the invariants.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from tests.support.net import free_port
from tests.support.platform import ROOT
from tests.support.settings import PlatformSettings

from snapshoe.kernel.auth import build_issuer, ensure_dev_keys
from snapshoe.kernel.db import drop_database
from snapshoe.kernel.internal import internal_headers
from snapshoe.kernel.migrate import migrate_service
from snapshoe.kernel.settings import Settings

STANDALONE = os.environ.get("SNAPSHOE_PRODUCTS_STANDALONE") == "1"
# Redis db 13 in standalone mode so that flushing it never disturbs a platform run (db 15).
STANDALONE_ENV = {
    "SNAPSHOE_NAMESPACE": "snapshoe_ptest",
    "SNAPSHOE_PRODUCTS_PORT": "18302",
    "SNAPSHOE_REDIS_URL": "redis://127.0.0.1:6379/13",
    "SNAPSHOE_DATA_DIR": str(ROOT / ".snapshoe" / "ptest"),
    "SNAPSHOE_LOG_LEVEL": "WARNING",
}


@dataclass
class ProductsEnv:
    settings: Settings
    url: str
    db: AsyncEngine
    redis: Redis
    admin: dict[str, str]
    internal: dict[str, str]

    def client(self, **kw: Any) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=kw.pop("connections", 64))
        return httpx.AsyncClient(base_url=self.url, timeout=60, limits=limits, **kw)

    async def product(self, client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
        body = {
            "name": "Test Runner",
            "brand": "TestBrand",
            "description": "made by a test",
            "price": 100_000,
            "release_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
            "per_user_limit": 0,
            **fields,
        }
        r = await client.post("/api/admin/products", json=body, headers=self.admin)
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        return data

    async def item(
        self, client: httpx.AsyncClient, product_id: str, stock: int, size: int = 270, **kw: Any
    ) -> dict[str, Any]:
        body = {"size": size, "color": kw.pop("color", "Black"), "stock": stock, **kw}
        r = await client.post(
            f"/api/admin/products/{product_id}/items", json=body, headers=self.admin
        )
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        return data

    async def reserve(
        self,
        client: httpx.AsyncClient,
        rid: str,
        buyer: str,
        lines: list[tuple[str, int]],
        until: datetime | None = None,
    ) -> httpx.Response:
        until = until or datetime.now(UTC) + timedelta(minutes=10)
        return await client.post(
            "/internal/reservations",
            json={
                "reservation_id": rid,
                "buyer_id": buyer,
                "lines": [{"item_id": i, "quantity": q} for i, q in lines],
                "reserved_until": until.isoformat(),
            },
            headers=self.internal,
        )

    async def release(self, client: httpx.AsyncClient, rid: str) -> httpx.Response:
        return await client.post(f"/internal/reservations/{rid}/release", headers=self.internal)

    async def commit(self, client: httpx.AsyncClient, rid: str) -> httpx.Response:
        return await client.post(f"/internal/reservations/{rid}/commit", headers=self.internal)

    async def ledger(self, item_id: str) -> dict[str, int]:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT initial, sold, reserved, available FROM items WHERE id = :i"),
                    {"i": item_id},
                )
            ).one()
        return {"initial": row[0], "sold": row[1], "reserved": row[2], "available": row[3]}

    async def gate_available(self, product_id: str, item_id: str) -> int | None:
        ns = self.settings.namespace
        value = await self.redis.hget(f"{ns}:pgate:{{{product_id}}}:avail", item_id)
        return int(value) if value is not None else None


def _start_standalone() -> Iterator[Settings]:
    fields = {k.removeprefix("SNAPSHOE_").lower(): v for k, v in STANDALONE_ENV.items()}
    settings = PlatformSettings(**fields)  # type: ignore[arg-type]

    async def prepare() -> None:
        await drop_database(settings, "products")
        await migrate_service(settings, "products")
        redis = Redis.from_url(settings.redis_url)
        await redis.flushdb()
        await redis.aclose()

    asyncio.run(prepare())
    ensure_dev_keys(settings)
    log_path = settings.data_dir / "products.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "snapshoe.products.bootstrap:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(settings.products_port),
            "--no-access-log",
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
                if httpx.get(f"{settings.service_url('products')}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"products did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield settings
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def products_settings(request: pytest.FixtureRequest) -> Iterator[Settings]:
    if STANDALONE:
        yield from _start_standalone()
    else:
        yield request.getfixturevalue("platform").settings


@pytest.fixture(scope="session")
async def products_env(products_settings: Settings) -> AsyncIterator[ProductsEnv]:
    settings = products_settings
    issuer = build_issuer(settings)
    token, _ = issuer.issue_access("test-admin", email_verified=True, roles=["admin"])
    db = create_async_engine(settings.database_url("products"), poolclass=pool.NullPool)
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    yield ProductsEnv(
        settings=settings,
        url=settings.service_url("products"),
        db=db,
        redis=redis,
        admin={"Authorization": f"Bearer {token}"},
        internal=internal_headers(settings),
    )
    await redis.aclose()
    await db.dispose()


@pytest.fixture
async def client(products_env: ProductsEnv) -> AsyncIterator[httpx.AsyncClient]:
    async with products_env.client(connections=100) as c:
        yield c


# A private products app (tests/integration/products/test_gate_instance.py): its own
# database and its own redis-server, so a test can restart that Redis.


class PrivateRedis:
    """A redis-server of this test alone, in a temp dir, on its own port."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=(self.dir / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError((self.dir / "redis.log").read_text()[-2000:])
            time.sleep(0.05)

    async def shutdown_nosave(self) -> None:
        r = Redis.from_url(self.url)
        try:
            await r.execute_command("SHUTDOWN", "NOSAVE")
        except RedisConnectionError:
            pass  # the server closes the connection as it goes
        finally:
            await r.aclose()
        assert self.proc is not None
        await asyncio.to_thread(self.proc.wait, 10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class Private:
    settings: Settings
    redis: PrivateRedis
    db: AsyncEngine
    admin: dict[str, str]
    internal: dict[str, str]


@pytest.fixture
async def private(products_settings: Settings, tmp_path: Path) -> AsyncIterator[Private]:
    server = PrivateRedis(tmp_path)
    server.start()
    settings = products_settings.model_copy(
        update={"namespace": f"t13{secrets.token_hex(3)}", "redis_url": server.url}
    )
    await drop_database(settings, "products")
    await migrate_service(settings, "products")
    token, _ = build_issuer(settings).issue_access(
        "test-admin", email_verified=True, roles=["admin"]
    )
    db = create_async_engine(settings.database_url("products"), poolclass=pool.NullPool)
    try:
        yield Private(
            settings, server, db, {"Authorization": f"Bearer {token}"}, internal_headers(settings)
        )
    finally:
        await db.dispose()
        server.stop()
        await drop_database(settings, "products")
