"""HTTP routes of the products service: the public catalog, admin, and the internal API the
orders and users services call (``/internal/...``: never routed by the gateway, and guarded by
the shared internal token)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from snapshoe.kernel.auth import Principal, admin_principal, verified_principal
from snapshoe.kernel.contracts.internal_operations import ServiceOperations
from snapshoe.kernel.errors import Problem
from snapshoe.kernel.internal import internal_caller
from snapshoe.kernel.openapi import problems
from snapshoe.products import (
    admin,
    catalog,
    draw_entries,
    operations,
    queue_stream,
    queue_tickets,
    rebuild,
    reservations,
    schemas,
)
from snapshoe.products import reserve as reserve_path
from snapshoe.products.deps import Deps

public_router = APIRouter(prefix="/api/products", tags=["catalog"])
admin_router = APIRouter(prefix="/api/admin", tags=["admin"])
internal_router = APIRouter(
    prefix="/internal", tags=["internal"], dependencies=[Depends(internal_caller)]
)

IdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
Admin = Annotated[Principal, Depends(admin_principal)]
Buyer = Annotated[Principal, Depends(verified_principal)]


async def deps_of(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


DepsDep = Annotated[Deps, Depends(deps_of)]


@public_router.get(
    "",
    response_model=schemas.ProductPage,
    responses=problems(503, codes={422: ("invalid_cursor", "validation_error")}),
)
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


@public_router.get(
    "/{product_id}", response_model=schemas.ProductDetail, responses=problems(404, 503)
)
async def get_product(deps: DepsDep, product_id: IdPath) -> schemas.ProductDetail:
    return await catalog.get_product(deps, product_id)


@public_router.post(
    "/{product_id}/queue",
    status_code=201,
    response_model=schemas.Ticket,
    # 403 account_too_new: the shop's minimum account age at the queue's opening; 409
    # conflict: the queue changed while joining (retry).
    responses=problems(
        404,
        429,
        503,
        codes={
            403: ("account_too_new",),
            409: ("queue_not_open", "not_queued", "sold_out", "conflict"),
        },
    ),
)
async def join_queue(
    deps: DepsDep, buyer: Buyer, product_id: IdPath, response: Response
) -> schemas.Ticket:
    """Take a ticket in the product's waiting room (201), or find the one taken (200)."""
    ticket, created = await queue_tickets.join(deps, product_id, buyer.user_id)
    response.status_code = 201 if created else 200
    return ticket


@public_router.get(
    "/{product_id}/queue/me", response_model=schemas.Ticket, responses=problems(404, 503)
)
async def my_ticket(deps: DepsDep, buyer: Buyer, product_id: IdPath) -> schemas.Ticket:
    return await queue_tickets.my_ticket(deps, product_id, buyer.user_id)


@public_router.get(
    "/{product_id}/queue/me/events",
    response_class=StreamingResponse,
    # 503 too_many_streams: this process holds its most streams; read .../queue/me instead.
    responses={
        200: {"content": {"text/event-stream": {}}},
        **problems(404, codes={503: ("too_many_streams",)}),
    },
)
async def my_ticket_events(deps: DepsDep, buyer: Buyer, product_id: IdPath) -> StreamingResponse:
    """The ticket as Server-Sent Events until it is final (docs/waiting-room.md)."""
    return await queue_stream.ticket_events(deps, product_id, buyer.user_id)


@public_router.post(
    "/{product_id}/entries",
    status_code=201,
    response_model=schemas.Entry,
    # 429: the gateway's entry rate per client address; 503: the card cannot be checked now.
    responses=problems(
        404,
        429,
        503,
        codes={
            409: (
                "entries_not_open",
                "entries_closed",
                "not_a_draw",
                "already_entered",
                "card_already_entered",
            ),
            422: ("billing_key_invalid",),
        },
    ),
)
async def enter_draw(
    deps: DepsDep, buyer: Buyer, product_id: IdPath, body: schemas.EntryIn, response: Response
) -> schemas.Entry:
    """Enter the product's draw with a size and a billing key (201), or find the same entry
    (200). docs/draws.md."""
    entry, created = await draw_entries.enter(deps, product_id, buyer.user_id, body)
    response.status_code = 201 if created else 200
    return entry


