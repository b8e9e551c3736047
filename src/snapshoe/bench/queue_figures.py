"""``bench queue``'s figures from the databases: fairness, the queue's consistency, how long each
buyer waited for their fate, and when the pairs sold (which ``--compare`` sets against fcfs)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy import text

from snapshoe.bench import checks
from snapshoe.kernel.settings import Settings


def spearman(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    if n < 3:
        return None
    rx = {v: i for i, v in enumerate(sorted(range(n), key=lambda k: xs[k]))}
    ry = {v: i for i, v in enumerate(sorted(range(n), key=lambda k: ys[k]))}
    d2 = sum((rx[k] - ry[k]) ** 2 for k in range(n))
    return 1 - 6 * d2 / (n * (n * n - 1))


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


async def tickets(settings: Settings, pid: str) -> list[Any]:
    async with checks.connection(settings, "products") as conn:
        return list(
            (
                await conn.execute(
                    text(
                        "SELECT t.id, t.joined_at, t.place, t.state, t.ended_at, t.order_id,"
                        " p.release_at, t.admitted_at FROM queue_tickets t"
                        " JOIN products p ON p.id = t.product_id"
                        " WHERE t.product_id = :p ORDER BY t.joined_at"
                    ),
                    {"p": pid},
                )
            ).all()
        )


def per_second(times: list[float]) -> dict[str, int]:
    """How many of ``times`` (seconds since the release) fall in each whole second."""
    out: dict[int, int] = {}
    for t in times:
        out[math.floor(t)] = out.get(math.floor(t), 0) + 1
    return {str(k): out[k] for k in sorted(out)}


def ticket_timeline(rows: list[Any]) -> dict[str, dict[str, int]]:
    """Per second since the release (``tickets`` rows): tickets taken, admitted, and ended by
    their final state (``sold_out``: a buyer the queue turned away)."""
    if not rows:
        return {}
    release = rows[0][6]
    series: dict[str, list[float]] = {"joined": [], "admitted": []}
    for r in rows:
        series["joined"].append((r[1] - release).total_seconds())
        if r[7] is not None:
            series["admitted"].append((r[7] - release).total_seconds())
        if r[4] is not None:
            series.setdefault(f"ended {r[3]}", []).append((r[4] - release).total_seconds())
    return {k: per_second(v) for k, v in series.items()}


def queue_figures(rows: list[Any]) -> dict[str, Any]:
    """Fairness and the end, from the tickets (``tickets``)."""
    release = rows[0][6] if rows else None
    early = [r for r in rows if release is not None and r[1] < release and r[2] is not None]
    late = [r for r in rows if release is not None and r[1] >= release]
    ends = [r[4] for r in rows if r[4] is not None]
    states: dict[str, int] = {}
    for r in rows:
        states[r[3]] = states.get(r[3], 0) + 1
    used = [r[5] for r in rows if r[3] == "used" and r[5]]
    return {
        "tickets": len(rows),
        "states": states,
        "spearman_join_vs_place": spearman(
            [r[1].timestamp() for r in early], [float(r[2]) for r in early]
        ),
        "early_tickets": len(early),
        "late_in_arrival_order": [r[2] for r in late] == sorted(r[2] for r in late),
        "admitted_twice": len(used) - len(set(used)),  # one order per used ticket
        "seconds_release_to_last_fate": (
            round((max(ends) - release).total_seconds(), 2) if ends and release else None
        ),
        "used_order_ids": set(used),
        "per_second": ticket_timeline(rows),
    }


def fate_delays(rows: list[Any], arrivals: list[tuple[str, str, float, bool]]) -> dict[str, Any]:
    """From each sold-out ticket's end in the database to the buyer learning it (stream only)."""
    ended = {r[0]: r[4] for r in rows if r[3] == "sold_out" and r[4] is not None}
    delays = [
        (at - ended[tid].timestamp()) * 1000
        for tid, state, at, via_stream in arrivals
        if via_stream and state == "sold_out" and tid in ended
    ]
    return {"sold_out_p50_ms": pct(delays, 0.5), "sold_out_p99_ms": pct(delays, 0.99)}


async def sales(settings: Settings, pid: str, pairs: int) -> dict[str, Any]:
    """When the pairs sold: every pair taken once (the S-th order), and the last payment."""
    async with checks.connection(settings, "orders") as conn:
        created = (
            await conn.execute(
                text(
                    "SELECT o.created_at FROM orders o JOIN order_lines l ON l.order_id = o.id"
                    " WHERE l.product_id = :p ORDER BY o.created_at"
                ),
                {"p": pid},
            )
        ).all()
        last_paid = (
            await conn.execute(
                text(
                    "SELECT MAX(o.paid_at),"
                    " SUM(o.status IN ('PREPARING', 'SHIPPING', 'DELIVERED')) FROM orders o"
                    " JOIN order_lines l ON l.order_id = o.id WHERE l.product_id = :p"
                ),
                {"p": pid},
            )
        ).one()
    async with checks.connection(settings, "products") as conn:
        release = (
            await conn.execute(text("SELECT release_at FROM products WHERE id = :p"), {"p": pid})
        ).scalar_one()

    def since(at: datetime | None) -> float | None:
        return round((at - release).total_seconds(), 2) if at is not None else None

    return {
        "seconds_to_every_pair_taken": since(created[pairs - 1][0])
        if len(created) >= pairs
        else None,
        "seconds_to_last_payment": since(last_paid[0]),
        "paid_orders": int(last_paid[1] or 0),
        "orders_per_second": per_second([t for (at,) in created if (t := since(at)) is not None]),
        "last_paid_at": last_paid[0],
    }
