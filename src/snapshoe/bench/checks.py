"""What the bench reads from the service databases (SQL, no service code): bulk buyers for
the setup, and the checks after a run, which trust the databases, not the client's view."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, pool, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from snapshoe.bench.http import Client
from snapshoe.kernel.internal import internal_headers
from snapshoe.kernel.settings import SERVICES, Settings

LIVE = ("PENDING_PAYMENT", "PREPARING", "SHIPPING", "DELIVERED")


def engine(settings: Settings, service: str) -> AsyncEngine:
    return create_async_engine(settings.database_url(service), poolclass=pool.NullPool)


TOO_MANY_CONNECTIONS = 1040


@asynccontextmanager
async def connection(
    settings: Settings, service: str, *, begin: bool = False, within: float = 60
) -> AsyncIterator[AsyncConnection]:
    """One connection to a service database. A shared MariaDB may be at ``max_connections``
    for a moment (every service pool plus other test runs): wait for a free slot."""
    db = engine(settings, service)
    deadline = time.monotonic() + within
    try:
        while True:
            try:
                conn = await db.connect()
                break
            except OperationalError as exc:
                code = getattr(getattr(exc, "orig", None), "args", (None,))[0]
                if code != TOO_MANY_CONNECTIONS or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        try:
            if begin:
                async with conn.begin():
                    yield conn
            else:
                yield conn
        finally:
            await conn.close()
    finally:
        await db.dispose()


async def create_buyers(settings: Settings, ids: list[str], run_id: str) -> None:
    """The bench shortcut: verified buyers written straight into the users database in bulk,
    all with one precomputed argon2 hash (nobody can log in as them; the bench mints their
    access tokens with the platform's signing key, exactly as the users service would)."""
    import secrets

    from pwdlib import PasswordHash

    password_hash = PasswordHash.recommended().hash(secrets.token_urlsafe(24))
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        {
            "id": uid,
            "email": f"{uid}@bench.snapshoe.invalid",
            "h": password_hash,
            "name": f"Bench buyer {run_id}",
            "now": now,
        }
        for uid in ids
    ]
    async with connection(settings, "users", begin=True) as conn:
        for start in range(0, len(rows), 2000):
            await conn.execute(
                text(
                    "INSERT INTO users (id, email, password_hash, name, email_verified, "
                    "roles, created_at, updated_at) "
                    "VALUES (:id, :email, :h, :name, 1, '', :now, :now)"
                ),
                rows[start : start + 2000],
            )


@dataclass
class ProductOrders:
    """The orders database's view of one product's orders."""

    ids: dict[str, tuple[str, str, str]]  # order id -> (buyer, status, idempotency key)
    live_units_by_item: dict[str, int]
    live_units_by_buyer: dict[str, int]


async def product_orders(settings: Settings, pid: str) -> ProductOrders:
    async with connection(settings, "orders") as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT o.id, o.buyer_id, o.status, o.idempotency_key, l.item_id, "
                    "l.quantity FROM orders o JOIN order_lines l ON l.order_id = o.id "
                    "WHERE l.product_id = :p"
                ),
                {"p": pid},
            )
        ).all()
    out = ProductOrders({}, defaultdict(int), defaultdict(int))
    for oid, buyer, status, key, item, qty in rows:
        out.ids[oid] = (buyer, status, key)
        if status in LIVE:
            out.live_units_by_item[item] += int(qty)
            out.live_units_by_buyer[buyer] += int(qty)
    return out


@dataclass(frozen=True)
class PaymentWindow:
    """The payment window the platform gave this product's orders (its orders service's
    SNAPSHOE_ORDER_PAYMENT_TTL_SECONDS, as written on the orders, whatever the bench's own
    environment says), and how soon the first of them expires."""

    seconds: float
    first_expiry_in: float
    expired: int


async def payment_window(settings: Settings, pid: str) -> PaymentWindow | None:
    async with connection(settings, "orders") as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT MIN(TIMESTAMPDIFF(MICROSECOND, o.created_at, o.expires_at)), "
                    "MIN(TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), o.expires_at)), "
                    "SUM(o.status = 'EXPIRED') "
                    "FROM orders o JOIN order_lines l ON l.order_id = o.id "
                    "WHERE l.product_id = :p"
                ),
                {"p": pid},
            )
        ).one()
    if row[0] is None:
        return None
    return PaymentWindow(int(row[0]) / 1e6, int(row[1]) / 1e6, int(row[2] or 0))


async def ledger(settings: Settings, pid: str) -> list[dict[str, Any]]:
    async with connection(settings, "products") as conn:
        items = (
            (
                await conn.execute(
                    text(
                        "SELECT id, size, initial, sold, reserved, available FROM items "
                        "WHERE product_id = :p ORDER BY size"
                    ),
                    {"p": pid},
                )
            )
            .mappings()
            .all()
        )
        by_state = (
            await conn.execute(
                text(
                    "SELECT l.item_id, r.state, SUM(l.quantity) FROM reservation_lines l "
                    "JOIN reservations r ON r.id = l.reservation_id "
                    "WHERE l.product_id = :p GROUP BY l.item_id, r.state"
                ),
                {"p": pid},
            )
        ).all()
        held = (
            await conn.execute(
                text(
                    "SELECT r.buyer_id, SUM(l.quantity) FROM reservation_lines l "
                    "JOIN reservations r ON r.id = l.reservation_id "
                    "WHERE l.product_id = :p AND r.state IN ('ACTIVE', 'COMMITTED') "
                    "GROUP BY r.buyer_id"
                ),
                {"p": pid},
            )
        ).all()
    states: dict[tuple[str, str], int] = {(i, s): int(n) for i, s, n in by_state}
    out = []
    for row in items:
        d = dict(row)
        d["lines_active"] = states.get((d["id"], "ACTIVE"), 0)
        d["lines_committed"] = states.get((d["id"], "COMMITTED"), 0)
        out.append(d)
    if out:
        out[0]["_held"] = {str(b): int(n) for b, n in held}
    return out


