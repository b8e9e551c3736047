"""The reservation lifecycle after the reserve: commit (reserved -> sold), release or refund
(units and allowance back), reads, and the sweep of expired reservations."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import OperationalError

from snapshoe.kernel.clock import rfc3339, utcnow
from snapshoe.kernel.errors import Problem, not_found
from snapshoe.products import repository as repo
from snapshoe.products import schemas
from snapshoe.products.deps import Deps
from snapshoe.products.domain import Line, ProductLines, ReservationState, group_by_product

log = logging.getLogger("snapshoe.products")

MYSQL_RETRYABLE = (1205, 1213)  # lock wait timeout, deadlock


def reservation_out(
    head: RowMapping, lines: Sequence[RowMapping], *, changed: bool
) -> schemas.ReservationOut:
    return schemas.ReservationOut(
        reservation_id=head["id"],
        buyer_id=head["buyer_id"],
        state=head["state"],
        reserved_until=rfc3339(head["reserved_until"]),
        lines=[
            schemas.ReservedLine(
                item_id=line["item_id"],
                product_id=line["product_id"],
                quantity=line["quantity"],
                unit_price=line["unit_price"],
            )
            for line in lines
        ],
        total_amount=sum(line["quantity"] * line["unit_price"] for line in lines),
        refunded=bool(head["refunded"]),
        changed=changed,
    )


async def retrying(fn: Any, *args: Any, **kwargs: Any) -> Any:
    for attempt in range(3):
        try:
            return await fn(*args, **kwargs)
        except OperationalError as exc:
            code = getattr(getattr(exc, "orig", None), "args", (None,))[0]
            if code not in MYSQL_RETRYABLE or attempt == 2:
                raise
            await asyncio.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


async def modes_of(deps: Deps, pids: Sequence[str]) -> dict[str, str]:
    missing = [p for p in pids if p not in deps.product_modes]
    if missing:
        async with deps.sessions() as session:
            deps.product_modes.update(await repo.stock_modes(session, missing))
    return {p: deps.product_modes.get(p, "gate") for p in pids}


async def commit_reservation(deps: Deps, rid: str) -> schemas.ReservationOut:
    out: schemas.ReservationOut = await retrying(_commit, deps, rid)
    return out


async def _commit(deps: Deps, rid: str) -> schemas.ReservationOut:
    # Commit moves reserved -> sold: neither `available` nor a buyer's held units change, so the
    # gate is untouched.
    now = utcnow()
    async with deps.sessions.begin() as session:
        found = await repo.get_reservation(session, rid, for_update=True)
        if found is None:
            raise not_found("reservation")
        head, lines = found
        if head["state"] == ReservationState.COMMITTED:
            return reservation_out(head, lines, changed=False)
        if head["state"] == ReservationState.RELEASED:
            raise Problem(
                409, "reservation_released", detail="The reservation was released (expired?)"
            )
        if not await repo.move_state(
            session, rid, ReservationState.ACTIVE, ReservationState.COMMITTED, now
        ):
            raise Problem(409, "invalid_state", detail="The reservation changed concurrently")
        for line in lines:
            if not await repo.commit_stock(session, line["item_id"], line["quantity"]):
                raise RuntimeError(f"ledger: reserved < {line['quantity']} on {line['item_id']}")
        found = await repo.get_reservation(session, rid)
    assert found is not None
    return reservation_out(*found, changed=True)


async def release_reservation(
    deps: Deps, rid: str, *, only_expired_before: datetime | None = None
) -> schemas.ReservationOut:
    """Release (ACTIVE) or refund (COMMITTED): units go back to stock and the buyer's
    allowance comes back. A second call finds RELEASED and changes nothing. The sweeper passes
    ``only_expired_before`` and then only releases ACTIVE reservations past that time."""
    released = await retrying(_release, deps, rid, only_expired_before)
    if released is None:
        raise not_found("reservation")
    out, epoch, groups = released
    if groups:
        modes = await modes_of(deps, [g.product_id for g in groups])
        groups = [g for g in groups if modes[g.product_id] == "gate"]
    if out.changed and epoch is not None and groups:
        try:
            await deps.gate.give_back(epoch, out.buyer_id, groups)
        except RedisError:
            log.warning("gate give-back failed for %s; reconcile will repair", rid)
    result: schemas.ReservationOut = out
    return result


async def _release(
    deps: Deps, rid: str, only_expired_before: datetime | None
) -> tuple[schemas.ReservationOut, int | None, list[ProductLines]] | None:
    """None: no such reservation (now a tombstone, unless the sweeper asked)."""
    now = utcnow()
    async with deps.sessions.begin() as session:
        epoch = await repo.epoch_shared(session)
        found = await repo.get_reservation(session, rid, for_update=True)
        if found is None:
            if only_expired_before is None:
                # Released before it was made: the caller gave up on a reserve that may still
                # be on its way (a timeout under load). The tombstone, committed with this
                # transaction, makes that late reserve fail on the primary key instead of
                # holding pairs nobody will pay for until the sweeper.
                await repo.insert_tombstone(session, rid, now)
            return None  # leaving the block commits the tombstone
        head, lines = found
        state = ReservationState(head["state"])
        if state is ReservationState.RELEASED or (
            only_expired_before is not None
            and (
                state is not ReservationState.ACTIVE
                or head["reserved_until"] >= only_expired_before
            )
        ):
            return reservation_out(head, lines, changed=False), None, []
        if not await repo.move_state(session, rid, state, ReservationState.RELEASED, now):
            raise Problem(409, "invalid_state", detail="The reservation changed concurrently")
        for line in lines:
            ok = await repo.return_stock(
                session,
                line["item_id"],
                line["quantity"],
                from_sold=state is ReservationState.COMMITTED,
            )
            if not ok:
                raise RuntimeError(f"ledger: cannot return {line['quantity']} to {line['item_id']}")
        freed: dict[str, int] = defaultdict(int)
        for line in lines:
            freed[line["product_id"]] += line["quantity"]
        await repo.drop_holds(session, head["buyer_id"], freed)
        found = await repo.get_reservation(session, rid)
    assert found is not None
    groups = group_by_product(
        [Line(x["item_id"], x["quantity"]) for x in lines],
        {x["item_id"]: x["product_id"] for x in lines},
    )
    return reservation_out(*found, changed=True), epoch, groups


async def get_reservation(deps: Deps, rid: str) -> schemas.ReservationOut:
    async with deps.sessions() as session:
        found = await repo.get_reservation(session, rid)
    if found is None:
        raise not_found("reservation")
    return reservation_out(*found, changed=False)


async def sweep_expired(deps: Deps, *, grace: timedelta, batch: int = 200) -> int:
    """Release ACTIVE reservations whose ``reserved_until`` passed more than ``grace`` ago."""
    cutoff = utcnow() - grace
    async with deps.sessions() as session:
        due = await repo.expired_reservations(session, cutoff, batch)
    released = 0
    for rid in due:
        try:
            out = await release_reservation(deps, rid, only_expired_before=cutoff)
        except Problem:
            continue  # released or committed concurrently
        released += out.changed
    return released
