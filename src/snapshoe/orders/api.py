"""HTTP routes of the orders service: parse, call a handler, shape the response.

``/api/admin/orders``, ``/api/admin/products/{id}/sales`` and ``/api/admin/operations`` are
the operator's (role ``admin``; the gateway routes them here, the rest of ``/api/admin/`` to
products). ``/internal/...`` is for the payments service (an order it
charges for) and the products service (a draw winner's order): never routed by the gateway,
and guarded by the shared internal token.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import Scope

from snapshoe.kernel.auth import Principal, admin_principal, verified_principal
from snapshoe.kernel.contracts.internal_orders import DrawOrderIn
from snapshoe.kernel.contracts.internal_products import MAX_ADMISSION_TOKEN
from snapshoe.kernel.errors import PROBLEM_JSON, Problem
from snapshoe.kernel.idempotency import require_key
from snapshoe.kernel.internal import internal_caller
from snapshoe.kernel.openapi import problems
from snapshoe.orders import (
    admin_orders,
    cancelling,
    draw_orders,
    operations,
    placing,
    queries,
    sales,
    schemas,
)
from snapshoe.orders.answers import Answer
from snapshoe.orders.deps import Deps
from snapshoe.orders.domain import Status

router = APIRouter(prefix="/api/orders", tags=["orders"])
admin_router = APIRouter(prefix="/api/admin/orders", tags=["admin"])
figures_router = APIRouter(prefix="/api/admin", tags=["admin"])
internal_router = APIRouter(
    prefix="/internal", tags=["internal"], dependencies=[Depends(internal_caller)]
)

OrderId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
Buyer = Annotated[Principal, Depends(verified_principal)]
Admin = Annotated[Principal, Depends(admin_principal)]

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: _PROBLEM for s in statuses}


async def deps_of(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


DepsDep = Annotated[Deps, Depends(deps_of)]


@router.post(
    "",
    status_code=201,
    response_model=schemas.OrderOut,
    # Products' refusals pass through (placing._from_products): 403 admission_required (a
    # queue product), 409 not_on_sale (a draw product). 503 outcome_unknown: the order may
    # have been placed; retry with the same Idempotency-Key.
    responses=problems(
        400,
        401,
        422,
        codes={
            403: ("admission_required",),
            404: ("not_found",),
            409: (
                "sold_out",
                "drop_not_open",
                "purchase_limit_exceeded",
                "cart_empty",
                "not_on_sale",
            ),
            503: ("outcome_unknown",),
        },
    ),
)
async def create_order(
    deps: DepsDep,
    buyer: Buyer,
    key: Annotated[str, Depends(require_key)],
    body: schemas.CreateOrder,
    admission_token: Annotated[
        str | None,
        Header(
            alias="Admission-Token",
            max_length=MAX_ADMISSION_TOKEN,
            description="The caller's admission from the waiting room (queue-mode products)",
        ),
    ] = None,
) -> Response:
    """The documented route; :func:`fast_create_order` answers the well-formed requests."""
    answer = await placing.create_order(
        deps, buyer_id=buyer.user_id, key=key, request=body, admission_token=admission_token
    )
    return _answer_response(answer)


def _answer_response(answer: Answer) -> Response:
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    if answer.status < 400:
        headers["Location"] = f"/api/orders/{answer.body['id']}"
    return Response(
        orjson.dumps(answer.body),
        status_code=answer.status,
        media_type="application/json" if answer.status < 400 else PROBLEM_JSON,
        headers=headers,
    )


async def fast_create_order(scope: Scope, body: bytes) -> Response | None:
    """``POST /api/orders`` without FastAPI's dependency solving and body handling, for the
    drop's stampede (the framework was about 40 % of this process's CPU per order attempt in
    the py-spy profile). It takes only the well-formed case: a bearer token that verifies, a
    verified email, a valid Idempotency-Key, a JSON body the schema accepts. Anything else
    returns None and the FastAPI route below answers it, so errors stay exactly the same."""
    auth = key = ctype = admission = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            auth = value
        elif name == b"idempotency-key":
            key = value
        elif name == b"content-type":
            ctype = value
        elif name == b"admission-token":
            admission = value
    if auth is None or key is None or ctype is None:
        return None
    if admission is not None and len(admission) > MAX_ADMISSION_TOKEN:
        return None
    if ctype.split(b";", 1)[0].strip().lower() != b"application/json":
        return None
    scheme, _, token = auth.decode("latin-1").partition(" ")
    idem = key.decode("latin-1").strip().strip('"')
    if scheme.lower() != "bearer" or not token.strip() or not _valid_key(idem):
        return None
    app = scope["app"]
    try:
        buyer = app.state.verifier.verify(token.strip())
        request = schemas.CreateOrder.model_validate(orjson.loads(body))
    except (Problem, ValidationError, orjson.JSONDecodeError):
        return None
    if not buyer.email_verified:
        return None
    answer = await placing.create_order(
        app.state.deps,
        buyer_id=buyer.user_id,
        key=idem,
        request=request,
        admission_token=admission.decode("latin-1") if admission is not None else None,
    )
    return _answer_response(answer)


def _valid_key(value: str) -> bool:
    """What :func:`require_key` accepts."""
    return 1 <= len(value) <= 255 and all(33 <= ord(c) <= 126 for c in value)


@router.get(
    "",
    response_model=schemas.OrderPage,
    responses=problems(401, 403, 503, codes={422: ("invalid_cursor", "validation_error")}),
)
async def list_orders(
    deps: DepsDep,
    buyer: Buyer,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> schemas.OrderPage:
    return await queries.list_orders(deps, buyer_id=buyer.user_id, limit=limit, cursor=cursor)


@router.get("/{order_id}", response_model=schemas.OrderOut, responses=problems(401, 403, 404, 503))
async def get_order(deps: DepsDep, buyer: Buyer, order_id: OrderId) -> schemas.OrderOut:
    return await queries.get_order(deps, buyer_id=buyer.user_id, order_id=order_id)


@router.post(
    "/{order_id}/cancel",
    response_model=schemas.OrderOut,
    responses=problems(401, 403, 404, 503, codes={409: ("invalid_state",)}),
)
async def cancel_order(deps: DepsDep, buyer: Buyer, order_id: OrderId) -> schemas.OrderOut:
    return await cancelling.cancel_order(deps, buyer_id=buyer.user_id, order_id=order_id)


@admin_router.get(
    "",
    response_model=schemas.AdminOrderPage,
    # 503 also when buyer_email is given and the accounts service cannot be asked.
    responses=problems(401, 403, 503, codes={422: ("invalid_cursor", "validation_error")}),
)
async def admin_list_orders(
    deps: DepsDep,
    _: Admin,
    status: schemas.StatusName | None = None,
    product_id: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    ] = None,
    buyer_email: Annotated[str | None, Query(min_length=1, max_length=254)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> schemas.AdminOrderPage:
    """Every buyer's orders, newest first; each filter given narrows the page."""
    return await admin_orders.list_orders(
        deps,
        limit=limit,
        cursor=cursor,
        status=None if status is None else Status(status),
        product_id=product_id,
        buyer_email=buyer_email,
    )


