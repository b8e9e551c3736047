"""Stock at products, seen from orders: stock intents (``COMMITTING`` / ``RELEASING``)
carried out until products agrees (:func:`settle_one`, :func:`settle_stock`), and the
compensating release of a reservation no order was written for (:func:`release`)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import RowMapping

from snapshoe.kernel.clients import UpstreamProblem, UpstreamUnavailable
from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.contracts.orders import OrderRefundRequired
from snapshoe.kernel.messaging import add_to_outbox
from snapshoe.orders import repository as repo
from snapshoe.orders.domain import Status, StockState
from snapshoe.orders.tables import outbox

if TYPE_CHECKING:
    from snapshoe.orders.deps import Deps

log = logging.getLogger("snapshoe.orders")


async def settle_one(deps: Deps, order_id: str, intent: StockState) -> bool:
    """Carry out one stock intent at products. True when settled (or no longer wanted)."""
    try:
        if intent is StockState.COMMITTING:
            await deps.products.commit(order_id)
            final = StockState.COMMITTED
        else:
            await deps.products.release(order_id)
            final = StockState.RELEASED
    except UpstreamUnavailable as exc:
        log.warning("stock %s of %s postponed: %s", intent, order_id, exc)
        return False
    except UpstreamProblem as exc:
        if intent is StockState.COMMITTING and exc.code == "reservation_released":
            return await _reservation_lost(deps, order_id)
        if exc.status == 404:
            log.error("order %s has no reservation at products; marking %s", order_id, intent)
            final = StockState.COMMITTED if intent is StockState.COMMITTING else StockState.RELEASED
        else:
            log.warning("stock %s of %s refused: %s %s", intent, order_id, exc.status, exc.code)
            return False
    async with deps.sessions.begin() as session:
        await repo.settle_stock(session, order_id, expected=intent, to=final, now=utcnow())
    return True


async def _reservation_lost(deps: Deps, order_id: str) -> bool:
    """Paid, but products had already released the reservation (the sweeper's last-resort
    expiry): the order cannot be fulfilled, so it expires and the payment is refunded."""
    async with deps.sessions.begin() as session:
        row = await repo.get_order(session, order_id)
        if row is None or row["stock_state"] != StockState.COMMITTING:
            return True
        moved = await repo.transition(
            session,
            order_id,
            expected=Status(row["status"]),
            expected_stock=StockState.COMMITTING,
            to=Status.EXPIRED,
            now=utcnow(),
            stock_state=StockState.RELEASED,
            next_transition_at=None,
            reason="reservation_released",
        )
        if moved and row["payment_id"]:
            await add_to_outbox(
                session,
                outbox,
                OrderRefundRequired(
                    order_id=order_id,
                    buyer_id=row["buyer_id"],
                    payment_id=row["payment_id"],
                    reason="reservation_released",
                ),
            )
    log.error("order %s was paid after its reservation was released: refunding", order_id)
    return True


async def settle_stock(deps: Deps, *, batch: int = 100, concurrency: int = 16) -> tuple[int, int]:
    """Settle pending stock intents; returns (pending found, settled)."""
    async with deps.sessions() as session:
        rows = await repo.pending_stock(session, batch)
    if not rows:
        return 0, 0
    sem = asyncio.Semaphore(concurrency)

    async def one(row: RowMapping) -> bool:
        async with sem:
            return await settle_one(deps, row["id"], StockState(row["stock_state"]))

    results = await asyncio.gather(*(one(r) for r in rows))
    return len(rows), sum(results)


async def release(deps: Deps, order_id: str) -> None:
    """Give a reservation back (idempotent at products); an outage leaves it to the sweeper
    of products, which releases it at ``reserved_until``."""
    try:
        await deps.products.release(order_id)
    except UpstreamProblem as exc:
        if exc.status != 404:
            log.warning("release of %s refused: %s %s", order_id, exc.status, exc.code)
    except UpstreamUnavailable as exc:
        log.warning("release of %s failed (%s); the products sweeper will", order_id, exc)


def release_in_background(deps: Deps, order_id: str) -> None:
    spawn(deps, release(deps, order_id))


def spawn(deps: Deps, work: Any) -> None:
    task = asyncio.create_task(work)
    deps.background.add(task)
    task.add_done_callback(deps.background.discard)
