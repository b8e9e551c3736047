"""``bench soak``'s workload: buyers who browse, fill and empty their cart, buy, pay (some
cards decline) and cancel (before paying, or after: a refund), at a steady rate of requests
through the gateway, with aiohttp (the project's ``pooled_session``).

A pacer hands out one send slot every ``1 / rate`` s to whichever worker asks first; a worker
that is late takes the next free slot (no burst to catch up), so the offered rate is steady and
a slow platform shows as fewer answers per second, not as a pile of queued requests. Each
worker plays its own buyers in turn (one buyer's cart is never touched by two workers). A
restocker tops the products' items up so that buys keep succeeding.

Every request is recorded as (seconds since the start, kind, latency ms, status; 0 when no
answer came); answers other than the expected ones are counted by kind and status."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson

from snapshoe.kernel.clients import pooled_session

APPROVE_CARD = "4111111111110000"
DECLINE_CARD = "4111111111110002"
REQUEST_TIMEOUT_S = 30.0
# The answers each kind of request should get; anything else is counted as unexpected.
EXPECTED: dict[str, frozenset[int]] = {
    "catalog": frozenset({200}),
    "product": frozenset({200}),
    "cart_add": frozenset({200}),
    "cart_read": frozenset({200}),
    "cart_remove": frozenset({200}),
    "order": frozenset({201}),
    "pg_authorize": frozenset({200}),
    "pay": frozenset({200, 402}),
    "order_read": frozenset({200}),
    "cancel": frozenset({200}),
    "restock": frozenset({200}),
}


def session_for(base_url: str, connections: int) -> aiohttp.ClientSession:
    """The load's keep-alive pool to the gateway (call inside the running loop)."""
    return pooled_session(
        connections,
        base_url=base_url,
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )


class Pacer:
    """One send slot every ``1 / rate`` s; a slot not taken in time is lost, not saved up."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next = time.monotonic()

    def reserve(self, now: float) -> float:
        """The moment of the next free slot (``now`` if it is already past)."""
        at = max(self.next, now)
        self.next = at + self.interval
        return at

    async def slot(self) -> None:
        now = time.monotonic()
        at = self.reserve(now)
        if at > now:
            await asyncio.sleep(at - now)


@dataclass
class Recorder:
    t0: float
    records: list[tuple[float, str, float, int]] = field(default_factory=list)
    statuses: dict[str, dict[str, int]] = field(default_factory=dict)
    unexpected: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)

    def answer(self, kind: str, sent: float, ms: float, status: int) -> None:
        if kind != "restock":  # the bench's own upkeep, not the workload
            self.records.append((round(sent - self.t0, 3), kind, round(ms, 2), status))
        by_status = self.statuses.setdefault(kind, {})
        by_status[str(status)] = by_status.get(str(status), 0) + 1
        if status and status < 500 and status not in EXPECTED[kind]:
            key = f"{kind} {status}"
            self.unexpected[key] = self.unexpected.get(key, 0) + 1

    def error(self, kind: str, exc: BaseException) -> None:
        key = f"{kind} {type(exc).__name__}"
        self.errors[key] = self.errors.get(key, 0) + 1

    def outcome(self, what: str) -> None:
        self.outcomes[what] = self.outcomes.get(what, 0) + 1


@dataclass
class Load:
    """What the workers share: the pool, the pacer, the record, the products to buy."""

    session: aiohttp.ClientSession
    pacer: Pacer | None
    recorder: Recorder
    items: dict[str, list[str]]  # product id -> item ids
    token: Callable[[str], str]  # buyer id -> a fresh access token
    decline_share: float = 0.1
    cancel_share: float = 0.25
    refund_share: float = 0.2

    async def call(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json: Any = None,
        paced: bool = True,
    ) -> tuple[int, Any]:
        """One request, paced and recorded: (status, decoded body or None); status 0 when
        no answer came."""
        if paced and self.pacer is not None:
            await self.pacer.slot()
        sent = time.time()
        start = time.perf_counter()
        try:
            async with self.session.request(method, path, headers=headers, json=json) as resp:
                content = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.recorder.answer(kind, sent, (time.perf_counter() - start) * 1000, 0)
            self.recorder.error(kind, exc)
            return 0, None
        self.recorder.answer(kind, sent, (time.perf_counter() - start) * 1000, status)
        try:
            body = orjson.loads(content) if content else None
        except orjson.JSONDecodeError:
            body = None
        return status, body

    async def shopper(self, buyer: str, rng: random.Random) -> None:
        """One buyer's visit: browse, cart, buy, then pay and/or cancel."""
        auth = {"Authorization": f"Bearer {self.token(buyer)}"}
        pid = rng.choice(list(self.items))
        item = rng.choice(self.items[pid])
        await self.call("catalog", "GET", "/api/products?limit=20")
        await self.call("product", "GET", f"/api/products/{pid}")
        await self.call(
            "cart_add", "PUT", f"/api/cart/lines/{item}", headers=auth, json={"quantity": 1}
        )
        await self.call("cart_read", "GET", "/api/cart", headers=auth)
        await self.call("cart_remove", "DELETE", f"/api/cart/lines/{item}", headers=auth)
        status, order = await self.call(
            "order",
            "POST",
            "/api/orders",
            headers={**auth, "Idempotency-Key": f"soak-{secrets.token_urlsafe(12)}"},
            json={"lines": [{"item_id": item, "quantity": 1}]},
        )
        if status != 201 or not isinstance(order, dict):
            self.recorder.outcome("order_refused")
            return
        self.recorder.outcome("ordered")
        oid = order["id"]
        if rng.random() < self.cancel_share:
            status, _ = await self.call("cancel", "POST", f"/api/orders/{oid}/cancel", headers=auth)
            self.recorder.outcome("cancelled_unpaid" if status == 200 else "cancel_failed")
            return
        declined = rng.random() < self.decline_share
        status, authorization = await self.call(
            "pg_authorize",
            "POST",
            "/pg/v1/sandbox/authorizations",
            json={
                "order_id": oid,
                "amount": order["total_amount"],
                "card_number": DECLINE_CARD if declined else APPROVE_CARD,
            },
        )
        if status != 200 or not isinstance(authorization, dict):
            self.recorder.outcome("authorization_failed")
            return
        status, _ = await self.call(
            "pay",
            "POST",
            "/api/payments/confirm",
            headers={**auth, "Idempotency-Key": f"soak-{secrets.token_urlsafe(12)}"},
            json={
                "order_id": oid,
                "payment_key": authorization["payment_key"],
                "amount": order["total_amount"],
            },
        )
        self.recorder.outcome({200: "paid", 402: "declined"}.get(status, "pay_failed"))
        await self.call("order_read", "GET", f"/api/orders/{oid}", headers=auth)
        if status == 200 and rng.random() < self.refund_share:
            status, _ = await self.call("cancel", "POST", f"/api/orders/{oid}/cancel", headers=auth)
            self.recorder.outcome("cancelled_paid" if status == 200 else "cancel_failed")

    async def worker(self, buyers: list[str], deadline: float, seed: int) -> None:
        """Visits by ``buyers`` in turn until ``deadline`` (a visit under way finishes)."""
        rng = random.Random(seed)  # noqa: S311  (a workload, not a secret)
        n = 0
        while time.time() < deadline:
            await self.shopper(buyers[n % len(buyers)], rng)
            n += 1


