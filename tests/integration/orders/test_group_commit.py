"""New orders are written by group commit (orders.placing.write_placements): a burst of
orders shares transactions, and a batch the database refuses is written one order at a time
so every caller still gets its own answer. In-process orders app, real products, DB, Redis."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client import REGISTRY
from sqlalchemy import bindparam, text
from sqlalchemy.exc import IntegrityError
from tests.integration.orders.helpers import OrdersEnv, assert_problem, key
from tests.support.waiting import eventually

from snapshoe.kernel.batching import FAULTS
from snapshoe.kernel.clock import to_db
from snapshoe.kernel.contracts.orders import OrderLine, OrderPlaced
from snapshoe.orders.bootstrap import create_app
from snapshoe.orders.deps import Placement
from snapshoe.orders.domain import Status, StockState, new_order_id
from snapshoe.orders.placing import PLACEMENT_FALLBACKS, PLACEMENTS, write_placements


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


def lose(**stages: int) -> Callable[[str], None]:
    """A fault for ``batching.FAULTS``: raise as a lost connection would at each named stage,
    that many times (-1: always)."""
    left = dict(stages)

    def hook(stage: str) -> None:
        if left.get(stage, 0) != 0:
            left[stage] -= 1
            raise ConnectionError(f"injected: connection lost at {stage}")

    return hook


async def test_an_order_whose_commit_outcome_is_unknown_keeps_its_pair(
    orders_env: OrdersEnv,
) -> None:
    """The COMMIT lands, then the connection is 'lost' and the writer cannot look either: the
    caller gets a retryable 503 and no release reaches products; a retry with the same key
    gets the order that landed, its pair still held (even at the per-buyer limit)."""
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [3], per_user_limit=1)
    item = items[0]
    buyer = env.buyer()
    idem = key()
    body = {"lines": [{"item_id": item["id"], "quantity": 1}]}
    headers = {**buyer.auth, "Idempotency-Key": idem}
    app = create_app(env.settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as direct:
            FAULTS[PLACEMENTS] = lose(committed=1, landed=1)
            try:
                r = await direct.post("/api/orders", json=body, headers=headers)
            finally:
                FAULTS.pop(PLACEMENTS, None)
            assert_problem(r, 503, "outcome_unknown")
            landed = await env.orders_of(buyer.id)
            assert [o["status"] for o in landed] == ["PENDING_PAYMENT"]  # it did land
            order_id = landed[0]["id"]

            async def retry() -> httpx.Response:
                return await direct.post("/api/orders", json=body, headers=headers)

            again = await eventually(retry, lambda r: r.status_code != 409, timeout=10)
    assert again.status_code == 201, again.text
    assert again.json()["id"] == order_id
    # No release was sent: the landed order's reservation still holds its pair.
    assert await env.reservations_of(buyer.id) == [{"id": order_id, "state": "ACTIVE"}]
    assert await env.ledger(item["id"]) == {"initial": 3, "sold": 0, "reserved": 1, "available": 2}
    assert len(await env.orders_of(buyer.id)) == 1


async def test_an_order_that_did_not_land_is_released_by_the_sweeper_not_the_caller(
    orders_env: OrdersEnv,
) -> None:
    """The COMMIT never happens (rolled back) and nobody can tell: the caller releases
    nothing; products' sweeper releases the reservation after its ``reserved_until``."""
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [3])
    item = items[0]
    buyer = env.buyer()
    settings = env.settings.model_copy(update={"order_payment_ttl_seconds": 2})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as direct:
            # The look keeps failing for the whole test, so the resolver can never tell (and
            # never releases): only products' sweeper can.
            FAULTS[PLACEMENTS] = lose(commit=1, landed=-1)
            try:
                r = await env.order(direct, buyer, [(item["id"], 1)])
                assert_problem(r, 503, "outcome_unknown")
                assert await env.orders_of(buyer.id) == []  # it did not land
                await asyncio.sleep(1)
                # Unknown, so nobody released it: the pair is still held.
                [res] = await env.reservations_of(buyer.id)
                assert res["state"] == "ACTIVE"
                assert (await env.ledger(item["id"]))["reserved"] == 1

                async def state() -> str:
                    return str((await env.reservations_of(buyer.id))[0]["state"])

                # reserved_until (2 s) + the sweeper's grace (30 s) + its interval (5 s)
                done = await eventually(state, lambda s: s == "RELEASED", timeout=60, interval=1)
                assert done == "RELEASED"
            finally:
                FAULTS.pop(PLACEMENTS, None)
    assert await env.ledger(item["id"]) == {"initial": 3, "sold": 0, "reserved": 0, "available": 3}
