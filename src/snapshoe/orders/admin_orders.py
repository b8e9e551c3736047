"""The operator's reads of orders (role ``admin``): every buyer's orders page by page, narrowed
by status, product or buyer email, and one order with its history, whoever's it is.

Orders stores a buyer's id, not the address: a ``buyer_email`` filter is resolved to the
account's id by the users service's internal API first (an unknown address: an empty page).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.engine import RowMapping

from snapshoe.kernel.clients import UpstreamUnavailable
from snapshoe.kernel.clock import rfc3339
from snapshoe.kernel.errors import not_found
from snapshoe.orders import repository as repo
from snapshoe.orders import schemas
from snapshoe.orders.answers import unavailable
from snapshoe.orders.domain import Status
from snapshoe.orders.queries import lines_out, load_out, next_cursor, optional_rfc3339, page_after

if TYPE_CHECKING:
    from snapshoe.orders.deps import Deps


def _summary(row: RowMapping, lines: Sequence[RowMapping]) -> schemas.AdminOrderSummary:
    return schemas.AdminOrderSummary(
        id=row["id"],
        buyer_id=row["buyer_id"],
        status=row["status"],
        lines=lines_out(lines),
        total_amount=row["total_amount"],
        created_at=rfc3339(row["created_at"]),
        updated_at=rfc3339(row["updated_at"]),
        expires_at=rfc3339(row["expires_at"]),
        paid_at=optional_rfc3339(row["paid_at"]),
        refunded_at=optional_rfc3339(row["refunded_at"]),
        payment_id=row["payment_id"],
    )


async def _buyer_of(deps: Deps, email: str) -> str | None:
    try:
        return await deps.users.user_id_of_email(email)
    except UpstreamUnavailable as exc:
        raise unavailable("The accounts service") from exc


async def list_orders(
    deps: Deps,
    *,
    limit: int,
    cursor: str | None,
    status: Status | None = None,
    product_id: str | None = None,
    buyer_email: str | None = None,
) -> schemas.AdminOrderPage:
    """Newest first, on the buyer list's keyset and cursor: stable under inserts."""
    after = page_after(cursor)
    buyer_id = None
    if buyer_email is not None:
        buyer_id = await _buyer_of(deps, buyer_email)
        if buyer_id is None:
            return schemas.AdminOrderPage(items=[], next_cursor=None)
    async with deps.sessions() as session:
        rows = await repo.page_of_all(
            session,
            limit=limit + 1,
            after=after,
            status=status,
            product_id=product_id,
            buyer_id=buyer_id,
        )
        page = rows[:limit]
        lines = await repo.lines_of_orders(session, [r["id"] for r in page])
    return schemas.AdminOrderPage(
        items=[_summary(r, lines[r["id"]]) for r in page], next_cursor=next_cursor(rows, limit)
    )


async def get_order(deps: Deps, order_id: str) -> schemas.AdminOrderOut:
    """Any buyer's order with its lines and history; 404 ``not_found`` for an unknown id."""
    async with deps.sessions() as session:
        row = await repo.get_order(session, order_id)
        if row is None:
            raise not_found("order")
        out = await load_out(session, row)
    return schemas.AdminOrderOut(
        **out.model_dump(), buyer_id=row["buyer_id"], payment_id=row["payment_id"]
    )
