"""The orders service's internal API (``/internal/orders/{id}``, called by payments): its
answer, one model used by the server (``response_model``) and by ``kernel.clients.orders``.

Imports nothing of its own package (see ``kernel/contracts/__init__.py``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

OrderStatus = Literal[
    "PENDING_PAYMENT",
    "PREPARING",
    "SHIPPING",
    "DELIVERED",
    "CANCELLED",
    "PAYMENT_FAILED",
    "EXPIRED",
]


class InternalOrder(BaseModel):
    """What payments needs of the order it charges for."""

    id: str
    buyer_id: str
    status: OrderStatus
    total_amount: int
    expires_at: str  # RFC 3339 UTC
    payment_id: str | None = None
