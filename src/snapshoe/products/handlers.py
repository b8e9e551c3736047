"""Commands and queries of the products service. Each opens its one transaction.

The drop path: :func:`reserve` asks the Redis gate first (one Lua call; refusals end there),
then writes the admitted reservation to the DB ledger with conditional updates. The ledger is
the truth; the gate is rebuilt from it whenever its keys are missing or wrong.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from redis.exceptions import RedisError
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel.batching import OutcomeUnknown, fault, together_or_alone
from snapshoe.kernel.errors import Problem, not_found
from snapshoe.products import repository as repo
from snapshoe.products import schemas
from snapshoe.products.domain import (
    InvalidCursor,
    Line,
    ProductLines,
    ReservationState,
    decode_cursor,
    encode_cursor,
    epoch_ms,
    group_by_product,
    merge_lines,
    new_id,
    product_status,
    rfc3339,
    to_db,
    utcnow,
)
from snapshoe.products.gate import ProductGate

if TYPE_CHECKING:
    from snapshoe.kernel.settings import Settings
    from snapshoe.products.bootstrap import Deps

log = logging.getLogger("snapshoe.products")

MYSQL_DUPLICATE_KEY = 1062
MYSQL_RETRYABLE = (1205, 1213)  # lock wait timeout, deadlock
GATE_WAIT_SECONDS = 5.0
RESERVE_ATTEMPTS = 8
# A retry the gate recognises waits this long for its first attempt's ledger write.
REPLAY_WAIT_SECONDS = 3.0
REPLAY_POLL_SECONDS = 0.02
# Most admitted reservations one ledger transaction writes (group commit, see write_admitted).
LEDGER_BATCH_MAX = 64
LEDGER = "products_ledger"  # the group commit's name (metrics, test seam)


LEDGER_FALLBACKS = Counter(
    "snapshoe_products_ledger_batch_fallbacks_total",
    "Ledger batches refused as a whole and then written one reservation at a time",
)


def outcome_unknown() -> Problem:
    return Problem(
        503,
        "outcome_unknown",
        detail="The reservation may or may not have been written; retry with the same id",
        headers={"Retry-After": "1"},
    )


def limit_exceeded(product_id: str | None) -> Problem:
    return Problem(
        409,
        "purchase_limit_exceeded",
        detail="The per-buyer limit of this drop is reached",
        product_id=product_id,
    )


def gate_unavailable() -> Problem:
    return Problem(
        503,
        "stock_gate_unavailable",
        detail="Stock is being recounted; retry shortly",
        headers={"Retry-After": "1"},
    )


# Catalog: reads


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
    return schemas.ProductDetail(
        id=row["id"],
        name=row["name"],
        brand=row["brand"],
        description=row["description"],
        price=row["price"],
        release_at=rfc3339(row["release_at"]),
        status=product_status(row["release_at"], sum(remaining.values()), utcnow()),
        per_user_limit=row["per_user_limit"],
        thumbnail_url=row["thumbnail_url"],
        items=[
            schemas.ItemOut(
                id=i["id"],
                size=i["size"],
                color=i["color"],
                price=i["price"] if i["price"] is not None else row["price"],
                available=remaining[i["id"]] > 0,
                stock_remaining=remaining[i["id"]],
            )
            for i in items
        ],
    )


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


# Catalog: admin commands


def _product_out(
    row: RowMapping | dict[str, Any], items: Sequence[RowMapping]
) -> schemas.ProductDetail:
    now = utcnow()
    remaining = sum(i["available"] for i in items)
    return schemas.ProductDetail(
        id=row["id"],
        name=row["name"],
        brand=row["brand"],
        description=row["description"],
        price=row["price"],
        release_at=rfc3339(row["release_at"]),
        status=product_status(row["release_at"], remaining, now),
        per_user_limit=row["per_user_limit"],
        thumbnail_url=row["thumbnail_url"],
        items=[
            schemas.ItemOut(
                id=i["id"],
                size=i["size"],
                color=i["color"],
                price=i["price"] if i["price"] is not None else row["price"],
                available=i["available"] > 0,
                stock_remaining=i["available"],
            )
            for i in items
        ],
    )


async def _register_quietly(deps: Deps, epoch: int, row: RowMapping, avail: dict[str, int]) -> None:
    """Tell the gate; if Redis is down the rebuild will read the ledger anyway."""
    if row.get("stock_mode", "gate") != "gate":
        return  # a db_lock product never enters the gate
    try:
        await deps.gate.register(
            epoch, row["id"], epoch_ms(row["release_at"]), row["per_user_limit"], avail
        )
    except RedisError:
        log.warning("gate register failed for product %s; reconcile will repair", row["id"])


async def create_product(deps: Deps, body: schemas.ProductCreate) -> schemas.ProductDetail:
    now = utcnow()
    pid = new_id()
    async with deps.sessions.begin() as session:
        epoch = await repo.epoch_shared(session)
        await repo.insert_product(
            session,
            {
                "id": pid,
                **body.model_dump(exclude={"release_at"}),
                "release_at": to_db(body.release_at),
                "created_at": to_db(now),
                "updated_at": to_db(now),
            },
        )
        row = await repo.get_product(session, pid)
    assert row is not None
    await _register_quietly(deps, epoch, row, {})
    deps.cache.clear()
    return _product_out(row, [])


async def patch_product(deps: Deps, pid: str, body: schemas.ProductPatch) -> schemas.ProductDetail:
    values = body.model_dump(exclude_unset=True)
    for required in ("name", "brand", "description", "price", "release_at", "per_user_limit"):
        if required in values and values[required] is None:
            raise Problem(422, "validation_error", detail=f"{required} cannot be null")
    if "release_at" in values:
        values["release_at"] = to_db(values["release_at"])
    async with deps.sessions.begin() as session:
        epoch = await repo.epoch_shared(session)
        if await repo.get_product(session, pid) is None:
            raise not_found("product")
        if values:
            await repo.update_product(session, pid, {**values, "updated_at": to_db(utcnow())})
        row = await repo.get_product(session, pid)
        items = await repo.items_of(session, pid)
    assert row is not None
    await _register_quietly(deps, epoch, row, {})
    deps.cache.clear()
    return _product_out(row, items)


def _admin_item(row: RowMapping, product_price: int) -> schemas.AdminItem:
    return schemas.AdminItem(
        id=row["id"],
        product_id=row["product_id"],
        size=row["size"],
        color=row["color"],
        price=row["price"] if row["price"] is not None else product_price,
        initial=row["initial"],
        sold=row["sold"],
        reserved=row["reserved"],
        available=row["available"],
    )


async def create_item(deps: Deps, pid: str, body: schemas.ItemCreate) -> schemas.AdminItem:
    item_id = new_id()
    async with deps.sessions.begin() as session:
        epoch = await repo.epoch_shared(session)
        product = await repo.get_product(session, pid)
        if product is None:
            raise not_found("product")
        await repo.insert_item(
            session,
            {
                "id": item_id,
                "product_id": pid,
                "size": body.size,
                "color": body.color,
                "price": body.price,
                "initial": body.stock,
                "sold": 0,
                "reserved": 0,
                "available": body.stock,
                "created_at": to_db(utcnow()),
            },
        )
        row = await repo.get_item(session, item_id)
    assert row is not None
    deps.item_products[item_id] = pid
    await _register_quietly(deps, epoch, product, {item_id: body.stock})
    deps.cache.clear()
    return _admin_item(row, product["price"])


async def adjust_item(deps: Deps, item_id: str, body: schemas.ItemPatch) -> schemas.AdminItem:
    async with deps.sessions.begin() as session:
        epoch = await repo.epoch_shared(session)
        if body.stock_delta and not await repo.adjust_stock(session, item_id, body.stock_delta):
            if await repo.get_item(session, item_id) is None:
                raise not_found("item")
            raise Problem(
                409,
                "stock_below_committed",
                detail="Stock cannot go below what is already sold or reserved",
                item_id=item_id,
            )
        row = await repo.get_item(session, item_id)
        if row is None:
            raise not_found("item")
        product = await repo.get_product(session, row["product_id"])
    assert product is not None
    if body.stock_delta:
        try:
            await deps.gate.adjust(epoch, row["product_id"], item_id, body.stock_delta)
        except RedisError:
            log.warning("gate adjust failed for item %s; reconcile will repair", item_id)
    deps.cache.clear()
    return _admin_item(row, product["price"])


# The drop path


class _StaleEpoch(Exception):
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


def _is_duplicate(exc: IntegrityError) -> bool:
    orig = getattr(exc, "orig", None)
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] == MYSQL_DUPLICATE_KEY


async def _products_of(deps: Deps, item_ids: Sequence[str]) -> dict[str, str]:
    missing = [i for i in item_ids if i not in deps.item_products]
    if missing:
        async with deps.sessions() as session:
            for r in await repo.item_details(session, missing):
                deps.item_products[r["id"]] = r["product_id"]
                deps.product_modes[r["product_id"]] = r["stock_mode"]
    unknown = [i for i in item_ids if i not in deps.item_products]
    if unknown:
        raise Problem(404, "not_found", detail="Unknown item", item_ids=unknown)
    return {i: deps.item_products[i] for i in item_ids}


async def _modes_of(deps: Deps, pids: Sequence[str]) -> dict[str, str]:
    missing = [p for p in pids if p not in deps.product_modes]
    if missing:
        async with deps.sessions() as session:
            deps.product_modes.update(await repo.stock_modes(session, missing))
    return {p: deps.product_modes.get(p, "gate") for p in pids}


async def _register_products(deps: Deps, pids: Sequence[str]) -> None:
    async with deps.sessions.begin() as session:
        epoch = await repo.epoch_shared(session)
        loaded = []
        for pid in pids:
            row = await repo.get_product(session, pid)
            if row is not None:
                loaded.append((row, await repo.items_of(session, pid)))
    for row, items in loaded:
        await _register_quietly(deps, epoch, row, {i["id"]: i["available"] for i in items})


async def ensure_gate(deps: Deps) -> None:
    """Open the gate if it is closed: one caller rebuilds it from the ledger under a lock,
    everyone else waits for it to open."""
    gate = deps.gate
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GATE_WAIT_SECONDS
    while await gate.epoch() is None:
        token = secrets.token_hex(8)
        if await gate.try_lock(token):
            try:
                await rebuild_gate(deps)
            finally:
                await gate.unlock(token)
            return
        if loop.time() > deadline:
            raise gate_unavailable()
        await asyncio.sleep(0.02)


async def verify_gate(deps: Deps) -> bool:
    """Is the gate's Redis the one it was built on, at the ledger's epoch (``gate_state``)?
    Then this process trusts it (caches epoch and run id). If not (a restart from an older
    snapshot, a failover, a rebuild this process missed the start of), the gate is closed and
    rebuilt from the ledger before anyone is admitted. True when the caller must ask the gate
    again (its answer came from a gate this process no longer trusts)."""
    gate = deps.gate
    before = (gate.expected_epoch, gate.expected_run_id)
    async with deps.gate_lock:
        if gate.expected_epoch is not None and before != (
            gate.expected_epoch,
            gate.expected_run_id,
        ):
            return True  # verified by another request while this one waited: ask again
        for _ in range(3):
            run_id = await gate.run_id()
            ready = await gate.epoch()
            async with deps.sessions() as session:
                epoch, built_on = await repo.gate_instance(session)
            if ready is not None and ready == epoch and built_on == run_id:
                gate.trust(epoch, run_id)
                return before != (epoch, run_id)
            if ready is not None:
                log.warning(
                    "stock gate is not the one the ledger built: rebuilding",
                    extra={
                        "gate_epoch": ready,
                        "ledger_epoch": epoch,
                        "run_id": run_id,
                        "built_on": built_on,
                    },
                )
                await gate.close()
            await ensure_gate(deps)
        raise gate_unavailable()


async def watch_gate(deps: Deps) -> None:
    """Every ``gate_check_seconds``: a Redis whose run id is not the one the gate was built on
    (behind a proxy that keeps our connections, say) is verified and rebuilt. One INFO a
    second; nothing on the request path."""
    gate = deps.gate
    while True:
        await asyncio.sleep(deps.settings.gate_check_seconds)
        try:
            if gate.expected_run_id is None:
                continue  # verified by the first reservation
            gate.seen(await gate.run_id())
            if gate.suspect:
                await verify_gate(deps)
        except (RedisError, OperationalError, Problem) as exc:
            log.warning("stock gate check failed: %r", exc)


def _reservation_out(
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


async def reserve(deps: Deps, body: schemas.ReserveIn) -> schemas.ReservationOut:
    lines = merge_lines(Line(x.item_id, x.quantity) for x in body.lines)
    product_of = await _products_of(deps, [x.item_id for x in lines])
    groups = group_by_product(lines, product_of)
    modes = await _modes_of(deps, [g.product_id for g in groups])
    if "db_lock" in modes.values():
        if set(modes.values()) != {"db_lock"}:
            raise Problem(
                422,
                "mixed_stock_modes",
                detail="A reservation cannot mix db_lock and gate products",
            )
        out: schemas.ReservationOut = await _retrying(_reserve_db_lock, deps, body, lines)
        return out
    rid, buyer = body.reservation_id, body.buyer_id
    gate = deps.gate
    try:
        if gate.expected_epoch is None:
            await verify_gate(deps)  # once per process: learn what the gate was built on
        for _ in range(RESERVE_ATTEMPTS):
            verdict = await gate.reserve(rid, buyer, groups, epoch_ms(utcnow()))
            # A connection just met another Redis: no answer of it counts until verified
            # (an attribute read on the hot path; the check ran when the connection opened).
            if gate.suspect and await verify_gate(deps):
                continue
            if verdict.outcome == "closed":
                await ensure_gate(deps)
            elif verdict.outcome == "stale":
                await verify_gate(deps)
            elif verdict.outcome in ("unknown_product", "unknown_item"):
                await _register_products(deps, [g.product_id for g in groups])
            elif verdict.outcome == "not_open":
                raise Problem(
                    409,
                    "drop_not_open",
                    detail="The drop has not started",
                    product_id=verdict.product_id,
                )
            elif verdict.outcome == "sold_out":
                raise Problem(
                    409, "sold_out", detail="Not enough stock", item_ids=list(verdict.item_ids)
                )
            elif verdict.outcome == "limit":
                raise limit_exceeded(verdict.product_id)
            else:
                try:
                    if verdict.outcome == "ok":
                        # Group commit: written with whatever else the gate admitted meanwhile.
                        return await deps.ledger.submit(
                            Admitted(body, lines, groups, verdict.epoch)
                        )
                    return await _replayed(deps, body, lines, groups, verdict.epoch)
                except _StaleEpoch:
                    continue  # admitted by a gate that no longer exists: ask the new one
                except OutcomeUnknown as exc:
                    # The reservation may be in the ledger: the gate keeps the admission
                    # (nothing given back); a retry of this id finds it (replay) or writes it.
                    raise outcome_unknown() from exc
    except RedisError as exc:
        log.warning("stock gate unreachable: %s", exc)
        raise gate_unavailable() from exc
    raise gate_unavailable()


async def _undo(deps: Deps, epoch: int, buyer: str, groups: list[ProductLines], rid: str) -> None:
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
        await _undo(deps, epoch, buyer, groups, rid)
    return True


@dataclass(frozen=True, slots=True)
class Admitted:
    """A reservation the gate has just admitted, on its way to the ledger (Deps.ledger)."""

    body: schemas.ReserveIn
    lines: list[Line]
    groups: list[ProductLines]
    epoch: int


async def write_admitted(
    deps: Deps, batch: list[Admitted]
) -> list[schemas.ReservationOut | BaseException]:
    """The group-commit writer (Deps.ledger): the batch in one transaction, or, if that is
    refused (a duplicate id, a size the gate over-counted), each reservation written alone as
    a single one always is, so each still gets the ledger's own answer."""

    async def alone(a: Admitted) -> schemas.ReservationOut:
        return await _write_reservation(deps, a.body, a.lines, a.groups, a.epoch, fresh=True)

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
            [{"reservation_id": rid, **r} for rid, lines in rows.items() for r in lines],
        )
    return [
        _active_out(a.body, rows[a.body.reservation_id]) if a.epoch == epoch else _StaleEpoch()
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


async def _write_reservation(
    deps: Deps,
    body: schemas.ReserveIn,
    lines: list[Line],
    groups: list[ProductLines],
    epoch: int,
    *,
    fresh: bool,
) -> schemas.ReservationOut:
    rid, buyer = body.reservation_id, body.buyer_id
    now = utcnow()
    try:
        async with deps.sessions.begin() as session:
            if await repo.epoch_shared(session) != epoch:
                raise _StaleEpoch
            # The primary key makes the ledger idempotent by itself (a replay whose gate marker
            # is gone lands here as a duplicate).
            await repo.insert_reservation(session, rid, buyer, body.reserved_until, now)
            # Read before the stock update: from that update to the commit this transaction
            # holds the item's row lock, which every other buyer of the size waits for.
            details = await _line_details(session, lines)
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
            rows = await _insert_lines(session, rid, lines, details)
        fault(LEDGER, "committed")
    except IntegrityError as exc:
        if fresh:
            await _undo(deps, epoch, buyer, groups, rid)
        if not _is_duplicate(exc):
            raise
        return await _existing(deps, body, lines)
    except _LedgerRefused as exc:
        # The gate over-counted (it lags an admin correction or a crash): the ledger wins.
        if fresh:
            await _undo(deps, epoch, buyer, groups, rid)
        raise Problem(409, "sold_out", detail="Not enough stock", item_ids=exc.item_ids) from exc
    except _LimitRefused as exc:
        # The gate let the buyer past the limit (it lost their holds): the ledger wins, with
        # the gate's own answer.
        if fresh:
            await _undo(deps, epoch, buyer, groups, rid)
        raise limit_exceeded(exc.product_id) from exc
    except _StaleEpoch:
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
    return _active_out(body, rows)


async def _line_details(session: AsyncSession, lines: list[Line]) -> dict[str, RowMapping]:
    return {r["id"]: r for r in await repo.item_details(session, [x.item_id for x in lines])}


async def _insert_lines(
    session: AsyncSession,
    rid: str,
    lines: list[Line],
    details: dict[str, RowMapping] | None = None,
) -> list[dict[str, Any]]:
    """The reservation's lines with product and unit price as the ledger has them now (the
    order snapshots these), inserted in the caller's transaction."""
    if details is None:
        details = await _line_details(session, lines)
    rows = _line_rows(lines, details)
    await repo.insert_lines(session, rid, rows)
    return rows


def _line_rows(lines: list[Line], details: dict[str, RowMapping]) -> list[dict[str, Any]]:
    return [
        {
            "item_id": x.item_id,
            "product_id": details[x.item_id]["product_id"],
            "quantity": x.quantity,
            "unit_price": details[x.item_id]["unit_price"],
        }
        for x in lines
    ]


def _active_out(body: schemas.ReserveIn, rows: list[dict[str, Any]]) -> schemas.ReservationOut:
    """The answer to a reservation just written (gate or db_lock)."""
    return schemas.ReservationOut(
        reservation_id=body.reservation_id,
        buyer_id=body.buyer_id,
        state="ACTIVE",
        reserved_until=rfc3339(body.reserved_until),
        lines=[schemas.ReservedLine(**r) for r in rows],
        total_amount=sum(r["quantity"] * r["unit_price"] for r in rows),
    )


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
                if to_db(now) < m["release_at"]:
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
            rows = await _insert_lines(session, rid, lines)
    except IntegrityError as exc:
        if not _is_duplicate(exc):
            raise
        return await _existing(deps, body, lines)
    return _active_out(body, rows)


async def _replayed(
    deps: Deps,
    body: schemas.ReserveIn,
    lines: list[Line],
    groups: list[ProductLines],
    epoch: int,
) -> schemas.ReservationOut:
    """The gate already admitted this id (a retry racing its first attempt): that attempt's
    write is in flight, usually queued in a ledger batch. Wait for it rather than race it: had
    this request written first, that one would find a duplicate and give its units back to the
    gate, which would then count units the ledger has sold. Only if nothing has reached the
    ledger after REPLAY_WAIT_SECONDS (the first attempt's process died, or the ledger refused
    it) does this one try the write itself."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REPLAY_WAIT_SECONDS
    while True:
        async with deps.sessions() as session:
            found = await repo.get_reservation(session, body.reservation_id, tombstone=True)
        if found is not None:
            return _answer_existing(found, body, lines)
        if loop.time() > deadline:
            return await _write_reservation(deps, body, lines, groups, epoch, fresh=False)
        await asyncio.sleep(REPLAY_POLL_SECONDS)


async def _existing(
    deps: Deps, body: schemas.ReserveIn, lines: list[Line]
) -> schemas.ReservationOut:
    async with deps.sessions() as session:
        found = await repo.get_reservation(session, body.reservation_id, tombstone=True)
    if found is None:  # rolled back in between; the caller may retry
        raise gate_unavailable()
    return _answer_existing(found, body, lines)


def _answer_existing(
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
    return _reservation_out(head, stored, changed=False)


async def _retrying(fn: Any, *args: Any, **kwargs: Any) -> Any:
    for attempt in range(3):
        try:
            return await fn(*args, **kwargs)
        except OperationalError as exc:
            code = getattr(getattr(exc, "orig", None), "args", (None,))[0]
            if code not in MYSQL_RETRYABLE or attempt == 2:
                raise
            await asyncio.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


async def commit_reservation(deps: Deps, rid: str) -> schemas.ReservationOut:
    out: schemas.ReservationOut = await _retrying(_commit, deps, rid)
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
            return _reservation_out(head, lines, changed=False)
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
    return _reservation_out(*found, changed=True)


async def release_reservation(
    deps: Deps, rid: str, *, only_expired_before: datetime | None = None
) -> schemas.ReservationOut:
    """Release (ACTIVE) or refund (COMMITTED): units go back to stock and the buyer's
    allowance comes back. A second call finds RELEASED and changes nothing. The sweeper passes
    ``only_expired_before`` and then only releases ACTIVE reservations past that time."""
    released = await _retrying(_release, deps, rid, only_expired_before)
    if released is None:
        raise not_found("reservation")
    out, epoch, groups = released
    if groups:
        modes = await _modes_of(deps, [g.product_id for g in groups])
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
                or head["reserved_until"] >= to_db(only_expired_before)
            )
        ):
            return _reservation_out(head, lines, changed=False), None, []
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
    return _reservation_out(*found, changed=True), epoch, groups


async def get_reservation(deps: Deps, rid: str) -> schemas.ReservationOut:
    async with deps.sessions() as session:
        found = await repo.get_reservation(session, rid)
    if found is None:
        raise not_found("reservation")
    return _reservation_out(*found, changed=False)


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


# Gate rebuild and reconcile


@dataclass
class ReconcileReport:
    epoch_before: int | None
    epoch_after: int | None
    gate_was_open: bool
    repaired: bool
    differences: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        state = "repaired" if self.repaired else "consistent, left as it was"
        head = (
            f"stock gate {state}: epoch {self.epoch_before} -> {self.epoch_after}, "
            f"gate was {'open' if self.gate_was_open else 'closed'}, "
            f"{len(self.differences)} difference(s)"
        )
        return "\n".join([head, *(f"  {d}" for d in self.differences)])

    def as_dict(self) -> dict[str, Any]:
        return {
            "epoch_before": self.epoch_before,
            "epoch_after": self.epoch_after,
            "gate_was_open": self.gate_was_open,
            "repaired": self.repaired,
            "differences": self.differences,
        }


def _ledger_gate(
    metas: Sequence[RowMapping], stock: Sequence[RowMapping], held: Sequence[RowMapping]
) -> dict[str, ProductGate]:
    avail: dict[str, dict[str, int]] = defaultdict(dict)
    for s in stock:
        avail[s["product_id"]][s["id"]] = int(s["available"])
    holds: dict[str, dict[str, int]] = defaultdict(dict)
    for h in held:
        holds[h["product_id"]][h["buyer_id"]] = int(h["units"])
    return {
        m["id"]: ProductGate(
            release_at_ms=epoch_ms(m["release_at"]),
            limit=int(m["per_user_limit"]),
            avail=avail.get(m["id"], {}),
            held=holds.get(m["id"], {}),
        )
        for m in metas
    }


def _diff(
    want: dict[str, ProductGate], have: dict[str, ProductGate | None]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for pid, w in want.items():
        h = have.get(pid)
        if h is None:
            out.append({"product_id": pid, "kind": "product_missing"})
            continue
        if (h.release_at_ms, h.limit) != (w.release_at_ms, w.limit):
            out.append(
                {
                    "product_id": pid,
                    "kind": "meta",
                    "ledger": [w.release_at_ms, w.limit],
                    "gate": [h.release_at_ms, h.limit],
                }
            )
        for item in sorted(set(w.avail) | set(h.avail)):
            if w.avail.get(item) != h.avail.get(item):
                out.append(
                    {
                        "product_id": pid,
                        "kind": "available",
                        "item_id": item,
                        "ledger": w.avail.get(item),
                        "gate": h.avail.get(item),
                    }
                )
        for buyer in sorted(set(w.held) | set(h.held)):
            if w.held.get(buyer, 0) != h.held.get(buyer, 0):
                out.append(
                    {
                        "product_id": pid,
                        "kind": "held",
                        "buyer_id": buyer,
                        "ledger": w.held.get(buyer, 0),
                        "gate": h.held.get(buyer, 0),
                    }
                )
    return out


async def rebuild_gate(deps: Deps, *, only_if_different: bool = False) -> ReconcileReport:
    """Recount the gate from the ledger. Holding ``gate_state`` FOR UPDATE waits for every
    in-flight ledger write and blocks new ones; bumping the epoch makes any admission by the
    old gate that has not reached the ledger yet retry against the new one."""
    gate = deps.gate
    async with deps.sessions.begin() as session:
        old_epoch = await repo.epoch_exclusive(session)
        _, built_on = await repo.gate_instance(session)
        run_id = await gate.run_id()  # the Redis this gate is built on (gate.py, "Which Redis?")
        gate_epoch = await gate.epoch()
        want = _ledger_gate(
            await repo.all_products_meta(session),
            await repo.all_items_stock(session),
            await repo.held_units(session),
        )
        differences: list[dict[str, Any]] = []
        if gate_epoch is not None:
            differences = _diff(want, await gate.read(list(want)))
            if gate_epoch != old_epoch:
                differences.append({"kind": "epoch", "ledger": old_epoch, "gate": gate_epoch})
            if built_on != run_id:
                differences.append({"kind": "redis_run_id", "ledger": built_on, "gate": run_id})
            if only_if_different and not differences:
                return ReconcileReport(old_epoch, gate_epoch, True, False, [])
        await gate.close()
        applied = await repo.applied_reservations(session)
        new_epoch = old_epoch + 1
        await repo.set_epoch(session, new_epoch, run_id)
        await gate.write_all(want, applied, new_epoch)
    await gate.open(new_epoch)
    gate.trust(new_epoch, run_id)
    log.info(
        "stock gate rebuilt",
        extra={"epoch": new_epoch, "products": len(want), "differences": len(differences)},
    )
    return ReconcileReport(gate_epoch, new_epoch, gate_epoch is not None, True, differences)


async def reconcile_deps(deps: Deps) -> ReconcileReport:
    return await rebuild_gate(deps, only_if_different=True)


async def reconcile(settings: Settings) -> ReconcileReport:
    """``snapshoe products reconcile``: compare the gate with the ledger, repair the gate when
    they differ (or it is closed), and report the differences."""
    from snapshoe.products.bootstrap import open_deps

    async with open_deps(settings) as deps:
        return await reconcile_deps(deps)
