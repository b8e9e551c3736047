"""HTTP routes of the products service: the public catalog, admin, and the internal API the
orders and users services call (``/internal/...``: never routed by the gateway, and guarded by
the shared internal token)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from snapshoe.kernel.auth import Principal, admin_principal
from snapshoe.kernel.errors import Problem
from snapshoe.kernel.internal import internal_caller
from snapshoe.products import admin, catalog, rebuild, reservations, schemas
from snapshoe.products import reserve as reserve_path
from snapshoe.products.deps import Deps

public_router = APIRouter(prefix="/api/products", tags=["catalog"])
admin_router = APIRouter(prefix="/api/admin", tags=["admin"])
internal_router = APIRouter(
    prefix="/internal", tags=["internal"], dependencies=[Depends(internal_caller)]
)

IdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
Admin = Annotated[Principal, Depends(admin_principal)]


async def deps_of(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


DepsDep = Annotated[Deps, Depends(deps_of)]


@public_router.get("", response_model=schemas.ProductPage)
async def list_products(
    deps: DepsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    brand: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=100, description="substring of name or brand"),
    ] = None,
    status: Literal["upcoming", "live", "sold_out"] | None = None,
) -> schemas.ProductPage:
    return await catalog.list_products(
        deps, limit=limit, cursor=cursor, brand=brand, q=q, status=status
    )


@public_router.get("/{product_id}", response_model=schemas.ProductDetail)
async def get_product(deps: DepsDep, product_id: IdPath) -> schemas.ProductDetail:
    return await catalog.get_product(deps, product_id)


@admin_router.post("/products", status_code=201, response_model=schemas.ProductDetail)
async def create_product(
    deps: DepsDep, _: Admin, body: schemas.ProductCreate
) -> schemas.ProductDetail:
    return await admin.create_product(deps, body)


@admin_router.patch("/products/{product_id}", response_model=schemas.ProductDetail)
async def patch_product(
    deps: DepsDep, _: Admin, product_id: IdPath, body: schemas.ProductPatch
) -> schemas.ProductDetail:
    return await admin.patch_product(deps, product_id, body)


@admin_router.post(
    "/products/{product_id}/items", status_code=201, response_model=schemas.AdminItem
)
async def create_item(
    deps: DepsDep, _: Admin, product_id: IdPath, body: schemas.ItemCreate
) -> schemas.AdminItem:
    return await admin.create_item(deps, product_id, body)


@admin_router.patch("/items/{item_id}", response_model=schemas.AdminItem)
async def adjust_item(
    deps: DepsDep, _: Admin, item_id: IdPath, body: schemas.ItemPatch
) -> schemas.AdminItem:
    return await admin.adjust_item(deps, item_id, body)


@internal_router.post(
    "/reservations", response_model=schemas.ReservationOut, response_model_exclude_none=True
)
async def reserve(
    deps: DepsDep, body: schemas.ReserveIn, response: Response
) -> schemas.ReservationOut:
    out = await reserve_path.reserve(deps, body)
    response.status_code = 201 if out.changed else 200
    return out


@internal_router.get(
    "/reservations/{reservation_id}",
    response_model=schemas.ReservationOut,
    response_model_exclude_none=True,
)
async def get_reservation(deps: DepsDep, reservation_id: IdPath) -> schemas.ReservationOut:
    return await reservations.get_reservation(deps, reservation_id)


@internal_router.post(
    "/reservations/{reservation_id}/commit",
    response_model=schemas.ReservationOut,
    response_model_exclude_none=True,
)
async def commit(deps: DepsDep, reservation_id: IdPath) -> schemas.ReservationOut:
    return await reservations.commit_reservation(deps, reservation_id)


@internal_router.post(
    "/reservations/{reservation_id}/release",
    response_model=schemas.ReservationOut,
    response_model_exclude_none=True,
)
async def release(deps: DepsDep, reservation_id: IdPath) -> schemas.ReservationOut:
    return await reservations.release_reservation(deps, reservation_id)


@internal_router.get("/items", response_model=schemas.ItemDetails)
async def item_details(
    deps: DepsDep,
    ids: Annotated[str, Query(min_length=1, max_length=3300, description="comma-separated")],
) -> schemas.ItemDetails:
    item_ids = [i for i in ids.split(",") if i]
    if not item_ids or len(item_ids) > 100 or any(len(i) > 64 for i in item_ids):
        raise Problem(422, "validation_error", detail="ids: 1..100 comma-separated item ids")
    return await catalog.item_details(deps, item_ids)


@internal_router.post("/gate/reconcile")
async def reconcile(deps: DepsDep) -> dict[str, object]:
    return (await rebuild.reconcile(deps)).as_dict()
