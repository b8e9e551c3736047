"""The products service's internal API (``/internal/...``, called by orders and users): its
requests and answers, one model each, used by the server (validation, ``response_model``) and
by ``kernel.clients.products`` (the answer parsed into the model). Field names, status codes and
problems are as before; the wire JSON is the model's.

Imports nothing of its own package (see ``kernel/contracts/__init__.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from snapshoe.kernel.clock import as_utc

# Most lines one reservation (and so one order) holds, and most units of one line: products
# enforces them on a reservation, orders on an order (the same numbers, written once here).
MAX_LINES = 20
MAX_LINE_QUANTITY = 100
# Longer than any admission token products signs (docs/waiting-room.md, "The token").
MAX_ADMISSION_TOKEN = 200

Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp needs a timezone (RFC 3339, e.g. 2025-01-01T10:00:00Z)")
    return as_utc(value)


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LineIn(_In):
    item_id: Id
    quantity: Annotated[int, Field(ge=1, le=MAX_LINE_QUANTITY)]


class ReserveIn(_In):
    """``POST /internal/reservations``: all-or-nothing, idempotent by ``reservation_id``."""

    reservation_id: Id
    buyer_id: Id
    lines: Annotated[list[LineIn], Field(min_length=1, max_length=MAX_LINES)]
    reserved_until: AwareDatetime
    # The buyer's Admission-Token header, as given: products checks it (and uses the admission)
    # when a line is of a queue-mode product, and ignores it otherwise.
    admission_token: Annotated[str, StringConstraints(max_length=MAX_ADMISSION_TOKEN)] | None = None


class ReservedLine(BaseModel):
    item_id: str
    product_id: str
    quantity: int
    unit_price: int
    # What orders snapshots of the item, as products read it while reserving: present on the
    # answer to a reservation just written, absent (not null) on every other reservation
    # answer (a replay, GET, commit, release), which read only the stored lines.
    product_name: str | None = None
    size: int | None = None
    color: str | None = None


class ReservationOut(BaseModel):
    """Every reservation answer (reserve, GET, commit, release). Served with
    ``response_model_exclude_none`` so a line without item details has no such keys."""

    reservation_id: str
    buyer_id: str
    state: Literal["ACTIVE", "COMMITTED", "RELEASED"]
    reserved_until: str
    lines: list[ReservedLine]
    total_amount: int
    refunded: bool = False
    changed: bool = Field(
        default=True, description="False when this call found the work already done (a replay)"
    )


class ItemDetail(BaseModel):
    item_id: str
    product_id: str
    product_name: str
    brand: str
    size: int
    color: str
    unit_price: int
    available: bool
    stock_remaining: int
    release_at: str
    per_user_limit: int


class ItemDetails(BaseModel):
    """``GET /internal/items?ids=...``."""

    items: list[ItemDetail]
    missing: list[str]
