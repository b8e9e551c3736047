"""The purchase flow end to end through the gateway, with the real orders, payments, products,
users, sandbox PG, RabbitMQ and workers: pay, decline, lost PG response, amount tampering,
cancel before/after payment and when shipping, ownership, and the drop race."""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from tests.integration.orders.helpers import (
    Buyer,
    OrdersEnv,
    assert_problem,
    key,
)
from tests.support.platform import Platform, fresh_address
from tests.support.waiting import eventually

APPROVE = "4111111111110000"
DECLINE = "4111111111110002"
LOST = "4111111111110009"


@pytest.fixture(scope="module")
async def orders_env(platform: Platform) -> AsyncIterator[OrdersEnv]:
    env = OrdersEnv(platform)
    try:
        yield env
    finally:
        await env.aclose()


async def _pg_admin(env: OrdersEnv) -> httpx.AsyncClient:
    secret = base64.b64encode(f"{env.settings.pg_secret_key}:".encode()).decode()
    return httpx.AsyncClient(
        base_url=env.platform.url("sandbox_pg"),
        headers={"Authorization": f"Basic {secret}"},
        timeout=15,
    )


async def _authorize(c: httpx.AsyncClient, order: dict[str, Any], card: str = APPROVE) -> str:
    r = await c.post(
        "/pg/v1/sandbox/authorizations",
        json={"order_id": order["id"], "amount": order["total_amount"], "card_number": card},
    )
    assert r.status_code == 200, r.text
    payment_key: str = r.json()["payment_key"]
    return payment_key


async def _pay(
    c: httpx.AsyncClient,
    buyer: Buyer,
    order: dict[str, Any],
    card: str = APPROVE,
    amount: int | None = None,
) -> httpx.Response:
    payment_key = await _authorize(c, order, card)
    return await c.post(
        "/api/payments/confirm",
        json={
            "order_id": order["id"],
            "payment_key": payment_key,
            "amount": order["total_amount"] if amount is None else amount,
        },
        headers={**buyer.auth, "Idempotency-Key": key()},
    )


async def _status(c: httpx.AsyncClient, buyer: Buyer, order_id: str) -> str:
    r = await c.get(f"/api/orders/{order_id}", headers=buyer.auth)
    assert r.status_code == 200, r.text
    status: str = r.json()["status"]
    return status


async def _wait_status(
    c: httpx.AsyncClient, buyer: Buyer, order_id: str, status: str, timeout: float = 20
) -> None:
    await eventually(lambda: _status(c, buyer, order_id), lambda s: s == status, timeout=timeout)


async def _charges(env: OrdersEnv, order_id: str) -> dict[str, Any]:
    async with await _pg_admin(env) as pg:
        r = await pg.get(f"/v1/sandbox/orders/{order_id}/charges")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data


async def test_whole_flow_cart_order_pay(orders_env: OrdersEnv, platform: Platform) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [5, 5], price=130_000)
        user = await platform.verified_user(c)
        buyer = Buyer(user.id, user.auth)
        for item, qty in ((items[0], 1), (items[1], 2)):
            r = await c.put(
                f"/api/cart/lines/{item['id']}", json={"quantity": qty}, headers=buyer.auth
            )
            assert r.status_code == 200, r.text
        r = await env.order(c, buyer, from_cart=True)
        assert r.status_code == 201, r.text
        order = r.json()
        assert order["total_amount"] == 3 * 130_000

        paid = await _pay(c, buyer, order)
        assert paid.status_code == 200, paid.text
        assert paid.json()["status"] == "DONE"
        await _wait_status(c, buyer, order["id"], "PREPARING")
        detail = (await c.get(f"/api/orders/{order['id']}", headers=buyer.auth)).json()
        assert [h["status"] for h in detail["history"]] == ["PENDING_PAYMENT", "PREPARING"]
        assert detail["paid_at"] is not None

        async def cart() -> list[Any]:
            lines: list[Any] = (await c.get("/api/cart", headers=buyer.auth)).json()["lines"]
            return lines

        await eventually(cart, lambda lines: lines == [])
        # Stock committed: sold, no longer reserved.
        await eventually(
            lambda: env.ledger(items[1]["id"]),
            lambda x: x == {"initial": 5, "sold": 2, "reserved": 0, "available": 3},
        )
        assert (await _charges(env, order["id"]))["charges"] == 1


