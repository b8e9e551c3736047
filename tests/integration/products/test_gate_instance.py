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
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import text
from tests.integration.products.conftest import Private, ProductsEnv

from snapshoe.kernel.batching import FAULTS
from snapshoe.products.bootstrap import create_app
from snapshoe.products.ledger import LEDGER


async def reserve(
    c: httpx.AsyncClient,
    headers: dict[str, str],
    rid: str,
    buyer: str,
    item_id: str,
    *,
    retry: bool = True,
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
        if not retry or r.status_code != 503 or time.monotonic() > deadline:
            return r
        await asyncio.sleep(0.1)


async def drop(c: httpx.AsyncClient, env: Private, *, stock: int, limit: int) -> tuple[str, str]:
    r = await c.post(
        "/api/admin/products",
        json={
            "name": "Private drop",
            "brand": "TestBrand",
            "description": "issue 12",
            "price": 100_000,
            "release_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
            "per_user_limit": limit,
        },
        headers=env.admin,
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = await c.post(
        f"/api/admin/products/{pid}/items",
        json={"size": 270, "color": "Black", "stock": stock},
        headers=env.admin,
    )
    assert r.status_code == 201, r.text
    return pid, r.json()["id"]


async def ledger(env: Private, item: str) -> tuple[int, ...]:
    async with env.db.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT initial, sold, reserved, available FROM items WHERE id = :i"),
                {"i": item},
            )
        ).one()
    return tuple(row)


def lose(**stages: int) -> Callable[[str], None]:
    """A fault for ``batching.FAULTS``: raise as a lost connection would at each named stage,
    that many times (-1: always)."""
    left = dict(stages)

    def hook(stage: str) -> None:
        if left.get(stage, 0) != 0:
            left[stage] -= 1
            raise ConnectionError(f"injected: connection lost at {stage}")

    return hook


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
            pid, item = await drop(c, env, stock=4, limit=1)
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
    assert await ledger(env, item) == (4, 0, 4, 0)  # never oversold


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


async def test_a_ledger_write_whose_commit_outcome_is_unknown_gives_nothing_back(
    private: Private,
) -> None:
    """Item 14 in products: the reservation's COMMIT lands, then the connection is 'lost' and
    the writer cannot look either. The caller gets a retryable 503 ``outcome_unknown``; the
    gate keeps the admission (no give-back of units the ledger holds); a retry of the same id
    gets the reservation that landed."""
    env = private
    app = create_app(env.settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://products") as c:
            pid, item = await drop(c, env, stock=3, limit=0)
            h = env.internal
            FAULTS[LEDGER] = lose(committed=1, landed=1)
            try:
                r = await reserve(c, h, "r-unknown", "buyer-u", item, retry=False)
            finally:
                FAULTS.pop(LEDGER, None)
            assert code(r) == (503, "outcome_unknown")
            raw = Redis.from_url(env.redis.url, decode_responses=True)
            try:
                avail = await raw.hget(f"{env.settings.namespace}:pgate:{{{pid}}}:avail", item)
            finally:
                await raw.aclose()
            assert avail == "2"  # not given back
            again = await reserve(c, h, "r-unknown", "buyer-u", item)
            assert again.status_code == 200, again.text
            assert again.json()["state"] == "ACTIVE"
            assert again.json()["changed"] is False
    assert await ledger(env, item) == (3, 0, 1, 2)


class Tripwire:
    """Replaces the products app's database sessions: any use fails the test."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise AssertionError("the database was used on the sold-out path")

    def begin(self, *args: Any, **kwargs: Any) -> Any:
        return self(*args, **kwargs)


async def test_the_checks_add_no_database_call_to_a_sold_out_refusal(private: Private) -> None:
    """The instance checks cost the refusal path nothing in the database: once the process
    has verified its gate, concurrent sold-out refusals never open a session."""
    env = private
    app = create_app(env.settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://products") as c:
            _, item = await drop(c, env, stock=1, limit=1)
            h = env.internal
            assert code(await reserve(c, h, "r-last", "buyer-1", item)) == (201, None)
            deps = app.state.deps
            tripwire = Tripwire()
            real, deps.sessions = deps.sessions, tripwire
            try:
                refusals = await asyncio.gather(
                    *(
                        reserve(c, h, f"r-late-{n}", f"late-{n}", item, retry=False)
                        for n in range(30)
                    )
                )
                await asyncio.sleep(1.2)  # one periodic run-id check passes too
            finally:
                deps.sessions = real
    assert [code(r) for r in refusals] == [(409, "sold_out")] * 30
    assert tripwire.calls == 0
