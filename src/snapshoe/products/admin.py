"""Admin writes of the catalog: products and items, told to the gate after the ledger."""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel.clock import as_utc, utcnow
from snapshoe.kernel.errors import Problem, not_found
from snapshoe.products import draw_repository as drepo
from snapshoe.products import queue_repository as qrepo
from snapshoe.products import repository as repo
from snapshoe.products import schemas
from snapshoe.products.baseline import refuse_unless_enabled
from snapshoe.products.catalog import product_detail
from snapshoe.products.deps import Deps
from snapshoe.products.domain import ADMISSION_SECONDS_DEFAULT, new_id, queue_opens_at
from snapshoe.products.rebuild import register_quietly

log = logging.getLogger("snapshoe.products")


_QUEUE_FIELDS = ("queue_opens_at", "admission_seconds")
_DRAW_FIELDS = ("entry_opens_at", "entry_closes_at", "draw_at")


def _invalid(detail: str) -> Problem:
    return Problem(422, "validation_error", detail=detail)


def _sale_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The sale mode's fields as stored: a queue's opening time and admission window get their
    defaults, a draw's times are required; other modes keep none (docs/api.md, "Sale modes")."""
    mode, release_at = values["sale_mode"], as_utc(values["release_at"])
    none = dict.fromkeys((*_QUEUE_FIELDS, *_DRAW_FIELDS))
    if mode != "queue" and (values.get("queue_opens_at") or values.get("admission_seconds")):
        raise _invalid("queue_opens_at and admission_seconds apply to sale_mode queue only")
    if mode != "draw" and any(values.get(k) is not None for k in _DRAW_FIELDS):
        raise _invalid("entry_opens_at, entry_closes_at and draw_at apply to sale_mode draw only")
    if mode == "queue":
        opens = queue_opens_at(release_at, values.get("queue_opens_at"))
        if opens > release_at:
            raise _invalid("queue_opens_at must not be after release_at")
        admission = values.get("admission_seconds") or ADMISSION_SECONDS_DEFAULT
        return {**none, "sale_mode": mode, "queue_opens_at": opens, "admission_seconds": admission}
    if mode == "draw":
        given = [values.get(k) for k in _DRAW_FIELDS]
        if any(t is None for t in given):
            raise _invalid("sale_mode draw needs entry_opens_at, entry_closes_at and draw_at")
        opens, closes, draw_at = (as_utc(t) for t in given if t is not None)
        if not opens < closes <= draw_at:
            raise _invalid("a draw needs entry_opens_at < entry_closes_at <= draw_at")
        if release_at > draw_at:
            # The winners' orders are placed at the draw: the drop must be open by then.
            raise _invalid("a draw's release_at must not be after draw_at")
        times = {"entry_opens_at": opens, "entry_closes_at": closes, "draw_at": draw_at}
        return {**none, "sale_mode": mode, **times}
    return {**none, "sale_mode": mode}


async def create_product(deps: Deps, body: schemas.ProductCreate) -> schemas.ProductDetail:
    refuse_unless_enabled(deps.settings, body.stock_mode)
    now = utcnow()
    pid = new_id()
    values = body.model_dump()
    async with deps.sessions.begin() as session:
        epoch = await repo.epoch_shared(session)
        await repo.insert_product(
            session,
            {"id": pid, **values, **_sale_fields(values), "created_at": now, "updated_at": now},
        )
        if body.sale_mode == "queue":
            await qrepo.create_queue(session, pid)
        elif body.sale_mode == "draw":
            await drepo.create_draw(session, pid)
        row = await repo.get_product(session, pid)
    assert row is not None
    await register_quietly(deps, epoch, row, {})
    deps.cache.clear()
    return product_detail(row, [])


async def patch_product(deps: Deps, pid: str, body: schemas.ProductPatch) -> schemas.ProductDetail:
    values = body.model_dump(exclude_unset=True)
    for required in (
        "name",
        "brand",
        "description",
        "price",
        "release_at",
        "per_user_limit",
        "sale_mode",
    ):
        if required in values and values[required] is None:
            raise Problem(422, "validation_error", detail=f"{required} cannot be null")
    async with deps.sessions.begin() as session:
        epoch = await repo.epoch_shared(session)
        current = await repo.get_product(session, pid)
        if current is None:
            raise not_found("product")
        if _SALE_KEYS & values.keys():
            values = await _patch_sale(session, current, values)
        if values:
            await repo.update_product(session, pid, {**values, "updated_at": utcnow()})
        row = await repo.get_product(session, pid)
        items = await repo.items_of(session, pid)
    assert row is not None
    await register_quietly(deps, epoch, row, {})
    deps.cache.clear()
    return product_detail(row, items)


# What a waiting room or a draw depends on: changed only while it has no ticket or entry (409
# invalid_state).
_SALE_KEYS = frozenset(("sale_mode", "release_at", *_QUEUE_FIELDS, *_DRAW_FIELDS))


async def _patch_sale(
    session: AsyncSession, current: RowMapping, values: dict[str, Any]
) -> dict[str, Any]:
    merged = {k: values.get(k, current[k]) for k in ("sale_mode", "release_at")}
    switching = merged["sale_mode"] != current["sale_mode"]
    for key in (*_QUEUE_FIELDS, *_DRAW_FIELDS):
        # Switching modes drops the old mode's fields unless new ones are given.
        merged[key] = values[key] if key in values else (None if switching else current[key])
    was_queue, was_draw = current["sale_mode"] == "queue", current["sale_mode"] == "draw"
    if was_queue and await qrepo.has_tickets(session, current["id"]):
        raise Problem(
            409,
            "invalid_state",
            detail="Buyers are already queued: the sale mode and its times cannot change",
        )
    if was_draw and await drepo.has_entries(session, current["id"]):
        raise Problem(
            409,
            "invalid_state",
            detail="Buyers have already entered: the sale mode and its times cannot change",
        )
    sale = _sale_fields(merged)
    if sale["sale_mode"] == "queue":
        await qrepo.create_queue(session, current["id"])
    elif was_queue:
        await qrepo.drop_queue(session, current["id"])
    if sale["sale_mode"] == "draw":
        await drepo.create_draw(session, current["id"])
    elif was_draw:
        await drepo.drop_draw(session, current["id"])
    return {**values, **sale}


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
                "created_at": utcnow(),
            },
        )
        row = await repo.get_item(session, item_id)
    assert row is not None
    deps.item_products[item_id] = pid
    await register_quietly(deps, epoch, product, {item_id: body.stock})
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
