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


class OrderPlaced(Event):
    """A new order holds stock and waits for payment until ``expires_at``."""

    TYPE: ClassVar[str] = "order.placed"
    order_id: str
    buyer_id: str
    total_amount: int
    lines: list[OrderLine]
    expires_at: datetime
    from_cart: bool = False


class OrderPaid(Event):
    """Payment approved and stock committed: the order is ``PREPARING``."""

    TYPE: ClassVar[str] = "order.paid"
    MUST_ROUTE: ClassVar[bool] = False  # an announcement: no service consumes it yet
    order_id: str
    buyer_id: str
    payment_id: str


class OrderPaymentFailed(Event):
    TYPE: ClassVar[str] = "order.payment_failed"
    MUST_ROUTE: ClassVar[bool] = False  # an announcement: no service consumes it yet
    order_id: str
    buyer_id: str
    payment_id: str


class OrderCancelled(Event):
    """Cancelled by the buyer, or refunded by an operator (``POST /api/admin/orders/{id}/refund``).
    ``refund_required``: it had been paid, so payments refunds it."""

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
    TYPE: ClassVar[str] = "order.shipped"
    MUST_ROUTE: ClassVar[bool] = False  # an announcement: no service consumes it yet
    order_id: str
    buyer_id: str


class OrderDelivered(Event):
    TYPE: ClassVar[str] = "order.delivered"
    MUST_ROUTE: ClassVar[bool] = False  # an announcement: no service consumes it yet
    order_id: str
    buyer_id: str
