"""Order rules and value objects. No I/O, no framework imports."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from enum import StrEnum

from snapshoe.kernel import cursors, lines
from snapshoe.kernel.clock import to_db


class Status(StrEnum):
    PENDING_PAYMENT = "PENDING_PAYMENT"
    PREPARING = "PREPARING"
    SHIPPING = "SHIPPING"
    DELIVERED = "DELIVERED"
    CANCELLED = "CANCELLED"
    PAYMENT_FAILED = "PAYMENT_FAILED"
    EXPIRED = "EXPIRED"


class StockState(StrEnum):
    """What orders last asked of the reservation at products (the ``*ING`` ones are intents
    the worker settles)."""

    HELD = "HELD"
    COMMITTING = "COMMITTING"
    COMMITTED = "COMMITTED"
    RELEASING = "RELEASING"
    RELEASED = "RELEASED"


PENDING_STOCK = (StockState.COMMITTING, StockState.RELEASING)

# The buyer may cancel before payment (stock released) and while preparing (refund too).
CANCELLABLE = (Status.PENDING_PAYMENT, Status.PREPARING)
# An admin refund is the buyer's cancel of a paid order, so only while preparing: a shipped or
# delivered pair is refunded after its return, outside this API (docs/api-additions.md).
REFUNDABLE = (Status.PREPARING,)


# Lines are kept in the buyer's order (first seen), as stored and shown; products sorts a
# reservation's lines by item id itself (its lock order).
Line = lines.Line
merge_lines = lines.merge_lines


def new_order_id() -> str:
    """Unguessable (128 bits); also the reservation id at products."""
    return secrets.token_urlsafe(16)


def expires_at(now: datetime, ttl_seconds: float) -> datetime:
    return now + timedelta(seconds=ttl_seconds)


def next_stage_at(since: datetime, stage_seconds: float) -> datetime:
    return since + timedelta(seconds=stage_seconds)


def encode_cursor(created_at: datetime, order_id: str) -> str:
    """Orders page by (created_at, id), newest first."""
    return cursors.encode({"t": to_db(created_at).isoformat(), "id": order_id})


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    key = cursors.decode(cursor)
    at, order_id = cursors.text_field(key, "t", 40), cursors.text_field(key, "id", 64)
    try:
        return to_db(datetime.fromisoformat(at)), order_id
    except ValueError as exc:
        raise cursors.InvalidCursor("malformed cursor") from exc
