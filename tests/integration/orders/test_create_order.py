"""POST /api/orders through the gateway: creation, the snapshot, replays and the refusals."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

from tests.integration.orders.helpers import OrdersEnv, admin_headers, assert_problem, key


async def test_order_from_lines_reserves_and_snapshots(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        product, items = await env.drop(c, [5, 5], price=120_000)
        buyer = env.buyer()
        before = datetime.now(UTC)
        r = await env.order(c, buyer, [(items[0]["id"], 2), (items[1]["id"], 1)])
        assert r.status_code == 201, r.text
        order = r.json()
        assert r.headers["location"] == f"/api/orders/{order['id']}"
        assert order["status"] == "PENDING_PAYMENT"
        assert order["total_amount"] == 3 * 120_000
        assert [(x["item_id"], x["quantity"]) for x in order["lines"]] == [
            (items[0]["id"], 2),
            (items[1]["id"], 1),
        ]
        first = order["lines"][0]
        assert first["product_id"] == product["id"]
        assert first["product_name"] == product["name"]
        assert (first["size"], first["color"], first["unit_price"]) == (250, "Black", 120_000)
        ttl = env.settings.order_payment_ttl_seconds
        expires = datetime.fromisoformat(order["expires_at"])
        assert before + timedelta(seconds=ttl - 5) < expires < before + timedelta(seconds=ttl + 5)
        assert [h["status"] for h in order["history"]] == ["PENDING_PAYMENT"]

        # The stock is held at products under the order id.
        assert await env.ledger(items[0]["id"]) == {
            "initial": 5,
            "sold": 0,
            "reserved": 2,
            "available": 3,
        }
        assert await env.reservations_of(buyer.id) == [{"id": order["id"], "state": "ACTIVE"}]

        # GET shows the same order; the row is due for expiry at expires_at.
        g = await c.get(f"/api/orders/{order['id']}", headers=buyer.auth)
        assert g.status_code == 200
        assert g.json() == order
        row = await env.order_row(order["id"])
        assert row["next_transition_at"] == row["expires_at"]
        assert await env.outbox(order["id"]) == ["order.placed.v1"]

        # The snapshot does not follow the catalog.
        admin = admin_headers(env.settings)
        p = await c.patch(
            f"/api/admin/products/{product['id']}", json={"name": "Renamed"}, headers=admin
        )
        assert p.status_code == 200, p.text
        g = await c.get(f"/api/orders/{order['id']}", headers=buyer.auth)
        assert g.json()["lines"][0]["product_name"] == product["name"]


async def test_replay_returns_the_stored_order(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [3])
        buyer = env.buyer()
        k = key()
        first = await env.order(c, buyer, [(items[0]["id"], 1)], idem=k)
        assert first.status_code == 201
        again = await env.order(c, buyer, [(items[0]["id"], 1)], idem=k)
        assert again.status_code == 201
        assert again.json() == first.json()
        assert again.headers.get("idempotent-replayed") == "true"
        assert len(await env.orders_of(buyer.id)) == 1
        assert (await env.ledger(items[0]["id"]))["reserved"] == 1


async def test_100_concurrent_duplicates_make_one_order(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [10])
        buyer = env.buyer()
        k = key()
        lines = [(items[0]["id"], 2)]
        responses = await asyncio.gather(*(env.order(c, buyer, lines, idem=k) for _ in range(100)))
        statuses = Counter(r.status_code for r in responses)
        assert set(statuses) <= {201, 409}, statuses
        assert statuses[201] >= 1
        created = {r.json()["id"] for r in responses if r.status_code == 201}
        assert len(created) == 1
        for r in responses:
            if r.status_code == 409:
                assert_problem(r, 409, "idempotency_key_in_use")
        rows = await env.orders_of(buyer.id)
        assert [x["id"] for x in rows] == list(created)
        assert await env.reservations_of(buyer.id) == [{"id": rows[0]["id"], "state": "ACTIVE"}]
        assert await env.ledger(items[0]["id"]) == {
            "initial": 10,
            "sold": 0,
            "reserved": 2,
            "available": 8,
        }
        # After completion every replay is the stored 201.
        replay = await env.order(c, buyer, lines, idem=k)
        assert replay.status_code == 201
        assert replay.json()["id"] in created


async def test_same_key_other_body_is_422_and_keys_are_per_user(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [5])
        a, b = env.buyer(), env.buyer()
        k = key()
        r = await env.order(c, a, [(items[0]["id"], 1)], idem=k)
        assert r.status_code == 201
        other = await env.order(c, a, [(items[0]["id"], 2)], idem=k)
        assert_problem(other, 422, "idempotency_key_reused")
        # B's identical key is B's own: a new, independent order.
        rb = await env.order(c, b, [(items[0]["id"], 1)], idem=k)
        assert rb.status_code == 201
        assert rb.json()["id"] != r.json()["id"]
        assert len(await env.orders_of(a.id)) == 1
        assert (await env.ledger(items[0]["id"]))["reserved"] == 2


async def test_sold_out_names_the_items_and_is_replayed(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [1, 3])
        winner, loser = env.buyer(), env.buyer()
        assert (await env.order(c, winner, [(items[0]["id"], 1)])).status_code == 201
        k = key()
        lines = [(items[1]["id"], 1), (items[0]["id"], 1)]
        r = await env.order(c, loser, lines, idem=k)
        body = assert_problem(r, 409, "sold_out")
        assert body["item_ids"] == [items[0]["id"]]
        # All or nothing: the item still in stock was not taken either.
        assert (await env.ledger(items[1]["id"]))["reserved"] == 0
        # The refusal is stored: a replay answers the same without a new attempt.
        again = await env.order(c, loser, lines, idem=k)
        assert again.status_code == 409
        assert again.json() == body
        assert again.headers.get("idempotent-replayed") == "true"
        assert await env.orders_of(loser.id) == []
        assert await env.reservations_of(loser.id) == []


async def test_drop_not_open_limit_unknown_item(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        later, later_items = await env.drop(c, [5], opens_in=timedelta(hours=1))
        _, limited = await env.drop(c, [5], per_user_limit=1)
        buyer = env.buyer()

        r = await env.order(c, buyer, [(later_items[0]["id"], 1)])
        assert assert_problem(r, 409, "drop_not_open")["product_id"] == later["id"]

        r = await env.order(c, buyer, [(limited[0]["id"], 2)])
        assert_problem(r, 409, "purchase_limit_exceeded")
        assert (await env.order(c, buyer, [(limited[0]["id"], 1)])).status_code == 201
        r = await env.order(c, buyer, [(limited[0]["id"], 1)])
        assert_problem(r, 409, "purchase_limit_exceeded")

        r = await env.order(c, buyer, [("no-such-item", 1)])
        assert_problem(r, 404, "not_found")
        assert len(await env.orders_of(buyer.id)) == 1
