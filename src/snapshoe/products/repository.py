"""SQL (SQLAlchemy Core) of the products database, on a session it is given. Never commits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import exists, func, insert, or_, select, text, update
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.products.domain import Line, ReservationState, like_pattern
from snapshoe.products.tables import (
    buyer_holds,
    gate_state,
    items,
    products,
    reservation_lines,
    reservations,
)

_LIVE = (ReservationState.ACTIVE.value, ReservationState.COMMITTED.value)

# Catalog


async def insert_product(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(insert(products).values(**values))


async def update_product(session: AsyncSession, pid: str, values: dict[str, Any]) -> int:
    result = await session.execute(update(products).where(products.c.id == pid).values(**values))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def get_product(session: AsyncSession, pid: str) -> RowMapping | None:
    row = await session.execute(select(products).where(products.c.id == pid))
    return row.mappings().first()


async def find_product(session: AsyncSession, brand: str, name: str) -> RowMapping | None:
    row = await session.execute(
        select(products).where(products.c.brand == brand, products.c.name == name).limit(1)
    )
    return row.mappings().first()


async def list_products(
    session: AsyncSession,
    *,
    limit: int,
    after_id: str | None,
    brand: str | None,
    q: str | None,
    status: str | None,
    now: datetime,
) -> list[RowMapping]:
    """Newest first, keyset-paginated on the (unique, creation-ordered) id. Rows inserted
    later have larger ids, so they never shift the pages of a walk already under way."""
    in_stock = exists().where(items.c.product_id == products.c.id, items.c.available > 0)
    stmt = select(products, in_stock.label("in_stock")).order_by(products.c.id.desc())
    if after_id is not None:
        stmt = stmt.where(products.c.id < after_id)
    if brand:
        stmt = stmt.where(products.c.brand == brand)
    if q:
        pattern = like_pattern(q)
        stmt = stmt.where(
            or_(
                products.c.name.like(pattern, escape="\\"),
                products.c.brand.like(pattern, escape="\\"),
            )
        )
    if status == "upcoming":
        stmt = stmt.where(products.c.release_at > now)
    elif status == "live":
        stmt = stmt.where(products.c.release_at <= now, in_stock)
    elif status == "sold_out":
        stmt = stmt.where(products.c.release_at <= now, ~in_stock)
    result = await session.execute(stmt.limit(limit))
    return list(result.mappings().all())


async def insert_item(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(insert(items).values(**values))


async def get_item(session: AsyncSession, item_id: str) -> RowMapping | None:
    row = await session.execute(select(items).where(items.c.id == item_id))
    return row.mappings().first()


async def items_of(session: AsyncSession, pid: str) -> list[RowMapping]:
    result = await session.execute(
        select(items).where(items.c.product_id == pid).order_by(items.c.size, items.c.color)
    )
    return list(result.mappings().all())


async def item_details(session: AsyncSession, item_ids: Sequence[str]) -> list[RowMapping]:
    stmt = (
        select(
            items.c.id,
            items.c.product_id,
            items.c.size,
            items.c.color,
            items.c.available,
            func.coalesce(items.c.price, products.c.price).label("unit_price"),
            products.c.name.label("product_name"),
            products.c.brand,
            products.c.release_at,
            products.c.per_user_limit,
            products.c.stock_mode,
        )
        .join(products, products.c.id == items.c.product_id)
        .where(items.c.id.in_(list(item_ids)))
    )
    return list((await session.execute(stmt)).mappings().all())


async def adjust_stock(session: AsyncSession, item_id: str, delta: int) -> int:
    """Restock (+) or correction (-): only the available units move, so it can never go below
    what is sold or reserved."""
    result = await session.execute(
        update(items)
        .where(items.c.id == item_id, items.c.available + delta >= 0)
        .values(initial=items.c.initial + delta, available=items.c.available + delta)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# The gate epoch


async def epoch_shared(session: AsyncSession) -> int:
    """Held until commit: a rebuild (FOR UPDATE) waits for this ledger write to finish."""
    stmt = select(gate_state.c.epoch).where(gate_state.c.id == 1).with_for_update(read=True)
    return int((await session.execute(stmt)).scalar_one())


async def epoch_exclusive(session: AsyncSession) -> int:
    stmt = select(gate_state.c.epoch).where(gate_state.c.id == 1).with_for_update()
    return int((await session.execute(stmt)).scalar_one())


async def set_epoch(session: AsyncSession, epoch: int, run_id: str | None = None) -> None:
    values: dict[str, Any] = {"epoch": epoch}
    if run_id is not None:
        values["run_id"] = run_id
    await session.execute(update(gate_state).where(gate_state.c.id == 1).values(**values))


async def gate_instance(session: AsyncSession) -> tuple[int, str | None]:
    """(epoch, run_id of the Redis it was built on), without locking."""
    row = (
        await session.execute(
            select(gate_state.c.epoch, gate_state.c.run_id).where(gate_state.c.id == 1)
        )
    ).one()
    return int(row[0]), row[1]


# The ledger's per-buyer limit (buyer_holds)

MYSQL_CONSTRAINT_FAILED = 4025  # a CHECK refused the row


async def add_holds(session: AsyncSession, holds: Sequence[tuple[str, str, int, int]]) -> None:
    """(product_id, buyer_id, units, limit) added to what each buyer holds, in one statement
    (key order, so concurrent batches never deadlock on it). Raises (MariaDB 4025, the CHECK
    ``within_limit``) if any buyer would go over the product's limit."""
    if not holds:
        return
    rows = [{"product_id": p, "buyer_id": b, "units": u, "lim": n} for p, b, u, n in sorted(holds)]
    stmt = mysql_insert(buyer_holds).values(rows)
    stmt = stmt.on_duplicate_key_update(
        lim=stmt.inserted.lim, units=buyer_holds.c.units + stmt.inserted.units
    )
    await session.execute(stmt)