@public_router.get(
    "/{product_id}/entries/me", response_model=schemas.Entry, responses=problems(404, 503)
)
async def my_entry(deps: DepsDep, buyer: Buyer, product_id: IdPath) -> schemas.Entry:
    return await draw_entries.my_entry(deps, product_id, buyer.user_id)


@public_router.delete(
    "/{product_id}/entries/me",
    status_code=204,
    responses=problems(404, 503, codes={409: ("entries_closed", "not_a_draw")}),
)
async def withdraw_entry(deps: DepsDep, buyer: Buyer, product_id: IdPath) -> Response:
    await draw_entries.withdraw(deps, product_id, buyer.user_id)
    return Response(status_code=204)


@public_router.get(
    "/{product_id}/draw", response_model=schemas.DrawOut, responses=problems(404, 503)
)
async def published_draw(deps: DepsDep, product_id: IdPath) -> schemas.DrawOut:
    """The draw as published: the commitment, and once drawn the seed and every entry's rank,
    for anyone to check (``snapshoe draws verify``)."""
    return await draw_entries.published_draw(deps, product_id)


@admin_router.get(
    "/products/{product_id}/draw",
    response_model=schemas.DrawFigures,
    responses=problems(404, 503),  # 404: no such product, or not a draw
)
async def draw_figures(deps: DepsDep, _: Admin, product_id: IdPath) -> schemas.DrawFigures:
    return await draw_entries.draw_figures(deps, product_id)


@admin_router.get(
    "/products/{product_id}/queue",
    response_model=schemas.QueueFigures,
    responses=problems(404, 503, codes={409: ("not_queued",)}),
)
async def queue_figures(deps: DepsDep, _: Admin, product_id: IdPath) -> schemas.QueueFigures:
    return await queue_tickets.figures(deps, product_id)


@admin_router.post(
    "/products",
    status_code=201,
    response_model=schemas.ProductDetail,
    # 422: a field, or sale-mode times that do not fit together (admin._sale_fields).
    responses=problems(503, codes={422: ("validation_error",)}),
)
async def create_product(
    deps: DepsDep, _: Admin, body: schemas.ProductCreate
) -> schemas.ProductDetail:
    return await admin.create_product(deps, body)


@admin_router.patch(
    "/products/{product_id}",
    response_model=schemas.ProductDetail,
    # 409 invalid_state: the sale mode or its times, once buyers have queued or entered.
    responses=problems(
        503, codes={404: ("not_found",), 409: ("invalid_state",), 422: ("validation_error",)}
    ),
)
async def patch_product(
    deps: DepsDep, _: Admin, product_id: IdPath, body: schemas.ProductPatch
) -> schemas.ProductDetail:
    return await admin.patch_product(deps, product_id, body)


@admin_router.post(
    "/products/{product_id}/items",
    status_code=201,
    response_model=schemas.AdminItem,
    responses=problems(503, codes={404: ("not_found",), 422: ("validation_error",)}),
)
async def create_item(
    deps: DepsDep, _: Admin, product_id: IdPath, body: schemas.ItemCreate
) -> schemas.AdminItem:
    return await admin.create_item(deps, product_id, body)


@admin_router.patch(
    "/items/{item_id}",
    response_model=schemas.AdminItem,
    # 409 stock_below_committed: never below what is sold or reserved.
    responses=problems(
        503,
        codes={404: ("not_found",), 409: ("stock_below_committed",), 422: ("validation_error",)},
    ),
)
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


@internal_router.get("/operations", response_model=ServiceOperations)
async def operator_figures(deps: DepsDep) -> ServiceOperations:
    """Its outbox backlog and the gate's drift, for orders' GET /api/admin/operations."""
    return await operations.operations(deps)
