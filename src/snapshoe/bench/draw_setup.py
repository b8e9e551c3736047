"""Setup of ``bench draw`` (not timed): the draw-mode product through the admin API, a billing
key per entrant at the PG's card endpoint (the sandbox's, over HTTP, as a buyer's browser would;
a share of the cards declines), the entries written in bulk into the products database, and the
close that makes the draw due at once."""

from __future__ import annotations

import asyncio
import random
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from snapshoe.bench import checks
from snapshoe.bench.http import Client
from snapshoe.kernel.auth import build_issuer
from snapshoe.kernel.settings import Settings

if TYPE_CHECKING:
    from snapshoe.bench.draw_model import DrawConfig

ISSUE_CONCURRENCY = 64
INSERT_BATCH = 2000


async def create_product(
    settings: Settings, cfg: DrawConfig, client: Client, run_id: str
) -> tuple[str, list[str]]:
    issuer = build_issuer(settings)
    admin, _ = issuer.issue_access(f"bench-admin-{run_id}", email_verified=True, roles=("admin",))
    headers = {"Authorization": f"Bearer {admin}"}
    now = datetime.now(UTC)
    r = await client.post(
        "/api/admin/products",
        json={
            "name": f"Draw bench {run_id}",
            "brand": "SnapBench",
            "price": 199_000,
            "release_at": (now - timedelta(minutes=1)).isoformat(),
            "sale_mode": "draw",
            "entry_opens_at": (now - timedelta(minutes=1)).isoformat(),
            # Far enough that setup never races the draw; the bench closes it when ready.
            "entry_closes_at": (now + timedelta(hours=1)).isoformat(),
            "draw_at": (now + timedelta(hours=1)).isoformat(),
        },
        headers=headers,
    )
    r.raise_for_status()
    pid: str = r.json()["id"]
    items = []
    for n in range(cfg.sizes):
        r = await client.post(
            f"/api/admin/products/{pid}/items",
            json={"size": 250 + 5 * n, "color": "Bench", "stock": cfg.pairs_per_size},
            headers=headers,
        )
        r.raise_for_status()
        items.append(str(r.json()["id"]))
    return pid, items


async def issue_keys(
    settings: Settings, cfg: DrawConfig, run_id: str, rng: random.Random
) -> list[dict[str, Any]]:
    """One billing key per entrant, at the PG's card endpoint (the buyer-side call)."""
    pg = settings.service_url("sandbox_pg")
    declining = set(rng.sample(range(cfg.entries), round(cfg.entries * cfg.decline_share)))
    slots = asyncio.Semaphore(ISSUE_CONCURRENCY)
    async with Client(pg, timeout=30, max_connections=ISSUE_CONCURRENCY) as client:

        async def one(n: int) -> dict[str, Any]:
            buyer = f"bd-{run_id}-{n}"
            card = f"5{n:011d}{'0002' if n in declining else '0000'}"
            async with slots:
                r = await client.post(
                    "/v1/billing/authorizations/card",
                    json={
                        "customerKey": buyer,
                        "cardNumber": card,
                        "cardExpirationYear": "30",
                        "cardExpirationMonth": "12",
                    },
                )
            r.raise_for_status()
            body = r.json()
            return {
                "buyer": buyer,
                "billing_key": body["billingKey"],
                "card_number": str(body["card"]["number"])[:32],
                "fingerprint": body["card"]["fingerprint"],
                "declines": n in declining,
            }

        return list(await asyncio.gather(*(one(n) for n in range(cfg.entries))))


async def insert_entries(
    settings: Settings, pid: str, items: list[str], keys: list[dict[str, Any]], rng: random.Random
) -> dict[str, int]:
    """The entries, in bulk, each for a size at random (as buyers choose)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    per_item = dict.fromkeys(items, 0)
    rows = []
    for k in keys:
        item = rng.choice(items)
        per_item[item] += 1
        rows.append(
            {
                "id": secrets.token_hex(13),  # opaque, as the service's ids are
                "p": pid,
                "i": item,
                "b": k["buyer"],
                "k": k["billing_key"],
                "n": k["card_number"],
                "f": k["fingerprint"],
                "t": now,
            }
        )
    stmt = text(
        "INSERT INTO draw_entries (id, product_id, item_id, buyer_id, billing_key, card_number,"
        " card_fingerprint, card_active, state, created_at, updated_at)"
        " VALUES (:id, :p, :i, :b, :k, :n, :f, :f, 'entered', :t, :t)"
    )
    async with checks.connection(settings, "products", begin=True) as conn:
        for start in range(0, len(rows), INSERT_BATCH):
            await conn.execute(stmt, rows[start : start + INSERT_BATCH])
    return per_item


async def close_now(settings: Settings, pid: str) -> datetime:
    """Close the entries and make the draw due now (the one write the bench makes for the
    admin: the API refuses to move a draw's times once there are entries)."""
    at = datetime.now(UTC).replace(tzinfo=None)
    async with checks.connection(settings, "products", begin=True) as conn:
        await conn.execute(
            text("UPDATE products SET entry_closes_at = :t, draw_at = :t WHERE id = :p"),
            {"t": at, "p": pid},
        )
    return at.replace(tzinfo=UTC)
