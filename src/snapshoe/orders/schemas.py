"""Request and response models of the orders service (docs/api.md, Orders)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from snapshoe.orders.domain import MAX_LINE_QUANTITY, MAX_LINES

Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
StatusName = Literal[
    "PENDING_PAYMENT",
    "PREPARING",
    "SHIPPING",
    "DELIVERED",
    "CANCELLED",
    "PAYMENT_FAILED",
    "EXPIRED",
]


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: Id
    quantity: Annotated[int, Field(strict=True, ge=1, le=MAX_LINE_QUANTITY)]


class CreateOrder(BaseModel):
    """Either ``lines`` or ``from_cart: true``, not both."""

    model_config = ConfigDict(extra="forbid")

    lines: Annotated[list[LineIn], Field(min_length=1, max_length=MAX_LINES)] | None = None
    from_cart: Annotated[bool, Field(strict=True)] = False

    @model_validator(mode="after")
    def _one_source(self) -> CreateOrder:
        if (self.lines is None) == (not self.from_cart):
            raise ValueError("give either lines or from_cart: true")
        return self


class OrderLineOut(BaseModel):
    item_id: str
    product_id: str
    product_name: str
    size: int
    color: str
    quantity: int
    unit_price: int


class HistoryEntry(BaseModel):
    status: StatusName
    at: str
    reason: str | None = None


class OrderOut(BaseModel):
    id: str
    status: StatusName
    lines: list[OrderLineOut]
    total_amount: int
    created_at: str
    updated_at: str
    expires_at: str
    paid_at: str | None
    refunded_at: str | None
    history: list[HistoryEntry]


class OrderSummary(BaseModel):
    id: str
    status: StatusName
    total_amount: int
    created_at: str
    updated_at: str
    expires_at: str
    paid_at: str | None


class OrderPage(BaseModel):
    items: list[OrderSummary]
    next_cursor: str | None


class InternalOrder(BaseModel):
    id: str
    buyer_id: str
    status: StatusName
    total_amount: int
    expires_at: str
    payment_id: str | None
