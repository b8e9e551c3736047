"""Request and response models of the products service (docs/api.md, Catalog)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from snapshoe.kernel.contracts.internal_products import (
    AwareDatetime as AwareDatetime,
)
from snapshoe.kernel.contracts.internal_products import (
    Id as Id,
)
from snapshoe.kernel.contracts.internal_products import (
    ItemDetail as ItemDetail,
)
from snapshoe.kernel.contracts.internal_products import (
    ItemDetails as ItemDetails,
)
from snapshoe.kernel.contracts.internal_products import (
    LineIn as LineIn,
)
from snapshoe.kernel.contracts.internal_products import (
    ReservationOut as ReservationOut,
)
from snapshoe.kernel.contracts.internal_products import (
    ReservedLine as ReservedLine,
)
from snapshoe.kernel.contracts.internal_products import (
    ReserveIn as ReserveIn,
)
from snapshoe.products.domain import (
    ADMISSION_SECONDS_MAX,
    ADMISSION_SECONDS_MIN,
    MAX_STOCK,
    SIZE_MAX_MM,
    SIZE_MIN_MM,
    SaleMode,
)

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Brand = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Color = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
Url = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=500, pattern=r"^https?://\S+$")
]
Price = Annotated[int, Field(ge=0, le=100_000_000)]
Limit = Annotated[int, Field(ge=0, le=1000)]

StockMode = Literal["gate", "db_lock"]
AdmissionSeconds = Annotated[int, Field(ge=ADMISSION_SECONDS_MIN, le=ADMISSION_SECONDS_MAX)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProductCreate(_In):
    name: Name
    brand: Brand
    description: Annotated[str, StringConstraints(max_length=10_000)] = ""
    price: Price
    release_at: AwareDatetime
    per_user_limit: Limit = 0
    thumbnail_url: Url | None = None
    # A benchmark/teaching baseline, not a production path: 'db_lock' takes stock with database
    # row locks only, without the Redis gate (docs/products.md, "Stock modes").
    stock_mode: StockMode = "gate"
    # docs/api.md, "Sale modes"; the waiting room's times (queue mode only).
    sale_mode: SaleMode = "fcfs"
    queue_opens_at: AwareDatetime | None = None
    admission_seconds: AdmissionSeconds | None = None
    # The draw's times (draw mode only; docs/draws.md).
    entry_opens_at: AwareDatetime | None = None
    entry_closes_at: AwareDatetime | None = None
    draw_at: AwareDatetime | None = None


class ProductPatch(_In):
    name: Name | None = None
    brand: Brand | None = None
    description: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    price: Price | None = None
    release_at: AwareDatetime | None = None
    per_user_limit: Limit | None = None
    thumbnail_url: Url | None = None
    sale_mode: SaleMode | None = None
    queue_opens_at: AwareDatetime | None = None
    admission_seconds: AdmissionSeconds | None = None
    entry_opens_at: AwareDatetime | None = None
    entry_closes_at: AwareDatetime | None = None
    draw_at: AwareDatetime | None = None


class ItemCreate(_In):
    size: Annotated[int, Field(ge=SIZE_MIN_MM, le=SIZE_MAX_MM, description="shoe size in mm")]
    color: Color
    stock: Annotated[int, Field(ge=0, le=MAX_STOCK)]
    price: Price | None = None


class ItemPatch(_In):
    stock_delta: Annotated[int, Field(ge=-MAX_STOCK, le=MAX_STOCK)]


Status = Literal["upcoming", "live", "sold_out"]


class ProductSummary(BaseModel):
    id: str
    name: str
    brand: str
    price: int
    release_at: str
    status: Status
    thumbnail_url: str | None
    sale_mode: SaleMode


class ProductPage(BaseModel):
    items: list[ProductSummary]
    next_cursor: str | None


class ItemOut(BaseModel):
    id: str
    size: int
    color: str
    price: int
    available: bool
    stock_remaining: int


class ProductDetail(BaseModel):
    id: str
    name: str
    brand: str
    description: str
    price: int
    release_at: str
    status: Status
    per_user_limit: int
    thumbnail_url: str | None
    items: list[ItemOut]
    sale_mode: SaleMode
    # Queue mode only (null otherwise).
    queue_opens_at: str | None = None
    admission_seconds: int | None = None
    # Draw mode only (null otherwise).
    entry_opens_at: str | None = None
    entry_closes_at: str | None = None
    draw_at: str | None = None


class AdminItem(BaseModel):
    id: str
    product_id: str
    size: int
    color: str
    price: int
    initial: int
    sold: int
    reserved: int
    available: int


TicketStateName = Literal["waiting", "admitted", "used", "expired", "sold_out"]


class Ticket(BaseModel):
    """A buyer's place in a product's waiting room (docs/api.md, "Waiting room")."""

    id: str
    product_id: str
    state: TicketStateName
    position: int | None
    joined_at: str
    admitted_at: str | None
    admitted_until: str | None
    admission_token: str | None = None


class QueueFigures(BaseModel):
    """``GET /api/admin/products/{id}/queue``: tickets by state, and the outflow."""

    waiting: int
    admitted: int
    used: int
    expired: int
    sold_out: int
    admitted_last_minute: int
    state: Literal["pre", "running", "ended"]
    head: int


BillingKey = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_\-=.]+$")
]


class EntryIn(_In):
    """``POST /api/products/{id}/entries``: one size and the card to charge if drawn."""

    item_id: Id
    billing_key: BillingKey


EntryStateName = Literal["entered", "withdrawn", "won", "lost", "payment_failed"]


class Entry(BaseModel):
    """A buyer's entry in a product's draw (docs/api.md, "Draw")."""

    id: str
    product_id: str
    item_id: str
    state: EntryStateName
    order_id: str | None
    card_number: str  # masked, as the PG shows it
    created_at: str


class PublishedEntry(BaseModel):
    """An entry as the draw publishes it, for anyone's recomputation: no buyer, no card."""

    id: str
    item_id: str
    state: EntryStateName
    rank: int | None


class DrawItem(BaseModel):
    item_id: str
    size: int
    pairs: int
    entries: int
    won: int
    payment_failed: int
    lost: int


class DrawOut(BaseModel):
    """``GET /api/products/{id}/draw``: the commitment from the start, the seed and every
    entry's rank once drawn (docs/draws.md says how to check them)."""

    product_id: str
    state: Literal["open", "drawn", "settled"]
    commitment: str
    seed: str | None
    entry_opens_at: str
    entry_closes_at: str
    draw_at: str
    drawn_at: str | None
    settled_at: str | None
    algorithm: str
    items: list[DrawItem]
    entries: list[PublishedEntry]


class DrawFigures(BaseModel):
    """``GET /api/admin/products/{id}/draw``: entries per size and, after the draw, the
    charged, declined and unsold pairs."""

    state: Literal["open", "drawn", "settled"]
    items: list[DrawItem]
    entered: int
    withdrawn: int
    charging: int
    won: int
    lost: int
    payment_failed: int
    unsold_pairs: int


# The internal API (orders and users services): its models are the contract in
# ``kernel/contracts/internal_products.py``, imported above and used by name here
# (``schemas.ReserveIn`` ...), so the server and the client share one class each.
