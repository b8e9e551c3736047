"""A draw winner's order: ``POST /internal/draw-orders``, asked for by products' draw worker
for each entrant it draws, under the order id it chose (docs/draws.md). The same placing as
``POST /api/orders`` (reservation, group commit, ``order.placed``), one pair of the entry's
size, idempotent by the order id: the worker asks again until it sees the outcome."""

from __future__ import annotations

from snapshoe.kernel.contracts.internal_orders import DrawOrderIn, InternalOrder
from snapshoe.kernel.errors import Problem
from snapshoe.orders import placing, queries, schemas
from snapshoe.orders.deps import Deps


def draw_key(order_id: str) -> str:
    """The order's Idempotency-Key, derived from its id (a replay answers the same order)."""
    return f"draw-{order_id}"


async def create_draw_order(deps: Deps, body: DrawOrderIn) -> InternalOrder:
    existing = await _existing(deps, body.order_id)
    if existing is not None:
        return existing
    request = schemas.CreateOrder.model_validate(
        {"lines": [{"item_id": body.item_id, "quantity": 1}]}
    )
    answer = await placing.create_order(
        deps,
        buyer_id=body.buyer_id,
        key=draw_key(body.order_id),
        request=request,
        order_id=body.order_id,
    )
    if answer.status >= 400:
        raise Problem(
            answer.status, str(answer.body.get("code", "")), detail=answer.body.get("detail")
        )
    found = await _existing(deps, body.order_id)
    if found is None:  # another id under this key: the caller's ids are wrong
        raise Problem(
            409, "idempotency_key_reused", detail="This draw order's key has another order"
        )
    return found


async def _existing(deps: Deps, order_id: str) -> InternalOrder | None:
    try:
        return await queries.internal_order(deps, order_id)
    except Problem as exc:
        if exc.status == 404:
            return None
        raise
