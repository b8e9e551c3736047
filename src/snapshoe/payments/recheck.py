"""Refunds made at the PG itself (a dashboard, a chargeback; item 6 of issue 12): recorded
from the webhook or from the periodic recheck of recent DONE payments."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel.clock import as_utc, utcnow
from snapshoe.kernel.contracts.payments import PaymentRefundedAtPg
from snapshoe.kernel.messaging import add_to_outbox
from snapshoe.payments import repository as repo
from snapshoe.payments.domain import (
    Payment,
    Status,
)
from snapshoe.payments.pg import PgError, PgPayment, PgStatus
from snapshoe.payments.tables import outbox

if TYPE_CHECKING:
    from snapshoe.payments.deps import Core

log = logging.getLogger("snapshoe.payments")


PG_REFUNDED = (PgStatus.CANCELED, PgStatus.PARTIAL_CANCELED)


async def record_pg_cancels(core: Core, p: Payment, found: PgPayment) -> Payment:
    """Record the cancels the PG reports on a DONE payment that SnapShoe did not ask for, and
    publish ``PaymentRefundedAtPg`` once per newly seen batch of them. A full cancel moves the
    payment to CANCELED (orders then stops fulfilment); a partial one keeps it DONE.

    Idempotent: each PG cancel is one ``pg_cancels`` row (INSERT IGNORE on its transaction
    key), and the event goes out only with newly inserted rows, in the same transaction."""
    if found.payment_key != p.payment_key or found.order_id != p.order_id:
        log.error("PG payment %s does not match payment %s", found.payment_key, p.id)
        return p
    if found.status not in PG_REFUNDED or not found.cancels:
        return p
    now = utcnow()
    async with core.sessions.begin() as session:
        if await repo.refund_of_payment(session, p.id) is not None:
            # Our own refund (its webhook can beat process_refund's bookkeeping): the refund
            # worker records it; the order is already cancelled or expired.
            return await repo.reread(session, p.id)
        added = await _insert_cancels(session, p, found, now)
        if not added:
            return await repo.reread(session, p.id)
        await _record_refunded_at_pg(session, p, found, added, now)
        return await repo.reread(session, p.id)


async def _record_refunded_at_pg(
    session: AsyncSession, p: Payment, found: PgPayment, added: int, now: datetime
) -> None:
    """The payment's new refunded amount (CANCELED on a full cancel) and its
    ``PaymentRefundedAtPg``, in the caller's transaction."""
    refunded = found.refunded_amount
    last = found.cancels[-1]
    refunded_at = as_utc(last.canceled_at) if last.canceled_at else now
    full = found.status is PgStatus.CANCELED
    if full:
        await repo.transition(
            session,
            p.id,
            (Status.DONE,),
            Status.CANCELED,
            now,
            canceled_at=refunded_at,
            refunded_amount=refunded,
        )
    else:
        await repo.set_refunded_amount(session, p.id, refunded, now)
    log.warning(
        "payment %s of order %s was refunded at the PG (%s of %s, %s)",
        p.id,
        p.order_id,
        refunded,
        p.amount,
        found.status.value,
    )
    await add_to_outbox(
        session,
        outbox,
        PaymentRefundedAtPg(
            payment_id=p.id,
            order_id=p.order_id,
            buyer_id=p.buyer_id,
            amount=added,
            refunded_amount=refunded,
            balance_amount=found.balance_amount,
            full=full,
            refunded_at=refunded_at,
            reason=(last.cancel_reason or "cancelled at the PG")[:200],
        ),
    )


async def _insert_cancels(
    session: AsyncSession, p: Payment, found: PgPayment, now: datetime
) -> int:
    """One ``pg_cancels`` row per cancel not seen before; the amount newly recorded."""
    added = 0
    for n, cancel in enumerate(found.cancels):
        at = as_utc(cancel.canceled_at) if cancel.canceled_at else now
        if await repo.insert_pg_cancel(
            session,
            payment_id=p.id,
            transaction_key=cancel.transaction_key or f"#{n}",
            amount=cancel.cancel_amount,
            reason=cancel.cancel_reason or "cancelled at the PG",
            canceled_at=at,
            now=now,
        ):
            added += cancel.cancel_amount
    return added


async def recheck_recent(core: Core) -> int:
    """Re-read at the PG a batch of DONE payments approved within ``pg_recheck_days`` (least
    recently read first), for refunds no webhook brought. Returns how many were read."""
    s = core.settings
    now = utcnow()
    async with core.sessions.begin() as session:
        ids = await repo.recent_done(
            session, now - timedelta(days=s.pg_recheck_days), s.pg_recheck_batch
        )
        # Marked first: a payment the PG cannot answer for goes to the back of the queue.
        await repo.mark_pg_checked(session, ids, now)
    read = 0
    for payment_id in ids:
        async with core.sessions.begin() as session:
            p = await repo.get(session, payment_id)
        if p is None or p.status is not Status.DONE or not p.key_known:
            continue
        try:
            found = await core.pg.get_by_payment_key(p.payment_key)
        except PgError as exc:
            log.info("recheck of %s: the PG could not be read (%s)", p.id, exc)
            continue
        read += 1
        await record_pg_cancels(core, p, found)
    return read
