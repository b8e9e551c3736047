"""``snapshoe bench queue``: a queue-mode drop through the gateway of a running platform.

N buyers take tickets spread over the pre-queue window, a share of them holding the ticket's
event stream open and the rest polling it; at the release the queue runs; admitted buyers order
with their admission and pay (a share declines, which admits the next); the run ends when every
ticket is final. The buyers run in worker processes (queue_load.py) while this process samples
the platform's memory and CPU and the streams held at once; then the figures and the checks from
the databases (queue_figures.py, docs/waiting-room.md), and with ``--compare`` the same drop in
fcfs mode (``bench drop``) for when the pairs sold.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from snapshoe.bench import checks, queue_figures, queue_load
from snapshoe.bench.drop_model import DropConfig
from snapshoe.bench.drop_result import git_commit, machine
from snapshoe.bench.drop_setup import Bench
from snapshoe.bench.http import Client
from snapshoe.bench.queue_load import Buyer, Slice
from snapshoe.bench.queue_result import evaluate, write_html
from snapshoe.bench.usage import Sampler
from snapshoe.kernel.settings import Settings

# From the drop's creation to the first join: the load workers' start-up (spawned processes
# importing the bench), which took over 9 s on a loaded 2-core machine, so that a small run's
# joins all came after its release and there was no pre-queue to measure.
START_SECONDS = 15.0


@dataclass
class QueueConfig:
    buyers: int = 20_000
    pairs: int = 1_000
    sizes: int = 10
    window_seconds: float = 60.0
    stream_share: float = 1.0
    poll_seconds: float = 5.0
    decline_share: float = 0.1
    processes: int = 4
    admission_seconds: int = 60
    max_seconds: float = 600.0
    compare: bool = False
    seed: int | None = None
    out: Path | None = None


async def create_queue_drop(
    bench: Bench, cfg: QueueConfig, client: Client, release_at: datetime
) -> str:
    r = await client.post(
        "/api/admin/products",
        json={
            "name": f"Queue bench {bench.run_id}",
            "brand": "SnapBench",
            "price": bench.cfg.price,
            "release_at": release_at.isoformat(),
            "per_user_limit": 1,
            "sale_mode": "queue",
            "queue_opens_at": datetime.now(UTC).isoformat(),
            "admission_seconds": cfg.admission_seconds,
        },
        headers=bench.admin,
    )
    r.raise_for_status()
    pid: str = r.json()["id"]
    per, extra = divmod(cfg.pairs, cfg.sizes)
    for n in range(cfg.sizes):
        r = await client.post(
            f"/api/admin/products/{pid}/items",
            json={"size": 250 + 5 * n, "color": "Bench", "stock": per + (1 if n < extra else 0)},
            headers=bench.admin,
        )
        r.raise_for_status()
    return pid


def slices(bench: Bench, cfg: QueueConfig, pid: str, t0: float) -> list[Slice]:
    """The buyers dealt to the worker processes, each with a join time in the window."""
    rng = random.Random(cfg.seed)  # noqa: S311  (a workload, not a secret)
    buyers = [
        Buyer(
            b,
            bench.tokens[b],
            t0 + rng.uniform(0, cfg.window_seconds),
            rng.random() < cfg.stream_share,
        )
        for b in bench.buyer_ids
    ]
    deadline = t0 + cfg.window_seconds + cfg.max_seconds
    return [
        Slice(
            gateway_url=bench.settings.gateway_url,
            pid=pid,
            run_id=bench.run_id,
            price=bench.cfg.price,
            buyers=tuple(buyers[n :: cfg.processes]),
            poll_seconds=cfg.poll_seconds,
            decline_share=cfg.decline_share,
            deadline=deadline,
            seed=rng.randrange(2**32),
            index=n,
            source_ip=f"127.0.0.{10 + n}" if "127.0.0.1" in bench.settings.gateway_url else None,
        )
        for n in range(cfg.processes)
    ]


async def run_load(cfg: QueueConfig, work: list[Slice]) -> tuple[list[dict[str, Any]], Sampler]:
    """The slices in worker processes, sampling the platform and the streams held meanwhile."""
    ctx = multiprocessing.get_context("spawn")
    open_streams = ctx.Array("i", cfg.processes, lock=False)
    sampler = Sampler(interval=1.0, extra=lambda: {"streams_held": float(sum(open_streams))})
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(
        cfg.processes, mp_context=ctx, initializer=queue_load.init_worker, initargs=(open_streams,)
    ) as pool:
        sampling = asyncio.create_task(sampler.run())
        try:
            results = await asyncio.gather(
                *(loop.run_in_executor(pool, queue_load.run_slice, s) for s in work)
            )
        finally:
            sampling.cancel()
    return list(results), sampler


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The slices' records as one: lists joined, counters and counts added."""
    out: dict[str, Any] = {}
    for r in results:
        for k, v in r.items():
            if isinstance(v, list):
                out.setdefault(k, []).extend(v)
            elif isinstance(v, dict):
                table = out.setdefault(k, {})
                for kk, n in v.items():
                    table[kk] = table.get(kk, 0) + n
            else:
                out[k] = out.get(k, 0) + v
    return out


