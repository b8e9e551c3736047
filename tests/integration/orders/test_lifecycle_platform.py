"""The lifecycle worker inside the running platform (``snapshoe up`` runs it in the orders
worker): unpaid expiry gives the pairs back once, and a payment approval racing the expiry ends
paid or expired-and-refunded, never both, never with a pair lost.

Only these tests' own orders are made due (their ``next_transition_at`` is moved), so nothing
else of the shared test platform advances.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, text
from tests.integration.orders.helpers import OrdersEnv
from tests.support.waiting import eventually

from snapshoe.kernel.contracts.payments import PaymentApproved


async def _due_at(env: OrdersEnv, when: dict[str, datetime]) -> None:
    """Make orders due at the given times (as if placed ``ttl`` earlier)."""
    async with env.orders_db.begin() as conn:
        for oid, at in when.items():
            naive = at.astimezone(UTC).replace(tzinfo=None)
            r = await conn.execute(
                text(
                    "UPDATE orders SET next_transition_at = :t, expires_at = :t "
                    "WHERE id = :i AND status = 'PENDING_PAYMENT'"
                ),
                {"t": naive, "i": oid},
            )
            assert r.rowcount == 1


async def test_unpaid_expiry_releases_the_stock_once(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [3], per_user_limit=2)
        buyer = env.buyer()
        r = await env.order(c, buyer, [(items[0]["id"], 2)])
        assert r.status_code == 201, r.text
        order = r.json()
        assert (await env.ledger(items[0]["id"]))["reserved"] == 2
        await _due_at(env, {order["id"]: datetime.now(UTC) - timedelta(seconds=1)})

        async def state() -> dict[str, Any]:
            row = await env.order_row(order["id"])
            return {"status": row["status"], "stock": row["stock_state"]}

        await eventually(state, lambda s: s == {"status": "EXPIRED", "stock": "RELEASED"})
        await asyncio.sleep(1.5)  # several more polls of the worker: nothing may change
        row = await env.order_row(order["id"])
        assert row["next_transition_at"] is None
        assert await env.history(order["id"]) == ["PENDING_PAYMENT", "EXPIRED"]
        assert await env.outbox(order["id"]) == ["order.placed.v1", "order.expired.v1"]
        # Given back exactly once: not twice (available would exceed initial).
        assert await env.ledger(items[0]["id"]) == {
            "initial": 3,
            "sold": 0,
            "reserved": 0,
            "available": 3,
        }
        assert [x["state"] for x in await env.reservations_of(buyer.id)] == ["RELEASED"]
        seen = (await c.get(f"/api/orders/{order['id']}", headers=buyer.auth)).json()
        assert seen["status"] == "EXPIRED"
        assert [h["reason"] for h in seen["history"]][-1] == "payment_timeout"
        # The buyer's per-drop allowance is back too: they may order both pairs again.
        again = await env.order(c, buyer, [(items[0]["id"], 2)])
        assert again.status_code == 201, again.text


async def test_payment_approval_racing_expiry_is_paid_or_refunded_never_both(
    orders_env: OrdersEnv,
) -> None:
    env = orders_env
    n = 60
    async with env.client() as c:
        _, items = await env.drop(c, [n])
        buyers = {}
        for _ in range(n):
            buyer = env.buyer()
            r = await env.order(c, buyer, [(items[0]["id"], 1)])
            assert r.status_code == 201, r.text
            buyers[r.json()["id"]] = buyer.id
        ids = list(buyers)

    # The approvals are published at t; the orders' expiry times straddle t: the first ten
    # surely expire first, the last ten surely are paid first, the middle forty race the
    # worker (it polls every 0.5 s) within a few milliseconds of each other.
    t = datetime.now(UTC) + timedelta(seconds=2)
    when = {}
    for k, oid in enumerate(ids):
        if k < 10:
            when[oid] = t - timedelta(seconds=1.5)
        elif k >= n - 10:
            when[oid] = t + timedelta(seconds=60)
        else:
            when[oid] = t + timedelta(milliseconds=25 * (k - 30))
    await _due_at(env, when)
    pay = {oid: f"pay_{secrets.token_hex(6)}" for oid in ids}
    await asyncio.sleep((t - datetime.now(UTC)).total_seconds())
    await env.publish(
        [
            PaymentApproved(
                payment_id=pay[oid],
                order_id=oid,
                buyer_id=buyers[oid],
                amount=150_000,
                approved_at=datetime.now(UTC),
            )
            for oid in ids
        ]
    )

    async def outcome() -> dict[str, dict[str, Any]]:
        async with env.orders_db.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT id, status, stock_state, payment_id FROM orders WHERE id IN :ids"
                    ).bindparams(bindparam("ids", expanding=True)),
                    {"ids": ids},
                )
            ).all()
        return {r[0]: {"status": r[1], "stock": r[2], "paid_by": r[3] == pay[r[0]]} for r in rows}

    settled = {
        ("PREPARING", "COMMITTED", True),
        ("EXPIRED", "RELEASED", False),
    }
    final = await eventually(
        outcome,
        lambda o: all((x["status"], x["stock"], x["paid_by"]) in settled for x in o.values()),
        timeout=30,
    )
    paid = [oid for oid, x in final.items() if x["status"] == "PREPARING"]
    expired = [oid for oid, x in final.items() if x["status"] == "EXPIRED"]
    assert len(paid) + len(expired) == n
    assert set(ids[:10]) <= set(expired)
    assert set(ids[-10:]) <= set(paid)
    print(f"approval vs expiry race: {len(paid)} paid, {len(expired)} expired+refunded")

    for oid in paid:
        assert await env.outbox(oid) == ["order.placed.v1", "order.paid.v1"]
        assert await env.history(oid) == ["PENDING_PAYMENT", "PREPARING"]
    for oid in expired:
        # Expired first, then the late approval asks payments for the money back: once.
        assert await env.outbox(oid) == [
            "order.placed.v1",
            "order.expired.v1",
            "order.refund_required.v1",
        ]
        assert await env.history(oid) == ["PENDING_PAYMENT", "EXPIRED"]
    # Every pair is either sold to a paid order or back on the shelf: none lost, none twice.
    assert await env.ledger(items[0]["id"]) == {
        "initial": n,
        "sold": len(paid),
        "reserved": 0,
        "available": len(expired),
    }
