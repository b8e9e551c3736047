"""Admin writes of the catalog: products and items, told to the gate after the ledger."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from sqlalchemy.engine import RowMapping

from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.errors import Problem, not_found
from snapshoe.products import repository as repo
from snapshoe.products import schemas
from snapshoe.products.baseline import refuse_unless_enabled
from snapshoe.products.catalog import product_detail
from snapshoe.products.deps import Deps
from snapshoe.products.domain import new_id
from snapshoe.products.rebuild import register_quietly

log = logging.getLogger("snapshoe.products")


async def create_product(deps: Deps, body: schemas.ProductCreate) -> schemas.ProductDetail:
    refuse_unless_enabled(deps.settings, body.stock_mode)
    now = utcnow()
    pid = new_id()
    async with deps.sessions.begin() as session:
        epoch = await repo.epoch_shared(session)
        await repo.insert_product(
            session,
            {
                "id": pid,
                **body.model_dump(exclude={"release_at"}),
                "release_at": body.release_at,
                "created_at": now,
                "updated_at": now,
            },
        )
        row = await repo.get_product(session, pid)
    assert row is not None
    await register_quietly(deps, epoch, row, {})
    deps.cache.clear()
    return product_detail(row, [])


async def patch_product(deps: Deps, pid: str, body: schemas.ProductPatch) -> schemas.ProductDetail:
    values = body.model_dump(exclude_unset=True)
    for required in ("name", "brand", "description", "price", "release_at", "per_user_limit"):
        if required in values and values[required] is None:
            raise Problem(422, "validation_error", detail=f"{required} cannot be null")
    if "release_at" in values:
        values["release_at"] = values["release_at"]
    async with deps.sessions.begin() as session:
        epoch = await repo.epoch_shared(session)
        if await repo.get_product(session, pid) is None:
            raise not_found("product")
        if values:
            await repo.update_product(session, pid, {**values, "updated_at": utcnow()})
        row = await repo.get_product(session, pid)
        items = await repo.items_of(session, pid)
    assert row is not None
    await register_quietly(deps, epoch, row, {})
    deps.cache.clear()
    return product_detail(row, items)


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
