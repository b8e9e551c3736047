"""HTTP routes of the orders service: parse, call a handler, shape the response.

``/internal/...`` is for the payments service: never routed by the gateway, and guarded by
the shared internal token.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from snapshoe.kernel.auth import Principal, verified_principal
from snapshoe.kernel.errors import PROBLEM_JSON
from snapshoe.kernel.idempotency import require_key
from snapshoe.kernel.internal import internal_caller
from snapshoe.orders import handlers, schemas
from snapshoe.orders.bootstrap import Deps

router = APIRouter(prefix="/api/orders", tags=["orders"])
internal_router = APIRouter(
    prefix="/internal", tags=["internal"], dependencies=[Depends(internal_caller)]
)

OrderId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
Buyer = Annotated[Principal, Depends(verified_principal)]

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
    responses=_errors(400, 401, 403, 404, 409, 422, 503),
)
async def create_order(
    deps: DepsDep,
    buyer: Buyer,
    key: Annotated[str, Depends(require_key)],
    body: schemas.CreateOrder,
) -> Response:
    answer = await handlers.create_order(deps, buyer_id=buyer.user_id, key=key, request=body)
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    if answer.status < 400:
        headers["Location"] = f"/api/orders/{answer.body['id']}"
    return Response(
        orjson.dumps(answer.body),
        status_code=answer.status,
        media_type="application/json" if answer.status < 400 else PROBLEM_JSON,
        headers=headers,
    )


@router.get("", response_model=schemas.OrderPage, responses=_errors(401, 403, 422))
async def list_orders(
    deps: DepsDep,
    buyer: Buyer,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> schemas.OrderPage:
    return await handlers.list_orders(deps, buyer_id=buyer.user_id, limit=limit, cursor=cursor)


@router.get("/-/floor", include_in_schema=False)
async def floor(buyer: Buyer) -> Response:
    """The benchmark floor (``snapshoe bench drop --compare``): the same gateway, JWT checks,
    service and token verification as an order, and nothing else (no DB, no Redis). Routed
    before ``/{order_id}``, which would otherwise take ``-``."""
    return Response(orjson.dumps({"user_id": buyer.user_id}), media_type="application/json")


@router.get("/{order_id}", response_model=schemas.OrderOut, responses=_errors(401, 403, 404))
async def get_order(deps: DepsDep, buyer: Buyer, order_id: OrderId) -> schemas.OrderOut:
    return await handlers.get_order(deps, buyer_id=buyer.user_id, order_id=order_id)


@router.post(
    "/{order_id}/cancel", response_model=schemas.OrderOut, responses=_errors(401, 403, 404, 409)
)
async def cancel_order(deps: DepsDep, buyer: Buyer, order_id: OrderId) -> schemas.OrderOut:
    return await handlers.cancel_order(deps, buyer_id=buyer.user_id, order_id=order_id)


@internal_router.get("/orders/{order_id}", response_model=schemas.InternalOrder)
async def internal_order(deps: DepsDep, order_id: OrderId) -> schemas.InternalOrder:
    return await handlers.internal_order(deps, order_id)
