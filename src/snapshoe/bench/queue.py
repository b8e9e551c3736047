"""``snapshoe bench queue``: a queue-mode drop through the gateway of a running platform.

N buyers take tickets spread over the pre-queue window, a share of them holding the ticket's
event stream open and the rest polling it; at the release the queue runs; admitted buyers order
with their admission and pay (a share declines, which admits the next); the run ends when every
ticket is final. Then the figures (fairness, stream delay, time to every fate) and the checks
from the databases (docs/waiting-room.md). A first version: no HTML report, no --compare.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import text

from snapshoe.bench import checks
from snapshoe.bench.drop_model import DropConfig
from snapshoe.bench.drop_payments import pay
from snapshoe.bench.drop_setup import Bench
from snapshoe.kernel.settings import Settings

FINAL = {"used", "expired", "sold_out"}


@dataclass
class QueueConfig:
    buyers: int = 20_000
    pairs: int = 1_000
    sizes: int = 10
    window_seconds: float = 60.0
    stream_share: float = 0.5
    poll_seconds: float = 2.0
    decline_share: float = 0.1
    max_seconds: float = 600.0
    seed: int | None = None
    out: Path | None = None


@dataclass
class Tally:
    joins_ms: list[float] = field(default_factory=list)
    join_errors: dict[str, int] = field(default_factory=dict)
    delays_ms: list[float] = field(default_factory=list)
    created: set[str] = field(default_factory=set)
    admitted_buyers: int = 0
    met_sold_out: int = 0
    paid: dict[str, int] = field(default_factory=dict)
    fates: dict[str, int] = field(default_factory=dict)
    open_streams: int = 0
    max_streams: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


@dataclass
class Run:
    bench: Bench
    cfg: QueueConfig
    client: httpx.AsyncClient
    pid: str
    items: list[dict[str, Any]]
    tally: Tally = field(default_factory=Tally)
    rng: random.Random = field(default_factory=random.Random)

    def auth(self, buyer: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.bench.tokens[buyer]}"}


async def create_queue_drop(bench: Bench, cfg: QueueConfig, client: httpx.AsyncClient) -> Run:
    now = datetime.now(UTC)
    r = await client.post(
        "/api/admin/products",
        json={
            "name": f"Queue bench {bench.run_id}",
            "brand": "SnapBench",
            "price": bench.cfg.price,
            "release_at": (now + timedelta(seconds=cfg.window_seconds)).isoformat(),
            "per_user_limit": 1,
            "sale_mode": "queue",
            "queue_opens_at": now.isoformat(),
            "admission_seconds": 60,
        },
        headers=bench.admin,
    )
    r.raise_for_status()
    pid = r.json()["id"]
    items = []
    per, extra = divmod(cfg.pairs, cfg.sizes)
    for n in range(cfg.sizes):
        stock = per + (1 if n < extra else 0)
        r = await client.post(
            f"/api/admin/products/{pid}/items",
            json={"size": 250 + 5 * n, "color": "Bench", "stock": stock},
            headers=bench.admin,
        )
        r.raise_for_status()
        items.append(r.json())
    return Run(bench, cfg, client, pid, items, rng=random.Random(cfg.seed))  # noqa: S311


async def buy(run: Run, buyer: str, token: str) -> None:
    """Order one pair of a size still on sale, with the admission; then pay (or decline)."""
    detail = (await run.client.get(f"/api/products/{run.pid}")).json()
    left = [i["id"] for i in detail["items"] if i["stock_remaining"] > 0]
    item = run.rng.choice(left or [i["id"] for i in run.items])
    r = await run.client.post(
        "/api/orders",
        json={"lines": [{"item_id": item, "quantity": 1}]},
        headers={
            **run.auth(buyer),
            "Idempotency-Key": f"bq-{run.bench.run_id}-{buyer}",
            "Admission-Token": token,
        },
    )
    if r.status_code != 201:
        run.tally.count(run.tally.errors, f"order {r.status_code}:{r.json().get('code')}")
        if r.json().get("code") == "sold_out":
            run.tally.met_sold_out += 1
        return
    order_id = r.json()["id"]
    run.tally.created.add(order_id)
    decline = run.rng.random() < run.cfg.decline_share
    status = await pay(run.bench, run.client, order_id, buyer, decline)
    run.tally.count(run.tally.paid, f"{'declined' if decline else 'approved'}:{status}")


async def on_ticket(run: Run, buyer: str, ticket: dict[str, Any], bought: list[bool]) -> bool:
    """React to a ticket seen; True once it is final."""
    if ticket["state"] == "admitted" and not bought:
        bought.append(True)
        run.tally.admitted_buyers += 1
        await buy(run, buyer, ticket["admission_token"])
    if ticket["state"] in FINAL:
        run.tally.count(run.tally.fates, ticket["state"])
        return True
    return False


async def follow_stream(run: Run, buyer: str) -> None:
    bought: list[bool] = []
    url = f"/api/products/{run.pid}/queue/me/events"
    run.tally.open_streams += 1
    run.tally.max_streams = max(run.tally.max_streams, run.tally.open_streams)
    try:
        async with run.client.stream("GET", url, headers=run.auth(buyer), timeout=None) as r:
            if r.status_code != 200:
                run.tally.count(run.tally.errors, f"stream {r.status_code}")
                return await follow_poll(run, buyer)
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                ticket = orjson.loads(line.removeprefix("data: "))
                if ticket["state"] == "admitted" and not bought:
                    at = datetime.fromisoformat(ticket["admitted_at"]).timestamp()
                    run.tally.delays_ms.append((time.time() - at) * 1000)
                if await on_ticket(run, buyer, ticket, bought):
                    return None
    finally:
        run.tally.open_streams -= 1
    return None


async def follow_poll(run: Run, buyer: str) -> None:
    bought: list[bool] = []
    url = f"/api/products/{run.pid}/queue/me"
    while True:
        r = await run.client.get(url, headers=run.auth(buyer))
        if r.status_code == 200 and await on_ticket(run, buyer, r.json(), bought):
            return
        await asyncio.sleep(run.cfg.poll_seconds * run.rng.uniform(0.8, 1.2))


async def buyer_life(run: Run, buyer: str, join_at: float, stream: bool) -> None:
    await asyncio.sleep(max(0.0, join_at - time.monotonic()))
    started = time.monotonic()
    r = await run.client.post(f"/api/products/{run.pid}/queue", headers=run.auth(buyer))
    run.tally.joins_ms.append((time.monotonic() - started) * 1000)
    if r.status_code not in (200, 201):
        run.tally.count(run.tally.join_errors, f"{r.status_code}:{r.json().get('code')}")
        return
    await (follow_stream(run, buyer) if stream else follow_poll(run, buyer))


def spearman(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    if n < 3:
        return None
    rx = {v: i for i, v in enumerate(sorted(range(n), key=lambda k: xs[k]))}
    ry = {v: i for i, v in enumerate(sorted(range(n), key=lambda k: ys[k]))}
    d2 = sum((rx[k] - ry[k]) ** 2 for k in range(n))
    return 1 - 6 * d2 / (n * (n * n - 1))


async def queue_figures(settings: Settings, pid: str) -> dict[str, Any]:
    """From the products database: fairness, the end, and the queue's own consistency."""
    async with checks.connection(settings, "products") as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT t.joined_at, t.place, t.state, t.ended_at, t.order_id, p.release_at"
                    " FROM queue_tickets t JOIN products p ON p.id = t.product_id"
                    " WHERE t.product_id = :p ORDER BY t.joined_at"
                ),
                {"p": pid},
            )
        ).all()
    release = rows[0][5] if rows else None
    early = [r for r in rows if release is not None and r[0] < release and r[1] is not None]
    late = [r for r in rows if release is not None and r[0] >= release]
    ends = [r[3] for r in rows if r[3] is not None]
    states: dict[str, int] = {}
    for r in rows:
        states[r[2]] = states.get(r[2], 0) + 1
    return {
        "tickets": len(rows),
        "states": states,
        "spearman_join_vs_place": spearman(
            [r[0].timestamp() for r in early], [float(r[1]) for r in early]
        ),
        "late_in_arrival_order": [r[1] for r in late] == sorted(r[1] for r in late),
        "seconds_release_to_last_fate": (
            round((max(ends) - release).total_seconds(), 2) if ends and release else None
        ),
        "used_order_ids": {r[4] for r in rows if r[2] == "used" and r[4]},
    }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


