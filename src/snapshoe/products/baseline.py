"""The row-lock baseline (``stock_mode = 'db_lock'``), for the benchmark only: it exists when
``settings.bench_baselines`` is on (docs/products.md, "Stock modes")."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.errors import Problem
from snapshoe.kernel.settings import Settings
from snapshoe.products import repository as repo
from snapshoe.products import schemas
from snapshoe.products.deps import Deps
from snapshoe.products.domain import Line
from snapshoe.products.ledger import active_out, existing, insert_lines, is_duplicate
from snapshoe.products.problems import limit_exceeded
from snapshoe.products.reservations import retrying

BASELINE_MODE = "db_lock"


def refuse_unless_enabled(settings: Settings, stock_mode: str) -> None:
    """With the benchmark switch off, ``db_lock`` is not a value the API knows: the same 422
    as any value outside the field's choices."""
    if stock_mode == BASELINE_MODE and not settings.bench_baselines:
        raise Problem(
            422,
            "validation_error",
            detail="The request is not valid",
            errors=[
                {
                    "field": "body.stock_mode",
                    "message": "Input should be 'gate'",
                    "type": "literal_error",
                }
            ],
        )


async def reserve_db_lock(
    deps: Deps, body: schemas.ReserveIn, lines: list[Line]
) -> schemas.ReservationOut:
    out: schemas.ReservationOut = await retrying(_reserve_db_lock, deps, body, lines)
    return out


async def _reserve_db_lock(
    deps: Deps, body: schemas.ReserveIn, lines: list[Line]
) -> schemas.ReservationOut:
    """The obvious design, kept as a benchmark/teaching baseline (``stock_mode = 'db_lock'``):
    every attempt, sold out or not, is a transaction of row locks. With a per-buyer limit the
    product row is locked FOR UPDATE first: under READ COMMITTED a locked SUM takes no gap
    lock, so without it one buyer could take two sizes at once. That lock serializes the drop."""
    rid, buyer = body.reservation_id, body.buyer_id
    now = utcnow()
    item_ids = sorted({x.item_id for x in lines})
    try:
        async with deps.sessions.begin() as session:
            metas = await repo.lock_products(
                session, sorted({deps.item_products[i] for i in item_ids})
            )
            for m in metas:
                if now < m["release_at"]:
                    raise Problem(
                        409,
                        "drop_not_open",
                        detail="The drop has not started",
                        product_id=m["id"],
                    )
            available = await repo.lock_items(session, item_ids)
            short = [x.item_id for x in lines if available.get(x.item_id, 0) < x.quantity]
            if short:
                # stock_mode tells orders not to remember this refusal as a sold-out hint:
                # the baseline asks the database on every attempt, as the obvious design does.
                raise Problem(
                    409, "sold_out", detail="Not enough stock", item_ids=short, stock_mode="db_lock"
                )
            for m in metas:
                if m["per_user_limit"] <= 0:
                    continue
                units = sum(x.quantity for x in lines if deps.item_products[x.item_id] == m["id"])
                held = await repo.held_by_buyer(session, m["id"], buyer)
                if held + units > m["per_user_limit"]:
                    raise limit_exceeded(m["id"])
            await repo.insert_reservation(session, rid, buyer, body.reserved_until, now)
            for x in lines:
                if not await repo.take_stock(session, x):  # cannot fail under the row lock
                    raise RuntimeError(f"ledger: {x.item_id} changed under its row lock")
            rows = await insert_lines(session, rid, lines)
    except IntegrityError as exc:
        if not is_duplicate(exc):
            raise
        return await existing(deps, body, lines)
    return active_out(body, rows)