async def drop_holds(session: AsyncSession, buyer: str, units: Mapping[str, int]) -> None:
    """A release gives the buyer's allowance back. No row (a db_lock product): nothing to do."""
    for pid, n in sorted(units.items()):
        await session.execute(
            update(buyer_holds)
            .where(
                buyer_holds.c.product_id == pid,
                buyer_holds.c.buyer_id == buyer,
                buyer_holds.c.units >= n,
            )
            .values(units=buyer_holds.c.units - n)
        )


# Stock modes and the row-lock baseline (``stock_mode = 'db_lock'``)


async def stock_modes(session: AsyncSession, pids: Sequence[str]) -> dict[str, str]:
    result = await session.execute(
        select(products.c.id, products.c.stock_mode).where(products.c.id.in_(list(pids)))
    )
    return {str(r[0]): str(r[1]) for r in result.all()}


async def lock_products(session: AsyncSession, pids: Sequence[str]) -> list[RowMapping]:
    """The products' rows FOR UPDATE, in id order (one lock order: no deadlocks)."""
    stmt = (
        select(products.c.id, products.c.release_at, products.c.per_user_limit)
        .where(products.c.id.in_(list(pids)))
        .order_by(products.c.id)
        .with_for_update()
    )
    return list((await session.execute(stmt)).mappings().all())


async def lock_items(session: AsyncSession, item_ids: Sequence[str]) -> dict[str, int]:
    """``available`` of each item, its row locked FOR UPDATE, in id order."""
    stmt = (
        select(items.c.id, items.c.available)
        .where(items.c.id.in_(list(item_ids)))
        .order_by(items.c.id)
        .with_for_update()
    )
    return {str(r[0]): int(r[1]) for r in (await session.execute(stmt)).all()}


async def held_by_buyer(session: AsyncSession, pid: str, buyer: str) -> int:
    """Units the buyer holds of a product (ACTIVE and COMMITTED reservations)."""
    stmt = (
        select(func.coalesce(func.sum(reservation_lines.c.quantity), 0))
        .join(reservations, reservations.c.id == reservation_lines.c.reservation_id)
        .where(
            reservation_lines.c.product_id == pid,
            reservations.c.buyer_id == buyer,
            reservations.c.state.in_(_LIVE),
        )
    )
    return int((await session.execute(stmt)).scalar_one())


# Reservations and the ledger


