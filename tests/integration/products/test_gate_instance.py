"""The per-buyer limit survives a Redis that lost what buyers hold (issue 12, item 13).

- A Redis that comes back from an older snapshot keeps the gate's ready key but has lost the
  ``held`` counts: the products service must notice it is not the Redis the gate was built on
  (its run id) and rebuild from the ledger before it admits anyone. Real servers: a PRIVATE
  redis-server (never the shared one) restarted from a copy of its own older dump.rdb, and a
  products app (in process) on its own database.
- The ledger refuses an over-limit reservation by itself (``buyer_holds``), whatever the gate
  says: the gate's held counter is wiped and the buyer still cannot pass the limit.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
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
from tests.integration.products.conftest import ProductsEnv

from snapshoe.kernel.auth import build_issuer
from snapshoe.kernel.db import drop_database
from snapshoe.kernel.internal import internal_headers
from snapshoe.kernel.migrate import migrate_service
from snapshoe.kernel.settings import Settings
from snapshoe.products.bootstrap import create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


async def reserve(
    c: httpx.AsyncClient, headers: dict[str, str], rid: str, buyer: str, item_id: str
) -> httpx.Response:
    """A reservation, retried while the gate says 503 (Redis coming back, a rebuild)."""
    until = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    body = {
        "reservation_id": rid,
        "buyer_id": buyer,
        "lines": [{"item_id": item_id, "quantity": 1}],
        "reserved_until": until,
    }
    deadline = time.monotonic() + 20
    while True:
        r = await c.post("/internal/reservations", json=body, headers=headers)
        if r.status_code != 503 or time.monotonic() > deadline:
            return r
        await asyncio.sleep(0.1)


def code(r: httpx.Response) -> Any:
    return (r.status_code, r.json().get("code") if r.status_code >= 400 else None)


async def test_a_redis_back_from_an_older_snapshot_is_rebuilt_before_it_admits(
    private: Private,
) -> None:
    env = private
    app = create_app(env.settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://products") as c:
            r = await c.post(
                "/api/admin/products",
                json={
                    "name": "Snapshot",
                    "brand": "TestBrand",
                    "description": "item 13",
                    "price": 100_000,
                    "release_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
                    "per_user_limit": 1,
                },
                headers=env.admin,
            )
            assert r.status_code == 201, r.text
            pid = r.json()["id"]
            r = await c.post(
                f"/api/admin/products/{pid}/items",
                json={"size": 270, "color": "Black", "stock": 4},
                headers=env.admin,
            )
            assert r.status_code == 201, r.text
            item = r.json()["id"]
            h = env.internal
            assert code(await reserve(c, h, "r-a", "buyer-a", item)) == (201, None)

            # The snapshot the Redis will come back from: the gate is built and open.
            raw = Redis.from_url(env.redis.url, decode_responses=True)
            try:
                await raw.save()
                shutil.copy(env.redis.dir / "dump.rdb", env.redis.dir / "older.rdb")
                held_key = f"{env.settings.namespace}:pgate:{{{pid}}}:held"
                old_run_id = (await raw.info("server"))["run_id"]

                assert code(await reserve(c, h, "r-b1", "buyer-b", item)) == (201, None)
                assert code(await reserve(c, h, "r-b2", "buyer-b", item)) == (
                    409,
                    "purchase_limit_exceeded",
                )
                assert await raw.hget(held_key, "buyer-b") == "1"
            finally:
                await raw.aclose()

            # Redis restarts from the older snapshot: ready key kept, buyer-b's hold lost.
            await env.redis.shutdown_nosave()
            shutil.copy(env.redis.dir / "older.rdb", env.redis.dir / "dump.rdb")
            env.redis.start()
            raw = Redis.from_url(env.redis.url, decode_responses=True)
            try:
                run_id = (await raw.info("server"))["run_id"]
                assert run_id != old_run_id
                assert await raw.get(f"{env.settings.namespace}:pgate:ready") is not None
                assert await raw.hget(held_key, "buyer-b") is None  # the snapshot lost it

                # buyer-b tries again, at once, several times: the limit holds.
                tries = await asyncio.gather(
                    *(reserve(c, h, f"r-b{n}", "buyer-b", item) for n in range(3, 8))
                )
                assert [code(t) for t in tries] == [(409, "purchase_limit_exceeded")] * 5
                # ... because the gate was rebuilt from the ledger on this Redis.
                async with env.db.connect() as conn:
                    built_on = (
                        await conn.execute(text("SELECT run_id FROM gate_state WHERE id = 1"))
                    ).scalar_one()
                assert built_on == run_id
                assert await raw.hget(held_key, "buyer-b") == "1"

                # Stock: 2 of 4 are held (a, b); 4 more buyers at once get exactly 2.
                others = await asyncio.gather(
                    *(reserve(c, h, f"r-{b}", f"buyer-{b}", item) for b in "cdef")
                )
                assert Counter(code(o) for o in others) == {(201, None): 2, (409, "sold_out"): 2}
            finally:
                await raw.aclose()
    async with env.db.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT initial, sold, reserved, available FROM items WHERE id = :i"),
                {"i": item},
            )
        ).one()
    assert tuple(row) == (4, 0, 4, 0)  # never oversold


async def test_the_ledger_refuses_an_over_limit_reservation_the_gate_let_through(
    products_env: ProductsEnv, client: httpx.AsyncClient
) -> None:
    env = products_env
    product = await env.product(client, per_user_limit=1)
    item = (await env.item(client, product["id"], 5))["id"]
    first = f"lim-{secrets.token_hex(4)}"
    r = await env.reserve(client, first, "lim-buyer", [(item, 1)])
    assert r.status_code == 201, r.text
    # The gate forgets what the buyer holds (a lost write, a lagging replica).
    held_key = f"{env.settings.namespace}:pgate:{{{product['id']}}}:held"
    assert await env.redis.hdel(held_key, "lim-buyer") == 1
    tries = await asyncio.gather(
        *(
            env.reserve(client, f"lim-{secrets.token_hex(4)}", "lim-buyer", [(item, 1)])
            for _ in range(6)
        )
    )
    assert [code(t) for t in tries] == [(409, "purchase_limit_exceeded")] * 6
    assert all(t.json()["product_id"] == product["id"] for t in tries)
    assert await env.ledger(item) == {"initial": 5, "sold": 0, "reserved": 1, "available": 4}
    # The refused admissions were given back to the gate.
    assert await env.gate_available(product["id"], item) == 4
    # Another buyer is unaffected, and a release gives the allowance back in the ledger too.
    r = await env.reserve(client, f"lim-{secrets.token_hex(4)}", "lim-other", [(item, 1)])
    assert r.status_code == 201, r.text
    assert (await env.release(client, first)).status_code == 200
    r = await env.reserve(client, f"lim-{secrets.token_hex(4)}", "lim-buyer", [(item, 1)])
    assert r.status_code == 201, r.text
