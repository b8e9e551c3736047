"""The drop's hot path: a sold-out refusal (and its replay) never touches the orders database.

The orders app runs in-process against the real products service, Redis and keys of the
platform, with its database sessions replaced by a tripwire.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from tests.integration.orders.helpers import OrdersEnv, admin_headers, assert_problem, key

from snapshoe.kernel.http import FAST_PATH
from snapshoe.orders.bootstrap import create_app


class Tripwire:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise AssertionError("the database was used on the sold-out path")

    def begin(self, *args: Any, **kwargs: Any) -> Any:
        return self(*args, **kwargs)


class ReserveCounter:
    """Counts the reserve calls an in-process orders app makes to products (still made)."""

    def __init__(self, deps: Any) -> None:
        self.calls = 0
        self._reserve = deps.products.reserve
        deps.products.reserve = self

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return await self._reserve(*args, **kwargs)


async def test_sold_out_never_opens_a_db_session(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [1])
        assert (await env.order(c, env.buyer(), [(items[0]["id"], 1)])).status_code == 201

    app = create_app(env.settings)
    async with app.router.lifespan_context(app):
        tripwire = Tripwire()
        app.state.deps.sessions = tripwire
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as direct:
            buyers = [env.buyer() for _ in range(50)]
            body = {"lines": [{"item_id": items[0]["id"], "quantity": 1}]}
            keys = [key() for _ in buyers]
            started = time.perf_counter()
            for buyer, k in zip(buyers, keys, strict=True):
                r = await direct.post(
                    "/api/orders", json=body, headers={**buyer.auth, "Idempotency-Key": k}
                )
                assert_problem(r, 409, "sold_out")
            elapsed = time.perf_counter() - started
            for buyer, k in zip(buyers[:5], keys[:5], strict=True):
                r = await direct.post(
                    "/api/orders", json=body, headers={**buyer.auth, "Idempotency-Key": k}
                )
                assert_problem(r, 409, "sold_out")
                assert r.headers["idempotent-replayed"] == "true"
    assert tripwire.calls == 0
    print(f"sold-out refusal, in-process orders -> products: {elapsed / 50 * 1000:.2f} ms each")


async def test_sold_out_hint_spares_the_products_call_and_lapses(orders_env: OrdersEnv) -> None:
    """After products refuses an item as sold out, orders turns the next buyers away itself
    for `sold_out_hint_seconds`; after that, a pair that came back is sold again."""
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [1])
        assert (await env.order(c, env.buyer(), [(items[0]["id"], 1)])).status_code == 201

    app = create_app(env.settings.model_copy(update={"sold_out_hint_seconds": 0.5}))
    async with app.router.lifespan_context(app):
        reserves = ReserveCounter(app.state.deps)
        transport = httpx.ASGITransport(app=app)
        body = {"lines": [{"item_id": items[0]["id"], "quantity": 1}]}
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as direct:
            for _ in range(30):
                r = await direct.post(
                    "/api/orders",
                    json=body,
                    headers={**env.buyer().auth, "Idempotency-Key": key()},
                )
                assert_problem(r, 409, "sold_out")
                assert r.json()["item_ids"] == [items[0]["id"]]
            assert reserves.calls == 1  # only the first refusal asked products

            async with env.client() as c:  # a pair comes back
                r = await c.patch(
                    f"/api/admin/items/{items[0]['id']}",
                    json={"stock_delta": 1},
                    headers=admin_headers(env.settings),
                )
                assert r.status_code == 200, r.text
            await asyncio.sleep(0.6)  # the hint lapses
            r = await direct.post(
                "/api/orders", json=body, headers={**env.buyer().auth, "Idempotency-Key": key()}
            )
            assert r.status_code == 201, r.text
            assert reserves.calls == 2


async def test_the_db_lock_baseline_gets_no_hint_and_asks_products_every_time(
    orders_env: OrdersEnv,
) -> None:
    """The row-lock baseline (stock_mode db_lock) is the obvious design: every attempt is a
    database transaction. Orders' sold-out hint belongs to the gate design, so a db_lock
    refusal is not remembered, and its internal stock_mode field is not shown to the buyer."""
    env = orders_env
    async with env.client() as c:
        r = await c.post(
            "/api/admin/products",
            json={
                "name": f"Row lock {key()[:6]}",
                "brand": "SnapTest",
                "description": "db_lock baseline",
                "price": 100_000,
                "release_at": "2020-01-01T00:00:00Z",
                "per_user_limit": 0,
                "stock_mode": "db_lock",
            },
            headers=admin_headers(env.settings),
        )
        assert r.status_code == 201, r.text
        r = await c.post(
            f"/api/admin/products/{r.json()['id']}/items",
            json={"size": 260, "color": "Black", "stock": 1},
            headers=admin_headers(env.settings),
        )
        assert r.status_code == 201, r.text
        item = r.json()["id"]
        assert (await env.order(c, env.buyer(), [(item, 1)])).status_code == 201

    app = create_app(env.settings.model_copy(update={"sold_out_hint_seconds": 5}))
    async with app.router.lifespan_context(app):
        reserves = ReserveCounter(app.state.deps)
        transport = httpx.ASGITransport(app=app)
        body = {"lines": [{"item_id": item, "quantity": 1}]}
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as direct:
            for _ in range(10):
                r = await direct.post(
                    "/api/orders",
                    json=body,
                    headers={**env.buyer().auth, "Idempotency-Key": key()},
                )
                problem = assert_problem(r, 409, "sold_out")
                assert problem["item_ids"] == [item]
                assert "stock_mode" not in problem
        assert reserves.calls == 10


async def test_fast_path_answers_well_formed_orders_and_hands_the_rest_to_the_route(
    orders_env: OrdersEnv,
) -> None:
    """POST /api/orders has a hand-written fast path (kernel.http.FastPath): well-formed
    requests are answered there (201, sold out, replays), everything else goes to the FastAPI
    route with the body replayed and gets the route's usual answer."""
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [2])
    body = {"lines": [{"item_id": items[0]["id"], "quantity": 1}]}

    def count(outcome: str) -> float:
        value = FAST_PATH.labels("orders", "/api/orders", outcome)._value.get()
        return float(value)

    app = create_app(env.settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as direct:
            answered, handed = count("answered"), count("handed_over")
            buyer, k = env.buyer(), key()
            headers = {**buyer.auth, "Idempotency-Key": k}
            first = await direct.post("/api/orders", json=body, headers=headers)
            assert first.status_code == 201, first.text
            assert first.headers["location"] == f"/api/orders/{first.json()['id']}"
            assert first.headers["x-request-id"]
            again = await direct.post("/api/orders", json=body, headers=headers)
            assert again.status_code == 201
            assert again.headers["idempotent-replayed"] == "true"
            assert again.json() == first.json()
            assert count("answered") == answered + 2
            assert count("handed_over") == handed

            # The route's own answers, unchanged: each of these is handed over.
            other = env.buyer()
            cases = [
                ({"Idempotency-Key": key()}, body, 401, "unauthorized"),
                (other.auth, body, 400, "idempotency_key_missing"),
                ({**other.auth, "Idempotency-Key": "a b"}, body, 400, "idempotency_key_invalid"),
                (
                    {**env.buyer(verified=False).auth, "Idempotency-Key": key()},
                    body,
                    403,
                    "email_not_verified",
                ),
                ({**other.auth, "Idempotency-Key": key()}, {"lines": []}, 422, "validation_error"),
                (
                    {**other.auth, "Idempotency-Key": key(), "Authorization": "Bearer x.y.z"},
                    body,
                    401,
                    "unauthorized",
                ),
            ]
            for headers, payload, status, code in cases:
                r = await direct.post("/api/orders", json=payload, headers=headers)
                assert_problem(r, status, code)
            raw = await direct.post(
                "/api/orders",
                content=b"{not json",
                headers={
                    **other.auth,
                    "Idempotency-Key": key(),
                    "Content-Type": "application/json",
                },
            )
            assert_problem(raw, 400, "invalid_json")
            assert count("handed_over") == handed + len(cases) + 1
            assert count("answered") == answered + 2
    async with env.client() as c:
        # The one order placed is real, through the platform's gateway as well.
        r = await c.get(f"/api/orders/{first.json()['id']}", headers=buyer.auth)
        assert r.status_code == 200, r.text
