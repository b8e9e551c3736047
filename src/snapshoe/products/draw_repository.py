"""SQL of the draws (tables ``draws`` and ``draw_entries``), on a session it is given. Never
commits. docs/draws.md explains the states and the locks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel.clock import to_db
from snapshoe.kernel.draw_ranking import commitment_of, new_seed
from snapshoe.products.domain import EntryState
from snapshoe.products.tables import draw_entries, draws, items, products

E = draw_entries.c


async def create_draw(session: AsyncSession, pid: str) -> None:
    """The draw's row with a fresh seed (kept if the product already has one)."""
    seed = new_seed()
    await session.execute(
        insert(draws)
        .values(product_id=pid, seed=seed, commitment=commitment_of(seed), state="open")
        .prefix_with("IGNORE")
    )


async def drop_draw(session: AsyncSession, pid: str) -> None:
    await session.execute(delete(draws).where(draws.c.product_id == pid))


async def get_draw(session: AsyncSession, pid: str) -> RowMapping | None:
    return (
        (await session.execute(select(draws).where(draws.c.product_id == pid))).mappings().first()
    )


async def lock_draw(session: AsyncSession, pid: str) -> RowMapping | None:
    """The draw's row FOR UPDATE: the worker's steps hold it, so two workers never charge the
    same entrant or rank twice."""
    stmt = select(draws).where(draws.c.product_id == pid).with_for_update()
    return (await session.execute(stmt)).mappings().first()


async def set_draw(session: AsyncSession, pid: str, **values: Any) -> None:
    await session.execute(update(draws).where(draws.c.product_id == pid).values(**values))


async def draws_due(session: AsyncSession, now: datetime) -> list[RowMapping]:
    """Draws to work on: open ones past their draw time, and drawn ones not settled."""
    stmt = (
        select(draws.c.product_id, draws.c.state)
        .join(products, products.c.id == draws.c.product_id)
        .where(
            (draws.c.state == "drawn")
            | ((draws.c.state == "open") & (products.c.draw_at <= to_db(now)))
        )
    )
    return list((await session.execute(stmt)).mappings().all())


async def has_entries(session: AsyncSession, pid: str) -> bool:
    stmt = select(E.id).where(E.product_id == pid).limit(1)
    return (await session.execute(stmt)).first() is not None


async def entry_of(session: AsyncSession, pid: str, buyer: str) -> RowMapping | None:
    stmt = select(draw_entries).where(E.product_id == pid, E.buyer_id == buyer)
    return (await session.execute(stmt)).mappings().first()


async def entry_for_update(session: AsyncSession, pid: str, buyer: str) -> RowMapping | None:
    stmt = select(draw_entries).where(E.product_id == pid, E.buyer_id == buyer).with_for_update()
    return (await session.execute(stmt)).mappings().first()


