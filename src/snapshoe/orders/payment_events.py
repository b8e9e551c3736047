"""Payment events -> order transitions (called by ``consumers.py`` inside the inbox
transaction). Each is a conditional update from the expected state, so duplicates and
reorderings change nothing twice."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from snapshoe.kernel.clock import to_db, utcnow
from snapshoe.kernel.contracts.orders import (
    OrderCancelled,
    OrderPaid,
    OrderPaymentFailed,
    OrderRefundRequired,
)
from snapshoe.kernel.contracts.payments import (
    PaymentApproved,
    PaymentFailed,
    PaymentRefunded,
    PaymentRefundedAtPg,
)
from snapshoe.kernel.messaging import add_to_outbox
from snapshoe.orders import repository as repo
from snapshoe.orders.domain import Status, StockState, next_stage_at
from snapshoe.orders.tables import outbox

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from snapshoe.orders.settings import OrdersSettings

log = logging.getLogger("snapshoe.orders")


async def on_payment_approved(
    session: AsyncSession, body: dict[str, Any], settings: OrdersSettings
) -> None:
    event = PaymentApproved.model_validate(body)
    now = utcnow()
    moved = await repo.transition(
        session,
        event.order_id,
        expected=Status.PENDING_PAYMENT,
        to=Status.PREPARING,
        now=now,
        stock_state=StockState.COMMITTING,
        next_transition_at=next_stage_at(event.approved_at, settings.order_stage_seconds),
        reason="payment_approved",
        paid_at=to_db(event.approved_at),
        payment_id=event.payment_id,
    )
    if moved:
        lines = await repo.lines_of(session, event.order_id)  # the buyer's mail names the pair
        await add_to_outbox(
            session,
            outbox,
            OrderPaid(
                order_id=event.order_id,
                buyer_id=event.buyer_id,
                payment_id=event.payment_id,
                total_amount=event.amount,
                product_name=str(lines[0]["product_name"]) if lines else None,
            ),
        )
        return
    row = await repo.get_order(session, event.order_id)
    if row is not None and row["payment_id"] == event.payment_id:
        return  # this approval already made the order PREPARING
    # Paid for an order that can no longer be fulfilled (expired, cancelled, failed, paid by
    # another payment, unknown): the money goes back.
    reason = "unknown_order" if row is None else f"order_{str(row['status']).lower()}"
    log.warning("approval %s for order %s: refund (%s)", event.payment_id, event.order_id, reason)
    await add_to_outbox(
        session,
        outbox,
        OrderRefundRequired(
            order_id=event.order_id,
            buyer_id=event.buyer_id,
            payment_id=event.payment_id,
            reason=reason,
        ),
    )


async def on_payment_failed(session: AsyncSession, body: dict[str, Any]) -> None:
    event = PaymentFailed.model_validate(body)
    moved = await repo.transition(
        session,
        event.order_id,
        expected=Status.PENDING_PAYMENT,
        to=Status.PAYMENT_FAILED,
        now=utcnow(),
        stock_state=StockState.RELEASING,
        next_transition_at=None,
        reason=event.code[:64] or "payment_failed",
    )
    if moved:
        await add_to_outbox(
            session,
            outbox,
            OrderPaymentFailed(
                order_id=event.order_id, buyer_id=event.buyer_id, payment_id=event.payment_id
            ),
        )
    # Otherwise the order already left PENDING_PAYMENT (paid, cancelled, expired): a late or
    # duplicate failure changes nothing.


async def on_payment_refunded(session: AsyncSession, body: dict[str, Any]) -> None:
    event = PaymentRefunded.model_validate(body)
    await repo.mark_refunded(session, event.order_id, event.refunded_at)


# Statuses an order refunded at the PG leaves for CANCELLED: the pair has not left the
# warehouse, so it goes back on sale. PENDING_PAYMENT too: the approval may still be on its way
# (events of different types can arrive in any order), and that payment is gone.
STOPPABLE = (Status.PENDING_PAYMENT, Status.PREPARING)
SHIPPED = (Status.SHIPPING, Status.DELIVERED)


async def on_payment_refunded_at_pg(session: AsyncSession, body: dict[str, Any]) -> None:
    """The PG refunded the payment without us (dashboard, chargeback). A full refund stops
    fulfilment before shipping (CANCELLED, pair released); after shipping the pair is gone and
    the order keeps its status with ``refunded_at`` set, for the operator. A partial refund is
    a price adjustment: the order goes on (docs/purchase-flow.md)."""
    event = PaymentRefundedAtPg.model_validate(body)
    if not event.full:
        log.warning(
            "order %s: %s of its payment refunded at the PG; fulfilment goes on",
            event.order_id,
            event.amount,
        )
        return
    for _ in range(3):
        row = await repo.get_order(session, event.order_id)
        if row is None:
            log.error("refund at the PG for unknown order %s", event.order_id)
            return
        if row["payment_id"] not in (None, event.payment_id):
            log.error("refund at the PG of %s: not order %s's payment", event.payment_id, row["id"])
            return
        current = Status(row["status"])
        if current in STOPPABLE:
            moved = await repo.transition(
                session,
                event.order_id,
                expected=current,
                to=Status.CANCELLED,
                now=utcnow(),
                stock_state=StockState.RELEASING,
                next_transition_at=None,
                reason="refunded_at_pg",
                refunded_at=to_db(event.refunded_at),
            )
            if not moved:
                continue  # the lifecycle or another event moved it meanwhile: decide again
            await add_to_outbox(
                session,
                outbox,
                OrderCancelled(
                    order_id=event.order_id,
                    buyer_id=row["buyer_id"],
                    previous_status=current.value,
                    refund_required=False,  # the money is back already
                ),
            )
            return
        await repo.mark_refunded(session, event.order_id, event.refunded_at)
        if current in SHIPPED:
            log.error(
                "order %s is %s but its payment was refunded at the PG: operator attention",
                event.order_id,
                current.value,
            )
        return
    raise RuntimeError(f"order {event.order_id} kept changing; the event is retried")
