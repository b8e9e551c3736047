"""The admin orders API through the gateway (routed to orders, not products): every buyer's
orders page by page with each filter, one order's detail, the refund of a paid order (the same
path as a buyer cancelling it: payments refunds it at the PG), and who may call it."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from sqlalchemy import text
from tests.integration.orders.helpers import (
    Buyer,
    OrdersEnv,
    admin_headers,
    assert_problem,
    pay,
)
from tests.support.platform import Platform
from tests.support.waiting import eventually

ADMIN = "/api/admin/orders"


async def _pay(c: httpx.AsyncClient, buyer: Buyer, order: dict[str, Any]) -> dict[str, Any]:
    return await pay(c, buyer.auth, order)


async def _paid(env: OrdersEnv, c: httpx.AsyncClient, buyer: Buyer, order: dict[str, Any]) -> str:
    """Pay ``order`` and wait until orders prepares it with its stock sold; the payment id."""
    payment = await _pay(c, buyer, order)
    await eventually(
        lambda: env.order_row(order["id"]),
        lambda r: r["status"] == "PREPARING" and r["stock_state"] == "COMMITTED",
        timeout=20,
    )
    payment_id: str = payment["id"]
    return payment_id


async def _charges(env: OrdersEnv, order_id: str) -> dict[str, Any]:
    """What the sandbox PG holds for an order (charges, refunds, refunded amount)."""
    secret = base64.b64encode(f"{env.settings.pg_secret_key}:".encode()).decode()
    async with httpx.AsyncClient(
        base_url=env.platform.url("sandbox_pg"),
        headers={"Authorization": f"Basic {secret}"},
        timeout=15,
    ) as pg:
        r = await pg.get(f"/v1/sandbox/orders/{order_id}/charges")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data


async def _placed(env: OrdersEnv, c: httpx.AsyncClient, buyer: Buyer, *items: str) -> str:
    r = await env.order(c, buyer, [(item, 1) for item in items])
    assert r.status_code == 201, r.text
    order_id: str = r.json()["id"]
    return order_id


async def _all_pages(
    c: httpx.AsyncClient, auth: dict[str, str], params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every page of the admin list for ``params``, in order."""
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = params if cursor is None else {**params, "cursor": cursor}
        r = await c.get(ADMIN, params=query, headers=auth)
        assert r.status_code == 200, r.text
        seen += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return seen


