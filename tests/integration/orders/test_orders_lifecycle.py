"""Orders from the cart, reading (list, detail), cancelling, ownership and the internal API."""

from __future__ import annotations

import asyncio

import httpx
from tests.integration.orders.helpers import (
    Buyer,
    OrdersEnv,
    assert_problem,
)
from tests.support.platform import Platform
from tests.support.waiting import eventually


async def test_order_from_cart_empties_the_bought_lines(
    orders_env: OrdersEnv, platform: Platform
) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [5, 5, 5])
        user = await platform.verified_user(c)
        buyer = Buyer(user.id, user.auth)

        r = await env.order(c, buyer, from_cart=True)
        assert_problem(r, 409, "cart_empty")

        for item, qty in ((items[0], 2), (items[1], 1)):
            p = await c.put(
                f"/api/cart/lines/{item['id']}", json={"quantity": qty}, headers=buyer.auth
            )
            assert p.status_code == 200, p.text
        r = await env.order(c, buyer, from_cart=True)
        assert r.status_code == 201, r.text
        order = r.json()
        assert sorted((x["item_id"], x["quantity"]) for x in order["lines"]) == sorted(
            [(items[0]["id"], 2), (items[1]["id"], 1)]
        )
        assert (await env.ledger(items[0]["id"]))["reserved"] == 2
        row = await env.order_row(order["id"])
        assert row["from_cart"]

        # users consumes order.placed and removes what was bought.
        async def cart() -> list[str]:
            g = await c.get("/api/cart", headers=buyer.auth)
            return [x["item_id"] for x in g.json()["lines"]]

        await eventually(cart, lambda lines: lines == [])


async def test_list_is_newest_first_and_stable_across_inserts(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [50])
        buyer, other = env.buyer(), env.buyer()
        made = []
        for _ in range(5):
            r = await env.order(c, buyer, [(items[0]["id"], 1)])
            assert r.status_code == 201
            made.append(r.json()["id"])
        assert (await env.order(c, other, [(items[0]["id"], 1)])).status_code == 201

        seen: list[str] = []
        page = await c.get("/api/orders", params={"limit": 2}, headers=buyer.auth)
        assert page.status_code == 200
        seen += [x["id"] for x in page.json()["items"]]
        # An order placed between page requests shows on no later page and shifts nothing.
        late = await env.order(c, buyer, [(items[0]["id"], 1)])
        assert late.status_code == 201
        cursor = page.json()["next_cursor"]
        while cursor:
            page = await c.get(
                "/api/orders", params={"limit": 2, "cursor": cursor}, headers=buyer.auth
            )
            assert page.status_code == 200
            seen += [x["id"] for x in page.json()["items"]]
            cursor = page.json()["next_cursor"]
        assert seen == list(reversed(made))
        first = (await c.get("/api/orders", headers=buyer.auth)).json()
        assert first["items"][0]["id"] == late.json()["id"]
        assert first["items"][0]["status"] == "PENDING_PAYMENT"
        assert len(first["items"]) == 6
        assert first["next_cursor"] is None


async def test_cancel_before_payment_gives_the_stock_back(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [2], per_user_limit=2)
        buyer = env.buyer()
        r = await env.order(c, buyer, [(items[0]["id"], 2)])
        assert r.status_code == 201
        order_id = r.json()["id"]
        assert (await env.ledger(items[0]["id"]))["available"] == 0

        x = await c.post(f"/api/orders/{order_id}/cancel", headers=buyer.auth)
        assert x.status_code == 200, x.text
        cancelled = x.json()
        assert cancelled["status"] == "CANCELLED"
        assert [h["status"] for h in cancelled["history"]] == ["PENDING_PAYMENT", "CANCELLED"]
        # Released at once: units and the buyer's allowance are back.
        assert await env.ledger(items[0]["id"]) == {
            "initial": 2,
            "sold": 0,
            "reserved": 0,
            "available": 2,
        }
        row = await env.order_row(order_id)
        assert (row["stock_state"], row["next_transition_at"]) == ("RELEASED", None)
        assert await env.outbox(order_id) == ["order.placed.v1", "order.cancelled.v1"]
        again = await env.order(c, buyer, [(items[0]["id"], 2)])
        assert again.status_code == 201, again.text

        # Cancelling twice is a conflict and changes nothing.
        y = await c.post(f"/api/orders/{order_id}/cancel", headers=buyer.auth)
        assert_problem(y, 409, "invalid_state")
        assert await env.history(order_id) == ["PENDING_PAYMENT", "CANCELLED"]


