"""Refunds SnapShoe makes: recorded by the order-event consumers (and the sweeper), carried out
at the PG by the refund worker outside any transaction."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel.clock import as_utc, utcnow
from snapshoe.kernel.contracts.orders import OrderCancelled, OrderRefundRequired
from snapshoe.kernel.contracts.payments import PaymentRefunded
from snapshoe.kernel.messaging import add_to_outbox
from snapshoe.payments import repository as repo
from snapshoe.payments.domain import (
    CLAIM_LEASE,
    UNRESOLVED,
    Payment,
    Refund,
    RefundStatus,
    Status,
    backoff,
    new_refund_id,
    refund_idempotency_key,
)
from snapshoe.payments.pg import PgDeclined, PgError, PgNotFound, PgPayment, PgStatus
from snapshoe.payments.tables import outbox

if TYPE_CHECKING:
    from snapshoe.payments.deps import Core

log = logging.getLogger("snapshoe.payments")


async def on_order_cancelled(session: AsyncSession, body: dict[str, Any]) -> None:
    event = OrderCancelled.model_validate(body)
    if not event.refund_required:
        return
    p = await repo.by_order(session, event.order_id)
    if p is None:
        log.error("order %s cancelled with a refund, but it has no payment", event.order_id)
        return
    await _request_refund(session, p, f"order cancelled ({event.previous_status})")


async def on_refund_required(session: AsyncSession, body: dict[str, Any]) -> None:
    event = OrderRefundRequired.model_validate(body)
    p = await repo.get(session, event.payment_id) or await repo.by_order(session, event.order_id)
    if p is None or p.order_id != event.order_id:
        log.error("refund required for unknown payment %s", event.payment_id)
        return
    await _request_refund(session, p, f"order not fulfillable: {event.reason}")


async def _request_refund(session: AsyncSession, p: Payment, reason: str) -> None:
    """Record the refund to make (in the consumer's transaction, with its inbox row); the
    refund worker calls the PG outside any transaction."""
    if p.status is Status.ABORTED:
        log.info("no refund for payment %s: it was never charged", p.id)
        return
    created = await repo.insert_refund_once(
        session, refund_id=new_refund_id(), payment=p, reason=reason, now=utcnow()
    )
    if not created:
        log.info("payment %s already has a refund", p.id)


async def process_refund(core: Core, refund_id: str) -> RefundStatus | None:
    """Cancel the payment at the PG (Idempotency-Key = refund id). The refund is DONE only when
    the PG says the payment is canceled; an unknown result is retried with backoff."""
    now = utcnow()
    async with core.sessions.begin() as session:
        if not await repo.claim_refund(session, refund_id, now, now + CLAIM_LEASE):
            return None
        refund = await repo.get_refund(session, refund_id)
        assert refund is not None
        p = await repo.get(session, refund.payment_id)
    assert p is not None
    if p.status in UNRESOLVED or not p.key_known:
        # The approval (and with it a billing payment's key) is not recorded yet: wait for it.
        return await _retry_refund(core, refund_id, refund.attempts)
    if p.status is Status.ABORTED:
        async with core.sessions.begin() as session:
            await repo.finish_refund(
                session,
                refund_id,
                RefundStatus.FAILED,
                utcnow(),
                pg_code="NOT_CHARGED",
                pg_message="The payment was never charged",
            )
        return RefundStatus.FAILED
    try:
        result = await core.pg.cancel(
            p.payment_key, refund.reason, refund_idempotency_key(refund.id)
        )
    except (PgDeclined, PgNotFound) as exc:
        log.error("the PG refused refund %s of payment %s: %s", refund.id, p.id, exc)
        async with core.sessions.begin() as session:
            await repo.finish_refund(
                session,
                refund_id,
                RefundStatus.FAILED,
                utcnow(),
                pg_code=exc.code[:64],
                pg_message=(exc.message or exc.code)[:255],
            )
        return RefundStatus.FAILED
    except PgError as exc:
        log.warning("refund %s has no definitive result (%s); retrying later", refund.id, exc)
        return await _retry_refund(core, refund_id, refund.attempts)
    if result.status is not PgStatus.CANCELED:
        log.warning("refund %s: the PG says %s; retrying later", refund.id, result.status)
        return await _retry_refund(core, refund_id, refund.attempts)
    await _record_refunded(core, refund, p, result)
    return RefundStatus.DONE


async def _record_refunded(core: Core, refund: Refund, p: Payment, result: PgPayment) -> None:
    """The refund DONE and the payment CANCELED, with ``PaymentRefunded``, in one transaction."""
    refund_id = refund.id
    canceled_at = utcnow()
    if result.cancels and result.cancels[-1].canceled_at:
        canceled_at = as_utc(result.cancels[-1].canceled_at)
    now = utcnow()
    async with core.sessions.begin() as session:
        if await repo.finish_refund(
            session, refund_id, RefundStatus.DONE, now, refunded_at=canceled_at
        ):
            await repo.transition(
                session,
                p.id,
                (Status.DONE,),
                Status.CANCELED,
                now,
                canceled_at=canceled_at,
                refunded_amount=result.refunded_amount,
            )
            await add_to_outbox(
                session,
                outbox,
                PaymentRefunded(
                    payment_id=p.id,
                    order_id=p.order_id,
                    buyer_id=p.buyer_id,
                    amount=refund.amount,
                    refunded_at=canceled_at,
                ),
            )


async def _retry_refund(core: Core, refund_id: str, attempts: int) -> RefundStatus:
    async with core.sessions.begin() as session:
        await repo.schedule_refund(session, refund_id, utcnow() + backoff(attempts), utcnow())
    return RefundStatus.PENDING


async def refunds_due(core: Core, limit: int = 50) -> int:
    async with core.sessions.begin() as session:
        ids = await repo.due_refunds(session, utcnow(), limit)
    done = 0
    for refund_id in ids:
        if await process_refund(core, refund_id) is not None:
            done += 1
    return done
