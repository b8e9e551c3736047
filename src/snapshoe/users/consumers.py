"""RabbitMQ consumers of the users service: turn an event into a handler call.

The cart listens to ``order.placed``: an order made from the cart takes what it bought out of
the cart. Queue ``<namespace>.users.cart`` (quorum, inbox-deduplicated, dead-lettered to
``.dlq`` after the kernel's delivery limit).

The draw result mail listens to ``draw.entry_decided``: each entrant of a draw is mailed its
result (users.draw_mail queues the mail; the worker sends it). Queue
``<namespace>.users.draw_mail``, the same kind.

The buyer's order mail listens to ``order.placed``, ``order.paid``, ``order.shipped``,
``order.delivered``, ``order.cancelled`` and products' ``queue.admitted`` (users.order_mail
queues the mail; the worker sends it). Queue ``<namespace>.users.order_mail``, the same kind
(a draw's ``order.placed`` is acked without a transaction: it is mailed by the draw result).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel.contracts.draws import DrawEntryDecided
from snapshoe.kernel.contracts.orders import (
    OrderCancelled,
    OrderDelivered,
    OrderPaid,
    OrderPlaced,
    OrderShipped,
)
from snapshoe.kernel.contracts.waiting_room import QueueAdmitted
from snapshoe.kernel.messaging import Handler
from snapshoe.kernel.settings import Settings
from snapshoe.users import cart, draw_mail, order_mail
from snapshoe.users.mail import MailQueue

CART_QUEUE = "users.cart"
DRAW_MAIL_QUEUE = "users.draw_mail"
ORDER_MAIL_QUEUE = "users.order_mail"


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


ORDER_MAIL_KEYS = [
    OrderPlaced.routing_key(),
    OrderPaid.routing_key(),
    OrderShipped.routing_key(),
    OrderDelivered.routing_key(),
    OrderCancelled.routing_key(),
    QueueAdmitted.routing_key(),
]


def order_mail_handlers(settings: Settings, queue: MailQueue) -> dict[str, Handler]:
    """The order mail consumer's handlers (one for every key), queueing on ``queue``."""
    marker_ttl = settings.event_retention_days * 86400

    async def on_event(session: AsyncSession, body: dict[str, Any]) -> None:
        await order_mail.queue_order_mail(
            session, queue, body, web_url=settings.web_url, marker_ttl_seconds=marker_ttl
        )

    return dict.fromkeys(ORDER_MAIL_KEYS, on_event)


def draw_order_placed(body: dict[str, Any]) -> bool:
    """A draw's order placed is not mailed (order_mail's doc): acked without a transaction."""
    return body.get("event_type") == OrderPlaced.TYPE and body.get("from_draw") is True


CART_HANDLERS: dict[str, Handler] = {OrderPlaced.routing_key(): on_order_placed}
DRAW_MAIL_KEYS = [DrawEntryDecided.routing_key()]
# Declared by `snapshoe migrate`, before any publisher runs (products' relay publishes
# draw.entry_decided and queue.admitted `mandatory`, orders its order events: with no queue
# bound they would be kept unpublished).
QUEUES = {
    CART_QUEUE: list(CART_HANDLERS),
    DRAW_MAIL_QUEUE: DRAW_MAIL_KEYS,
    ORDER_MAIL_QUEUE: ORDER_MAIL_KEYS,
}
