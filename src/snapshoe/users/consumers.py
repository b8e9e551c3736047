"""RabbitMQ consumers of the users service: turn an event into a handler call.

The cart listens to ``order.placed``: an order made from the cart takes what it bought out of
the cart. Queue ``<namespace>.users.cart`` (quorum, inbox-deduplicated, dead-lettered to
``.dlq`` after the kernel's delivery limit).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel.contracts.orders import OrderPlaced
from snapshoe.kernel.messaging import Handler
from snapshoe.users import cart

CART_QUEUE = "users.cart"


async def on_order_placed(session: AsyncSession, body: dict[str, Any]) -> None:
    await cart.apply_order_placed(session, OrderPlaced.model_validate(body))


def not_from_cart(body: dict[str, Any]) -> bool:
    """Most orders (every drop order) are not made from the cart and change nothing here;
    the consumer acks them without a transaction (cart.apply_order_placed agrees)."""
    return body.get("from_cart") is False


CART_HANDLERS: dict[str, Handler] = {OrderPlaced.routing_key(): on_order_placed}
QUEUES = {CART_QUEUE: list(CART_HANDLERS)}  # declared by `snapshoe migrate`