async def gate_differences(settings: Settings, pids: list[str]) -> list[dict[str, Any]]:
    """Products' own gate/ledger comparison (``POST /internal/gate/reconcile``: under its
    exclusive lock; it repairs the gate if they differ). Differences of these products (and
    of the gate epoch) only: other products may belong to someone else's run."""
    async with Client(timeout=60) as client:
        r = await client.post(
            f"{settings.service_url('products')}/internal/gate/reconcile",
            headers=internal_headers(settings),
        )
        r.raise_for_status()
        report: dict[str, Any] = r.json()
    return [
        d
        for d in report.get("differences", [])
        if d.get("product_id") in pids or d.get("kind") == "epoch"
    ]


async def unpublished_outbox(settings: Settings) -> dict[str, int]:
    """Unpublished outbox rows per service that has an outbox."""
    counts: dict[str, int] = {}
    for service in SERVICES:
        async with connection(settings, service) as conn:
            has = (
                await conn.execute(
                    text(
                        "SELECT COUNT(*) FROM information_schema.tables "
                        "WHERE table_schema = :s AND table_name = 'outbox'"
                    ),
                    {"s": settings.database_name(service)},
                )
            ).scalar_one()
            if has:
                counts[service] = int(
                    (
                        await conn.execute(
                            text("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
                        )
                    ).scalar_one()
                )
    return counts


async def wait_outbox_drained(settings: Settings, within: float) -> dict[str, int]:
    deadline = time.monotonic() + within
    while True:
        counts = await unpublished_outbox(settings)
        if not any(counts.values()) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.5)


@dataclass
class ProductCheck:
    product_id: str
    stock_mode: str
    pairs: int
    orders_in_db: int
    orders_live: int
    orders_paid: int
    pairs_sold: int
    pairs_reserved: int
    pairs_available: int
    oversold: int
    limit_violations: int
    ledger_invariant: bool
    ledger_matches_reservations: bool
    gate_differences: list[dict[str, Any]]
    client_only_ids: list[str]
    db_only_ids: list[str]
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ledger_consistent(self) -> bool:
        return (
            self.ledger_invariant and self.ledger_matches_reservations and not self.gate_differences
        )

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ledger_consistent"] = self.ledger_consistent
        # Thousands of ids help nobody in a result file: a count and a sample.
        for k in ("client_only_ids", "db_only_ids"):
            d[k] = {"count": len(d[k]), "sample": d[k][:10]}
        return d


async def check_product(
    settings: Settings,
    pid: str,
    *,
    stock_mode: str,
    limit: int,
    client_ids: set[str],
    gate_diffs: list[dict[str, Any]],
) -> ProductCheck:
    orders = await product_orders(settings, pid)
    items = await ledger(settings, pid)
    held = items[0].pop("_held", {}) if items else {}
    initial = {i["id"]: int(i["initial"]) for i in items}
    oversold = sum(
        max(0, n - initial.get(item, 0)) for item, n in orders.live_units_by_item.items()
    ) + sum(max(0, int(i["sold"]) + int(i["reserved"]) - int(i["initial"])) for i in items)
    over_limit = set()
    if limit > 0:
        over_limit |= {b for b, n in orders.live_units_by_buyer.items() if n > limit}
        over_limit |= {b for b, n in held.items() if n > limit}
    invariant = all(
        i["initial"] == i["sold"] + i["reserved"] + i["available"]
        and min(i["sold"], i["reserved"], i["available"]) >= 0
        for i in items
    )
    matches = all(
        i["reserved"] == i["lines_active"] and i["sold"] == i["lines_committed"] for i in items
    )
    return ProductCheck(
        product_id=pid,
        stock_mode=stock_mode,
        pairs=sum(initial.values()),
        orders_in_db=len(orders.ids),
        orders_live=sum(1 for _, s, _ in orders.ids.values() if s in LIVE),
        orders_paid=sum(1 for _, s, _ in orders.ids.values() if s == "PREPARING"),
        pairs_sold=sum(int(i["sold"]) for i in items),
        pairs_reserved=sum(int(i["reserved"]) for i in items),
        pairs_available=sum(int(i["available"]) for i in items),
        oversold=oversold,
        limit_violations=len(over_limit),
        ledger_invariant=invariant,
        ledger_matches_reservations=matches,
        gate_differences=gate_diffs,
        client_only_ids=sorted(client_ids - set(orders.ids)),
        db_only_ids=sorted(set(orders.ids) - client_ids),
        items=[
            {k: i[k] for k in ("size", "initial", "sold", "reserved", "available")} for i in items
        ],
    )


async def order_keys(settings: Settings, order_ids: list[str]) -> dict[str, str]:
    """order id -> its Idempotency-Key (pairs wrk's send and receive times of successes)."""
    out: dict[str, str] = {}
    async with connection(settings, "orders") as conn:
        for start in range(0, len(order_ids), 1000):
            chunk = order_ids[start : start + 1000]
            stmt = text("SELECT id, idempotency_key FROM orders WHERE id IN :ids")
            stmt = stmt.bindparams(bindparam("ids", expanding=True))
            rows = await conn.execute(stmt, {"ids": chunk})
            out.update({str(a): str(b) for a, b in rows.all()})
    return out
