"""SQL of the waiting room (tables ``queues`` and ``queue_tickets``), on a session it is given.
Never commits. docs/waiting-room.md explains the states and the locks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel.clock import to_db
from snapshoe.products.domain import TicketState
from snapshoe.products.tables import products, queue_tickets, queues

T = queue_tickets.c


async def create_queue(session: AsyncSession, pid: str) -> None:
    await session.execute(
        insert(queues)
        .values(product_id=pid, state="pre", next_place=1, head=0)
        .prefix_with("IGNORE")
    )


async def drop_queue(session: AsyncSession, pid: str) -> None:
    await session.execute(delete(queues).where(queues.c.product_id == pid))


async def lock_queue(session: AsyncSession, pid: str, *, shared: bool) -> RowMapping | None:
    """The queue's row, held until commit: SHARE by joins before the release (they do not
    wait for each other), FOR UPDATE by the release, the joins after it and the outflow."""
    stmt = select(queues).where(queues.c.product_id == pid).with_for_update(read=shared)
    return (await session.execute(stmt)).mappings().first()


async def get_queue(session: AsyncSession, pid: str) -> RowMapping | None:
    stmt = select(queues).where(queues.c.product_id == pid)
    return (await session.execute(stmt)).mappings().first()


async def has_tickets(session: AsyncSession, pid: str) -> bool:
    stmt = select(T.id).where(T.product_id == pid).limit(1)
    return (await session.execute(stmt)).first() is not None


async def ticket_of(session: AsyncSession, pid: str, buyer: str) -> RowMapping | None:
    stmt = select(queue_tickets).where(T.product_id == pid, T.buyer_id == buyer)
    return (await session.execute(stmt)).mappings().first()


async def tickets_of_product(session: AsyncSession, pid: str) -> list[RowMapping]:
    """Every ticket of a queue, for the streams of one process at once (queue_hub.py)."""
    stmt = select(queue_tickets).where(T.product_id == pid)
    return list((await session.execute(stmt)).mappings().all())


async def ticket_for_update(session: AsyncSession, ticket_id: str) -> RowMapping | None:
    stmt = select(queue_tickets).where(T.id == ticket_id).with_for_update()
    return (await session.execute(stmt)).mappings().first()


async def insert_ticket(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(insert(queue_tickets).values(**values))


async def take_place(session: AsyncSession, pid: str) -> int:
    """The next place after the release (the queue's row is held FOR UPDATE)."""
    row = (
        await session.execute(select(queues.c.next_place).where(queues.c.product_id == pid))
    ).one()
    await session.execute(
        update(queues).where(queues.c.product_id == pid).values(next_place=row[0] + 1)
    )
    return int(row[0])


async def rank_unranked(session: AsyncSession, pid: str) -> int:
    """The release: every ticket taken before it gets its place, in the order of its random
    ``lottery`` (ties, at 2^-62 a pair, by id). One statement; returns how many were ranked."""
    result = await session.execute(
        text(
            "UPDATE queue_tickets t JOIN ("
            " SELECT id, ROW_NUMBER() OVER (ORDER BY lottery, id) AS rn FROM queue_tickets"
            " WHERE product_id = :pid AND place IS NULL"
            ") r ON t.id = r.id SET t.place = r.rn"
        ),
        {"pid": pid},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def set_queue(session: AsyncSession, pid: str, **values: Any) -> None:
    await session.execute(update(queues).where(queues.c.product_id == pid).values(**values))


async def queues_due(session: AsyncSession, now: datetime) -> list[RowMapping]:
    """Queues the outflow has work on: released, or due for release, and not ended."""
    stmt = (
        select(queues.c.product_id, queues.c.state, products.c.admission_seconds)
        .join(products, products.c.id == queues.c.product_id)
        .where(
            products.c.sale_mode == "queue",
            queues.c.state != "ended",
            products.c.release_at <= now,
        )
    )
    return list((await session.execute(stmt)).mappings().all())


async def stock_and_outstanding(
    session: AsyncSession, pid: str, now: datetime
) -> tuple[int, int, int]:
    """The ledger's pairs on sale and held by unpaid orders, over the product's sizes, and the
    admissions that may still take a pair: admitted and unused, or used moments ago by an order
    whose reservation the ledger does not have yet. One statement, so one snapshot: under READ
    COMMITTED, separate reads let an order that lands between them count as neither a used
    admission nor a pair gone, and the outflow admitted one buyer too many."""
    row = (
        await session.execute(
            text(
                "SELECT"
                " (SELECT COALESCE(SUM(available), 0) FROM items WHERE product_id = :pid),"
                " (SELECT COALESCE(SUM(reserved), 0) FROM items WHERE product_id = :pid),"
                " (SELECT COUNT(*) FROM queue_tickets"
                "   WHERE product_id = :pid AND state = 'admitted'),"
                " (SELECT COUNT(*) FROM queue_tickets t"
                "   LEFT JOIN reservations r ON r.id = t.order_id"
                "   WHERE t.product_id = :pid AND t.state = 'used' AND r.id IS NULL"
                "   AND t.ended_at > :since)"
            ),
            {"pid": pid, "since": to_db(now - timedelta(seconds=CLAIM_GRACE_SECONDS))},
        )
    ).one()
    available, reserved, admitted, in_flight = (int(x) for x in row)
    return available, reserved, admitted + in_flight


async def count_states(session: AsyncSession, pid: str) -> dict[str, int]:
    stmt = select(T.state, func.count()).where(T.product_id == pid).group_by(T.state)
    return {str(s): int(n) for s, n in (await session.execute(stmt)).all()}


async def admitted_since(session: AsyncSession, pid: str, since: datetime) -> int:
    stmt = select(func.count()).where(T.product_id == pid, T.admitted_at >= since)
    return int((await session.execute(stmt)).scalar_one())


async def expire_lapsed(session: AsyncSession, pid: str, now: datetime) -> list[str]:
    """Admissions past their deadline, unused: expired. Returns their ticket ids."""
    lapsed = and_(T.product_id == pid, T.state == TicketState.ADMITTED, T.admitted_until <= now)
    ids = [str(r[0]) for r in (await session.execute(select(T.id).where(lapsed))).all()]
    if ids:
        await session.execute(
            update(queue_tickets)
            .where(T.id.in_(ids), T.state == TicketState.ADMITTED)
            .values(state=TicketState.EXPIRED, ended_at=now)
        )
    return ids


async def next_waiting(session: AsyncSession, pid: str, limit: int) -> list[RowMapping]:
    stmt = (
        select(T.id, T.buyer_id, T.place)
        .where(T.product_id == pid, T.state == TicketState.WAITING, T.place.is_not(None))
        .order_by(T.place)
        .limit(limit)
    )
    return list((await session.execute(stmt)).mappings().all())


async def admit(session: AsyncSession, ids: Sequence[str], now: datetime, until: datetime) -> None:
    await session.execute(
        update(queue_tickets)
        .where(T.id.in_(list(ids)), T.state == TicketState.WAITING)
        .values(state=TicketState.ADMITTED, admitted_at=now, admitted_until=until)
    )


async def end_waiting(session: AsyncSession, pid: str, now: datetime) -> int:
    result = await session.execute(
        update(queue_tickets)
        .where(T.product_id == pid, T.state == TicketState.WAITING)
        .values(state=TicketState.SOLD_OUT, ended_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def use_admission(
    session: AsyncSession, ticket_id: str, buyer: str, pid: str, order_id: str, now: datetime
) -> bool:
    """Admitted -> used by this order, if the admission is the buyer's, of this product and
    not lapsed; or already used by this same order (a retry of it)."""
    result = await session.execute(
        update(queue_tickets)
        .where(
            T.id == ticket_id,
            T.buyer_id == buyer,
            T.product_id == pid,
            T.state == TicketState.ADMITTED,
            T.admitted_until > now,
        )
        .values(state=TicketState.USED, order_id=order_id, ended_at=now)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        return True
    again = select(T.id).where(
        T.id == ticket_id,
        T.buyer_id == buyer,
        T.product_id == pid,
        T.state == TicketState.USED,
        T.order_id == order_id,
    )
    return (await session.execute(again)).first() is not None


async def give_back_admission(
    session: AsyncSession, ticket_id: str, order_id: str, now: datetime
) -> bool:
    """Used -> admitted again, when the order that used it was refused (sold out, limit)
    and the admission has time left; True if it was given back."""
    result = await session.execute(
        update(queue_tickets)
        .where(
            T.id == ticket_id,
            T.state == TicketState.USED,
            T.order_id == order_id,
            T.admitted_until > now,
        )
        .values(state=TicketState.ADMITTED, order_id=None, ended_at=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


# A used admission whose reservation is not (yet) in the ledger still holds its pair's place in
# the outflow for this long: the order is on its way (or failed and gives the admission back).
CLAIM_GRACE_SECONDS = 30


async def waiting_ranked(session: AsyncSession, pid: str) -> int:
    stmt = select(func.count()).where(
        T.product_id == pid, T.state == TicketState.WAITING, T.place.is_not(None)
    )
    return int((await session.execute(stmt)).scalar_one())


async def sale_mode(session: AsyncSession, pid: str) -> str | None:
    row = (await session.execute(select(products.c.sale_mode).where(products.c.id == pid))).first()
    return str(row[0]) if row is not None else None


async def open_queue_counts(session: AsyncSession) -> dict[str, dict[str, int]]:
    """Tickets by state of every queue not ended (the operators' gauges)."""
    stmt = (
        select(T.product_id, T.state, func.count())
        .join(queues, queues.c.product_id == T.product_id)
        .where(queues.c.state != "ended")
        .group_by(T.product_id, T.state)
    )
    out: dict[str, dict[str, int]] = {}
    for pid, state, n in (await session.execute(stmt)).all():
        out.setdefault(str(pid), {})[str(state)] = int(n)
    return out