async def create_products(
    session: aiohttp.ClientSession,
    admin: dict[str, str],
    run_id: str,
    *,
    products: int,
    sizes: int,
    stock: int,
    price: int,
) -> dict[str, list[str]]:
    """Products on sale since a minute ago, no per-buyer limit, ``stock`` pairs per size:
    product id -> item ids."""
    out: dict[str, list[str]] = {}
    for p in range(products):
        async with session.post(
            "/api/admin/products",
            headers=admin,
            json={
                "name": f"Soak {run_id} #{p + 1}",
                "brand": "SnapShoe Bench",
                "description": "snapshoe bench soak",
                "price": price,
                "release_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
                "per_user_limit": 0,
            },
        ) as r:
            if r.status != 201:
                raise RuntimeError(f"creating a product: {r.status} {await r.text()}")
            pid = (await r.json())["id"]
        items = []
        for n in range(sizes):
            async with session.post(
                f"/api/admin/products/{pid}/items",
                headers=admin,
                json={"size": 250 + 5 * n, "color": "Soak", "stock": stock},
            ) as r:
                if r.status != 201:
                    raise RuntimeError(f"adding an item: {r.status} {await r.text()}")
                items.append((await r.json())["id"])
        out[pid] = items
    return out


async def restock_once(load: Load, admin: dict[str, str], low: int, top_up: int) -> int:
    """Items with fewer than ``low`` pairs left get ``top_up`` more; how many were topped up."""
    topped = 0
    for pid in load.items:
        status, product = await load.call("restock", "GET", f"/api/products/{pid}", paced=False)
        if status != 200 or not isinstance(product, dict):
            continue
        for item in product.get("items", []):
            if item["id"] in load.items[pid] and item["stock_remaining"] < low:
                status, _ = await load.call(
                    "restock",
                    "PATCH",
                    f"/api/admin/items/{item['id']}",
                    headers=admin,
                    json={"stock_delta": top_up},
                    paced=False,
                )
                topped += status == 200
    return topped


async def restocker(
    load: Load, admin: Callable[[], dict[str, str]], low: int, top_up: int, every: float = 10.0
) -> None:
    """Tops the items up every ``every`` s until cancelled; the count in ``outcomes``."""
    while True:
        await asyncio.sleep(every)
        for _ in range(await restock_once(load, admin(), low, top_up)):
            load.recorder.outcome("restocked_items")
