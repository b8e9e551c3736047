"""The ledger write of reservations the gate admitted: in group-commit batches
(:func:`write_admitted`, ``Deps.ledger``) or one at a time, with the gate's admission undone
when the ledger refuses or the write is known not to have landed."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter
from redis.exceptions import RedisError
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel.batching import OutcomeUnknown, fault, together_or_alone
from snapshoe.kernel.clock import rfc3339, utcnow
from snapshoe.kernel.errors import Problem
from snapshoe.products import repository as repo
from snapshoe.products import schemas
from snapshoe.products.deps import Admitted, Deps
from snapshoe.products.domain import Line, ProductLines
from snapshoe.products.problems import gate_unavailable, limit_exceeded
from snapshoe.products.reservations import reservation_out

log = logging.getLogger("snapshoe.products")

MYSQL_DUPLICATE_KEY = 1062
# Most admitted reservations one ledger transaction writes (group commit, see write_admitted).
LEDGER_BATCH_MAX = 64
LEDGER = "products_ledger"  # the group commit's name (metrics, test seam)


LEDGER_FALLBACKS = Counter(
    "snapshoe_products_ledger_batch_fallbacks_total",
    "Ledger batches refused as a whole and then written one reservation at a time",
)


class StaleEpoch(Exception):
    """The gate that admitted this reservation was rebuilt before it reached the ledger."""


class _LedgerRefused(Exception):
    def __init__(self, item_ids: list[str]) -> None:
        super().__init__(item_ids)
        self.item_ids = item_ids


class _LimitRefused(Exception):
    """The ledger's own per-buyer counter (buyer_holds) refused: the gate forgot a hold."""

    def __init__(self, product_id: str) -> None:
        super().__init__(product_id)
        self.product_id = product_id


def _is_constraint_failed(exc: DBAPIError) -> bool:
    args: tuple[Any, ...] = tuple(getattr(getattr(exc, "orig", None), "args", ()))
    return bool(args) and args[0] == repo.MYSQL_CONSTRAINT_FAILED


def _holds(
    buyer: str, lines: Sequence[Line], details: dict[str, RowMapping]
) -> list[tuple[str, str, int, int]]:
    """(product, buyer, units, limit) rows of one reservation for repo.add_holds."""
    units: dict[str, int] = defaultdict(int)
    limits: dict[str, int] = {}
    for x in lines:
        pid = details[x.item_id]["product_id"]
        units[pid] += x.quantity
        limits[pid] = int(details[x.item_id]["per_user_limit"])
    return [(pid, buyer, n, limits[pid]) for pid, n in units.items()]


def is_duplicate(exc: IntegrityError) -> bool:
    orig = getattr(exc, "orig", None)
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] == MYSQL_DUPLICATE_KEY


async def undo(deps: Deps, epoch: int, buyer: str, groups: list[ProductLines], rid: str) -> None:
    try:
        await deps.gate.give_back(epoch, buyer, groups, undo_rid=rid)
    except RedisError:
        log.warning("gate undo failed for %s; reconcile will repair", rid)


async def _undo_unless_written(
    deps: Deps, epoch: int, buyer: str, groups: list[ProductLines], rid: str
) -> bool:
    """False when it cannot be told whether ``rid`` reached the ledger (nothing undone)."""
    try:
        fault(LEDGER, "landed")
        async with deps.sessions() as session:
            written = await repo.get_reservation(session, rid) is not None
    except Exception:
        # Unknown: keep the admission. The gate then under-counts (refuses a pair it could
        # sell) until reconcile, which is safe; giving units back that the ledger sold is not.
        log.warning("cannot tell whether %s reached the ledger; reconcile will repair", rid)
        return False
    if not written:
        await undo(deps, epoch, buyer, groups, rid)
    return True


async def write_admitted(
    deps: Deps, batch: list[Admitted]
) -> list[schemas.ReservationOut | BaseException]:
    """The group-commit writer (Deps.ledger): the batch in one transaction, or, if that is
    refused (a duplicate id, a size the gate over-counted), each reservation written alone as
    a single one always is, so each still gets the ledger's own answer."""

    async def alone(a: Admitted) -> schemas.ReservationOut:
        return await write_reservation(deps, a.body, a.lines, a.groups, a.epoch, fresh=True)

    async def landed(prepared: Sequence[schemas.ReservationOut | BaseException]) -> bool:
        return await _written_after_all(deps, prepared)

    return await together_or_alone(
        deps.sessions,
        batch,
        write=_write_together,
        landed=landed,
        alone=alone,
        fallbacks=LEDGER_FALLBACKS,
        name=LEDGER,
    )


