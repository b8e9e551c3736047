"""The consumer of payment events: every event delivered three times, in shuffled order, leaves
the same final state as each delivered once (inbox + conditional transitions)."""

from __future__ import annotations

import asyncio
import random
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, text
from tests.integration.orders.helpers import Buyer, OrdersEnv
from tests.support.waiting import eventually

from snapshoe.kernel.contracts import Event
from snapshoe.kernel.contracts.payments import (
    PaymentApproved,
    PaymentFailed,
    PaymentRefunded,
    PaymentRefundedAtPg,
)


async def _scenario(env: OrdersEnv, copies: int) -> dict[str, Any]:
    """Orders paid, declined, and paid after cancel (refunded); returns what to compare."""
    async with env.client() as c:
        _, items = await env.drop(c, [1, 1, 1])
        buyer: Buyer = env.buyer()
        ids = []
        for item in items:
            r = await env.order(c, buyer, [(item["id"], 1)])
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        paid, declined, late = ids
        x = await c.post(f"/api/orders/{late}/cancel", headers=buyer.auth)
        assert x.status_code == 200

    now = datetime.now(UTC)
    pay = {oid: f"pay_{secrets.token_hex(6)}" for oid in ids}
    events: list[Event] = [
        PaymentApproved(
            payment_id=pay[paid], order_id=paid, buyer_id=buyer.id, amount=150_000, approved_at=now
        ),
        PaymentFailed(
            payment_id=pay[declined],
            order_id=declined,
            buyer_id=buyer.id,
            code="REJECT_CARD_COMPANY",
            message="declined",
        ),
        PaymentApproved(
            payment_id=pay[late], order_id=late, buyer_id=buyer.id, amount=150_000, approved_at=now
        ),
        PaymentRefunded(
            payment_id=pay[late], order_id=late, buyer_id=buyer.id, amount=150_000, refunded_at=now
        ),
    ]
    deliveries = [e for e in events for _ in range(copies)]
    random.shuffle(deliveries)
    await env.publish(deliveries)

    async def state() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, oid in (("paid", paid), ("declined", declined), ("late", late)):
            row = await env.order_row(oid)
            out[name] = {
                "status": row["status"],
                "stock": row["stock_state"],
                "payment_id": row["payment_id"] == pay[oid],
                "paid": row["paid_at"] is not None,
                "refunded": row["refunded_at"] is not None,
                "history": await env.history(oid),
                "events": await env.outbox(oid),
            }
        out["ledger"] = [await env.ledger(i["id"]) for i in items]
        return out

    def settled(s: dict[str, Any]) -> bool:
        return (
            s["paid"]["stock"] == "COMMITTED"
            and s["declined"]["stock"] == "RELEASED"
            and s["late"]["refunded"]
            and "order.refund_required.v1" in s["late"]["events"]
        )

    await eventually(state, settled, timeout=20)
    # Let every duplicate arrive; nothing may change any more.
    async with env.orders_db.connect() as conn:

        async def processed() -> int:
            q = text("SELECT COUNT(*) FROM inbox WHERE event_id IN :ids").bindparams(
                bindparam("ids", expanding=True)
            )
            ids_ = [e.event_id for e in events]
            return int((await conn.execute(q, {"ids": ids_})).scalar_one())

        await eventually(processed, lambda n: n == len(events))
    await asyncio.sleep(1.0)
    return await state()


async def test_duplicated_shuffled_events_end_as_once(orders_env: OrdersEnv) -> None:
    once = await _scenario(orders_env, copies=1)
    thrice = await _scenario(orders_env, copies=3)
    assert thrice == once
    assert once["paid"] == {
        "status": "PREPARING",
        "stock": "COMMITTED",
        "payment_id": True,
        "paid": True,
        "refunded": False,
        "history": ["PENDING_PAYMENT", "PREPARING"],
        "events": ["order.placed.v1", "order.paid.v1"],
    }
    assert once["declined"] == {
        "status": "PAYMENT_FAILED",
        "stock": "RELEASED",
        "payment_id": False,
        "paid": False,
        "refunded": False,
        "history": ["PENDING_PAYMENT", "PAYMENT_FAILED"],
        "events": ["order.placed.v1", "order.payment_failed.v1"],
    }
    # Paid after it was cancelled: stays cancelled, asks payments for one refund.
    assert once["late"] == {
        "status": "CANCELLED",
        "stock": "RELEASED",
        "payment_id": False,
        "paid": False,
        "refunded": True,
        "history": ["PENDING_PAYMENT", "CANCELLED"],
        "events": ["order.placed.v1", "order.cancelled.v1", "order.refund_required.v1"],
    }
    sold, released, cancelled = once["ledger"]
    assert sold == {"initial": 1, "sold": 1, "reserved": 0, "available": 0}
    assert released == cancelled == {"initial": 1, "sold": 0, "reserved": 0, "available": 1}


