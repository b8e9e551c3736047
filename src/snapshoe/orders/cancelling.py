"""Cancelling an order: the buyer's cancel, before payment (the stock is released) or while
preparing (a refund too, by the ``order.cancelled`` event), and the operator's refund, the same
path for a paid order of any buyer (``POST /api/admin/orders/{id}/refund``): only while
preparing, the one state where cancelling refunds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.contracts.orders import OrderCancelled
from snapshoe.kernel.errors import Problem, not_found
from snapshoe.kernel.messaging import add_to_outbox
from snapshoe.orders import admin_orders, schemas
from snapshoe.orders import repository as repo
from snapshoe.orders.domain import CANCELLABLE, REFUNDABLE, Status, StockState
from snapshoe.orders.queries import get_order
from snapshoe.orders.stock import settle_one
from snapshoe.orders.tables import outbox

if TYPE_CHECKING:
    from snapshoe.orders.deps import Deps


async def cancel_order(deps: Deps, *, buyer_id: str, order_id: str) -> schemas.OrderOut:
    await _cancel(deps, order_id, buyer_id=buyer_id, allowed=CANCELLABLE, reason="buyer")
    return await get_order(deps, buyer_id=buyer_id, order_id=order_id)


async def refund_order(deps: Deps, *, order_id: str) -> schemas.AdminOrderOut:
    """PREPARING -> CANCELLED with the payment refunded (payments refunds on the event, so
    ``refunded_at`` is set once the PG has refunded); any other state is 409 ``invalid_state``."""
    await _cancel(deps, order_id, buyer_id=None, allowed=REFUNDABLE, reason="admin_refund")
    return await admin_orders.get_order(deps, order_id)


async def _cancel(
    deps: Deps,
    order_id: str,
    *,
    buyer_id: str | None,
    allowed: tuple[Status, ...],
    reason: str,
) -> None:
    """``order_id`` -> CANCELLED from one of ``allowed`` (a buyer's own order when
    ``buyer_id`` is given), announced by ``order.cancelled`` in the same transaction."""
    for _ in range(5):
        now = utcnow()
        async with deps.sessions.begin() as session:
            row = await repo.get_order(session, order_id, buyer_id)
            if row is None:
                raise not_found("order")
            current = Status(row["status"])
            if current not in allowed:
                verb = "cancelled" if buyer_id is not None else "refunded"
                raise Problem(
                    409,
                    "invalid_state",
                    detail=f"An order in {current} cannot be {verb}",
                    status_now=current.value,
                )
            moved = await repo.transition(
                session,
                order_id,
                expected=current,
                to=Status.CANCELLED,
                now=now,
                stock_state=StockState.RELEASING,
                next_transition_at=None,
                reason=reason,
            )
            if not moved:
                continue  # moved by a payment event meanwhile: decide again on the new state
            await add_to_outbox(
                session,
                outbox,
                OrderCancelled(
                    order_id=order_id,
                    buyer_id=row["buyer_id"],
                    previous_status=current.value,
                    refund_required=current is Status.PREPARING,
                ),
            )
        # Release now so the stock is back when the caller sees CANCELLED; the worker retries
        # the intent if products cannot answer right now.
        await settle_one(deps, order_id, StockState.RELEASING)
        return
    raise Problem(409, "invalid_state", detail="The order is changing; retry")
