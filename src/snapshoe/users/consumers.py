"""RabbitMQ consumers of the users service: turn an event into a handler call.

The cart listens to ``order.placed``: an order made from the cart takes what it bought out of
the cart. Queue ``<namespace>.users.cart`` (quorum, inbox-deduplicated, dead-lettered to
``.dlq`` after the kernel's delivery limit).

The draw result mail listens to ``draw.entry_decided``: each entrant of a draw is mailed its
result (users.draw_mail queues the mail; the worker sends it). Queue
``<namespace>.users.draw_mail``, the same kind.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel.contracts.draws import DrawEntryDecided
from snapshoe.kernel.contracts.orders import OrderPlaced
from snapshoe.kernel.messaging import Handler
from snapshoe.kernel.settings import Settings
from snapshoe.users import cart, draw_mail
from snapshoe.users.mail import MailQueue

CART_QUEUE = "users.cart"
DRAW_MAIL_QUEUE = "users.draw_mail"


async def on_order_placed(session: AsyncSession, body: dict[str, Any]) -> None:
    await cart.apply_order_placed(session, OrderPlaced.model_validate(body))


def not_from_cart(body: dict[str, Any]) -> bool:
    """Most orders (every drop order) are not made from the cart and change nothing here;
    the consumer acks them without a transaction (cart.apply_order_placed agrees)."""
    return body.get("from_cart") is False


def draw_mail_handlers(settings: Settings, queue: MailQueue) -> dict[str, Handler]:
    """The draw mail consumer's handlers, queueing on ``queue`` (the worker's mail queue)."""
    # The once-marker lives as long as the inbox remembers the event (draw_mail's doc).
    marker_ttl = settings.event_retention_days * 86400

    async def on_draw_entry_decided(session: AsyncSession, body: dict[str, Any]) -> None:
        event = DrawEntryDecided.model_validate(body)
        await draw_mail.queue_draw_mail(session, queue, event, marker_ttl_seconds=marker_ttl)

    return {DrawEntryDecided.routing_key(): on_draw_entry_decided}


CART_HANDLERS: dict[str, Handler] = {OrderPlaced.routing_key(): on_order_placed}
DRAW_MAIL_KEYS = [DrawEntryDecided.routing_key()]
# Declared by `snapshoe migrate`, before any publisher runs (products' relay publishes
# draw.entry_decided `mandatory`: with no queue bound it would be kept unpublished).
QUEUES = {CART_QUEUE: list(CART_HANDLERS), DRAW_MAIL_QUEUE: DRAW_MAIL_KEYS}