# --- refunds made at the PG (issue 12, item 6) ---


async def _paid_order(env: OrdersEnv) -> tuple[Buyer, str, dict[str, Any], str]:
    """A one-pair order of a one-pair drop, paid (PREPARING, stock committed)."""
    async with env.client() as c:
        _, (item,) = await env.drop(c, [1])
        buyer = env.buyer()
        r = await env.order(c, buyer, [(item["id"], 1)])
        assert r.status_code == 201, r.text
        order_id = r.json()["id"]
    payment_id = f"pay_{secrets.token_hex(6)}"
    await env.publish(
        [
            PaymentApproved(
                payment_id=payment_id,
                order_id=order_id,
                buyer_id=buyer.id,
                amount=150_000,
                approved_at=datetime.now(UTC),
            )
        ]
    )
    await eventually(
        lambda: env.order_row(order_id),
        lambda row: row["status"] == "PREPARING" and row["stock_state"] == "COMMITTED",
    )
    return buyer, order_id, item, payment_id


def _refunded_at_pg(
    buyer: Buyer, order_id: str, payment_id: str, *, amount: int, full: bool
) -> PaymentRefundedAtPg:
    return PaymentRefundedAtPg(
        payment_id=payment_id,
        order_id=order_id,
        buyer_id=buyer.id,
        amount=amount,
        refunded_amount=amount,
        balance_amount=150_000 - amount,
        full=full,
        refunded_at=datetime.now(UTC),
        reason="dashboard",
    )


async def test_a_full_refund_at_the_pg_cancels_a_preparing_order_and_frees_the_pair(
    orders_env: OrdersEnv,
) -> None:
    env = orders_env
    buyer, order_id, item, payment_id = await _paid_order(env)
    event = _refunded_at_pg(buyer, order_id, payment_id, amount=150_000, full=True)
    await env.publish([event, event])  # delivered twice: applied once

    row = await eventually(
        lambda: env.order_row(order_id),
        lambda r: r["status"] == "CANCELLED" and r["stock_state"] == "RELEASED",
    )
    assert row["refunded_at"] is not None
    assert await env.history(order_id) == ["PENDING_PAYMENT", "PREPARING", "CANCELLED"]
    assert (await env.outbox(order_id))[-1] == "order.cancelled.v1"
    assert await env.ledger(item["id"]) == {"initial": 1, "sold": 0, "reserved": 0, "available": 1}
    # The pair is on sale again: another buyer gets it.
    async with env.client() as c:
        r = await env.order(c, env.buyer(), [(item["id"], 1)])
        assert r.status_code == 201, r.text


async def test_a_partial_refund_at_the_pg_keeps_the_order(orders_env: OrdersEnv) -> None:
    env = orders_env
    buyer, order_id, item, payment_id = await _paid_order(env)
    event = _refunded_at_pg(buyer, order_id, payment_id, amount=10_000, full=False)
    await env.publish([event])
    # Each probe on a connection of its own: one transaction would keep reading the snapshot of
    # its first SELECT (REPEATABLE READ) and never see the consumer's inbox row.
    await eventually(lambda: _processed(env, event.event_id), lambda n: n == 1, timeout=15)
    row = await env.order_row(order_id)
    assert (row["status"], row["stock_state"]) == ("PREPARING", "COMMITTED")
    assert row["refunded_at"] is None
    assert (await env.ledger(item["id"]))["sold"] == 1


async def test_a_refund_at_the_pg_after_shipping_flags_the_order(orders_env: OrdersEnv) -> None:
    env = orders_env
    buyer, order_id, item, payment_id = await _paid_order(env)
    async with env.orders_db.begin() as conn:  # the lifecycle got there first
        await conn.execute(
            text("UPDATE orders SET status = 'SHIPPING' WHERE id = :i"), {"i": order_id}
        )
    await env.publish([_refunded_at_pg(buyer, order_id, payment_id, amount=150_000, full=True)])
    row = await eventually(lambda: env.order_row(order_id), lambda r: r["refunded_at"] is not None)
    # The pair is gone: the order stays SHIPPING, refunded_at tells the operator.
    assert row["status"] == "SHIPPING"
    assert (await env.ledger(item["id"]))["sold"] == 1


async def _processed(env: OrdersEnv, event_id: str) -> int:
    q = text("SELECT COUNT(*) FROM inbox WHERE event_id = :e")
    async with env.orders_db.connect() as conn:
        return int((await conn.execute(q, {"e": event_id})).scalar_one())
