"""Bad input on every orders endpoint: problem+json 4xx with a stable code, never a 500, and
nothing stored or reserved."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.integration.orders.helpers import OrdersEnv, assert_problem, key

BAD_BODIES: list[tuple[str, Any, int, str]] = [
    ("empty object", {}, 422, "validation_error"),
    (
        "both sources",
        {"lines": [{"item_id": "ITEM", "quantity": 1}], "from_cart": True},
        422,
        "validation_error",
    ),
    ("from_cart false", {"from_cart": False}, 422, "validation_error"),
    ("from_cart string", {"from_cart": "yes"}, 422, "validation_error"),
    ("lines empty", {"lines": []}, 422, "validation_error"),
    ("lines not a list", {"lines": "ITEM"}, 422, "validation_error"),
    ("zero quantity", {"lines": [{"item_id": "ITEM", "quantity": 0}]}, 422, "validation_error"),
    ("negative", {"lines": [{"item_id": "ITEM", "quantity": -1}]}, 422, "validation_error"),
    ("too many", {"lines": [{"item_id": "ITEM", "quantity": 101}]}, 422, "validation_error"),
    ("float qty", {"lines": [{"item_id": "ITEM", "quantity": 1.5}]}, 422, "validation_error"),
    ("string qty", {"lines": [{"item_id": "ITEM", "quantity": "1"}]}, 422, "validation_error"),
    ("huge qty", {"lines": [{"item_id": "ITEM", "quantity": 10**30}]}, 422, "validation_error"),
    ("no item", {"lines": [{"quantity": 1}]}, 422, "validation_error"),
    ("bad item id", {"lines": [{"item_id": "../x", "quantity": 1}]}, 422, "validation_error"),
    ("long item id", {"lines": [{"item_id": "a" * 65, "quantity": 1}]}, 422, "validation_error"),
    (
        "extra field",
        {"lines": [{"item_id": "ITEM", "quantity": 1, "price": 1}]},
        422,
        "validation_error",
    ),
    (
        "extra top field",
        {"lines": [{"item_id": "ITEM", "quantity": 1}], "total": 1},
        422,
        "validation_error",
    ),
    (
        "21 lines",
        {"lines": [{"item_id": f"I{n}", "quantity": 1} for n in range(21)]},
        422,
        "validation_error",
    ),
    ("a list", [1, 2], 422, "validation_error"),
    ("null", None, 422, "validation_error"),
]


@pytest.mark.parametrize(
    ("name", "body", "status", "code"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
async def test_bad_order_bodies(
    orders_env: OrdersEnv, name: str, body: Any, status: int, code: str
) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [3])
        buyer = env.buyer()
        body = json.loads(json.dumps(body).replace("ITEM", items[0]["id"]))
        r = await c.post("/api/orders", json=body, headers={**buyer.auth, "Idempotency-Key": key()})
        assert_problem(r, status, code)
        assert await env.orders_of(buyer.id) == []
        assert (await env.ledger(items[0]["id"]))["reserved"] == 0


async def test_malformed_requests(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [3])
        buyer = env.buyer()
        headers = {**buyer.auth, "Idempotency-Key": key(), "Content-Type": "application/json"}
        assert_problem(
            await c.post("/api/orders", content=b'{"lines": [', headers=headers),
            400,
            "invalid_json",
        )
        assert_problem(await c.post("/api/orders", content=b"", headers=headers), 422)
        big = b'{"lines": [' + b" " * 70_000 + b"]}"
        assert_problem(await c.post("/api/orders", content=big, headers=headers), 413)
        # Auth: no token, an unverified buyer.
        body = {"lines": [{"item_id": items[0]["id"], "quantity": 1}]}
        assert_problem(
            await c.post("/api/orders", json=body, headers={"Idempotency-Key": key()}), 401
        )
        unverified = env.buyer(verified=False)
        r = await c.post(
            "/api/orders", json=body, headers={**unverified.auth, "Idempotency-Key": key()}
        )
        assert_problem(r, 403, "email_not_verified")
        for path in ("/api/orders", "/api/orders/x", "/api/orders/x/cancel"):
            method = "POST" if path.endswith("cancel") else "GET"
            assert_problem(await c.request(method, path, headers=unverified.auth), 403)
            assert_problem(await c.request(method, path), 401)
        # Reads: bad cursors, limits and ids.
        for params in (
            {"cursor": "garbage"},
            {"cursor": "eyJ2IjogMn0"},
            {"cursor": "x" * 300},
            {"limit": 0},
            {"limit": 101},
            {"limit": "ten"},
        ):
            r = await c.get("/api/orders", params=params, headers=buyer.auth)
            assert r.status_code == 422, (params, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        r = await c.get(f"/api/orders/{'a' * 65}", headers=buyer.auth)
        assert r.status_code in (404, 422), r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        # An id with an encoded byte in it never reaches orders: the gateway refuses a path
        # that keeps a '%' after normalizing (docs/gateway.md).
        for bad_id in ("bad%20id", "%00"):
            r = await c.get(f"/api/orders/{bad_id}", headers=buyer.auth)
            assert_problem(r, 400, "ambiguous_path")
        assert_problem(await c.put("/api/orders", headers=buyer.auth), 405)
        assert await env.orders_of(buyer.id) == []
        assert (await env.ledger(items[0]["id"]))["reserved"] == 0