@admin_router.get(
    "/{order_id}", response_model=schemas.AdminOrderOut, responses=problems(401, 403, 404, 503)
)
async def admin_get_order(deps: DepsDep, _: Admin, order_id: OrderId) -> schemas.AdminOrderOut:
    return await admin_orders.get_order(deps, order_id)


@admin_router.post(
    "/{order_id}/refund",
    response_model=schemas.AdminOrderOut,
    responses=problems(401, 403, 404, 503, codes={409: ("invalid_state",)}),
)
async def admin_refund_order(deps: DepsDep, _: Admin, order_id: OrderId) -> schemas.AdminOrderOut:
    """A paid order (PREPARING) cancelled and its payment refunded; else 409 invalid_state."""
    return await cancelling.refund_order(deps, order_id=order_id)


@figures_router.get(
    "/products/{product_id}/sales",
    response_model=schemas.ProductSales,
    responses=problems(401, 403, 422, 503),
)
async def admin_product_sales(deps: DepsDep, _: Admin, product_id: OrderId) -> schemas.ProductSales:
    """The live drop view's figures of a product: orders by status and per second, refusals by
    reason, payments approved and declined, 5xx answers (docs/api-additions.md)."""
    return await sales.product_sales(deps, product_id)


@figures_router.get("/operations", response_model=schemas.Operations, responses=_errors(401, 403))
async def admin_operations(deps: DepsDep, _: Admin) -> schemas.Operations:
    """Outbox backlogs, dead letters and the gate's drift, each with the command that fixes
    it; a service that cannot be asked shows ``unavailable`` for its figures."""
    return await operations.operations(deps)


@internal_router.get("/orders/{order_id}", response_model=schemas.InternalOrder)
async def internal_order(deps: DepsDep, order_id: OrderId) -> schemas.InternalOrder:
    return await queries.internal_order(deps, order_id)


@internal_router.post("/draw-orders", response_model=schemas.InternalOrder)
async def internal_draw_order(deps: DepsDep, body: DrawOrderIn) -> schemas.InternalOrder:
    return await draw_orders.create_draw_order(deps, body)