async def insert_reservation(
    session: AsyncSession, rid: str, buyer: str, reserved_until: datetime, now: datetime
) -> None:
    """Raises IntegrityError if the id exists: the ledger's own idempotency guard."""
    await session.execute(
        insert(reservations).values(
            id=rid,
            buyer_id=buyer,
            state=ReservationState.ACTIVE.value,
            reserved_until=reserved_until,
            created_at=now,
            updated_at=now,
        )
    )


async def insert_reservations(
    session: AsyncSession, heads: Sequence[tuple[str, str, datetime]], now: datetime
) -> None:
    """Many ``(id, buyer, reserved_until)`` at once (one multi-row INSERT by the driver's
    executemany); raises IntegrityError if any id exists, and then none is written."""
    at = now
    await session.execute(
        insert(reservations),
        [
            {
                "id": rid,
                "buyer_id": buyer,
                "state": ReservationState.ACTIVE.value,
                "reserved_until": until,
                "created_at": at,
                "updated_at": at,
            }
            for rid, buyer, until in heads
        ],
    )


async def written_ids(session: AsyncSession, rids: Sequence[str]) -> set[str]:
    """Which of these reservation ids the ledger holds (tombstones included)."""
    stmt = select(reservations.c.id).where(reservations.c.id.in_(list(rids)))
    return set((await session.execute(stmt)).scalars().all())


async def insert_tombstone(session: AsyncSession, rid: str, now: datetime) -> None:
    """A RELEASED reservation without lines (and without a buyer): the id is spent."""
    await session.execute(
        insert(reservations)
        .prefix_with("IGNORE")
        .values(
            id=rid,
            buyer_id="",
            state=ReservationState.RELEASED.value,
            reserved_until=now,
            created_at=now,
            updated_at=now,
        )
    )


