"""The live drop view's figures (GET /api/admin/products/{id}/sales, routed by the gateway to
orders) against the real platform: a drop where some buyers get their pair, one is refused at
the per-buyer limit and the rest as sold out, one pays and one is declined; the figures match
exactly. Replays are not counted twice; only an admin may read them."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import httpx
from tests.integration.orders.helpers import (
    Buyer,
    OrdersEnv,
    admin_headers,
    assert_problem,
    key,
)
from tests.support.waiting import eventually

APPROVE = "4111111111110000"
DECLINE = "4111111111110002"


def sales_path(product_id: str) -> str:
    return f"/api/admin/products/{product_id}/sales"


async def _confirm(
    c: httpx.AsyncClient, buyer: Buyer, order: dict[str, Any], card: str
) -> httpx.Response:
    r = await c.post(
        "/pg/v1/sandbox/authorizations",
        json={"order_id": order["id"], "amount": order["total_amount"], "card_number": card},
    )
    assert r.status_code == 200, r.text
    return await c.post(
        "/api/payments/confirm",
        json={
            "order_id": order["id"],
            "payment_key": r.json()["payment_key"],
            "amount": order["total_amount"],
        },
        headers={**buyer.auth, "Idempotency-Key": key()},
    )


async def _sales(c: httpx.AsyncClient, admin: dict[str, str], pid: str) -> dict[str, Any]:
    r = await c.get(sales_path(pid), headers=admin)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_a_drops_figures_count_orders_refusals_and_payments(orders_env: OrdersEnv) -> None:
    env = orders_env
    admin = admin_headers(env.settings)
    async with env.client() as c:
        product, (item,) = await env.drop(c, [3], per_user_limit=1, name="Sales Figures")
        pid = product["id"]
        zero = await _sales(c, admin, pid)
        assert zero["refusals"] == {
            "sold_out": 0,
            "purchase_limit_exceeded": 0,
            "drop_not_open": 0,
            "admission_required": 0,
            "other": 0,
        }
        assert set(zero["orders_by_status"].values()) == {0}

        started = time.monotonic()
        a, b, c_ = env.buyer(), env.buyer(), env.buyer()
        orders = {}
        for buyer in (a, b):
            r = await env.order(c, buyer, [(item["id"], 1)])
            assert r.status_code == 201, r.text
            orders[buyer.id] = r.json()
        # A second pair for a: the per-buyer limit (asked again with the same key: a replay,
        # counted once).
        again = key()
        for _ in range(2):
            r = await env.order(c, a, [(item["id"], 1)], idem=again)
            assert_problem(r, 409, "purchase_limit_exceeded")
        r = await env.order(c, c_, [(item["id"], 1)])
        assert r.status_code == 201, r.text
        # Sold out now: three more buyers turned away (by products, then by the hint).
        for _ in range(3):
            assert_problem(await env.order(c, env.buyer(), [(item["id"], 1)]), 409, "sold_out")
        placed = await _sales(c, admin, pid)
        assert placed["created_last_60s"] == 3
        if time.monotonic() - started < 9:  # all three inside the last 10 s
            assert placed["created_last_10s"] == 3

        # a pays; b's card is declined.
        paid = await _confirm(c, a, orders[a.id], APPROVE)
        assert paid.status_code == 200, paid.text
        declined = await _confirm(c, b, orders[b.id], DECLINE)
        assert_problem(declined, 402, "payment_declined")
        await eventually(
            lambda: env.order_row(orders[a.id]["id"]), lambda r: r["status"] == "PREPARING"
        )
        await eventually(
            lambda: env.order_row(orders[b.id]["id"]), lambda r: r["status"] == "PAYMENT_FAILED"
        )

        figures = await _sales(c, admin, pid)
    assert figures["product_id"] == pid
    assert figures["orders_by_status"] == {
        "PENDING_PAYMENT": 1,
        "PREPARING": 1,
        "SHIPPING": 0,
        "DELIVERED": 0,
        "CANCELLED": 0,
        "PAYMENT_FAILED": 1,
        "EXPIRED": 0,
    }
    assert figures["refusals"] == {
        "sold_out": 3,
        "purchase_limit_exceeded": 1,
        "drop_not_open": 0,
        "admission_required": 0,
        "other": 0,
    }
    assert figures["payments"] == {"approved": 1, "declined": 1}
    assert figures["server_errors"] == 0


async def test_a_drop_not_open_yet_counts_its_refusals(orders_env: OrdersEnv) -> None:
    env = orders_env
    admin = admin_headers(env.settings)
    async with env.client() as c:
        product, (item,) = await env.drop(c, [5], opens_in=timedelta(hours=1), name="Not Yet")
        for _ in range(2):
            r = await env.order(c, env.buyer(), [(item["id"], 1)])
            assert r.status_code in (403, 409), r.text
            assert r.json()["code"] == "drop_not_open"
        figures = await _sales(c, admin, product["id"])
    assert figures["refusals"]["drop_not_open"] == 2
    assert sum(figures["refusals"].values()) == 2
    assert sum(figures["orders_by_status"].values()) == 0


async def test_only_an_admin_reads_a_products_figures(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        assert_problem(await c.get(sales_path("p-1")), 401)
        r = await c.get(sales_path("p-1"), headers=env.buyer().auth)
        assert_problem(r, 403, "forbidden")
        r = await c.get(sales_path("no-orders-at-all"), headers=admin_headers(env.settings))
        assert r.status_code == 200, r.text
        assert r.json()["server_errors"] == 0
        assert sum(r.json()["refusals"].values()) == 0