async def _write_together(
    session: AsyncSession, batch: list[Admitted]
) -> list[schemas.ReservationOut | BaseException]:
    epoch = await repo.epoch_shared(session)
    live = [a for a in batch if a.epoch == epoch]
    rows: dict[str, list[dict[str, Any]]] = {}
    if live:
        await repo.insert_reservations(
            session,
            [(a.body.reservation_id, a.body.buyer_id, a.body.reserved_until) for a in live],
            utcnow(),
        )
        totals: dict[str, int] = defaultdict(int)
        for a in live:
            for x in a.lines:
                totals[x.item_id] += x.quantity
        details = {r["id"]: r for r in await repo.item_details(session, list(totals))}
        # The ledger's own per-buyer limit: one statement for the batch; an over-limit buyer
        # fails it (the CHECK), and the one-by-one writes then say which reservation.
        holds: dict[tuple[str, str], int] = defaultdict(int)
        limits: dict[str, int] = {}
        for a in live:
            for pid, buyer, n, limit in _holds(a.body.buyer_id, a.lines, details):
                holds[(pid, buyer)] += n
                limits[pid] = limit
        await repo.add_holds(session, [(p, b, n, limits[p]) for (p, b), n in holds.items()])
        # The row locks are taken last, so they are held only for this update and the commit.
        if not await repo.take_stock_many(session, totals):
            raise _LedgerRefused(sorted(totals))  # which one: the one-by-one writes will tell
        for a in live:
            rows[a.body.reservation_id] = _line_rows(a.lines, details)
        await repo.insert_many_lines(
            session,
            [{"reservation_id": rid, **_stored(r)} for rid, lines in rows.items() for r in lines],
        )
    return [
        active_out(a.body, rows[a.body.reservation_id]) if a.epoch == epoch else StaleEpoch()
        for a in batch
    ]


async def _written_after_all(
    deps: Deps, prepared: Sequence[schemas.ReservationOut | BaseException]
) -> bool:
    """The batch's commit failed on its way (a lost connection): did it land? If that cannot
    be told either, the admissions are kept and the callers get the error: the gate then
    under-counts until reconcile, which is safe; giving back units the ledger sold is not."""
    ids = {out.reservation_id for out in prepared if isinstance(out, schemas.ReservationOut)}
    if not ids:
        return False
    try:
        async with deps.sessions() as session:
            written = await repo.written_ids(session, list(ids))
    except Exception:
        log.warning("cannot tell whether a ledger batch landed; reconcile will repair")
        raise
    return ids <= written


async def write_reservation(
    deps: Deps,
    body: schemas.ReserveIn,
    lines: list[Line],
    groups: list[ProductLines],
    epoch: int,
    *,
    fresh: bool,
) -> schemas.ReservationOut:
    rid, buyer = body.reservation_id, body.buyer_id
    try:
        async with deps.sessions.begin() as session:
            rows = await _write_one(session, body, lines, epoch)
        fault(LEDGER, "committed")
    except IntegrityError as exc:
        if fresh:
            await undo(deps, epoch, buyer, groups, rid)
        if not is_duplicate(exc):
            raise
        return await existing(deps, body, lines)
    except _LedgerRefused as exc:
        # The gate over-counted (it lags an admin correction or a crash): the ledger wins.
        if fresh:
            await undo(deps, epoch, buyer, groups, rid)
        raise Problem(409, "sold_out", detail="Not enough stock", item_ids=exc.item_ids) from exc
    except _LimitRefused as exc:
        # The gate let the buyer past the limit (it lost their holds): the ledger wins, with
        # the gate's own answer.
        if fresh:
            await undo(deps, epoch, buyer, groups, rid)
        raise limit_exceeded(exc.product_id) from exc
    except StaleEpoch:
        raise
    except Exception as exc:
        # The commit may have reached MariaDB before the failure (a lost connection): undo the
        # admission only if the ledger really lacks the reservation; if that cannot be told,
        # nothing is undone and the caller hears OutcomeUnknown.
        if fresh and not await asyncio.shield(
            _undo_unless_written(deps, epoch, buyer, groups, rid)
        ):
            raise OutcomeUnknown(f"reservation {rid}") from exc
        raise
    except BaseException:
        # A cancelled request: same look, shielded so it cannot be left half done.
        if fresh:
            await asyncio.shield(_undo_unless_written(deps, epoch, buyer, groups, rid))
        raise
    return active_out(body, rows)


