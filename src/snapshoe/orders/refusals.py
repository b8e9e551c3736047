"""Counting what ``POST /api/orders`` answers, per product, for the operator's live drop view
(``GET /api/admin/products/{id}/sales``, ``sales.py``): refusals by reason and 5xx answers.

One Redis counter per product and figure (``<ns>:orders:sales:<product>:<figure>``), INCRed in
the idempotency script the answer already runs (``kernel.idempotency``, ``count=``): no round
trip of its own on the drop path, and kept a day after its last INCR. A replayed answer is not
counted again (the same attempt); neither is an answer whose items' product is not known
(an unknown item: there is no product to count it under).

The request names items, not products: :class:`ItemProducts` remembers each item's product
(it never changes) from the reservations products answers, and asks products' item details for
an item it has not met yet, once per process (concurrent askers share the one call). A 5xx is
counted where orders answers it (a refusal or failure of products, the database, an unknown
commit outcome); one that happens when Redis itself fails, or before ``placing`` runs, is not:
the figure is best effort.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from snapshoe.kernel.clients import UpstreamProblem, UpstreamUnavailable
from snapshoe.kernel.clients.products import ProductsClient
from snapshoe.kernel.contracts.internal_products import ReservedLine
from snapshoe.kernel.idempotency import COUNT_SECONDS
from snapshoe.kernel.redis import key as redis_key
from snapshoe.kernel.settings import Settings

log = logging.getLogger("snapshoe.orders")

# A refusal's code -> the figure it counts under; every other 4xx is "other".
REASONS = {
    "sold_out": "sold_out",
    "purchase_limit_exceeded": "purchase_limit_exceeded",
    "drop_not_open": "drop_not_open",
    "admission_required": "admission_required",
}
REFUSALS = (*REASONS.values(), "other")
SERVER_ERRORS = "server_errors"
FIGURES = (*REFUSALS, SERVER_ERRORS)
# Codes that are the caller's own mistake about its key, not an answer about a purchase.
NOT_COUNTED = frozenset(("idempotency_key_reused", "idempotency_key_in_use"))
ITEMS_KEPT = 100_000  # items whose product a process remembers (then it starts again)


def figure_of(status: int, code: str | None) -> str | None:
    """The figure an answer counts under, or None (not counted)."""
    if status >= 500:
        return SERVER_ERRORS
    if status < 400 or code in NOT_COUNTED:
        return None
    return REASONS.get(code or "", "other")


def counter_key(settings: Settings, product_id: str, figure: str) -> str:
    return redis_key(settings, "orders", "sales", product_id, figure)


class ItemProducts:
    """item id -> product id, learned from reservations, else asked of products once."""

    def __init__(self, products: ProductsClient) -> None:
        self._products = products
        self._of: dict[str, str] = {}
        self._asking: dict[str, asyncio.Future[None]] = {}

    def learn(self, lines: Iterable[ReservedLine]) -> None:
        if len(self._of) > ITEMS_KEPT:
            self._of.clear()
        for line in lines:
            self._of[line.item_id] = line.product_id

    def known(self, item_ids: Iterable[str]) -> list[str] | None:
        """The items' products (each once) if every one is known, else None."""
        out: list[str] = []
        for item_id in item_ids:
            pid = self._of.get(item_id)
            if pid is None:
                return None
            if pid not in out:
                out.append(pid)
        return out

    async def of(self, item_ids: Sequence[str]) -> list[str]:
        """The items' products; an item products does not know (or cannot tell) is left out."""
        if (found := self.known(item_ids)) is not None:
            return found
        missing = [i for i in dict.fromkeys(item_ids) if i not in self._of]
        mine = [i for i in missing if i not in self._asking]
        waits = [self._asking[i] for i in missing if i in self._asking]
        if mine:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            for item_id in mine:
                self._asking[item_id] = done
            try:
                answer = await self._products.item_details(mine)
                for item in answer.items:
                    self._of[item.item_id] = item.product_id
            except (UpstreamProblem, UpstreamUnavailable) as exc:
                log.warning("products of items not known, refusal not counted: %r", exc)
            finally:
                for item_id in mine:
                    self._asking.pop(item_id, None)
                done.set_result(None)
        if waits:
            await asyncio.gather(*waits)
        return list(dict.fromkeys(p for i in item_ids if (p := self._of.get(i)) is not None))


async def counters(
    settings: Settings,
    products: ItemProducts,
    item_ids: Sequence[str],
    status: int,
    code: str | None,
) -> list[str]:
    """The counter keys an answer INCRs (none when it is not counted)."""
    figure = figure_of(status, code)
    if figure is None or not item_ids:
        return []
    return [counter_key(settings, pid, figure) for pid in await products.of(item_ids)]


async def count_alone(redis: Redis, keys: Sequence[str]) -> None:
    """INCR counters outside an idempotency script (an answer that makes no Redis call)."""
    if not keys:
        return
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.incr(k)
                pipe.expire(k, COUNT_SECONDS)
            await pipe.execute()
    except RedisError as exc:
        log.warning("answer not counted: %s", exc)


async def read(redis: Redis, settings: Settings, product_id: str) -> dict[str, int]:
    """Every figure of a product (0 when never counted, or not for a day)."""
    values = await redis.mget([counter_key(settings, product_id, f) for f in FIGURES])
    return {f: int(v or 0) for f, v in zip(FIGURES, values, strict=True)}
