"""SQL of the payments service, on a session it is given. Never commits.

Every status change is ``UPDATE ... WHERE id = :id AND status IN (:expected)``; callers act on
the row count (0: someone else moved it first), never on a value read earlier.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.payments.domain import (
    Method,
    Payment,
    Refund,
    RefundStatus,
    Status,
)
from snapshoe.payments.tables import payments, pg_cancels, refunds


def _payment(row: Row[Any]) -> Payment:
    return Payment(
        id=row.id,
        order_id=row.order_id,
        buyer_id=row.buyer_id,
        payment_key=row.payment_key,
        amount=int(row.amount),
        status=Status(row.status),
        pg_code=row.pg_code,
        pg_message=row.pg_message,
        approved_at=row.approved_at,
        canceled_at=row.canceled_at,
        attempts=int(row.attempts),
        created_at=row.created_at,
        updated_at=row.updated_at,
        refunded_amount=int(row.refunded_amount or 0),
        method=Method(row.method),
        billing_key=row.billing_key,
        order_name=row.order_name,
    )


def _refund(row: Row[Any]) -> Refund:
    return Refund(
        id=row.id,
        payment_id=row.payment_id,
        order_id=row.order_id,
        amount=int(row.amount),
        reason=row.reason,
        status=RefundStatus(row.status),
        attempts=int(row.attempts),
    )


async def get(session: AsyncSession, payment_id: str) -> Payment | None:
    row = (await session.execute(select(payments).where(payments.c.id == payment_id))).first()
    return _payment(row) if row else None


async def by_order(session: AsyncSession, order_id: str) -> Payment | None:
    row = (await session.execute(select(payments).where(payments.c.order_id == order_id))).first()
    return _payment(row) if row else None


async def by_payment_key(session: AsyncSession, payment_key: str) -> Payment | None:
    if not payment_key:  # '' is every billing payment whose key is not known yet
        return None
    row = (
        await session.execute(select(payments).where(payments.c.payment_key == payment_key))
    ).first()
    return _payment(row) if row else None


async def insert_in_progress(
    session: AsyncSession,
    *,
    payment_id: str,
    order_id: str,
    buyer_id: str,
    payment_key: str,
    amount: int,
    now: datetime,
    check_at: datetime,
    method: Method = Method.CONFIRM,
    billing_key: str | None = None,
    order_name: str | None = None,
) -> None:
    """Raises IntegrityError if the order already has a payment (UNIQUE(order_id)). A billing
    payment is inserted with ``payment_key=''``: the PG makes the key with the charge."""
    await session.execute(
        insert(payments).values(
            id=payment_id,
            order_id=order_id,
            buyer_id=buyer_id,
            payment_key=payment_key,
            amount=amount,
            status=Status.IN_PROGRESS.value,
            attempts=0,
            next_check_at=check_at,
            created_at=now,
            updated_at=now,
            method=method.value,
            billing_key=billing_key,
            order_name=order_name,
        )
    )


async def transition(
    session: AsyncSession,
    payment_id: str,
    expected: Sequence[Status],
    to: Status,
    now: datetime,
    **values: Any,
) -> bool:
    """Move the payment to ``to`` if it is in one of ``expected``. True if this call did it."""
    result = await session.execute(
        update(payments)
        .where(
            payments.c.id == payment_id,
            payments.c.status.in_([s.value for s in expected]),
        )
        .values(status=to.value, updated_at=now, **values)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def delete_in_progress(session: AsyncSession, payment_id: str) -> bool:
    """Forget an attempt the PG certainly never saw (it refused our credentials)."""
    result = await session.execute(
        delete(payments).where(
            payments.c.id == payment_id, payments.c.status == Status.IN_PROGRESS.value
        )
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def due_unresolved(session: AsyncSession, now: datetime, limit: int) -> list[str]:
    """Ids of UNKNOWN payments, and of IN_PROGRESS ones whose confirm went stale, due a check."""
    rows = await session.execute(
        select(payments.c.id)
        .where(
            or_(
                payments.c.status == Status.UNKNOWN.value,
                payments.c.status == Status.IN_PROGRESS.value,
            ),
            payments.c.next_check_at <= now,
        )
        .order_by(payments.c.next_check_at)
        .limit(limit)
    )
    return [r.id for r in rows]


async def claim_check(
    session: AsyncSession, payment_id: str, now: datetime, lease_until: datetime
) -> bool:
    """Claim a due check (one reconciler at a time per payment): pushes ``next_check_at`` to
    the lease end and counts the attempt. True if this caller got it."""
    result = await session.execute(
        update(payments)
        .where(
            payments.c.id == payment_id,
            payments.c.status.in_([s.value for s in (Status.UNKNOWN, Status.IN_PROGRESS)]),
            payments.c.next_check_at <= now,
        )
        .values(
            next_check_at=lease_until,
            attempts=payments.c.attempts + 1,
        )
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def schedule_check(session: AsyncSession, payment_id: str, at: datetime) -> None:
    await session.execute(
        update(payments)
        .where(
            payments.c.id == payment_id,
            payments.c.status.in_([s.value for s in (Status.UNKNOWN, Status.IN_PROGRESS)]),
        )
        .values(next_check_at=at)
    )


# --- refunds ---


async def insert_refund_once(
    session: AsyncSession,
    *,
    refund_id: str,
    payment: Payment,
    reason: str,
    now: datetime,
) -> bool:
    """Create the payment's refund unless it has one (UNIQUE(payment_id)). True if created."""
    existing = (
        await session.execute(select(refunds.c.id).where(refunds.c.payment_id == payment.id))
    ).first()
    if existing:
        return False
    result = await session.execute(
        insert(refunds)
        .prefix_with("IGNORE")  # a concurrent twin loses quietly on UNIQUE(payment_id)
        .values(
            id=refund_id,
            payment_id=payment.id,
            order_id=payment.order_id,
            amount=payment.amount,
            reason=reason[:200],
            status=RefundStatus.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def get_refund(session: AsyncSession, refund_id: str) -> Refund | None:
    row = (await session.execute(select(refunds).where(refunds.c.id == refund_id))).first()
    return _refund(row) if row else None


async def refund_of_payment(session: AsyncSession, payment_id: str) -> Refund | None:
    row = (await session.execute(select(refunds).where(refunds.c.payment_id == payment_id))).first()
    return _refund(row) if row else None


async def due_refunds(session: AsyncSession, now: datetime, limit: int) -> list[str]:
    rows = await session.execute(
        select(refunds.c.id)
        .where(
            refunds.c.status == RefundStatus.PENDING.value,
            refunds.c.next_attempt_at <= now,
        )
        .order_by(refunds.c.next_attempt_at)
        .limit(limit)
    )
    return [r.id for r in rows]


async def claim_refund(
    session: AsyncSession, refund_id: str, now: datetime, lease_until: datetime
) -> bool:
    result = await session.execute(
        update(refunds)
        .where(
            and_(
                refunds.c.id == refund_id,
                refunds.c.status == RefundStatus.PENDING.value,
                refunds.c.next_attempt_at <= now,
            )
        )
        .values(next_attempt_at=lease_until, attempts=refunds.c.attempts + 1, updated_at=now)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def schedule_refund(
    session: AsyncSession, refund_id: str, at: datetime, now: datetime
) -> None:
    await session.execute(
        update(refunds)
        .where(refunds.c.id == refund_id, refunds.c.status == RefundStatus.PENDING.value)
        .values(next_attempt_at=at, updated_at=now)
    )


async def finish_refund(
    session: AsyncSession,
    refund_id: str,
    to: RefundStatus,
    now: datetime,
    **values: Any,
) -> bool:
    result = await session.execute(
        update(refunds)
        .where(refunds.c.id == refund_id, refunds.c.status == RefundStatus.PENDING.value)
        .values(status=to.value, updated_at=now, **values)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


# --- refunds made at the PG, and the sweeper ---


async def recent_done(session: AsyncSession, since: datetime, limit: int) -> list[str]:
    """DONE payments approved since ``since``, least recently re-read at the PG first."""
    rows = await session.execute(
        select(payments.c.id)
        .where(payments.c.status == Status.DONE.value, payments.c.approved_at >= since)
        .order_by(payments.c.pg_checked_at.is_not(None), payments.c.pg_checked_at)
        .limit(limit)
    )
    return [r.id for r in rows]


async def mark_pg_checked(session: AsyncSession, ids: Sequence[str], now: datetime) -> None:
    if ids:
        await session.execute(
            update(payments).where(payments.c.id.in_(list(ids))).values(pg_checked_at=now)
        )


async def insert_pg_cancel(
    session: AsyncSession,
    *,
    payment_id: str,
    transaction_key: str,
    amount: int,
    reason: str,
    canceled_at: datetime,
    now: datetime,
) -> bool:
    """Record one PG cancel. True if this call recorded it (a concurrent re-reader of the same
    cancel waits on the row lock, then loses quietly on the primary key)."""
    result = await session.execute(
        insert(pg_cancels)
        .prefix_with("IGNORE")
        .values(
            payment_id=payment_id,
            transaction_key=transaction_key[:64],
            amount=amount,
            reason=reason[:200],
            canceled_at=canceled_at,
            recorded_at=now,
        )
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def pg_cancels_of(session: AsyncSession, payment_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(pg_cancels)
        .where(pg_cancels.c.payment_id == payment_id)
        .order_by(pg_cancels.c.canceled_at)
    )
    return [dict(r._mapping) for r in rows]


async def set_refunded_amount(
    session: AsyncSession, payment_id: str, amount: int, now: datetime
) -> None:
    await session.execute(
        update(payments)
        .where(payments.c.id == payment_id, payments.c.refunded_amount < amount)
        .values(refunded_amount=amount, updated_at=now)
    )


async def sweep_candidates(
    session: AsyncSession, approved_before: datetime, limit: int
) -> list[str]:
    """DONE payments approved before ``approved_before`` that were never seen paying their
    order and have no refund yet; least recently asked about first."""
    rows = await session.execute(
        select(payments.c.id)
        .where(
            payments.c.status == Status.DONE.value,
            payments.c.fulfilled_at.is_(None),
            payments.c.approved_at <= approved_before,
            ~select(refunds.c.id).where(refunds.c.payment_id == payments.c.id).exists(),
        )
        .order_by(payments.c.order_checked_at.is_not(None), payments.c.order_checked_at)
        .limit(limit)
    )
    return [r.id for r in rows]


async def mark_order_checked(
    session: AsyncSession, payment_id: str, now: datetime, *, fulfilled: bool
) -> None:
    values: dict[str, Any] = {"order_checked_at": now}
    if fulfilled:
        values["fulfilled_at"] = now
    await session.execute(update(payments).where(payments.c.id == payment_id).values(**values))


async def reread(session: AsyncSession, payment_id: str) -> Payment:
    """The payment just written (it exists)."""
    current = await get(session, payment_id)
    assert current is not None
    return current
