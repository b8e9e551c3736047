"""Queries of the orders service: an order as the buyer sees it, a buyer's orders page by
page, and an order as the payments service reads it (``/internal``). The page cursor and the
order's shape are shared with the operator's reads (``admin_orders``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import RowMapping

from snapshoe.kernel.clock import rfc3339
from snapshoe.kernel.cursors import InvalidCursor
from snapshoe.kernel.errors import Problem, not_found
from snapshoe.orders import repository as repo
from snapshoe.orders import schemas
from snapshoe.orders.domain import decode_cursor, encode_cursor

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from snapshoe.orders.deps import Deps


def optional_rfc3339(value: datetime | None) -> str | None:
    """An optional timestamp of the API (``paid_at``, ``refunded_at``): None stays None."""
    return None if value is None else rfc3339(value)


def lines_out(lines: Sequence[RowMapping | dict[str, Any]]) -> list[schemas.OrderLineOut]:
    return [
        schemas.OrderLineOut(
            item_id=x["item_id"],
            product_id=x["product_id"],
            product_name=x["product_name"],
            size=x["size"],
            color=x["color"],
            quantity=x["quantity"],
            unit_price=x["unit_price"],
        )
        for x in lines
    ]


def order_out(
    order: RowMapping | dict[str, Any],
    lines: Sequence[RowMapping | dict[str, Any]],
    history: Sequence[RowMapping | dict[str, Any]],
) -> schemas.OrderOut:
    return schemas.OrderOut(
        id=order["id"],
        status=order["status"],
        lines=lines_out(lines),
        total_amount=order["total_amount"],
        created_at=rfc3339(order["created_at"]),
        updated_at=rfc3339(order["updated_at"]),
        expires_at=rfc3339(order["expires_at"]),
        paid_at=optional_rfc3339(order.get("paid_at")),
        refunded_at=optional_rfc3339(order.get("refunded_at")),
        history=[
            schemas.HistoryEntry(status=h["status"], at=rfc3339(h["at"]), reason=h.get("reason"))
            for h in history
        ],
    )


async def load_out(session: AsyncSession, row: RowMapping) -> schemas.OrderOut:
    return order_out(
        row, await repo.lines_of(session, row["id"]), await repo.history_of(session, row["id"])
    )


async def get_order(deps: Deps, *, buyer_id: str, order_id: str) -> schemas.OrderOut:
    async with deps.sessions() as session:
        row = await repo.get_order(session, order_id, buyer_id)
        if row is None:
            raise not_found("order")
        return await load_out(session, row)


def page_after(cursor: str | None) -> tuple[datetime, str] | None:
    """Where a page of orders starts (None: the newest); 422 ``invalid_cursor`` for a cursor
    we did not issue."""
    try:
        return decode_cursor(cursor) if cursor is not None else None
    except InvalidCursor as exc:
        raise Problem(422, "invalid_cursor", detail=str(exc)) from exc


def next_cursor(rows: Sequence[RowMapping], limit: int) -> str | None:
    """The cursor after a page read with ``limit + 1`` rows: None when there is no more."""
    if len(rows) <= limit:
        return None
    return encode_cursor(rows[limit - 1]["created_at"], rows[limit - 1]["id"])


async def list_orders(
    deps: Deps, *, buyer_id: str, limit: int, cursor: str | None
) -> schemas.OrderPage:
    after = page_after(cursor)
    async with deps.sessions() as session:
        rows = await repo.page_of_buyer(session, buyer_id, limit=limit + 1, after=after)
    page = rows[:limit]
    return schemas.OrderPage(
        items=[
            schemas.OrderSummary(
                id=r["id"],
                status=r["status"],
                total_amount=r["total_amount"],
                created_at=rfc3339(r["created_at"]),
                updated_at=rfc3339(r["updated_at"]),
                expires_at=rfc3339(r["expires_at"]),
                paid_at=optional_rfc3339(r["paid_at"]),
            )
            for r in page
        ],
        next_cursor=next_cursor(rows, limit),
    )


async def internal_order(deps: Deps, order_id: str) -> schemas.InternalOrder:
    async with deps.sessions() as session:
        row = await repo.get_order(session, order_id)
    if row is None:
        raise not_found("order")
    return schemas.InternalOrder(
        id=row["id"],
        buyer_id=row["buyer_id"],
        status=row["status"],
        total_amount=row["total_amount"],
        expires_at=rfc3339(row["expires_at"]),
        payment_id=row["payment_id"],
    )
