"""Events the orders service publishes (routing key ``order.<what>.v<version>``)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel

from snapshoe.kernel.contracts.events import Event


class OrderLine(BaseModel):
    item_id: str
    product_id: str
    quantity: int
    unit_price: int
    # The product's name as the order's snapshot has it (added for the buyer's mail; absent in
    # events written before it).
    product_name: str | None = None


class OrderPlaced(Event):
    """A new order holds stock and waits for payment until ``expires_at``."""

    TYPE: ClassVar[str] = "order.placed"
    order_id: str
    buyer_id: str
    total_amount: int
    lines: list[OrderLine]
    expires_at: datetime
    from_cart: bool = False
    # A draw winner's order (placed for the entrant by products' draw worker and charged at
    # once): its buyer is told by the draw result mail, not asked to pay by ``expires_at``.
    from_draw: bool = False


class OrderPaid(Event):
    """Payment approved and stock committed: the order is ``PREPARING``. The users service
    mails the buyer (``total_amount``: what was paid; ``product_name``: the first line's
    product; both absent in events written before they were added)."""

    TYPE: ClassVar[str] = "order.paid"
    order_id: str
    buyer_id: str
    payment_id: str
    total_amount: int | None = None
    product_name: str | None = None


class OrderPaymentFailed(Event):
    TYPE: ClassVar[str] = "order.payment_failed"
    MUST_ROUTE: ClassVar[bool] = False  # an announcement: no service consumes it yet
    order_id: str
    buyer_id: str
    payment_id: str


class OrderCancelled(Event):
    """Cancelled by the buyer, or refunded by an operator (``POST /api/admin/orders/{id}/refund``).
    ``refund_required``: it had been paid, so payments refunds it. The users service mails the
    buyer ("cancelled and refunded" when money goes back: ``refund_required``, or a paid
    ``PREPARING`` order refunded at the PG first)."""

    TYPE: ClassVar[str] = "order.cancelled"
    order_id: str
    buyer_id: str
    previous_status: str
    refund_required: bool


class OrderExpired(Event):
    TYPE: ClassVar[str] = "order.expired"
    MUST_ROUTE: ClassVar[bool] = False  # an announcement: no service consumes it yet
    order_id: str
    buyer_id: str


class OrderRefundRequired(Event):
    """An approved payment arrived for an order that can no longer be fulfilled (expired or
    cancelled first): payments must refund it."""

    TYPE: ClassVar[str] = "order.refund_required"
    order_id: str
    buyer_id: str
    payment_id: str
    reason: str


class OrderShipped(Event):
    """The users service mails the buyer."""

    TYPE: ClassVar[str] = "order.shipped"
    order_id: str
    buyer_id: str


class OrderDelivered(Event):
    """The users service mails the buyer."""

    TYPE: ClassVar[str] = "order.delivered"
    order_id: str
    buyer_id: str
