"""The checks of a drop once it has settled, beyond stock (``checks.check_product``): money,
answers and messaging. Each anomaly names its evidence (issue 18's checker).

- Money, from the orders database and the PG's own counts (``GET /v1/sandbox/orders/{id}/
  charges``): an order that is paid (PREPARING, SHIPPING, DELIVERED) was charged once, its
  total, and not refunded; any other order (never paid, expired, failed, cancelled) keeps no
  money: whatever was charged was refunded, in full and once.
- Answers: every order the buyers never saw a 201 for (a cut connection, a timeout) is still
  theirs to see: replaying its Idempotency-Key with the same body answers that same order.
- Messaging: every consumer queue drained and every dead-letter queue empty.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from sqlalchemy import bindparam, text

from snapshoe.bench.checks import connection
from snapshoe.kernel.clients import pooled_session
from snapshoe.kernel.deadletters import PLATFORM_QUEUES, queue_depths
from snapshoe.kernel.settings import Settings

PAID = {"PREPARING", "SHIPPING", "DELIVERED"}
PG_CONCURRENCY = 32


@dataclass(frozen=True)
class OrderMoney:
    order_id: str
    status: str
    total: int
    charges: int
    charged_amount: int
    refunds: int
    refunded_amount: int


def money_anomalies(orders: Iterable[OrderMoney]) -> list[dict[str, Any]]:
    """Each order whose money does not match its status (pure: the rules above)."""
    out = []
    for o in orders:
        kept = o.charged_amount - o.refunded_amount
        problem = None
        if o.refunds > 1 or o.refunded_amount > o.charged_amount:
            problem = "refunded more than once or more than charged"
        elif o.status in PAID and (o.charges != 1 or kept != o.total or o.refunds):
            problem = "a paid order not charged exactly once its total"
        elif o.status not in PAID and kept != 0:
            problem = "money kept without a paid order"
        if problem:
            out.append({"anomaly": problem, "evidence": o.__dict__.copy()})
    return out


async def order_money(settings: Settings, pid: str) -> list[OrderMoney]:
    """Every order of product ``pid`` with the PG's counts for it."""
    async with connection(settings, "orders") as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT DISTINCT o.id, o.status, o.total_amount FROM orders o "
                    "JOIN order_lines l ON l.order_id = o.id WHERE l.product_id = :p"
                ),
                {"p": pid},
            )
        ).all()
    limit = asyncio.Semaphore(PG_CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=30)
    # The PG's own API, as the payments service calls it: Basic auth with the secret key.
    headers = {"Authorization": aiohttp.BasicAuth(settings.pg_secret_key, "").encode()}
    async with pooled_session(
        PG_CONCURRENCY, timeout=timeout, base_url=settings.service_url("sandbox_pg")
    ) as pg:

        async def one(oid: str, status: str, total: int) -> OrderMoney:
            async with limit, pg.get(f"/v1/sandbox/orders/{oid}/charges", headers=headers) as r:
                r.raise_for_status()  # a PG that does not answer is no evidence of anything
                body = await r.json()
            return OrderMoney(
                oid,
                status,
                int(total),
                int(body.get("charges", 0)),
                int(body.get("charged_amount", 0)),
                int(body.get("refunds", 0)),
                int(body.get("refunded_amount", 0)),
            )

        return list(await asyncio.gather(*(one(str(a), str(b), int(c)) for a, b, c in rows)))


async def unseen_orders_replay(
    settings: Settings,
    order_ids: list[str],
    token_of: Callable[[str], str],
) -> list[dict[str, Any]]:
    """Replay each order's key as its buyer, with the body it was placed with (its lines):
    an anomaly for each that does not answer that same order."""
    if not order_ids:
        return []
    async with connection(settings, "orders") as conn:
        stmt = text(
            "SELECT o.id, o.buyer_id, o.idempotency_key, l.item_id, l.quantity FROM orders o "
            "JOIN order_lines l ON l.order_id = o.id WHERE o.id IN :ids ORDER BY o.id, l.line_no"
        ).bindparams(bindparam("ids", expanding=True))
        rows = (await conn.execute(stmt, {"ids": order_ids})).all()
    placed: dict[str, tuple[str, str, list[dict[str, Any]]]] = {}
    for oid, buyer, key, item, qty in rows:
        placed.setdefault(oid, (buyer, key, []))[2].append({"item_id": item, "quantity": int(qty)})
    out = []
    timeout = aiohttp.ClientTimeout(total=30)
    async with pooled_session(8, timeout=timeout, base_url=settings.gateway_url) as gw:
        for oid, (buyer, key, lines) in placed.items():
            headers = {"Authorization": f"Bearer {token_of(buyer)}", "Idempotency-Key": key}
            async with gw.post("/api/orders", json={"lines": lines}, headers=headers) as r:
                body = await r.json(content_type=None)
                status = r.status
            if status not in (200, 201) or body.get("id") != oid:
                out.append(
                    {
                        "anomaly": "an order the buyer never saw cannot be replayed",
                        "evidence": {"order_id": oid, "status": status, "answer": body},
                    }
                )
    return out


async def messaging_settled(settings: Settings, within: float) -> dict[str, dict[str, int]]:
    """Consumer queues not drained after ``within`` seconds, and dead letters (full queue name
    -> messages; empty dicts when all is well)."""
    deadline = time.monotonic() + within
    while True:
        depths = await queue_depths(settings, PLATFORM_QUEUES, dlq=False, with_dlq=True)
        waiting = {q: n for q, n in depths.items() if n and not q.endswith(".dlq")}
        dead = {q: n for q, n in depths.items() if n and q.endswith(".dlq")}
        if not waiting or time.monotonic() > deadline:
            return {"undrained_queues": waiting, "dead_letters": dead}
        await asyncio.sleep(0.5)


async def dead_letters(settings: Settings) -> dict[str, int]:
    """Messages in each dead-letter queue now (a run compares its end with its start: the
    platform may hold dead letters from before, which are not the run's)."""
    depths = await queue_depths(settings, PLATFORM_QUEUES, dlq=True)
    return {q: n for q, n in depths.items() if n}


async def settle_anomalies(
    settings: Settings,
    pid: str,
    unseen: list[str],
    token_of: Callable[[str], str],
    dead_before: dict[str, int],
) -> list[dict[str, Any]]:
    """Every anomaly of money, unseen answers and messaging for product ``pid``'s drop."""
    found = money_anomalies(await order_money(settings, pid))
    found += await unseen_orders_replay(settings, unseen, token_of)
    queues = await messaging_settled(settings, 30)
    if queues["undrained_queues"]:
        found.append({"anomaly": "consumer queues not drained", "evidence": queues})
    grown = {
        q: n - dead_before.get(q, 0)
        for q, n in queues["dead_letters"].items()
        if n > dead_before.get(q, 0)
    }
    if grown:
        found.append({"anomaly": "events dead-lettered during the run", "evidence": grown})
    return found
