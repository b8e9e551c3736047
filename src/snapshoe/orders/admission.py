"""Admission of an order attempt: the speed machinery in front of products' gate, kept apart
from the business steps of placing (``placing.py``).

- :class:`SoldOutHints`: items products just refused as sold out, so the rest of a stampede is
  turned away here without a round trip (a hint can only refuse, never admit).
- Backpressure (:func:`reserve_slot`): at most ``reserve_concurrency`` reservations in flight;
  a request that waited for a slot looks at the hints again first.
- :class:`ItemSnapshots`: product name, size and color of items for the order lines' snapshot
  when the reservation answer does not carry them. Products' answer to a reservation just
  written carries them, so an admitted purchase costs one products call; only a replayed
  reservation (answered from the stored lines) needs this, cached briefly in-process. Size and
  color never change; a product renamed in the last few seconds may be snapshotted under its
  old name, which is acceptable. (Formerly ``snapshots.py``: it is the same kind of thing, a
  cache that saves products calls, and has no other user.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from snapshoe.kernel.clients import UpstreamProblem, UpstreamUnavailable
from snapshoe.kernel.clients.products import ProductsClient
from snapshoe.kernel.contracts.internal_products import ReservedLine
from snapshoe.kernel.errors import Problem
from snapshoe.orders.answers import unavailable
from snapshoe.orders.baseline import is_row_lock_refusal
from snapshoe.orders.domain import Line

SNAPSHOT_TTL_SECONDS = 30.0
SNAPSHOT_MAX_ENTRIES = 10_000


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


def sold_out_refusal(
    hints: SoldOutHints, item_ids: list[str], *, waited: bool = False
) -> Problem | None:
    """A sold-out refusal orders can give without products, or None (ask products)."""
    now = time.monotonic()
    hinted = hints.still_refused(item_ids, now) if waited else hints.refused(item_ids, now)
    if not hinted:
        return None
    return Problem(409, "sold_out", detail="Not enough stock", item_ids=hinted)


@asynccontextmanager
async def reserve_slot(
    slots: asyncio.Semaphore, hints: SoldOutHints, item_ids: list[str]
) -> AsyncIterator[None]:
    """Backpressure: hold one of the reservation slots. While this request waited for it,
    products may have said the item is sold out; then the answer is known without asking."""
    async with slots:
        if (refusal := sold_out_refusal(hints, item_ids, waited=True)) is not None:
            raise refusal
        yield


def learn_from_refusal(hints: SoldOutHints, lines: Sequence[Line], exc: UpstreamProblem) -> None:
    """What products' refusal of a reservation tells the hints."""
    if exc.code == "sold_out" and is_row_lock_refusal(exc.body):
        pass  # the row-lock baseline: no hint, every attempt asks products' database
    elif exc.code == "sold_out":
        # Only a refusal of a single unit proves nothing is left of that item.
        single = {x.item_id for x in lines if x.quantity == 1}
        refused = [str(i) for i in exc.body.get("item_ids") or [] if i in single]
        hints.remember(refused, time.monotonic())
    else:
        # Refused for another reason (a limit, a closed drop): none of these items is
        # known to be sold out, so a hint (and its probe) on them ends.
        hints.forget(x.item_id for x in lines)


@dataclass(frozen=True, slots=True)
class ItemSnapshot:
    product_name: str
    size: int
    color: str


class ItemSnapshots:
    def __init__(self, products: ProductsClient) -> None:
        self._products = products
        self._cache: dict[str, tuple[float, ItemSnapshot]] = {}

    async def get(self, item_ids: list[str]) -> dict[str, ItemSnapshot]:
        now = time.monotonic()
        found: dict[str, ItemSnapshot] = {}
        missing: list[str] = []
        for item_id in item_ids:
            hit = self._cache.get(item_id)
            if hit is not None and hit[0] > now:
                found[item_id] = hit[1]
            else:
                missing.append(item_id)
        if missing:
            answer = await self._products.item_details(missing)
            if len(self._cache) > SNAPSHOT_MAX_ENTRIES:
                self._cache.clear()
            for item in answer.items:
                snap = ItemSnapshot(item.product_name, item.size, item.color)
                self._cache[item.item_id] = (now + SNAPSHOT_TTL_SECONDS, snap)
                found[item.item_id] = snap
        return found


async def snapshot_lines(
    items: ItemSnapshots, reserved: Sequence[ReservedLine]
) -> list[dict[str, Any]]:
    """The order lines' snapshot: price and product from the reservation, the display fields
    from the reservation when it carries them (the answer to a reservation just written), else
    from :class:`ItemSnapshots` (a replayed reservation: products answers it from the stored
    lines, which have no display fields)."""
    need = [x.item_id for x in reserved if _carried(x) is None]
    try:
        details = await items.get(need) if need else {}
    except (UpstreamProblem, UpstreamUnavailable) as exc:
        raise unavailable("The catalog") from exc
    lines = []
    for x in reserved:
        d = details.get(x.item_id)
        carried = _carried(x)
        if carried is not None:
            name, size, color = carried
        elif d is not None:
            name, size, color = d.product_name, d.size, d.color
        else:
            raise unavailable("The catalog")
        lines.append(
            {
                "item_id": x.item_id,
                "product_id": x.product_id,
                "product_name": name,
                "size": size,
                "color": color,
                "quantity": x.quantity,
                "unit_price": x.unit_price,
            }
        )
    return lines


def _carried(line: ReservedLine) -> tuple[str, int, str] | None:
    """The display fields the reservation answer carries for ``line``, if it does."""
    if line.product_name is None or line.size is None or line.color is None:
        return None
    return line.product_name, line.size, line.color