async def test_an_admin_lists_every_buyers_orders_with_each_filter(
    orders_env: OrdersEnv, platform: Platform
) -> None:
    env = orders_env
    admin = admin_headers(env.settings)
    async with env.client() as c:
        a_product, (a,) = await env.drop(c, [50], price=100_000, name="Admin List A")
        b_product, (b,) = await env.drop(c, [50], price=70_000, name="Admin List B")
        u1, u2 = await platform.verified_user(c), await platform.verified_user(c)
        one, two, minted = Buyer(u1.id, u1.auth), Buyer(u2.id, u2.auth), env.buyer()
        made = [  # (order id, buyer, has A, has B), oldest first
            (await _placed(env, c, one, a["id"]), one, True, False),
            (await _placed(env, c, two, a["id"], b["id"]), two, True, True),
            (await _placed(env, c, one, b["id"]), one, False, True),
            (await _placed(env, c, minted, a["id"]), minted, True, False),
            (await _placed(env, c, one, a["id"]), one, True, False),
        ]
        paid_id = made[1][0]
        order_two = (await c.get(f"/api/orders/{paid_id}", headers=two.auth)).json()
        await _paid(env, c, two, order_two)
        newest_first = [m[0] for m in reversed(made)]

        # Unfiltered: every buyer's, newest first, each shown once; an order placed between
        # two pages shows on no later page and shifts nothing (other tests' orders may be in
        # the list too, older than these).
        first = await c.get(ADMIN, params={"limit": 2}, headers=admin)
        assert first.status_code == 200, first.text
        seen = first.json()["items"]
        late = await _placed(env, c, minted, b["id"])
        cursor = first.json()["next_cursor"]
        while not set(newest_first) <= {x["id"] for x in seen}:
            assert cursor is not None
            page = await c.get(ADMIN, params={"limit": 2, "cursor": cursor}, headers=admin)
            assert page.status_code == 200, page.text
            seen += page.json()["items"]
            cursor = page.json()["next_cursor"]
        ids = [x["id"] for x in seen]
        assert len(ids) == len(set(ids))
        assert late not in ids
        assert [i for i in ids if i in newest_first] == newest_first
        shown = {x["id"]: x for x in seen}
        assert {shown[i]["buyer_id"] for i in newest_first} == {one.id, two.id, minted.id}
        mixed = shown[paid_id]
        assert mixed["buyer_id"] == two.id
        assert mixed["status"] == "PREPARING"
        assert mixed["total_amount"] == 170_000
        assert mixed["paid_at"] is not None
        assert mixed["payment_id"] is not None
        assert [x["product_name"] for x in mixed["lines"]] == ["Admin List A", "Admin List B"]
        assert mixed["created_at"].endswith("Z")

        # By product: the orders with a line of it, paged without repeats or skips.
        by_a = await _all_pages(c, admin, {"product_id": a_product["id"], "limit": 1})
        assert [x["id"] for x in by_a] == [m[0] for m in reversed(made) if m[2]]
        by_b = await _all_pages(c, admin, {"product_id": b_product["id"], "limit": 2})
        assert [x["id"] for x in by_b] == [late] + [m[0] for m in reversed(made) if m[3]]

        # By buyer email (users resolves it; its case does not matter).
        by_one = await _all_pages(c, admin, {"buyer_email": u1.email.upper(), "limit": 2})
        assert [x["id"] for x in by_one] == [m[0] for m in reversed(made) if m[1] is one]
        assert {x["buyer_id"] for x in by_one} == {one.id}

        # By status, and filters together.
        preparing = await c.get(ADMIN, params={"status": "PREPARING"}, headers=admin)
        assert preparing.status_code == 200, preparing.text
        assert {x["status"] for x in preparing.json()["items"]} == {"PREPARING"}
        assert paid_id in {x["id"] for x in preparing.json()["items"]}
        both = {"status": "PENDING_PAYMENT", "product_id": a_product["id"]}
        assert [x["id"] for x in await _all_pages(c, admin, both)] == [
            m[0] for m in reversed(made) if m[2] and m[0] != paid_id
        ]
        narrow = {"status": "PREPARING", "buyer_email": u2.email, "product_id": b_product["id"]}
        assert [x["id"] for x in await _all_pages(c, admin, narrow)] == [paid_id]
        assert await _all_pages(c, admin, {**narrow, "status": "DELIVERED"}) == []


async def test_an_unknown_buyer_email_is_an_empty_page(
    orders_env: OrdersEnv, platform: Platform
) -> None:
    env = orders_env
    admin = admin_headers(env.settings)
    async with env.client() as c:
        for email in ("nobody-at-all@example.com", "not an address"):
            r = await c.get(ADMIN, params={"buyer_email": email}, headers=admin)
            assert r.status_code == 200, r.text
            assert r.json() == {"items": [], "next_cursor": None}
    # The lookup behind it: users' internal API, with the internal token only.
    user = await platform.verified_user()
    async with httpx.AsyncClient(base_url=env.platform.url("users"), timeout=10) as users:
        r = await users.get("/internal/users", params={"email": user.email}, headers=env.internal)
        assert r.status_code == 200, r.text
        assert r.json() == {"user_id": user.id}
        unknown = {"email": "nobody-at-all@example.com"}
        r = await users.get("/internal/users", params=unknown, headers=env.internal)
        assert_problem(r, 404, "not_found")
        assert_problem(await users.get("/internal/users", params={"email": user.email}), 403)