async def insert_entry(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(insert(draw_entries).values(**values))


async def update_entry(session: AsyncSession, entry_id: str, **values: Any) -> None:
    await session.execute(update(draw_entries).where(E.id == entry_id).values(**values))


async def entries_to_rank(session: AsyncSession, pid: str) -> list[tuple[str, str]]:
    stmt = select(E.id, E.item_id).where(E.product_id == pid, E.state == EntryState.ENTERED)
    return [(str(a), str(b)) for a, b in (await session.execute(stmt)).all()]


async def set_ranks(session: AsyncSession, ranks: Sequence[tuple[str, int]]) -> None:
    if not ranks:
        return
    stmt = update(draw_entries).where(E.id == bindparam("eid")).values(rank=bindparam("r"))
    for start in range(0, len(ranks), 5000):
        chunk = ranks[start : start + 5000]
        await session.execute(stmt, [{"eid": e, "r": r} for e, r in chunk])


async def settle_charging(
    session: AsyncSession, pid: str, now: datetime
) -> dict[EntryState, list[str]]:
    """Charging entries whose reservation the ledger has settled: COMMITTED (the order was
    paid) -> won; RELEASED (declined, or the order failed, expired or was cancelled before it
    was paid) -> payment_failed. Returns the ids per new state."""
    rows = await session.execute(
        text(
            "SELECT e.id, r.state FROM draw_entries e JOIN reservations r ON r.id = e.order_id"
            " WHERE e.product_id = :pid AND e.state = 'charging'"
            " AND r.state IN ('COMMITTED', 'RELEASED')"
        ),
        {"pid": pid},
    )
    decided: dict[EntryState, list[str]] = {EntryState.WON: [], EntryState.PAYMENT_FAILED: []}
    for entry_id, state in rows.all():
        to = EntryState.WON if state == "COMMITTED" else EntryState.PAYMENT_FAILED
        decided[to].append(str(entry_id))
    for to, ids in decided.items():
        if ids:
            await session.execute(
                update(draw_entries)
                .where(E.id.in_(ids), E.state == EntryState.CHARGING)
                .values(state=to, decided_at=to_db(now), updated_at=to_db(now))
            )
    return decided


async def sizes(session: AsyncSession, pid: str) -> list[RowMapping]:
    """Per item of the product: the ledger's pairs on sale and held, and the entries waiting,
    charging without a reservation yet ("unplaced"), and charging."""
    rows = await session.execute(
        text(
            "SELECT i.id AS item_id, i.available, i.reserved,"
            " (SELECT COUNT(*) FROM draw_entries e WHERE e.product_id = :pid"
            "   AND e.item_id = i.id AND e.state = 'entered') AS waiting,"
            " (SELECT COUNT(*) FROM draw_entries e WHERE e.product_id = :pid"
            "   AND e.item_id = i.id AND e.state = 'charging') AS charging,"
            " (SELECT COUNT(*) FROM draw_entries e LEFT JOIN reservations r ON r.id = e.order_id"
            "   WHERE e.product_id = :pid AND e.item_id = i.id AND e.state = 'charging'"
            "   AND r.id IS NULL) AS unplaced"
            " FROM items i WHERE i.product_id = :pid ORDER BY i.id"
        ),
        {"pid": pid},
    )
    return list(rows.mappings().all())


async def next_ranked(session: AsyncSession, pid: str, item_id: str, n: int) -> list[RowMapping]:
    stmt = (
        select(E.id, E.buyer_id)
        .where(E.product_id == pid, E.item_id == item_id, E.state == EntryState.ENTERED)
        .order_by(E.rank)
        .limit(n)
    )
    return list((await session.execute(stmt)).mappings().all())


async def start_charges(
    session: AsyncSession, orders: Sequence[tuple[str, str]], now: datetime
) -> None:
    """``(entry_id, order_id)``: drawn for a charge, under that order id."""
    stmt = (
        update(draw_entries)
        .where(E.id == bindparam("eid"), E.state == EntryState.ENTERED)
        .values(
            state=EntryState.CHARGING,
            order_id=bindparam("oid"),
            charge_sent_at=to_db(now),
            updated_at=to_db(now),
        )
    )
    if orders:
        await session.execute(stmt, [{"eid": e, "oid": o} for e, o in orders])


async def charges_to_send(
    session: AsyncSession, pid: str, sent_before: datetime, limit: int
) -> list[RowMapping]:
    """Charging entries not asked for since ``sent_before`` (a worker died, a call failed):
    their order and charge are asked for again, under the same ids."""
    stmt = (
        select(draw_entries)
        .where(
            E.product_id == pid,
            E.state == EntryState.CHARGING,
            E.charge_sent_at < to_db(sent_before),
        )
        .order_by(E.charge_sent_at)
        .limit(limit)
    )
    return list((await session.execute(stmt)).mappings().all())


async def touch_sent(session: AsyncSession, entry_ids: Sequence[str], now: datetime) -> None:
    if entry_ids:
        await session.execute(
            update(draw_entries).where(E.id.in_(entry_ids)).values(charge_sent_at=to_db(now))
        )


async def back_to_entered(session: AsyncSession, entry_id: str, now: datetime) -> None:
    """A charge whose order could not take a pair (no reservation was written): the entrant
    waits again at their rank, under a new order id next time."""
    await session.execute(
        update(draw_entries)
        .where(E.id == entry_id, E.state == EntryState.CHARGING)
        .values(state=EntryState.ENTERED, order_id=None, updated_at=to_db(now))
    )


async def lose_the_rest(session: AsyncSession, pid: str, now: datetime) -> list[str]:
    ids = [
        str(r[0])
        for r in (
            await session.execute(
                select(E.id).where(E.product_id == pid, E.state == EntryState.ENTERED)
            )
        ).all()
    ]
    if ids:
        await session.execute(
            update(draw_entries)
            .where(E.product_id == pid, E.state == EntryState.ENTERED)
            .values(state=EntryState.LOST, decided_at=to_db(now), updated_at=to_db(now))
        )
    return ids


async def decided_entries(session: AsyncSession, entry_ids: Sequence[str]) -> list[RowMapping]:
    if not entry_ids:
        return []
    stmt = select(draw_entries).where(E.id.in_(list(entry_ids)))
    return list((await session.execute(stmt)).mappings().all())


async def published(session: AsyncSession, pid: str) -> list[RowMapping]:
    stmt = (
        select(E.id, E.item_id, E.state, E.rank)
        .where(E.product_id == pid, E.state != EntryState.WITHDRAWN)
        .order_by(E.item_id, E.rank, E.id)
    )
    return list((await session.execute(stmt)).mappings().all())


async def counts(session: AsyncSession, pid: str) -> dict[tuple[str, str], int]:
    """Entries per (item, state)."""
    stmt = (
        select(E.item_id, E.state, func.count())
        .where(E.product_id == pid)
        .group_by(E.item_id, E.state)
    )
    return {(str(i), str(s)): int(n) for i, s, n in (await session.execute(stmt)).all()}


async def items_of(session: AsyncSession, pid: str) -> list[RowMapping]:
    stmt = select(items).where(items.c.product_id == pid).order_by(items.c.id)
    return list((await session.execute(stmt)).mappings().all())


async def claim_of(
    session: AsyncSession, order_id: str, buyer_id: str, item_id: str
) -> RowMapping | None:
    """The charging entry an order of a draw-mode product belongs to, if any."""
    stmt = select(draw_entries).where(
        and_(
            E.order_id == order_id,
            E.buyer_id == buyer_id,
            E.item_id == item_id,
            E.state.in_((EntryState.CHARGING, EntryState.WON, EntryState.PAYMENT_FAILED)),
        )
    )
    return (await session.execute(stmt)).mappings().first()


async def product_name(session: AsyncSession, pid: str) -> str:
    row = (await session.execute(select(products.c.name).where(products.c.id == pid))).first()
    return str(row[0]) if row is not None else ""
