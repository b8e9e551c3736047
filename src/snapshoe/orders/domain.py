"""Order rules and value objects. No I/O, no framework imports."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import orjson

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


@dataclass(frozen=True, slots=True)
class Line:
    item_id: str
    quantity: int


def merge_lines(lines: Iterable[Line]) -> list[Line]:
    """One line per item (quantities added), in first-seen order (the order lines are stored and
    shown in the buyer's order; products sorts the reservation's lines by item id itself)."""
    merged: dict[str, int] = {}
    for line in lines:
        merged[line.item_id] = merged.get(line.item_id, 0) + line.quantity
    return [Line(i, q) for i, q in merged.items()]


def new_order_id() -> str:
    """Unguessable (128 bits); also the reservation id at products."""
    return secrets.token_urlsafe(16)


def expires_at(now: datetime, ttl_seconds: float) -> datetime:
    return now + timedelta(seconds=ttl_seconds)


def next_stage_at(since: datetime, stage_seconds: float) -> datetime:
    return since + timedelta(seconds=stage_seconds)


class InvalidCursor(ValueError):
    pass


def encode_cursor(created_at: datetime, order_id: str) -> str:
    raw = orjson.dumps({"v": 1, "t": to_db(created_at).isoformat(), "id": order_id})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    if len(cursor) > 200:
        raise InvalidCursor("cursor too long")
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(data, dict) or data.get("v") != 1:
            raise InvalidCursor("unknown cursor")
        at, order_id = data["t"], data["id"]
        if not isinstance(at, str) or not isinstance(order_id, str) or len(order_id) > 64:
            raise InvalidCursor("malformed cursor")
        return to_db(datetime.fromisoformat(at)), order_id
    except (binascii.Error, ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        if isinstance(exc, InvalidCursor):
            raise
        raise InvalidCursor("malformed cursor") from exc
