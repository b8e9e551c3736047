"""Checks of ``bench draw``, after the draw settled: from the databases, the PG's own count of
charges per order, and the published draw recomputed (docs/draws.md)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from sqlalchemy import bindparam, text

from snapshoe.bench import checks
from snapshoe.bench.http import Client
from snapshoe.kernel.draw_ranking import verify
from snapshoe.kernel.settings import Settings

if TYPE_CHECKING:
    from snapshoe.bench.draw_model import DrawConfig


async def charges(settings: Settings, pid: str, since: datetime | None = None) -> dict[str, Any]:
    """Payments of the draw's orders: how many, the first and last PG answer, and (with
    ``since``, the close) the answers per second after it by status."""
    async with checks.connection(settings, "products") as conn:
        orders = [
            str(r[0])
            for r in (
                await conn.execute(
                    text(
                        "SELECT order_id FROM draw_entries WHERE product_id = :p"
                        " AND order_id IS NOT NULL"
                    ),
                    {"p": pid},
                )
            ).all()
        ]
    if not orders:
        return {"payments": 0}
    async with checks.connection(settings, "payments") as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT status, COUNT(*), MIN(created_at), MAX(updated_at) FROM payments"
                    " WHERE order_id IN :ids GROUP BY status"
                ).bindparams(_expanding("ids")),
                {"ids": orders},
            )
        ).all()
    if not rows:  # orders made but never charged (a draw that did not settle)
        return {"payments": 0, "orders": len(orders)}
    by_status = {str(s): int(n) for s, n, _, _ in rows}
    timeline = await _charges_per_second(settings, orders, since) if since else {}
    first = min(r[2] for r in rows)
    last = max(r[3] for r in rows)
    span = max((last - first).total_seconds(), 1e-3)
    total = sum(by_status.values())
    return {
        "payments": total,
        "by_status": by_status,
        "seconds_first_to_last": round(span, 2),
        "charges_per_second": round(total / span, 1),
        "per_second": timeline,
    }


async def _charges_per_second(
    settings: Settings, orders: list[str], since: datetime
) -> dict[str, dict[str, int]]:
    """Status -> {whole second after ``since``: payments last updated in it}."""
    start = since.astimezone(UTC).replace(tzinfo=None)  # the databases keep naive UTC
    async with checks.connection(settings, "payments") as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT status, FLOOR(TIMESTAMPDIFF(MICROSECOND, :t, updated_at) / 1e6) AS s,"
                    " COUNT(*) FROM payments WHERE order_id IN :ids GROUP BY status, s"
                ).bindparams(_expanding("ids")),
                {"ids": orders, "t": start},
            )
        ).all()
    out: dict[str, dict[str, int]] = {}
    for status, second, n in rows:
        out.setdefault(str(status), {})[str(int(second))] = int(n)
    return {k: dict(sorted(v.items(), key=lambda kv: int(kv[0]))) for k, v in out.items()}


def _expanding(name: str) -> Any:
    return bindparam(name, expanding=True)


async def _entries(settings: Settings, pid: str) -> list[dict[str, Any]]:
    async with checks.connection(settings, "products") as conn:
        rows = await conn.execute(
            text(
                "SELECT id, item_id, buyer_id, state, order_id FROM draw_entries"
                " WHERE product_id = :p"
            ),
            {"p": pid},
        )
        return [dict(r) for r in rows.mappings().all()]


async def _order_status(settings: Settings, order_ids: list[str]) -> dict[str, str]:
    if not order_ids:
        return {}
    async with checks.connection(settings, "orders") as conn:
        rows = await conn.execute(
            text("SELECT id, status FROM orders WHERE id IN :ids").bindparams(_expanding("ids")),
            {"ids": order_ids},
        )
        return {str(i): str(s) for i, s in rows.all()}


async def _pg_charges(settings: Settings, order_ids: list[str]) -> dict[str, int]:
    """The PG's own count of approved charges per order."""
    secret = {"Authorization": aiohttp.encode_basic_auth(settings.pg_secret_key, "")}
    counts: dict[str, int] = {}
    slots = asyncio.Semaphore(32)
    async with Client(settings.service_url("sandbox_pg"), timeout=30) as pg:

        async def count(oid: str) -> None:
            async with slots:
                r = await pg.get(f"/v1/sandbox/orders/{oid}/charges", headers=secret)
            r.raise_for_status()
            counts[oid] = int(r.json()["charges"])

        await asyncio.gather(*(count(o) for o in order_ids))
    return counts


