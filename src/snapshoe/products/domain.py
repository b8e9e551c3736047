"""Pure rules of the catalog and the stock ledger. No I/O."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from snapshoe.kernel import cursors, lines
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


def encode_cursor(last_id: str) -> str:
    """The catalog pages by product id (a ULID: creation order)."""
    return cursors.encode({"id": last_id})


def decode_cursor(cursor: str) -> str:
    return cursors.text_field(cursors.decode(cursor), "id", 32)


def like_pattern(q: str) -> str:
    """A LIKE pattern matching ``q`` anywhere, with the wildcards in ``q`` escaped ('\\')."""
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# Reservations


Line = lines.Line


@dataclass(slots=True)
class ProductLines:
    product_id: str
    lines: list[Line] = field(default_factory=list)

    @property
    def units(self) -> int:
        return sum(line.quantity for line in self.lines)


def merge_lines(raw: Iterable[Line]) -> list[Line]:
    """One line per item (quantities added), sorted by item id: the lock order of the ledger
    update, so two multi-line reservations never deadlock."""
    return sorted(lines.merge_lines(raw), key=lambda line: line.item_id)


def group_by_product(lines: Sequence[Line], product_of: dict[str, str]) -> list[ProductLines]:
    groups: dict[str, ProductLines] = {}
    for line in lines:
        pid = product_of[line.item_id]
        groups.setdefault(pid, ProductLines(pid)).lines.append(line)
    return [groups[pid] for pid in sorted(groups)]


# Sale modes and the waiting room (docs/waiting-room.md)

SaleMode = Literal["fcfs", "queue", "draw"]
QUEUE_LEAD = timedelta(minutes=15)  # queue_opens_at when not given: this long before release
ADMISSION_SECONDS_DEFAULT = 300
ADMISSION_SECONDS_MIN, ADMISSION_SECONDS_MAX = 30, 3600
LOTTERY_BITS = 62


class TicketState(StrEnum):
    WAITING = "waiting"
    ADMITTED = "admitted"
    USED = "used"
    EXPIRED = "expired"
    SOLD_OUT = "sold_out"


FINAL_TICKET_STATES = frozenset((TicketState.USED, TicketState.EXPIRED, TicketState.SOLD_OUT))


def queue_opens_at(release_at: datetime, given: datetime | None) -> datetime:
    """When buyers may start waiting: as given (at most the release), or QUEUE_LEAD before."""
    return as_utc(given) if given is not None else as_utc(release_at) - QUEUE_LEAD


def position(state: str, place: int | None, head: int) -> int | None:
    """A waiting ticket's 1-based place among the waiting (1 = next): admissions leave from
    the head in place order, so every place up to ``head`` has left. None before the ranking
    and for any ticket no longer waiting."""
    if state != TicketState.WAITING or place is None:
        return None
    return place - head


def admissions_due(available: int, outstanding: int, waiting: int) -> int:
    """How many to admit now: never more at once than the pairs they could still get, the
    pairs on sale minus the admissions not yet used or lapsed."""
    return max(0, min(available - outstanding, waiting))


def nothing_can_come_back(available: int, reserved: int, outstanding: int) -> bool:
    """The queue ends when no pair is on sale, none is held by an unpaid order (which could
    come back) and no admission is outstanding (which could lapse)."""
    return available == 0 and reserved == 0 and outstanding == 0


# Draws (docs/draws.md)


class EntryState(StrEnum):
    ENTERED = "entered"
    WITHDRAWN = "withdrawn"
    CHARGING = "charging"  # drawn, its order and charge under way; "entered" to the buyer
    WON = "won"
    LOST = "lost"
    PAYMENT_FAILED = "payment_failed"


DECIDED_ENTRY_STATES = frozenset((EntryState.WON, EntryState.LOST, EntryState.PAYMENT_FAILED))


def charges_due(available: int, unplaced: int, waiting: int) -> int:
    """How many entrants of a size to charge now: never more at once than the pairs on sale,
    minus the charges whose order has not taken its pair yet (the queue's outflow rule)."""
    return max(0, min(available - unplaced, waiting))
