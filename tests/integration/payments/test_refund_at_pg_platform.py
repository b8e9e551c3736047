"""A refund made at the PG itself (a dashboard refund), with the whole platform: the sandbox
PG's webhook reaches payments, which re-reads the payment, records the refund and tells orders,
which stops fulfilment and puts the pair back on sale (issue 12, item 6)."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.integration.orders.helpers import Buyer, OrdersEnv, key
from tests.support.platform import Platform
from tests.support.waiting import eventually

APPROVE = "4111111111110000"


@pytest.fixture(scope="module")
async def env(platform: Platform) -> AsyncIterator[OrdersEnv]:
    e = OrdersEnv(platform)
    try:
        yield e
    finally:
        await e.aclose()


def _pg_admin(env: OrdersEnv) -> httpx.AsyncClient:
    secret = base64.b64encode(f"{env.settings.pg_secret_key}:".encode()).decode()
    return httpx.AsyncClient(
        base_url=env.platform.url("sandbox_pg"),
        headers={"Authorization": f"Basic {secret}"},
        timeout=15,
    )


async def _order_and_pay(
    env: OrdersEnv, c: httpx.AsyncClient, buyer: Buyer, item_id: str
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    r = await env.order(c, buyer, [(item_id, 1)])
    assert r.status_code == 201, r.text
    order = r.json()
    r = await c.post(
        "/pg/v1/sandbox/authorizations",
        json={"order_id": order["id"], "amount": order["total_amount"], "card_number": APPROVE},
    )
    assert r.status_code == 200, r.text
    payment_key: str = r.json()["payment_key"]
    r = await c.post(
        "/api/payments/confirm",
        json={"order_id": order["id"], "payment_key": payment_key, "amount": order["total_amount"]},
        headers={**buyer.auth, "Idempotency-Key": key()},
    )
    assert r.status_code == 200, r.text
    return order, payment_key, r.json()


async def test_a_dashboard_refund_stops_the_order_and_the_pair_goes_back_on_sale(
    env: OrdersEnv, platform: Platform
) -> None:
    async with env.client() as c:
        _, (item,) = await env.drop(c, [1], price=99_000)
        user = await platform.verified_user(c)
        buyer = Buyer(user.id, user.auth)
        order, payment_key, payment = await _order_and_pay(env, c, buyer, item["id"])
        await eventually(
            lambda: env.order_row(order["id"]),
            lambda r: r["status"] == "PREPARING" and r["stock_state"] == "COMMITTED",
        )

        async with _pg_admin(env) as pg:  # as the PG's dashboard would: not through SnapShoe
            r = await pg.post(
                f"/v1/payments/{payment_key}/cancel",
                json={"cancelReason": "refunded from the dashboard"},
                headers={"Idempotency-Key": secrets.token_hex(8)},
            )
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "CANCELED"

        row = await eventually(
            lambda: env.order_row(order["id"]),
            lambda r: r["status"] == "CANCELLED" and r["stock_state"] == "RELEASED",
            timeout=20,
        )
        assert row["refunded_at"] is not None
        shown = await c.get(f"/api/payments/{payment['id']}", headers=buyer.auth)
        assert shown.json()["status"] == "CANCELED"
        assert shown.json()["canceled_at"] is not None
        assert await env.ledger(item["id"]) == {
            "initial": 1,
            "sold": 0,
            "reserved": 0,
            "available": 1,
        }
        # On sale again: another buyer orders it.
        r = await env.order(c, env.buyer(), [(item["id"], 1)])
        assert r.status_code == 201, r.text