async def _verified(settings: Settings, pid: str) -> dict[str, Any]:
    """The published draw recomputed: seed, ranks, and charges in rank order (so every
    payment_failed entry was passed on to the next)."""
    async with Client(settings.gateway_url, timeout=60) as client:
        r = await client.get(f"/api/products/{pid}/draw")
        r.raise_for_status()
        published = r.json()
    verdict = verify(
        commitment=published["commitment"],
        seed=published["seed"],
        entries=published["entries"],
        pairs={i["item_id"]: i["pairs"] for i in published["items"]},
    )
    return {"verify_ok": verdict.ok, "verify_problems": verdict.problems[:20]}


async def check(settings: Settings, pid: str) -> dict[str, Any]:
    """From the databases, the PG and the published draw."""
    entries = await _entries(settings, pid)
    won = [e for e in entries if e["state"] == "won"]
    order_ids = [str(e["order_id"]) for e in entries if e["order_id"] is not None]
    status = await _order_status(settings, order_ids)
    counts = await _pg_charges(settings, order_ids)
    state_of = {str(e["order_id"]): e["state"] for e in entries if e["order_id"]}
    charged = [e["buyer_id"] for e in entries if counts.get(str(e["order_id"]), 0) > 0]
    ledger = await checks.ledger(settings, pid)
    out: dict[str, Any] = {
        "entries": len(entries),
        "won": len(won),
        "payment_failed": sum(e["state"] == "payment_failed" for e in entries),
        "lost": sum(e["state"] == "lost" for e in entries),
        "undecided": sum(e["state"] in ("entered", "charging") for e in entries),
        "orders": len(status),
        "won_without_paid_order": sum(status.get(str(e["order_id"])) not in PAID for e in won),
        "charged_twice": sum(n > 1 for n in counts.values()),
        "won_not_charged_once": sum(
            counts.get(o, 0) != 1 for o, s in state_of.items() if s == "won"
        ),
        "charged_without_win": sum(counts.get(o, 0) > 0 for o, s in state_of.items() if s != "won"),
        "buyers_charged_twice": len(charged) - len(set(charged)),
        "ledger_invariant": all(
            i["initial"] == i["sold"] + i["reserved"] + i["available"] for i in ledger
        ),
        "pairs_sold": sum(int(i["sold"]) for i in ledger),
        "pairs_reserved": sum(int(i["reserved"]) for i in ledger),
    }
    out["sold_equals_won"] = out["pairs_sold"] == out["won"]
    out.update(await _verified(settings, pid))
    return out


PAID = ("PREPARING", "SHIPPING", "DELIVERED")


def evaluate(r: dict[str, Any], cfg: DrawConfig) -> None:
    c = r["check"]
    pairs = cfg.sizes * cfg.pairs_per_size
    failures = []
    if c["undecided"]:
        failures.append(f"{c['undecided']} entries not decided")
    if c["won"] > pairs or c["orders"] < c["won"]:
        failures.append(f"{c['won']} winners, {c['orders']} orders for {pairs} pairs")
    for key in (
        "won_without_paid_order",
        "charged_twice",
        "won_not_charged_once",
        "charged_without_win",
        "buyers_charged_twice",
        "pairs_reserved",
    ):
        if c[key]:
            failures.append(f"{key}: {c[key]}")
    if not c["ledger_invariant"] or not c["sold_equals_won"]:
        failures.append("ledger inconsistent with the winners")
    if not c["verify_ok"]:
        failures.append(f"draw does not verify: {c['verify_problems'][:3]}")
    r["failures"] = failures
    settled = r["timing"]["seconds_close_to_settled"]
    r["targets"] = {"settled_under_60s": settled is not None and settled < 60}
    r["ok"] = not failures
