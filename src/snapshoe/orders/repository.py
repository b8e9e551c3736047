"""SQL of the orders service (SQLAlchemy Core) on a session it is given. Never commits.

Every status change is a conditional update from the expected state; the caller checks the
returned row count (0: someone else moved the order first).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, and_, case, func, insert, or_, select, update
from sqlalchemy.engine import CursorResult, RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel.clock import to_db
from snapshoe.orders.domain import Status, StockState
from snapshoe.orders.tables import order_history, order_lines, orders

_UNSET: Any = object()


async def insert_order(
    session: AsyncSession,
    *,
    order: dict[str, Any],
    lines: Sequence[dict[str, Any]],
    now: datetime,
) -> None:
    await session.execute(insert(orders).values(**order))
    await session.execute(
        insert(order_lines),
        [{"order_id": order["id"], "line_no": n, **x} for n, x in enumerate(lines)],
    )
    await add_history(session, order["id"], Status(order["status"]), now)


async def insert_orders(
    session: AsyncSession,
    placed: Sequence[tuple[dict[str, Any], Sequence[dict[str, Any]], datetime]],
) -> None:
    """Many ``(order, lines, now)`` as :func:`insert_order` writes one, in three multi-row
    INSERTs (the driver's executemany); any duplicate key fails them all."""
    await session.execute(insert(orders), [order for order, _, _ in placed])
    await session.execute(
        insert(order_lines),
        [
            {"order_id": order["id"], "line_no": n, **x}
            for order, lines, _ in placed
            for n, x in enumerate(lines)
        ],
    )
    await session.execute(
        insert(order_history),
        [
            {"order_id": order["id"], "status": order["status"], "at": to_db(now), "reason": None}
            for order, _, now in placed
        ],
    )


async def existing_ids(session: AsyncSession, order_ids: Sequence[str]) -> set[str]:
    stmt = select(orders.c.id).where(orders.c.id.in_(list(order_ids)))
    return set((await session.execute(stmt)).scalars().all())


async def add_history(
    session: AsyncSession, order_id: str, status: Status, at: datetime, reason: str | None = None
) -> None:
    await session.execute(
        insert(order_history).values(order_id=order_id, status=status, at=to_db(at), reason=reason)
    )


async def transition(
    session: AsyncSession,
    order_id: str,
    *,
    expected: Status,
    to: Status,
    now: datetime,
    stock_state: StockState | None = None,
    expected_stock: StockState | None = None,
    next_transition_at: datetime | None = _UNSET,
    reason: str | None = None,
    **values: Any,
) -> bool:
    """``expected -> to`` if the order is still ``expected``; appends the history row."""
    conditions = [orders.c.id == order_id, orders.c.status == expected]
    if expected_stock is not None:
        conditions.append(orders.c.stock_state == expected_stock)
    changes: dict[str, Any] = {"status": to, "updated_at": to_db(now), **values}
    if stock_state is not None:
        changes["stock_state"] = stock_state
    if next_transition_at is not _UNSET:
        changes["next_transition_at"] = (
            None if next_transition_at is None else to_db(next_transition_at)
        )
    result = cast(
        CursorResult[Any], await session.execute(update(orders).where(*conditions).values(changes))
    )
    if result.rowcount != 1:
        return False
    await add_history(session, order_id, to, now, reason)
    return True


async def settle_stock(
    session: AsyncSession, order_id: str, *, expected: StockState, to: StockState, now: datetime
) -> bool:
    result = cast(
        CursorResult[Any],
        await session.execute(
            update(orders)
            .where(orders.c.id == order_id, orders.c.stock_state == expected)
            .values(stock_state=to, updated_at=to_db(now))
        ),
    )
    return result.rowcount == 1


async def mark_refunded(session: AsyncSession, order_id: str, at: datetime) -> bool:
    result = cast(
        CursorResult[Any],
        await session.execute(
            update(orders)
            .where(orders.c.id == order_id, orders.c.refunded_at.is_(None))
            .values(refunded_at=to_db(at))
        ),
    )
    return result.rowcount == 1


async def get_order(
    session: AsyncSession, order_id: str, buyer_id: str | None = None
) -> RowMapping | None:
    query = select(orders).where(orders.c.id == order_id)
    if buyer_id is not None:
        query = query.where(orders.c.buyer_id == buyer_id)
    return (await session.execute(query)).mappings().first()


async def order_by_key(session: AsyncSession, buyer_id: str, key: str) -> RowMapping | None:
    return (
        (
            await session.execute(
                select(orders).where(orders.c.buyer_id == buyer_id, orders.c.idempotency_key == key)
            )
        )
        .mappings()
        .first()
    )


async def lines_of(session: AsyncSession, order_id: str) -> Sequence[RowMapping]:
    return (
        (
            await session.execute(
                select(order_lines)
                .where(order_lines.c.order_id == order_id)
                .order_by(order_lines.c.line_no)
            )
        )
        .mappings()
        .all()
    )


async def history_of(session: AsyncSession, order_id: str) -> Sequence[RowMapping]:
    return (
        (
            await session.execute(
                select(order_history.c.status, order_history.c.at, order_history.c.reason)
                .where(order_history.c.order_id == order_id)
                .order_by(order_history.c.id)
            )
        )
        .mappings()
        .all()
    )


def _newest_first(
    query: Select[*tuple[Any, ...]], *, limit: int, after: tuple[datetime, str] | None
) -> Select[*tuple[Any, ...]]:
    """Newest first, keyset on (created_at, id): inserts between pages never shift a page."""
    if after is not None:
        at, order_id = after
        query = query.where(
            or_(
                orders.c.created_at < at,
                and_(orders.c.created_at == at, orders.c.id < order_id),
            )
        )
    return query.order_by(orders.c.created_at.desc(), orders.c.id.desc()).limit(limit)


async def page_of_buyer(
    session: AsyncSession, buyer_id: str, *, limit: int, after: tuple[datetime, str] | None
) -> Sequence[RowMapping]:
    query = select(orders).where(orders.c.buyer_id == buyer_id)
    return (await session.execute(_newest_first(query, limit=limit, after=after))).mappings().all()


async def page_of_all(
    session: AsyncSession,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    status: Status | None = None,
    product_id: str | None = None,
    buyer_id: str | None = None,
) -> Sequence[RowMapping]:
    """Any buyer's orders (the admin list) on the same keyset as :func:`page_of_buyer`; each
    filter given narrows it (``product_id``: orders with a line of that product)."""
    query = select(orders)
    if status is not None:
        query = query.where(orders.c.status == status)
    if buyer_id is not None:
        query = query.where(orders.c.buyer_id == buyer_id)
    if product_id is not None:
        holding = select(order_lines.c.order_id).where(order_lines.c.product_id == product_id)
        query = query.where(orders.c.id.in_(holding))
    return (await session.execute(_newest_first(query, limit=limit, after=after))).mappings().all()


async def lines_of_orders(
    session: AsyncSession, order_ids: Sequence[str]
) -> dict[str, list[RowMapping]]:
    """The lines of many orders in one query, by order id (in line order)."""
    found: dict[str, list[RowMapping]] = {order_id: [] for order_id in order_ids}
    if not order_ids:
        return found
    rows = await session.execute(
        select(order_lines)
        .where(order_lines.c.order_id.in_(list(order_ids)))
        .order_by(order_lines.c.order_id, order_lines.c.line_no)
    )
    for row in rows.mappings():
        found[row["order_id"]].append(row)
    return found


async def pending_stock(session: AsyncSession, limit: int) -> Sequence[RowMapping]:
    return (
        (
            await session.execute(
                select(orders.c.id, orders.c.stock_state, orders.c.status)
                .where(orders.c.stock_state.in_([StockState.COMMITTING, StockState.RELEASING]))
                .order_by(orders.c.updated_at)
                .limit(limit)
            )
        )
        .mappings()
        .all()
    )


async def product_sales(
    session: AsyncSession, product_id: str, *, since: Sequence[datetime]
) -> Sequence[RowMapping]:
    """Per status, the orders holding ``product_id``: how many, how many were created at or
    after each of ``since`` (``created_0``, ``created_1``...), and how many were paid (reached
    PREPARING: ``paid``). Through ``ix_order_lines_product_id``."""
    holding = select(order_lines.c.order_id).where(order_lines.c.product_id == product_id)
    columns = [
        orders.c.status,
        func.count().label("orders"),
        func.sum(case((orders.c.paid_at.is_not(None), 1), else_=0)).label("paid"),
    ]
    for n, at in enumerate(since):
        columns.append(
            func.sum(case((orders.c.created_at >= to_db(at), 1), else_=0)).label(f"created_{n}")
        )
    stmt = select(*columns).where(orders.c.id.in_(holding)).group_by(orders.c.status)
    return (await session.execute(stmt)).mappings().all()
