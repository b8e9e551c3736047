"""Order rules and value objects. No I/O, no framework imports."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import orjson

MAX_LINES = 20  # as products accepts per reservation
MAX_LINE_QUANTITY = 100


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
    """One line per item (quantities added), in first-seen order, as products reserves them."""
    merged: dict[str, int] = {}
    for line in lines:
        merged[line.item_id] = merged.get(line.item_id, 0) + line.quantity
    return [Line(i, q) for i, q in merged.items()]


def new_order_id() -> str:
    """Unguessable (128 bits); also the reservation id at products."""
    return secrets.token_urlsafe(16)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes from the DB are UTC; aware ones are converted."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def to_db(value: datetime) -> datetime:
    return as_utc(value).replace(tzinfo=None)


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return as_utc(value).isoformat().replace("+00:00", "Z")


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


class SoldOutHints:
    """Items products refused as sold out moments ago, remembered for ``ttl`` seconds so the
    rest of a stampede is turned away here, without the round trip to products.

    A hint can only refuse, never admit: products' gate stays the only judge of a sale. The
    price is staleness: a pair that comes back (a declined payment, an expiry) is offered
    again at most about ``ttl`` seconds later.

    When a hint lapses, :meth:`refused` lets exactly one request through to ask products
    again (the probe) and keeps turning the others away while it does, for at most another
    ``ttl``; products' answer then renews the hint (:meth:`remember`) or ends it
    (:meth:`forget`). Without the probe every request that arrived between the lapse and
    products' next answer went on to products' queue, only to be refused there.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._until: dict[str, float] = {}
        self._probe_until: dict[str, float] = {}

    def remember(self, item_ids: Iterable[str], now: float) -> None:
        if self.ttl <= 0:
            return
        for item_id in item_ids:
            self._until[item_id] = now + self.ttl
            self._probe_until.pop(item_id, None)
        if len(self._until) > 10_000:  # bounded: forget what has lapsed
            self._until = {k: t for k, t in self._until.items() if t > now}
            self._probe_until = {k: t for k, t in self._probe_until.items() if t > now}

    def refused(self, item_ids: Iterable[str], now: float) -> list[str]:
        """At the door: the requested items hinted sold out (empty: ask products). A caller
        that finds a lapsed hint with no probe out gets an empty list and is the probe."""
        ids = list(item_ids)
        hinted = [
            i for i in ids if self._until.get(i, 0.0) > now or self._probe_until.get(i, 0.0) > now
        ]
        if not hinted:
            for i in ids:
                if i in self._until:
                    self._probe_until[i] = now + self.ttl
        return hinted

    def still_refused(self, item_ids: Iterable[str], now: float) -> list[str]:
        """After a wait: the items products called sold out meanwhile. Probes do not count, so
        a probe is never turned away by its own mark."""
        return [i for i in item_ids if self._until.get(i, 0.0) > now]

    def forget(self, item_ids: Iterable[str]) -> None:
        for item_id in item_ids:
            self._until.pop(item_id, None)
            self._probe_until.pop(item_id, None)