async def run_queue(settings: Settings, cfg: QueueConfig) -> dict[str, Any]:
    started = datetime.now(UTC)
    drop_cfg = DropConfig(buyers=cfg.buyers, pairs=cfg.pairs, sizes=cfg.sizes, seed=cfg.seed)
    workdir = Path("bench/out")
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    bench = Bench(settings, drop_cfg, workdir)
    await bench.make_buyers()
    t0 = time.time() + START_SECONDS
    release_at = datetime.fromtimestamp(t0 + cfg.window_seconds, UTC)
    async with bench.client() as client:
        pid = await create_queue_drop(bench, cfg, client, release_at)
    bench.log(f"queue {pid}: {cfg.buyers} buyers over {cfg.window_seconds}s, {cfg.processes} procs")
    seen, sampler = await run_load(cfg, slices(bench, cfg, pid, t0))
    bench.log("load done; reading the databases")
    out = await figures(settings, cfg, pid, merge(seen), sampler)
    out.update(started_at=started.isoformat(), machine=machine(), git=git_commit())
    if cfg.compare:
        out["compare"] = await compare_fcfs(settings, cfg, out["sales"])
    evaluate(out)
    path = cfg.out or workdir / f"queue-{started:%Y%m%dT%H%M%S}.json"
    await asyncio.to_thread(path.write_text, json.dumps(out, indent=2, default=str))
    write_html(out, path.with_suffix(".html"))
    bench.log(f"result: {path}")
    return out


async def figures(
    settings: Settings, cfg: QueueConfig, pid: str, seen: dict[str, Any], sampler: Sampler
) -> dict[str, Any]:
    rows = await queue_figures.tickets(settings, pid)
    queue = queue_figures.queue_figures(rows)
    used = queue.pop("used_order_ids")
    created = set(seen.get("created", []))
    check = await checks.check_product(
        settings,
        pid,
        stock_mode="gate",
        limit=1,
        client_ids=created,
        gate_diffs=await checks.gate_differences(settings, [pid]),
    )
    sales = await queue_figures.sales(settings, pid, cfg.pairs)
    arrivals = [tuple(a) for a in seen.get("final_arrivals", [])]
    last_fate_seen = max((a[2] for a in arrivals), default=None)
    last_paid = sales.pop("last_paid_at")
    peak = sampler.peak("streams_held")
    ordered = seen.get("admitted", 0)
    return {
        "bench": "queue",
        "config": {k: str(v) for k, v in vars(cfg).items()},
        "product_id": pid,
        "join_p50_ms": queue_figures.pct(seen.get("joins_ms", []), 0.5),
        "join_p99_ms": queue_figures.pct(seen.get("joins_ms", []), 0.99),
        "stream_delay_p50_ms": queue_figures.pct(seen.get("stream_delays_ms", []), 0.5),
        "stream_delay_p99_ms": queue_figures.pct(seen.get("stream_delays_ms", []), 0.99),
        **queue_figures.fate_delays(rows, arrivals),
        "streams_held_at_once": int(peak["streams_held"]) if peak else 0,
        "platform_at_peak_streams": peak,
        "admitted_buyers": ordered,
        "admitted_met_sold_out_share": round(seen.get("met_sold_out", 0) / ordered, 4)
        if ordered
        else 0.0,
        "orders_without_admission": len(created - used),
        "last_fate_seen_after_last_payment_s": round(last_fate_seen - last_paid.timestamp(), 2)
        if last_fate_seen and last_paid
        else None,
        "queue": queue,
        "sales": sales,
        "seen": {
            k: v
            for k, v in seen.items()
            if k not in ("created", "final_arrivals", "joins_ms", "stream_delays_ms")
        },
        "check": check.as_dict(),
        "samples": sampler.samples,
    }


async def compare_fcfs(
    settings: Settings, cfg: QueueConfig, queue_sales: dict[str, Any]
) -> dict[str, Any]:
    """The same drop in fcfs mode (``bench drop``), and when its pairs sold, from its orders."""
    from snapshoe.bench.drop import run_drop

    drop = await run_drop(
        settings,
        DropConfig(
            buyers=cfg.buyers,
            pairs=cfg.pairs,
            sizes=cfg.sizes,
            decline_share=cfg.decline_share,
            seed=cfg.seed,
            out=(cfg.out.with_name(cfg.out.stem + "-fcfs.json") if cfg.out else None),
        ),
    )
    fcfs = await queue_figures.sales(settings, drop["setup"]["product_id"], cfg.pairs)
    fcfs.pop("last_paid_at")
    return {"fcfs": fcfs, "fcfs_ok": drop["ok"], "queue": queue_sales}
