"""The orders service's internal API (``/internal/orders/{id}``, called by payments;
``/internal/draw-orders``, called by products): one model each, used by the server and by
``kernel.clients.orders``.

Imports nothing of its own package (see ``kernel/contracts/__init__.py``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

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


class DrawOrderIn(BaseModel):
    """``POST /internal/draw-orders`` (called by products' draw worker): place the order of a
    drawn entrant, one pair of ``item_id``, under the id products chose for it. Idempotent by
    ``order_id``: asking again answers the same order."""

    model_config = ConfigDict(extra="forbid")

    order_id: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    ]
    buyer_id: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    ]
    item_id: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    ]