async def run_queue(settings: Settings, cfg: QueueConfig) -> dict[str, Any]:
    drop_cfg = DropConfig(buyers=cfg.buyers, pairs=cfg.pairs, sizes=cfg.sizes, seed=cfg.seed)
    started = datetime.now(UTC)
    workdir = Path("bench/out")
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    bench = Bench(settings, drop_cfg, workdir)
    await bench.make_buyers()
    limits = httpx.Limits(max_connections=cfg.buyers + 200, max_keepalive_connections=2000)
    async with httpx.AsyncClient(
        base_url=settings.gateway_url, timeout=60, limits=limits
    ) as client:
        run = await create_queue_drop(bench, cfg, client)
        bench.log(f"queue {run.pid}: {cfg.buyers} buyers over {cfg.window_seconds}s")
        t0 = time.monotonic()
        lives = [
            buyer_life(
                run,
                b,
                t0 + run.rng.uniform(0, cfg.window_seconds),
                run.rng.random() < cfg.stream_share,
            )
            for b in bench.buyer_ids
        ]
        done, pending = await asyncio.wait(
            [asyncio.create_task(x) for x in lives], timeout=cfg.window_seconds + cfg.max_seconds
        )
        for task in pending:
            task.cancel()
        failed = [t for t in done if t.exception() is not None]
        return await result(settings, run, started, len(pending), failed)


