"""The PG webhook as a hint, the reconciler on a confirm that never reached the PG, and refunds
driven by order events (published onto ``<namespace>.events`` as the orders relay would)."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from tests.integration.payments.conftest import EventTap, Payments, Publish
from tests.support.platform import User

from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.contracts.orders import OrderCancelled, OrderRefundRequired
from snapshoe.payments import repository as repo
from snapshoe.payments.domain import new_payment_id
from snapshoe.payments.tables import refunds

APPROVE = "4111111111110000"
DECLINE = "4111111111110002"


async def _pg_confirm(payments: Payments, order_id: str, key: str, amount: int) -> int:
    """Confirm at the PG directly, as if our confirm reached it and its answer never came back."""
    r = await payments.pg.post(
        "/v1/payments/confirm",
        json={"paymentKey": key, "orderId": order_id, "amount": amount},
        headers={"Idempotency-Key": secrets.token_hex(8)},
    )
    return r.status_code


async def _pg_payment(payments: Payments, key: str) -> dict[str, Any]:
    r = await payments.pg.get(f"/v1/payments/{key}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def _unresolved_row(
    payments: Payments, buyer: User, order_id: str, key: str, amount: int, *, check_in: float
) -> str:
    """An IN_PROGRESS payment whose next reconciler check is ``check_in`` seconds away."""
    payment_id = new_payment_id()
    now = utcnow()
    async with payments.deps.sessions.begin() as session:
        await repo.insert_in_progress(
            session,
            payment_id=payment_id,
            order_id=order_id,
            buyer_id=buyer.id,
            payment_key=key,
            amount=amount,
            now=now,
            check_at=now + timedelta(seconds=check_in),
        )
    return payment_id


def _webhook(payment: dict[str, Any]) -> dict[str, Any]:
    return {
        "eventType": "PAYMENT_STATUS_CHANGED",
        "createdAt": "2025-01-01T00:00:00.000000",
        "data": payment,
    }


async def test_webhook_is_a_hint_reread_from_the_pg(
    payments: Payments, buyer: User, events: EventTap
) -> None:
    order = payments.orders.add(buyer.id, 45_000)
    key = await payments.authorize(order["id"], 45_000, APPROVE)
    assert await _pg_confirm(payments, order["id"], key, 45_000) == 200
    payment_id = await _unresolved_row(payments, buyer, order["id"], key, 45_000, check_in=3600)

    r = await payments.http.post(
        "/api/payments/webhooks/pg", json=_webhook(await _pg_payment(payments, key))
    )
    assert r.status_code == 200, r.text
    assert r.json()["payment_status"] == "DONE"
    await payments.wait_status(buyer, payment_id, "DONE", within=2)
    approved = await events.wait("payment.approved", order["id"])
    assert [e["payment_id"] for e in approved] == [payment_id]


async def test_a_webhook_that_lies_changes_nothing(
    payments: Payments, buyer: User, events: EventTap
) -> None:
    order = payments.orders.add(buyer.id, 46_000)
    key = await payments.authorize(order["id"], 46_000, APPROVE)  # READY: never confirmed
    payment_id = await _unresolved_row(payments, buyer, order["id"], key, 46_000, check_in=3600)
    forged = {**(await _pg_payment(payments, key)), "status": "DONE"}

    r = await payments.http.post("/api/payments/webhooks/pg", json=_webhook(forged))
    assert r.status_code == 200, r.text
    assert r.json()["payment_status"] == "IN_PROGRESS"
    await asyncio.sleep(0.5)
    shown = await payments.wait_status(buyer, payment_id, "IN_PROGRESS", within=1)
    assert shown["approved_at"] is None
    assert not events.of("payment.approved", order["id"])
    assert (await payments.charges(order["id"]))["charges"] == 0


async def test_webhook_of_a_decline_runs_the_fail_path(
    payments: Payments, buyer: User, events: EventTap
) -> None:
    order = payments.orders.add(buyer.id, 47_000)
    key = await payments.authorize(order["id"], 47_000, DECLINE)
    assert await _pg_confirm(payments, order["id"], key, 47_000) == 403
    payment_id = await _unresolved_row(payments, buyer, order["id"], key, 47_000, check_in=3600)

    r = await payments.http.post(
        "/api/payments/webhooks/pg", json=_webhook(await _pg_payment(payments, key))
    )
    assert r.status_code == 200, r.text
    shown = await payments.wait_status(buyer, payment_id, "ABORTED", within=2)
    assert shown["failure"]["code"] == "REJECT_CARD_PAYMENT"
    failed = await events.wait("payment.failed", order["id"])
    assert [e["payment_id"] for e in failed] == [payment_id]


async def test_webhook_unknown_payment_is_ignored_and_bad_bodies_are_4xx(
    payments: Payments,
) -> None:
    order_id = "ord" + secrets.token_urlsafe(16)
    unknown = await payments.authorize(order_id, 1_000, APPROVE)
    r = await payments.http.post(
        "/api/payments/webhooks/pg", json=_webhook(await _pg_payment(payments, unknown))
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ignored"
    for raw in (b"", b"not json", b"[]", b'{"eventType": "X"}', b'{"data": 5}', b"\xff\xfe"):
        r = await payments.http.post(
            "/api/payments/webhooks/pg",
            content=raw,
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 400, (raw, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "invalid_webhook"


async def test_a_confirm_that_never_reached_the_pg_is_sent_again_by_the_reconciler(
    payments: Payments, buyer: User, events: EventTap
) -> None:
    # The process died after recording IN_PROGRESS and before the PG saw the confirm.
    order = payments.orders.add(buyer.id, 48_000)
    key = await payments.authorize(order["id"], 48_000, APPROVE)
    payment_id = await _unresolved_row(payments, buyer, order["id"], key, 48_000, check_in=-1)

    await payments.wait_status(buyer, payment_id, "DONE")
    charges = await payments.charges(order["id"])
    assert (charges["charges"], charges["charged_amount"]) == (1, 48_000)
    approved = await events.wait("payment.approved", order["id"])
    assert [e["payment_id"] for e in approved] == [payment_id]


async def _paid(payments: Payments, buyer: User, amount: int) -> tuple[dict[str, Any], str]:
    order = payments.orders.add(buyer.id, amount)
    key = await payments.authorize(order["id"], amount, APPROVE)
    r = await payments.confirm(buyer, order["id"], key, amount)
    assert r.status_code == 200, r.text
    payment_id: str = r.json()["id"]
    return order, payment_id


async def test_refund_on_order_refund_required(
    payments: Payments, buyer: User, events: EventTap, publish: Publish
) -> None:
    order, payment_id = await _paid(payments, buyer, 61_000)
    event = OrderRefundRequired(
        order_id=order["id"], buyer_id=buyer.id, payment_id=payment_id, reason="expired"
    )

    await publish(event)

    shown = await payments.wait_status(buyer, payment_id, "CANCELED")
    assert shown["canceled_at"] is not None
    charges = await payments.charges(order["id"])
    assert (charges["refunds"], charges["refunded_amount"]) == (1, 61_000)
    refunded = await events.wait("payment.refunded", order["id"])
    assert refunded[0]["payment_id"] == payment_id
    assert refunded[0]["amount"] == 61_000

    # The same event again, and a cancel of the same order: no second refund.
    await publish(event)
    await publish(
        OrderCancelled(
            order_id=order["id"],
            buyer_id=buyer.id,
            previous_status="PREPARING",
            refund_required=True,
        )
    )
    await asyncio.sleep(2)
    charges = await payments.charges(order["id"])
    assert (charges["refunds"], charges["refunded_amount"]) == (1, 61_000)
    assert len(events.of("payment.refunded", order["id"])) == 1


async def test_refund_on_order_cancelled(
    payments: Payments, buyer: User, events: EventTap, publish: Publish
) -> None:
    order, payment_id = await _paid(payments, buyer, 62_000)
    kept, kept_id = await _paid(payments, buyer, 63_000)

    await publish(
        OrderCancelled(
            order_id=order["id"],
            buyer_id=buyer.id,
            previous_status="PREPARING",
            refund_required=True,
        )
    )
    # refund_required false: cancelled before payment, nothing to refund.
    await publish(
        OrderCancelled(
            order_id=kept["id"],
            buyer_id=buyer.id,
            previous_status="PENDING_PAYMENT",
            refund_required=False,
        )
    )

    await payments.wait_status(buyer, payment_id, "CANCELED")
    await events.wait("payment.refunded", order["id"])
    await asyncio.sleep(1)
    await payments.wait_status(buyer, kept_id, "DONE", within=1)
    assert (await payments.charges(kept["id"]))["refunds"] == 0


async def test_a_refund_with_an_unknown_result_is_retried_not_marked_done(
    payments: Payments, buyer: User, events: EventTap, publish: Publish
) -> None:
    order, payment_id = await _paid(payments, buyer, 64_000)
    # The PG answers 500 to every cancel: the result is unknown, so the refund stays pending.
    r = await payments.pg.put("/v1/sandbox/config", json={"error_rate": 1.0})
    assert r.status_code == 200, r.text
    try:
        await publish(
            OrderRefundRequired(
                order_id=order["id"], buyer_id=buyer.id, payment_id=payment_id, reason="expired"
            )
        )
        deadline = time.monotonic() + 10
        attempts = 0
        while attempts < 2 and time.monotonic() < deadline:
            async with payments.deps.sessions.begin() as session:
                row = (
                    await session.execute(select(refunds).where(refunds.c.payment_id == payment_id))
                ).first()
            attempts = row.attempts if row else 0
            await asyncio.sleep(0.2)
        assert attempts >= 2, "the refund was not retried"
        assert row is not None
        assert row.status == "PENDING"
        await payments.wait_status(buyer, payment_id, "DONE", within=1)
        assert not events.of("payment.refunded", order["id"])
    finally:
        r = await payments.pg.delete("/v1/sandbox/config")
        assert r.status_code == 200
    await payments.wait_status(buyer, payment_id, "CANCELED", within=30)
    charges = await payments.charges(order["id"])
    assert (charges["refunds"], charges["refunded_amount"]) == (1, 64_000)
    await events.wait("payment.refunded", order["id"])
