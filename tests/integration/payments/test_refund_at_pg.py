"""Refunds made at the PG itself, found by the periodic recheck alone (the sandbox's webhooks do
not reach this harness), and the sweeper that refunds charges whose order can no longer be
fulfilled (issue 12, items 6 and 12). Real MariaDB, RabbitMQ and sandbox PG; orders is faked."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from sqlalchemy import func, select
from tests.integration.payments.conftest import EventTap, Payments
from tests.support.platform import User

from snapshoe.payments import refunds as refund_worker
from snapshoe.payments import repository as repo
from snapshoe.payments import sweep
from snapshoe.payments.bootstrap import build_core, close_core
from snapshoe.payments.tables import refunds

APPROVE = "4111111111110000"


async def _paid(payments: Payments, buyer: User, total: int) -> tuple[dict[str, Any], str, str]:
    """A fake order, authorized and confirmed through SnapShoe: (order, payment_key, id)."""
    order = payments.orders.add(buyer.id, total)
    key = await payments.authorize(order["id"], total, APPROVE)
    r = await payments.confirm(buyer, order["id"], key, total)
    assert r.status_code == 200, r.text
    return order, key, r.json()["id"]


async def _cancel_at_pg(payments: Payments, key: str, amount: int | None = None) -> None:
    body: dict[str, Any] = {"cancelReason": "refunded from the dashboard"}
    if amount is not None:
        body["cancelAmount"] = amount
    r = await payments.pg.post(
        f"/v1/payments/{key}/cancel", json=body, headers={"Idempotency-Key": secrets.token_hex(8)}
    )
    assert r.status_code == 200, r.text


async def test_a_refund_at_the_pg_is_found_by_the_recheck_without_a_webhook(
    payments: Payments, buyer: User, events: EventTap
) -> None:
    order, key, payment_id = await _paid(payments, buyer, 61_000)
    await _cancel_at_pg(payments, key)

    shown = await payments.wait_status(buyer, payment_id, "CANCELED", within=15)
    assert shown["canceled_at"] is not None
    (event,) = await events.wait("payment.refunded_at_pg", order["id"])
    assert event["payment_id"] == payment_id
    assert (event["full"], event["amount"], event["refunded_amount"]) == (True, 61_000, 61_000)
    assert event["balance_amount"] == 0
    async with payments.deps.sessions() as session:
        p = await repo.get(session, payment_id)
        cancels = await repo.pg_cancels_of(session, payment_id)
    assert p is not None
    assert p.refunded_amount == 61_000
    assert [(c["amount"], c["reason"]) for c in cancels] == [
        (61_000, "refunded from the dashboard")
    ]
    # Read again and again: recorded once, published once, never refunded a second time.
    await asyncio.sleep(2.5)
    assert len(events.of("payment.refunded_at_pg", order["id"])) == 1
    assert (await payments.charges(order["id"]))["refunds"] == 1


async def test_a_webhook_for_a_done_payment_rereads_the_pg_and_records_the_refund(
    payments: Payments, buyer: User, events: EventTap
) -> None:
    order, key, payment_id = await _paid(payments, buyer, 60_500)
    await _cancel_at_pg(payments, key)
    # The body says nothing true (status DONE): only which payment to re-read.
    forged = {"paymentKey": key, "orderId": order["id"], "status": "DONE"}
    r = await payments.http.post(
        "/api/payments/webhooks/pg",
        json={"eventType": "PAYMENT_STATUS_CHANGED", "createdAt": "2025", "data": forged},
    )
    assert r.status_code == 200, r.text
    assert r.json()["payment_status"] == "CANCELED"
    (event,) = await events.wait("payment.refunded_at_pg", order["id"])
    assert event["payment_id"] == payment_id


async def test_a_webhook_that_claims_a_refund_the_pg_never_made_changes_nothing(
    payments: Payments, buyer: User, events: EventTap
) -> None:
    order, key, payment_id = await _paid(payments, buyer, 60_600)
    forged = {"paymentKey": key, "orderId": order["id"], "status": "CANCELED"}
    r = await payments.http.post(
        "/api/payments/webhooks/pg",
        json={"eventType": "PAYMENT_STATUS_CHANGED", "createdAt": "2025", "data": forged},
    )
    assert r.status_code == 200, r.text
    assert r.json()["payment_status"] == "DONE"
    await asyncio.sleep(1.5)  # the recheck reads it too: still DONE at the PG
    await payments.wait_status(buyer, payment_id, "DONE", within=1)
    assert not events.of("payment.refunded_at_pg", order["id"])


async def test_a_partial_cancel_at_the_pg_is_recorded_and_keeps_the_payment(
    payments: Payments, buyer: User, events: EventTap
) -> None:
    order, key, payment_id = await _paid(payments, buyer, 62_000)
    await _cancel_at_pg(payments, key, amount=2_000)

    (event,) = await events.wait("payment.refunded_at_pg", order["id"])
    assert (event["full"], event["amount"], event["balance_amount"]) == (False, 2_000, 60_000)
    shown = await payments.wait_status(buyer, payment_id, "DONE", within=1)
    assert shown["canceled_at"] is None
    async with payments.deps.sessions() as session:
        p = await repo.get(session, payment_id)
    assert p is not None
    assert p.refunded_amount == 2_000

    # The rest refunded at the PG later: a second, full notice.
    await _cancel_at_pg(payments, key)
    await payments.wait_status(buyer, payment_id, "CANCELED", within=15)
    # The status is read from the row; the event follows through the outbox relay.
    later = await events.wait("payment.refunded_at_pg", order["id"], count=2)
    assert [(e["full"], e["amount"], e["refunded_amount"]) for e in later] == [
        (False, 2_000, 2_000),
        (True, 60_000, 62_000),
    ]


async def test_the_sweeper_refunds_a_charge_whose_order_expired(
    payments: Payments, buyer: User, events: EventTap
) -> None:
    # PaymentApproved never reached orders (stuck, dead-lettered): the order expired meanwhile.
    order, _, payment_id = await _paid(payments, buyer, 63_000)
    payments.orders.orders[order["id"]]["status"] = "EXPIRED"

    await payments.wait_status(buyer, payment_id, "CANCELED", within=20)
    refunded = await events.wait("payment.refunded", order["id"])
    assert [e["payment_id"] for e in refunded] == [payment_id]
    charges = await payments.charges(order["id"])
    assert (charges["charges"], charges["refunds"], charges["refunded_amount"]) == (1, 1, 63_000)


async def test_the_sweeper_refunds_a_charge_whose_order_does_not_exist(
    payments: Payments, buyer: User
) -> None:
    order, _, payment_id = await _paid(payments, buyer, 64_000)
    del payments.orders.orders[order["id"]]
    await payments.wait_status(buyer, payment_id, "CANCELED", within=20)
    assert (await payments.charges(order["id"]))["refunds"] == 1


async def test_the_sweeper_never_refunds_a_fulfilled_or_pending_order(
    payments: Payments, buyer: User
) -> None:
    fulfilled, _, fulfilled_id = await _paid(payments, buyer, 65_000)
    payments.orders.orders[fulfilled["id"]].update(status="PREPARING", payment_id=fulfilled_id)
    pending, _, pending_id = await _paid(payments, buyer, 66_000)  # approval still on its way

    await asyncio.sleep(3)  # past the grace, several passes of the worker's sweeper
    for _ in range(3):
        await sweep.sweep(payments.deps, payments.orders)
    for order, payment_id in ((fulfilled, fulfilled_id), (pending, pending_id)):
        await payments.wait_status(buyer, payment_id, "DONE", within=1)
        assert (await payments.charges(order["id"]))["refunds"] == 0
    async with payments.deps.sessions() as session:
        seen = await repo.sweep_candidates(session, sweep.utcnow(), 10_000)
    assert fulfilled_id not in seen  # seen paying its order: never asked about again
    assert pending_id in seen


async def test_two_sweepers_at_once_refund_each_charge_once(
    payments: Payments, buyer: User
) -> None:
    paid = [await _paid(payments, buyer, 67_000 + n) for n in range(4)]
    for order, _, _ in paid:
        payments.orders.orders[order["id"]]["status"] = "CANCELLED"
    await asyncio.sleep(1.2)  # past the grace
    cores = [build_core(payments.settings) for _ in range(2)]
    try:
        await asyncio.gather(*(sweep.sweep(core, payments.orders) for core in cores))
        await asyncio.gather(*(refund_worker.refunds_due(core) for core in cores))
    finally:
        for core in cores:
            await close_core(core)
    for order, _, payment_id in paid:
        await payments.wait_status(buyer, payment_id, "CANCELED", within=20)
        assert (await payments.charges(order["id"]))["refunds"] == 1
        async with payments.deps.sessions() as session:
            count = await session.scalar(
                select(func.count()).select_from(refunds).where(refunds.c.payment_id == payment_id)
            )
        assert count == 1