async def take_stock(session: AsyncSession, line: Line) -> int:
    result = await session.execute(
        update(items)
        .where(items.c.id == line.item_id, items.c.available >= line.quantity)
        .values(
            available=items.c.available - line.quantity,
            reserved=items.c.reserved + line.quantity,
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# One statement for a whole ledger batch: the (item, units) pairs travel as one JSON array,
# joined on the primary key in the array's order (item-id order, like every ledger write, so
# no deadlock). Per-item UPDATEs were half of the batch writer's CPU in py-spy.
_TAKE_MANY = text(
    "UPDATE JSON_TABLE(:takes, '$[*]' COLUMNS (id VARCHAR(32) PATH '$[0]', q INT PATH '$[1]')) "
    "AS t JOIN items AS i ON i.id = t.id "
    "SET i.available = i.available - t.q, i.reserved = i.reserved + t.q "
    "WHERE i.available >= t.q"
)


async def take_stock_many(session: AsyncSession, totals: Mapping[str, int]) -> bool:
    """Take every item's units, or report False (then the caller rolls back: some item had
    fewer units available than asked)."""
    takes = orjson.dumps(sorted(totals.items())).decode()
    result = await session.execute(_TAKE_MANY, {"takes": takes})
    return int(result.rowcount) == len(totals)  # type: ignore[attr-defined]


async def insert_lines(session: AsyncSession, rid: str, rows: list[dict[str, Any]]) -> None:
    await session.execute(insert(reservation_lines), [{"reservation_id": rid, **r} for r in rows])


async def insert_many_lines(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Lines of many reservations; each row carries its ``reservation_id``."""
    await session.execute(insert(reservation_lines), rows)


async def get_reservation(
    session: AsyncSession, rid: str, *, for_update: bool = False, tombstone: bool = False
) -> tuple[RowMapping, list[RowMapping]] | None:
    """The reservation and its lines; None if there is none. A tombstone (see
    :func:`insert_tombstone`) counts as none unless ``tombstone`` asks for it."""
    stmt = select(reservations).where(reservations.c.id == rid)
    if for_update:
        stmt = stmt.with_for_update()
    head = (await session.execute(stmt)).mappings().first()
    if head is None:
        return None
    lines = await session.execute(
        select(reservation_lines)
        .where(reservation_lines.c.reservation_id == rid)
        .order_by(reservation_lines.c.item_id)
    )
    found = list(lines.mappings().all())
    if not found and is_tombstone(head) and not tombstone:
        return None
    return head, found


def is_tombstone(head: RowMapping) -> bool:
    return bool(head["state"] == ReservationState.RELEASED.value and head["buyer_id"] == "")


async def move_state(
    session: AsyncSession, rid: str, expected: ReservationState, to: ReservationState, now: datetime
) -> int:
    values: dict[str, Any] = {"state": to.value, "updated_at": now}
    if expected is ReservationState.COMMITTED and to is ReservationState.RELEASED:
        values["refunded"] = 1
    result = await session.execute(
        update(reservations)
        .where(reservations.c.id == rid, reservations.c.state == expected.value)
        .values(**values)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def commit_stock(session: AsyncSession, item_id: str, qty: int) -> int:
    result = await session.execute(
        update(items)
        .where(items.c.id == item_id, items.c.reserved >= qty)
        .values(reserved=items.c.reserved - qty, sold=items.c.sold + qty)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def return_stock(session: AsyncSession, item_id: str, qty: int, *, from_sold: bool) -> int:
    col = items.c.sold if from_sold else items.c.reserved
    result = await session.execute(
        update(items)
        .where(items.c.id == item_id, col >= qty)
        .values({col: col - qty, items.c.available: items.c.available + qty})
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def expired_reservations(session: AsyncSession, now: datetime, limit: int) -> list[str]:
    result = await session.execute(
        select(reservations.c.id)
        .where(
            reservations.c.state == ReservationState.ACTIVE.value,
            reservations.c.reserved_until < now,
        )
        .order_by(reservations.c.reserved_until)
        .limit(limit)
    )
    return [str(r) for r in result.scalars().all()]


# Ledger snapshot (gate rebuild and reconcile)


async def all_products_meta(session: AsyncSession) -> list[RowMapping]:
    """Products the gate admits for (``db_lock`` products never enter the gate)."""
    result = await session.execute(
        select(products.c.id, products.c.release_at, products.c.per_user_limit).where(
            products.c.stock_mode == "gate"
        )
    )
    return list(result.mappings().all())


async def all_items_stock(session: AsyncSession) -> list[RowMapping]:
    result = await session.execute(
        select(
            items.c.id,
            items.c.product_id,
            items.c.initial,
            items.c.sold,
            items.c.reserved,
            items.c.available,
        )
    )
    return list(result.mappings().all())


async def held_units(session: AsyncSession) -> list[RowMapping]:
    """Units per (product, buyer) in ACTIVE and COMMITTED reservations."""
    stmt = (
        select(
            reservation_lines.c.product_id,
            reservations.c.buyer_id,
            func.sum(reservation_lines.c.quantity).label("units"),
        )
        .join(reservations, reservations.c.id == reservation_lines.c.reservation_id)
        .where(reservations.c.state.in_(_LIVE))
        .group_by(reservation_lines.c.product_id, reservations.c.buyer_id)
    )
    return list((await session.execute(stmt)).mappings().all())


async def applied_reservations(session: AsyncSession) -> dict[str, str]:
    """Live reservation id -> its first product id (the slot of its gate marker)."""
    stmt = (
        select(reservation_lines.c.reservation_id, func.min(reservation_lines.c.product_id))
        .join(reservations, reservations.c.id == reservation_lines.c.reservation_id)
        .where(reservations.c.state.in_(_LIVE))
        .group_by(reservation_lines.c.reservation_id)
    )
    return {str(r[0]): str(r[1]) for r in (await session.execute(stmt)).all()}


async def reserved_by_state(session: AsyncSession) -> list[RowMapping]:
    """Units per (item, state): what ``reserved`` and ``sold`` must add up to."""
    stmt = (
        select(
            reservation_lines.c.item_id,
            reservations.c.state,
            func.sum(reservation_lines.c.quantity).label("units"),
        )
        .join(reservations, reservations.c.id == reservation_lines.c.reservation_id)
        .group_by(reservation_lines.c.item_id, reservations.c.state)
    )
    return list((await session.execute(stmt)).mappings().all())
