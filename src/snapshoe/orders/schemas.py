"""Request and response models of the orders service (docs/api.md, Orders)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from snapshoe.kernel.contracts.internal_orders import InternalOrder as InternalOrder
from snapshoe.kernel.contracts.internal_orders import OrderStatus
from snapshoe.kernel.contracts.internal_products import MAX_LINE_QUANTITY, MAX_LINES

Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
StatusName = OrderStatus  # one list of the statuses, in the internal contract


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


class AdminOrderOut(OrderOut):
    """An order as an operator sees it (``GET /api/admin/orders/{id}``, the refund's answer):
    the buyer's view plus whose it is and its payment."""

    buyer_id: str
    payment_id: str | None


class AdminOrderSummary(OrderSummary):
    """A listed order as an operator sees it: the buyer's summary plus whose it is, what it
    holds and its payment."""

    buyer_id: str
    lines: list[OrderLineOut]
    refunded_at: str | None
    payment_id: str | None


class AdminOrderPage(BaseModel):
    items: list[AdminOrderSummary]
    next_cursor: str | None


# The internal answer to payments (GET /internal/orders/{id}) is the contract
# ``kernel.contracts.internal_orders.InternalOrder``, imported above.


class Refusals(BaseModel):
    """``POST /api/orders`` refusals of a product, by reason (counted for a day)."""

    sold_out: int
    purchase_limit_exceeded: int
    drop_not_open: int
    admission_required: int
    other: int


class PaymentFigures(BaseModel):
    approved: int  # orders paid (reached PREPARING, whatever they are now)
    declined: int  # orders whose payment failed (PAYMENT_FAILED)


class ProductSales(BaseModel):
    """``GET /api/admin/products/{id}/sales``: the live drop view's figures of one product."""

    product_id: str
    orders_by_status: dict[str, int]
    created_last_10s: int
    created_last_60s: int
    refusals: Refusals
    payments: PaymentFigures
    server_errors: int


FigureStatus = Literal["ok", "unavailable"]


class OutboxFigure(BaseModel):
    """One service's events not yet published (None: the service could not be asked)."""

    status: FigureStatus
    backlog: int | None = None
    oldest_age_seconds: float | None = None
    fix: str


class DeadLetterQueue(BaseModel):
    queue: str
    messages: int
    fix: str


class DeadLetterFigures(BaseModel):
    status: FigureStatus
    total: int | None = None
    queues: list[DeadLetterQueue] = []
    inspect: str
    fix: str


class GateDriftFigure(BaseModel):
    status: FigureStatus
    built: bool | None = None
    items: int | None = None
    differences: int | None = None
    fix: str


class Operations(BaseModel):
    """``GET /api/admin/operations``: the operator's glance, each figure with its fix."""

    outbox: dict[str, OutboxFigure]
    dead_letters: DeadLetterFigures
    gate_drift: GateDriftFigure
