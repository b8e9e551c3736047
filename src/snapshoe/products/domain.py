"""Pure rules of the catalog and the stock ledger. No I/O."""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

import orjson

from snapshoe.kernel.clock import as_utc

ProductStatus = Literal["upcoming", "live", "sold_out"]

SIZE_MIN_MM = 100
SIZE_MAX_MM = 400
MAX_STOCK = 1_000_000

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class ReservationState(StrEnum):
    ACTIVE = "ACTIVE"
    COMMITTED = "COMMITTED"
    RELEASED = "RELEASED"


def new_id(now_ms: int | None = None) -> str:
    """A ULID (48-bit ms timestamp + 80 random bits, Crockford base32): opaque, unguessable
    enough for catalog ids, and sortable by creation time so it can be a cursor key."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def product_status(release_at: datetime, remaining: int, now: datetime) -> ProductStatus:
    if as_utc(now) < as_utc(release_at):
        return "upcoming"
    return "live" if remaining > 0 else "sold_out"


# Cursors: base64url(JSON) of the last row's sort key. Opaque to clients, validated on the way
# in so that a bad cursor is a 422, never a 500.


class InvalidCursor(ValueError):
    pass


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"v": 1, "id": last_id})).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    if len(cursor) > 200:
        raise InvalidCursor("cursor too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidCursor("cursor is not valid") from exc
    if not isinstance(data, dict) or data.get("v") != 1:
        raise InvalidCursor("cursor is not valid")
    last = data.get("id")
    if not isinstance(last, str) or not 0 < len(last) <= 32:
        raise InvalidCursor("cursor is not valid")
    return last


def like_pattern(q: str) -> str:
    """A LIKE pattern matching ``q`` anywhere, with the wildcards in ``q`` escaped ('\\')."""
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# Reservations


@dataclass(frozen=True, slots=True)
class Line:
    item_id: str
    quantity: int


@dataclass(slots=True)
class ProductLines:
    product_id: str
    lines: list[Line] = field(default_factory=list)

    @property
    def units(self) -> int:
        return sum(line.quantity for line in self.lines)


def merge_lines(lines: Iterable[Line]) -> list[Line]:
    """One line per item (quantities added), sorted by item id: the lock order of the ledger
    update, so two multi-line reservations never deadlock."""
    total: dict[str, int] = defaultdict(int)
    for line in lines:
        total[line.item_id] += line.quantity
    return [Line(item_id, qty) for item_id, qty in sorted(total.items())]


def group_by_product(lines: Sequence[Line], product_of: dict[str, str]) -> list[ProductLines]:
    groups: dict[str, ProductLines] = {}
    for line in lines:
        pid = product_of[line.item_id]
        groups.setdefault(pid, ProductLines(pid)).lines.append(line)
    return [groups[pid] for pid in sorted(groups)]