async def test_concurrent_cancels_release_once(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [3])
        buyer = env.buyer()
        r = await env.order(c, buyer, [(items[0]["id"], 3)])
        order_id = r.json()["id"]
        answers = await asyncio.gather(
            *(c.post(f"/api/orders/{order_id}/cancel", headers=buyer.auth) for _ in range(20))
        )
        codes = sorted(a.status_code for a in answers)
        assert codes == [200] + [409] * 19
        assert await env.history(order_id) == ["PENDING_PAYMENT", "CANCELLED"]
        assert await env.ledger(items[0]["id"]) == {
            "initial": 3,
            "sold": 0,
            "reserved": 0,
            "available": 3,
        }


async def test_someone_elses_order_is_404_everywhere(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [5])
        a, b = env.buyer(), env.buyer()
        r = await env.order(c, a, [(items[0]["id"], 1)])
        order_id = r.json()["id"]
        before = await env.order_row(order_id)

        assert_problem(await c.get(f"/api/orders/{order_id}", headers=b.auth), 404, "not_found")
        x = await c.post(f"/api/orders/{order_id}/cancel", headers=b.auth)
        assert_problem(x, 404, "not_found")
        listed = await c.get("/api/orders", headers=b.auth)
        assert listed.json() == {"items": [], "next_cursor": None}
        # B replaying A's key is B's own key: it never reveals or touches A's order.
        body = {"lines": [{"item_id": items[0]["id"], "quantity": 1}]}
        idem = before["idempotency_key"]
        rb = await c.post("/api/orders", json=body, headers={**b.auth, "Idempotency-Key": idem})
        assert rb.status_code == 201
        assert rb.json()["id"] != order_id
        # A's cursor is meaningless to B.
        page = await c.get("/api/orders", params={"limit": 1}, headers=a.auth)
        assert page.json()["items"][0]["id"] == order_id
        after = await env.order_row(order_id)
        assert after == before
        # An unknown id looks exactly like someone else's.
        unknown = await c.get("/api/orders/AAAAAAAAAAAAAAAAAAAAAA", headers=b.auth)
        assert (
            unknown.json()["detail"]
            == (await c.get(f"/api/orders/{order_id}", headers=b.auth)).json()["detail"]
        )


async def test_internal_api_for_payments(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [5], price=99_000)
        buyer = env.buyer()
        order = (await env.order(c, buyer, [(items[0]["id"], 2)])).json()
    base = env.platform.url("orders")
    async with httpx.AsyncClient(base_url=base, timeout=10) as direct:
        r = await direct.get(f"/internal/orders/{order['id']}", headers=env.internal)
        assert r.status_code == 200
        assert r.json() == {
            "id": order["id"],
            "buyer_id": buyer.id,
            "status": "PENDING_PAYMENT",
            "total_amount": 198_000,
            "expires_at": order["expires_at"],
            "payment_id": None,
        }
        assert_problem(await direct.get(f"/internal/orders/{order['id']}"), 403, "forbidden")
        bad = {"X-Internal-Token": "x" * 30}
        assert_problem(await direct.get(f"/internal/orders/{order['id']}", headers=bad), 403)
        r = await direct.get("/internal/orders/nope", headers=env.internal)
        assert_problem(r, 404, "not_found")
        ready = await direct.get("/readyz")
        assert ready.status_code == 200
        # Not the broker: a broker outage is snapshoe_broker_up, not a failed readiness.
        assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}
    # The gateway never routes /internal.
    async with env.client() as c:
        r = await c.get(f"/internal/orders/{order['id']}", headers=env.internal)
        assert r.status_code == 404


async def test_key_is_required(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [5])
        buyer = env.buyer()
        body = {"lines": [{"item_id": items[0]["id"], "quantity": 1}]}
        assert_problem(
            await c.post("/api/orders", json=body, headers=buyer.auth),
            400,
            "idempotency_key_missing",
        )
        bad_keys: list[str | bytes] = ["", "x" * 256, "with space", "ключ".encode()]
        for bad in bad_keys:
            r = await c.post(
                "/api/orders", json=body, headers={**buyer.auth, "Idempotency-Key": bad}
            )
            assert r.status_code == 400, (bad, r.text)
        assert await env.orders_of(buyer.id) == []
        assert (await env.ledger(items[0]["id"]))["reserved"] == 0