async def test_bad_filters_are_422(orders_env: OrdersEnv) -> None:
    env = orders_env
    admin = admin_headers(env.settings)
    async with env.client() as c:
        for params in (
            {"status": "SHIPPED"},
            {"status": "preparing"},
            {"limit": 0},
            {"limit": 101},
            {"limit": "many"},
            {"product_id": "a b"},
            {"product_id": "p" * 65},
            {"buyer_email": "a" * 250 + "@b.example"},
        ):
            r = await c.get(ADMIN, params=params, headers=admin)
            assert_problem(r, 422, "validation_error")
        for cursor in ("not-a-cursor", "eyJ2IjoyfQ"):
            r = await c.get(ADMIN, params={"cursor": cursor}, headers=admin)
            assert_problem(r, 422, "invalid_cursor")
        r = await c.get(ADMIN, params={"limit": 100}, headers=admin)
        assert r.status_code == 200, r.text


async def test_only_an_admin_may_list_read_or_refund(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, (item,) = await env.drop(c, [5])
        buyer = env.buyer()
        order = (await env.order(c, buyer, [(item["id"], 1)])).json()
        await _paid(env, c, buyer, order)
        calls = [
            ("GET", ADMIN),
            ("GET", f"{ADMIN}/{order['id']}"),
            ("POST", f"{ADMIN}/{order['id']}/refund"),
        ]
        for method, path in calls:
            # A buyer, even of this very order, is forbidden; no token is refused at the edge.
            assert_problem(await c.request(method, path, headers=buyer.auth), 403, "forbidden")
            assert_problem(await c.request(method, path), 401, "unauthorized")
        assert (await env.order_row(order["id"]))["status"] == "PREPARING"
        assert (await _charges(env, order["id"]))["refunds"] == 0


async def test_a_refund_cancels_a_paid_order_and_refunds_its_payment(
    orders_env: OrdersEnv,
) -> None:
    env = orders_env
    admin = admin_headers(env.settings)
    async with env.client() as c:
        _, (item,) = await env.drop(c, [2], price=120_000)
        buyer = env.buyer()
        order = (await env.order(c, buyer, [(item["id"], 2)])).json()
        payment_id = await _paid(env, c, buyer, order)

        r = await c.post(f"{ADMIN}/{order['id']}/refund", headers=admin)
        assert r.status_code == 200, r.text
        refunded = r.json()
        assert refunded["status"] == "CANCELLED"
        assert refunded["buyer_id"] == buyer.id
        assert refunded["payment_id"] == payment_id
        assert [(h["status"], h["reason"]) for h in refunded["history"]] == [
            ("PENDING_PAYMENT", None),
            ("PREPARING", "payment_approved"),
            ("CANCELLED", "admin_refund"),
        ]
        assert await env.outbox(order["id"]) == [
            "order.placed.v1",
            "order.paid.v1",
            "order.cancelled.v1",
        ]
        # Payments refunds it at the PG, once, in full; the pairs are back on sale.
        charges = await eventually(
            lambda: _charges(env, order["id"]), lambda ch: ch["refunds"] == 1, timeout=30
        )
        assert charges["charges"] == 1
        assert charges["refunded_amount"] == order["total_amount"] == 240_000
        payment = await c.get(f"/api/payments/{payment_id}", headers=buyer.auth)
        assert payment.json()["status"] == "CANCELED"
        detail = await eventually(
            lambda: c.get(f"{ADMIN}/{order['id']}", headers=admin),
            lambda d: d.json()["refunded_at"] is not None,
        )
        assert detail.json()["status"] == "CANCELLED"
        await eventually(
            lambda: env.ledger(item["id"]),
            lambda v: v == {"initial": 2, "sold": 0, "reserved": 0, "available": 2},
        )
        # The buyer sees it cancelled and refunded too.
        mine = (await c.get(f"/api/orders/{order['id']}", headers=buyer.auth)).json()
        assert (mine["status"], mine["refunded_at"]) == ("CANCELLED", detail.json()["refunded_at"])

        # Refunding again is a conflict and refunds nothing more.
        again = await c.post(f"{ADMIN}/{order['id']}/refund", headers=admin)
        assert assert_problem(again, 409, "invalid_state")["status_now"] == "CANCELLED"
        assert (await _charges(env, order["id"]))["refunds"] == 1


async def test_only_a_preparing_order_can_be_refunded(orders_env: OrdersEnv) -> None:
    env = orders_env
    admin = admin_headers(env.settings)
    async with env.client() as c:
        _, (item,) = await env.drop(c, [10])
        buyer = env.buyer()

        # Not paid: nothing to refund (the buyer may cancel it; an admin refund may not).
        pending = await _placed(env, c, buyer, item["id"])
        r = await c.post(f"{ADMIN}/{pending}/refund", headers=admin)
        assert assert_problem(r, 409, "invalid_state")["status_now"] == "PENDING_PAYMENT"
        assert await env.history(pending) == ["PENDING_PAYMENT"]

        # Cancelled by the buyer first.
        cancelled = await _placed(env, c, buyer, item["id"])
        x = await c.post(f"/api/orders/{cancelled}/cancel", headers=buyer.auth)
        assert x.status_code == 200, x.text
        r = await c.post(f"{ADMIN}/{cancelled}/refund", headers=admin)
        assert assert_problem(r, 409, "invalid_state")["status_now"] == "CANCELLED"
        assert await env.history(cancelled) == ["PENDING_PAYMENT", "CANCELLED"]

        # Shipped: a pair on its way is refunded after its return, not by this call.
        shipped = (await env.order(c, buyer, [(item["id"], 1)])).json()
        await _paid(env, c, buyer, shipped)
        async with env.orders_db.begin() as conn:  # the lifecycle worker's advance, stood in for
            await conn.execute(
                text("UPDATE orders SET status = 'SHIPPING' WHERE id = :i"), {"i": shipped["id"]}
            )
        r = await c.post(f"{ADMIN}/{shipped['id']}/refund", headers=admin)
        assert assert_problem(r, 409, "invalid_state")["status_now"] == "SHIPPING"
        assert (await _charges(env, shipped["id"]))["refunds"] == 0

        # An unknown id.
        for method, path in (
            ("GET", f"{ADMIN}/AAAAAAAAAAAAAAAAAAAAAA"),
            ("POST", f"{ADMIN}/AAAAAAAAAAAAAAAAAAAAAA/refund"),
        ):
            assert_problem(await c.request(method, path, headers=admin), 404, "not_found")


async def test_an_admin_reads_any_buyers_order_with_its_history(orders_env: OrdersEnv) -> None:
    env = orders_env
    admin = admin_headers(env.settings)
    async with env.client() as c:
        _, items = await env.drop(c, [5, 5], price=90_000)
        buyer = env.buyer()
        r = await env.order(c, buyer, [(items[0]["id"], 1), (items[1]["id"], 2)])
        assert r.status_code == 201, r.text
        order = r.json()
        x = await c.post(f"/api/orders/{order['id']}/cancel", headers=buyer.auth)
        assert x.status_code == 200, x.text

        r = await c.get(f"{ADMIN}/{order['id']}", headers=admin)
        assert r.status_code == 200, r.text
        detail = r.json()
        mine = (await c.get(f"/api/orders/{order['id']}", headers=buyer.auth)).json()
        # The buyer's view, plus whose it is and its payment (none: never paid).
        assert detail == {**mine, "buyer_id": buyer.id, "payment_id": None}
        assert [(h["status"], h["reason"]) for h in detail["history"]] == [
            ("PENDING_PAYMENT", None),
            ("CANCELLED", "buyer"),
        ]
        assert [(x["item_id"], x["quantity"]) for x in detail["lines"]] == [
            (items[0]["id"], 1),
            (items[1]["id"], 2),
        ]
