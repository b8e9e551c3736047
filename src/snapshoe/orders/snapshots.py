"""Product name, size and color of items, for the order lines' snapshot.

The reservation answer of products carries the price and product of each line; the display
fields come from ``/internal/items``, cached briefly in-process so that a drop's successful
orders cost one products call each, not two. Size and color never change; a product renamed
in the last few seconds may be snapshotted under its old name, which is acceptable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from snapshoe.kernel.clients.products import ProductsClient

TTL_SECONDS = 30.0
MAX_ENTRIES = 10_000


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
            if len(self._cache) > MAX_ENTRIES:
                self._cache.clear()
            for item in answer.get("items", []):
                snap = ItemSnapshot(
                    str(item["product_name"]), int(item["size"]), str(item["color"])
                )
                self._cache[str(item["item_id"])] = (now + TTL_SECONDS, snap)
                found[str(item["item_id"])] = snap
        return found
