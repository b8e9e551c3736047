"""New orders are written by group commit (orders.handlers.write_placements): a burst of
orders shares transactions, and a batch the database refuses is written one order at a time
so every caller still gets its own answer. In-process orders app, real products, DB, Redis."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client import REGISTRY
from sqlalchemy import bindparam, text
from sqlalchemy.exc import IntegrityError
from tests.integration.orders.helpers import OrdersEnv, key

from snapshoe.kernel.contracts.orders import OrderLine, OrderPlaced
from snapshoe.orders.bootstrap import create_app
from snapshoe.orders.domain import Status, StockState, new_order_id, to_db
from snapshoe.orders.handlers import PLACEMENT_FALLBACKS, Placement, write_placements


def batches() -> tuple[float, float]:
    labels = {"name": "orders_placements"}
    count = REGISTRY.get_sample_value("snapshoe_group_commit_batch_size_count", labels)
    total = REGISTRY.get_sample_value("snapshoe_group_commit_batch_size_sum", labels)
    return count or 0.0, total or 0.0


async def test_a_burst_of_orders_shares_transactions_and_each_is_whole(
    orders_env: OrdersEnv,
) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [150, 150])
    app = create_app(env.settings)
    async with app.router.lifespan_context(app):
        count0, total0 = batches()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as direct:

            async def buy(n: int) -> httpx.Response:
                body = {"lines": [{"item_id": items[n % 2]["id"], "quantity": 1}]}
                headers = {**env.buyer().auth, "Idempotency-Key": key()}
                return await direct.post("/api/orders", json=body, headers=headers)

            results = await asyncio.gather(*(buy(n) for n in range(300)))
        count, total = batches()
    assert Counter(r.status_code for r in results) == {201: 300}
    assert total - total0 == 300  # every order went through the group commit once
    assert count - count0 < 300  # and they shared transactions
    ids = [r.json()["id"] for r in results]
    async with env.orders_db.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT o.id, o.status, COUNT(DISTINCT l.line_no), COUNT(DISTINCT h.id) "
                    "FROM orders o JOIN order_lines l ON l.order_id = o.id "
                    "JOIN order_history h ON h.order_id = o.id "
                    "WHERE o.id IN :ids GROUP BY o.id, o.status"
                ).bindparams(bindparam("ids", expanding=True)),
                {"ids": ids},
            )
        ).all()
        events = Counter(
            r[0]
            for r in await conn.execute(
                text(
                    "SELECT JSON_UNQUOTE(JSON_EXTRACT(body, '$.order_id')) FROM outbox "
                    "WHERE routing_key = :rk"
                ),
                {"rk": OrderPlaced.routing_key()},
            )
        )
    assert len(rows) == 300
    assert {tuple(r[1:]) for r in rows} == {("PENDING_PAYMENT", 1, 1)}
    assert [events[i] for i in ids] == [1] * 300  # one OrderPlaced each
    for item in items:
        assert await env.ledger(item["id"]) == {
            "initial": 150,
            "sold": 0,
            "reserved": 150,
            "available": 0,
        }


def placement(buyer: str, idem: str, item: dict[str, object]) -> Placement:
    now = datetime.now(UTC)
    until = now + timedelta(minutes=10)
    oid = new_order_id()
    line = {
        "item_id": str(item["id"]),
        "product_id": str(item["product_id"]),
        "product_name": "Group commit",
        "size": 250,
        "color": "Black",
        "quantity": 1,
        "unit_price": 150_000,
    }
    order = {
        "id": oid,
        "buyer_id": buyer,
        "idempotency_key": idem,
        "request_fingerprint": "fp",
        "status": Status.PENDING_PAYMENT,
        "total_amount": 150_000,
        "from_cart": False,
        "stock_state": StockState.HELD,
        "created_at": to_db(now),
        "updated_at": to_db(now),
        "expires_at": to_db(until),
        "next_transition_at": to_db(until),
    }
    event = OrderPlaced(
        order_id=oid,
        buyer_id=buyer,
        total_amount=150_000,
        lines=[
            OrderLine(
                item_id=line["item_id"],
                product_id=line["product_id"],
                quantity=1,
                unit_price=150_000,
            )
        ],
        expires_at=until,
        from_cart=False,
    )
    return Placement(order, [line], event, now)


async def test_a_batch_with_a_duplicate_key_is_written_one_by_one(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [5])
    item = items[0]
    app = create_app(env.settings)
    async with app.router.lifespan_context(app):
        deps = app.state.deps
        first = placement("gc-buyer", "same-key", item)
        assert await write_placements(deps, [first]) == [None]
        fallbacks = PLACEMENT_FALLBACKS._value.get()
        batch = [
            placement("gc-a", key(), item),
            placement("gc-buyer", "same-key", item),  # UNIQUE(buyer_id, idempotency_key)
            placement("gc-b", key(), item),
        ]
        results = await write_placements(deps, batch)
        assert PLACEMENT_FALLBACKS._value.get() == fallbacks + 1
    assert results[0] is None
    assert isinstance(results[1], IntegrityError)
    assert results[2] is None
    for p, written in zip(batch, [True, False, True], strict=True):
        assert bool(await env.history(p.order["id"])) is written
        assert bool(await env.outbox(p.order["id"])) is written
    assert await env.history(first.order["id"]) == ["PENDING_PAYMENT"]
