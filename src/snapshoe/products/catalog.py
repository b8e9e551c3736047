"""Catalog reads: the public product list and detail (cached; stock live from the gate), and
the internal item details the orders service asks for."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.engine import RowMapping

from snapshoe.kernel.clock import rfc3339, utcnow
from snapshoe.kernel.cursors import InvalidCursor
from snapshoe.kernel.errors import Problem, not_found
from snapshoe.products import repository as repo
from snapshoe.products import schemas
from snapshoe.products.deps import Deps
from snapshoe.products.domain import decode_cursor, encode_cursor, product_status


def _cursor(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return decode_cursor(value)
    except InvalidCursor as exc:
        raise Problem(422, "invalid_cursor", detail=str(exc)) from exc


async def list_products(
    deps: Deps,
    *,
    limit: int,
    cursor: str | None,
    brand: str | None,
    q: str | None,
    status: str | None,
) -> schemas.ProductPage:
    after = _cursor(cursor)

    async def load() -> schemas.ProductPage:
        now = utcnow()
        async with deps.sessions() as session:
            rows = await repo.list_products(
                session, limit=limit + 1, after_id=after, brand=brand, q=q, status=status, now=now
            )
        page = rows[:limit]
        return schemas.ProductPage(
            items=[
                schemas.ProductSummary(
                    id=r["id"],
                    name=r["name"],
                    brand=r["brand"],
                    price=r["price"],
                    release_at=rfc3339(r["release_at"]),
                    status=product_status(r["release_at"], 1 if r["in_stock"] else 0, now),
                    thumbnail_url=r["thumbnail_url"],
                    sale_mode=r["sale_mode"],
                )
                for r in page
            ],
            next_cursor=encode_cursor(page[-1]["id"]) if len(rows) > limit else None,
        )

    page: schemas.ProductPage = await deps.cache.get(("list", limit, after, brand, q, status), load)
    return page


@dataclass(frozen=True, slots=True)
class _CachedProduct:
    row: RowMapping
    items: list[RowMapping]


async def _cached_product(deps: Deps, pid: str) -> _CachedProduct | None:
    async def load() -> _CachedProduct | None:
        async with deps.sessions() as session:
            row = await repo.get_product(session, pid)
            if row is None:
                return None
            return _CachedProduct(row, await repo.items_of(session, pid))

    found: _CachedProduct | None = await deps.cache.get(("product", pid), load)
    return found


def product_detail(
    row: RowMapping | dict[str, Any],
    items: Sequence[RowMapping],
    remaining: dict[str, int] | None = None,
) -> schemas.ProductDetail:
    """The one ProductDetail: ``remaining`` is each item's live stock (the gate's), or, when
    not given, the ledger's ``available`` of the rows."""
    left = remaining if remaining is not None else {i["id"]: i["available"] for i in items}
    return schemas.ProductDetail(
        id=row["id"],
        name=row["name"],
        brand=row["brand"],
        description=row["description"],
        price=row["price"],
        release_at=rfc3339(row["release_at"]),
        status=product_status(row["release_at"], sum(left.values()), utcnow()),
        per_user_limit=row["per_user_limit"],
        thumbnail_url=row["thumbnail_url"],
        sale_mode=row["sale_mode"],
        queue_opens_at=rfc3339(q) if (q := row.get("queue_opens_at")) is not None else None,
        admission_seconds=row.get("admission_seconds"),
        entry_opens_at=_time(row.get("entry_opens_at")),
        entry_closes_at=_time(row.get("entry_closes_at")),
        draw_at=_time(row.get("draw_at")),
        items=[
            schemas.ItemOut(
                id=i["id"],
                size=i["size"],
                color=i["color"],
                price=i["price"] if i["price"] is not None else row["price"],
                available=left[i["id"]] > 0,
                stock_remaining=left[i["id"]],
            )
            for i in items
        ],
    )


def _time(value: Any) -> str | None:
    return rfc3339(value) if value is not None else None


async def get_product(deps: Deps, pid: str) -> schemas.ProductDetail:
    cached = await _cached_product(deps, pid)
    if cached is None:
        raise not_found("product")
    row, items = cached.row, cached.items
    # Stock is live from the gate (one HMGET), never from the cache; the cached ledger value
    # is only the fallback while the gate is being rebuilt.
    try:
        live = await deps.gate.stock(pid, [i["id"] for i in items])
    except RedisError:
        live = {}
    remaining = {
        i["id"]: max(0, v if (v := live.get(i["id"])) is not None else i["available"])
        for i in items
    }
    return product_detail(row, items, remaining)


async def item_details(deps: Deps, item_ids: Sequence[str]) -> schemas.ItemDetails:
    async with deps.sessions() as session:
        rows = await repo.item_details(session, item_ids)
    found = {r["id"]: r for r in rows}
    return schemas.ItemDetails(
        items=[
            schemas.ItemDetail(
                item_id=r["id"],
                product_id=r["product_id"],
                product_name=r["product_name"],
                brand=r["brand"],
                size=r["size"],
                color=r["color"],
                unit_price=r["unit_price"],
                available=r["available"] > 0,
                stock_remaining=r["available"],
                release_at=rfc3339(r["release_at"]),
                per_user_limit=r["per_user_limit"],
            )
            for i in dict.fromkeys(item_ids)
            if (r := found.get(i)) is not None
        ],
        missing=[i for i in dict.fromkeys(item_ids) if i not in found],
    )
