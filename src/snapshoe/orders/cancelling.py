"""The buyer's cancel: before payment (the stock is released) or while preparing (a refund
too, by the ``order.cancelled`` event)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.contracts.orders import OrderCancelled
from snapshoe.kernel.errors import Problem, not_found
from snapshoe.kernel.messaging import add_to_outbox
from snapshoe.orders import repository as repo
from snapshoe.orders import schemas
from snapshoe.orders.domain import CANCELLABLE, Status, StockState
from snapshoe.orders.queries import get_order
from snapshoe.orders.stock import settle_one
from snapshoe.orders.tables import outbox

if TYPE_CHECKING:
    from snapshoe.orders.deps import Deps


async def cancel_order(deps: Deps, *, buyer_id: str, order_id: str) -> schemas.OrderOut:
    for _ in range(5):
        now = utcnow()
        async with deps.sessions.begin() as session:
            row = await repo.get_order(session, order_id, buyer_id)
            if row is None:
                raise not_found("order")
            current = Status(row["status"])
            if current not in CANCELLABLE:
                raise Problem(
                    409,
                    "invalid_state",
                    detail=f"An order in {current} cannot be cancelled",
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
                reason="buyer",
            )
            if not moved:
                continue  # moved by a payment event meanwhile: decide again on the new state
            await add_to_outbox(
                session,
                outbox,
                OrderCancelled(
                    order_id=order_id,
                    buyer_id=buyer_id,
                    previous_status=current.value,
                    refund_required=current is Status.PREPARING,
                ),
            )
        # Release now so the stock is back when the buyer sees CANCELLED; the worker retries
        # the intent if products cannot answer right now.
        await settle_one(deps, order_id, StockState.RELEASING)
        return await get_order(deps, buyer_id=buyer_id, order_id=order_id)
    raise Problem(409, "invalid_state", detail="The order is changing; retry")