async def test_decline_gives_stock_and_allowance_back(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [1], per_user_limit=1)
        buyer = env.buyer()
        order = (await env.order(c, buyer, [(items[0]["id"], 1)])).json()
        r = await _pay(c, buyer, order, DECLINE)
        assert_problem(r, 402, "payment_declined")
        await _wait_status(c, buyer, order["id"], "PAYMENT_FAILED")
        await eventually(
            lambda: env.ledger(items[0]["id"]),
            lambda x: x == {"initial": 1, "sold": 0, "reserved": 0, "available": 1},
        )
        # The allowance of 1 is back: the same buyer may buy it again, and pay.
        again = await env.order(c, buyer, [(items[0]["id"], 1)])
        assert again.status_code == 201, again.text
        assert (await _pay(c, buyer, again.json())).status_code == 200
        await _wait_status(c, buyer, again.json()["id"], "PREPARING")
        assert (await _charges(env, order["id"]))["charges"] == 0


async def test_lost_pg_response_is_reconciled_to_one_charge(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [2])
        buyer = env.buyer()
        order = (await env.order(c, buyer, [(items[0]["id"], 1)])).json()
        r = await _pay(c, buyer, order, LOST)
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "UNKNOWN"
        await _wait_status(c, buyer, order["id"], "PREPARING", timeout=60)
        assert (await _charges(env, order["id"]))["charges"] == 1


async def test_amount_tampering_charges_nothing(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [2])
        buyer = env.buyer()
        order = (await env.order(c, buyer, [(items[0]["id"], 1)])).json()
        r = await _pay(c, buyer, order, amount=order["total_amount"] - 100_000)
        assert_problem(r, 400, "amount_mismatch")
        assert (await _charges(env, order["id"]))["charges"] == 0
        assert await _status(c, buyer, order["id"]) == "PENDING_PAYMENT"
        assert (await _pay(c, buyer, order)).status_code == 200
        await _wait_status(c, buyer, order["id"], "PREPARING")


async def test_cancel_after_payment_refunds_and_restocks(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [3])
        buyer = env.buyer()
        order = (await env.order(c, buyer, [(items[0]["id"], 2)])).json()
        assert (await _pay(c, buyer, order)).status_code == 200
        await _wait_status(c, buyer, order["id"], "PREPARING")
        x = await c.post(f"/api/orders/{order['id']}/cancel", headers=buyer.auth)
        assert x.status_code == 200, x.text
        assert x.json()["status"] == "CANCELLED"
        await eventually(
            lambda: env.ledger(items[0]["id"]),
            lambda v: v == {"initial": 3, "sold": 0, "reserved": 0, "available": 3},
        )
        charges = await eventually(
            lambda: _charges(env, order["id"]), lambda ch: ch["refunds"] == 1, timeout=30
        )
        assert charges["charges"] == 1
        assert charges["refunded_amount"] == order["total_amount"]

        async def refunded_at() -> Any:
            return (await c.get(f"/api/orders/{order['id']}", headers=buyer.auth)).json()[
                "refunded_at"
            ]

        await eventually(refunded_at, lambda v: v is not None)


async def test_cancel_when_shipping_is_409(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [2])
        buyer = env.buyer()
        order = (await env.order(c, buyer, [(items[0]["id"], 1)])).json()
        assert (await _pay(c, buyer, order)).status_code == 200
        await _wait_status(c, buyer, order["id"], "PREPARING")
        # The 24 h advance is the lifecycle worker's (issue 5): stand in for it.
        async with env.orders_db.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE orders SET status = 'SHIPPING' WHERE id = :i AND status = 'PREPARING'"
                ),
                {"i": order["id"]},
            )
        x = await c.post(f"/api/orders/{order['id']}/cancel", headers=buyer.auth)
        assert_problem(x, 409, "invalid_state")
        assert await _status(c, buyer, order["id"]) == "SHIPPING"
        assert (await _charges(env, order["id"]))["refunds"] == 0