async def result(
    settings: Settings, run: Run, started: datetime, unfinished: int, failed: list[Any]
) -> dict[str, Any]:
    figures = await queue_figures(settings, run.pid)
    used = figures.pop("used_order_ids")
    check = await checks.check_product(
        settings,
        run.pid,
        stock_mode="gate",
        limit=1,
        client_ids=run.tally.created,
        gate_diffs=await checks.gate_differences(settings, [run.pid]),
    )
    t = run.tally
    ordered = len(t.created) + t.met_sold_out
    out = {
        "bench": "queue",
        "started_at": started.isoformat(),
        "config": {k: str(v) for k, v in vars(run.cfg).items()},
        "product_id": run.pid,
        "join_p99_ms": _pct(t.joins_ms, 0.99),
        "stream_delay_p50_ms": _pct(t.delays_ms, 0.5),
        "stream_delay_p99_ms": _pct(t.delays_ms, 0.99),
        "streams_held_at_once": t.max_streams,
        "admitted_met_sold_out_share": round(t.met_sold_out / ordered, 4) if ordered else 0.0,
        "queue": figures,
        "payments": t.paid,
        "errors": {**t.errors, **t.join_errors, "unfinished": unfinished, "crashed": len(failed)},
        "check": check.as_dict(),
    }
    out["ok"] = bool(
        check.oversold == 0
        and check.limit_violations == 0
        and check.ledger_consistent
        and unfinished == 0
        and not failed
        and not t.join_errors  # (429s: raise SNAPSHOE_QUEUE_JOIN_RATE_PER_MINUTE for a bench)
        and figures["states"].get("admitted", 0) == 0
        and figures["states"].get("waiting", 0) == 0
        and run.tally.created <= used  # no order without an admission
        and figures["late_in_arrival_order"]
    )
    path = run.cfg.out or Path("bench/out") / f"queue-{started:%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    run.bench.log(f"result: {path}")
    return out