async def _write_one(
    session: AsyncSession, body: schemas.ReserveIn, lines: list[Line], epoch: int
) -> list[dict[str, Any]]:
    """One reservation's ledger rows, in the caller's transaction (see write_reservation)."""
    rid, buyer = body.reservation_id, body.buyer_id
    if await repo.epoch_shared(session) != epoch:
        raise StaleEpoch
    # The primary key makes the ledger idempotent by itself (a replay whose gate marker is gone
    # lands here as a duplicate).
    await repo.insert_reservation(session, rid, buyer, body.reserved_until, utcnow())
    # Read before the stock update: from that update to the commit this transaction holds the
    # item's row lock, which every other buyer of the size waits for.
    details = await line_details(session, lines)
    for hold in _holds(buyer, lines, details):
        try:
            await repo.add_holds(session, [hold])
        except DBAPIError as exc:
            if not _is_constraint_failed(exc):
                raise
            raise _LimitRefused(hold[0]) from exc
    refused = [x.item_id for x in lines if not await repo.take_stock(session, x)]
    if refused:
        raise _LedgerRefused(refused)
    return await insert_lines(session, rid, lines, details)


async def line_details(session: AsyncSession, lines: list[Line]) -> dict[str, RowMapping]:
    return {r["id"]: r for r in await repo.item_details(session, [x.item_id for x in lines])}


async def insert_lines(
    session: AsyncSession,
    rid: str,
    lines: list[Line],
    details: dict[str, RowMapping] | None = None,
) -> list[dict[str, Any]]:
    """The reservation's lines with product, unit price and the item's display fields as the
    ledger has them now (the order snapshots these, see ``ReservedLine``); their stored
    columns inserted in the caller's transaction."""
    if details is None:
        details = await line_details(session, lines)
    rows = _line_rows(lines, details)
    await repo.insert_lines(session, rid, [_stored(r) for r in rows])
    return rows


# The columns of a stored reservation line; a line row (``_line_rows``) carries the item's
# display fields besides, for the answer (orders snapshots them without asking again).
_STORED = ("item_id", "product_id", "quantity", "unit_price")


def _line_rows(lines: list[Line], details: dict[str, RowMapping]) -> list[dict[str, Any]]:
    rows = []
    for x in lines:
        d = details[x.item_id]
        rows.append(
            {
                "item_id": x.item_id,
                "product_id": d["product_id"],
                "quantity": x.quantity,
                "unit_price": d["unit_price"],
                "product_name": d["product_name"],
                "size": d["size"],
                "color": d["color"],
            }
        )
    return rows


def _stored(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in _STORED}


def active_out(body: schemas.ReserveIn, rows: list[dict[str, Any]]) -> schemas.ReservationOut:
    """The answer to a reservation just written (gate or db_lock)."""
    return schemas.ReservationOut(
        reservation_id=body.reservation_id,
        buyer_id=body.buyer_id,
        state="ACTIVE",
        reserved_until=rfc3339(body.reserved_until),
        lines=[schemas.ReservedLine(**r) for r in rows],
        total_amount=sum(r["quantity"] * r["unit_price"] for r in rows),
    )


async def existing(
    deps: Deps, body: schemas.ReserveIn, lines: list[Line]
) -> schemas.ReservationOut:
    async with deps.sessions() as session:
        found = await repo.get_reservation(session, body.reservation_id, tombstone=True)
    if found is None:  # rolled back in between; the caller may retry
        raise gate_unavailable()
    return answer_existing(found, body, lines)


def answer_existing(
    found: tuple[RowMapping, list[RowMapping]], body: schemas.ReserveIn, lines: list[Line]
) -> schemas.ReservationOut:
    head, stored = found
    if not stored and repo.is_tombstone(head):
        raise Problem(
            409,
            "reservation_released",
            detail="This reservation id was released before the reservation reached the ledger",
        )
    same = head["buyer_id"] == body.buyer_id and [
        (s["item_id"], s["quantity"]) for s in stored
    ] == [(x.item_id, x.quantity) for x in lines]
    if not same:
        raise Problem(
            409,
            "reservation_id_reused",
            detail="This reservation id was used for other lines or another buyer",
        )
    return reservation_out(head, stored, changed=False)