async def test_ownership_on_orders_and_payments(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [3])
        a, b = env.buyer(), env.buyer()
        order = (await env.order(c, a, [(items[0]["id"], 1)])).json()
        # B tries to pay A's order: not found, nothing charged.
        r = await _pay(c, b, order)
        assert_problem(r, 404, "not_found")
        assert (await _charges(env, order["id"]))["charges"] == 0
        paid = await _pay(c, a, order)
        assert paid.status_code == 200
        payment_id = paid.json()["id"]
        assert_problem(await c.get(f"/api/payments/{payment_id}", headers=b.auth), 404)
        assert_problem(await c.get(f"/api/orders/{order['id']}", headers=b.auth), 404)
        x = await c.post(f"/api/orders/{order['id']}/cancel", headers=b.auth)
        assert_problem(x, 404, "not_found")
        assert (await c.get(f"/api/payments/{payment_id}", headers=a.auth)).status_code == 200
        await _wait_status(c, a, order["id"], "PREPARING")


async def test_drop_race_500_buyers_20_pairs(orders_env: OrdersEnv) -> None:
    env = orders_env
    sizes, per_size, buyers_n = 4, 5, 500
    transport = httpx.AsyncHTTPTransport(
        local_address=fresh_address(),
        limits=httpx.Limits(max_connections=250, max_keepalive_connections=250),
    )
    async with httpx.AsyncClient(
        transport=transport, base_url=env.platform.gateway, timeout=60
    ) as c:
        product, items = await env.drop(c, [per_size] * sizes, per_user_limit=1)
        buyers = [env.buyer() for _ in range(buyers_n)]
        wanted = [items[n % sizes]["id"] for n in range(buyers_n)]
        started = time.perf_counter()
        responses = await asyncio.gather(
            *(env.order(c, b, [(w, 1)]) for b, w in zip(buyers, wanted, strict=True))
        )
        print(f"drop race: {buyers_n} POST /api/orders in {time.perf_counter() - started:.2f}s")
        codes = Counter(r.status_code for r in responses)
        assert codes == {201: sizes * per_size, 409: buyers_n - sizes * per_size}, codes
        assert {r.json()["code"] for r in responses if r.status_code == 409} == {"sold_out"}
        winners = [
            (b, r.json()) for b, r in zip(buyers, responses, strict=True) if r.status_code == 201
        ]
        for item in items:
            ledger = await env.ledger(item["id"])
            assert ledger == {"initial": per_size, "sold": 0, "reserved": per_size, "available": 0}

        # Everyone pays; every fifth card is declined.
        declined = {o["id"] for n, (_, o) in enumerate(winners) if n % 5 == 0}
        paid = await asyncio.gather(
            *(_pay(c, b, o, DECLINE if o["id"] in declined else APPROVE) for b, o in winners)
        )
        assert Counter(p.status_code for p in paid) == {
            200: len(winners) - len(declined),
            402: len(declined),
        }
        for b, o in winners:
            want = "PAYMENT_FAILED" if o["id"] in declined else "PREPARING"
            await _wait_status(c, b, o["id"], want)

        # The declined pairs go back on the shelf and are bought by buyers who lost the race.
        released = [o["lines"][0]["item_id"] for _, o in winners if o["id"] in declined]

        async def available() -> int:
            return sum([(await env.ledger(i["id"]))["available"] for i in items])

        await eventually(available, lambda n: n == len(released))
        losers = [b for b, r in zip(buyers, responses, strict=True) if r.status_code == 409]
        second = []
        for item_id, buyer in zip(released, losers, strict=False):
            r = await env.order(c, buyer, [(item_id, 1)])
            assert r.status_code == 201, r.text
            second.append((buyer, r.json()))
        for b, o in second:
            assert (await _pay(c, b, o)).status_code == 200
            await _wait_status(c, b, o["id"], "PREPARING")

        # Every pair sold exactly once, all committed; the invariant holds for every item.
        async def ledgers() -> list[dict[str, int]]:
            return [await env.ledger(i["id"]) for i in items]

        final = await eventually(
            ledgers, lambda ls: all(x["sold"] == per_size and x["reserved"] == 0 for x in ls)
        )
        for x in final:
            assert x["initial"] == x["sold"] + x["reserved"] + x["available"]
            assert x["available"] == 0
        async with env.orders_db.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT o.status, COUNT(*) FROM orders o JOIN order_lines l "
                        "ON l.order_id = o.id WHERE l.product_id = :p GROUP BY o.status"
                    ),
                    {"p": product["id"]},
                )
            ).all()
        assert dict((s, int(n)) for s, n in rows) == {
            "PREPARING": sizes * per_size,
            "PAYMENT_FAILED": len(declined),
        }
