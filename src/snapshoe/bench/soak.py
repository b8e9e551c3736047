"""``snapshoe bench soak``: the platform under a steady, ordinary load for M minutes, watched.

Buyers (written in bulk, tokens minted with the platform's key: ``drop_setup.Bench``) browse,
fill and empty their cart, buy, pay and cancel at a steady rate through the gateway
(``soak_load``), on products restocked as they sell. Meanwhile every platform process is
sampled every few seconds (``soak_sampling``: memory, open files, connections to MariaDB,
Redis and RabbitMQ); afterwards the latency per request kind per minute, the answers per
second and the verdict (``soak_result``: flat after the warm-up, 0 5xx), a JSON result and an
HTML report (``soak_report``). docs/reliability.md, "Soak"."""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from snapshoe.bench import soak_load, soak_report, soak_result
from snapshoe.bench.drop_model import BenchRefused, DropConfig
from snapshoe.bench.drop_result import git_commit, machine
from snapshoe.bench.drop_setup import Bench
from snapshoe.bench.soak_sampling import ProcessSampler, platform_processes
from snapshoe.kernel.settings import Settings

PRICE = 99_000


@dataclass
class SoakConfig:
    minutes: float = 30.0
    rate: float = 50.0  # requests per second, every kind together
    sample_seconds: float = 5.0
    warmup_share: float = soak_result.WARMUP_SHARE
    products: int = 3
    sizes: int = 4
    stock: int = 1_000  # pairs per size at the start; topped up below half of it
    decline_share: float = 0.1
    cancel_share: float = 0.25  # orders cancelled before paying
    refund_share: float = 0.2  # paid orders cancelled afterwards (a refund)
    seed: int | None = None
    out: Path | None = None
    html: bool = True

    def validate(self) -> None:
        if not self.minutes > 0:
            raise ValueError("--minutes must be positive")
        if not 0 < self.rate <= 2_000:
            raise ValueError("--rate: requests per second, above 0 and at most 2,000")
        if not 0 < self.sample_seconds <= 60:
            raise ValueError("sample_seconds: above 0, at most 60")
        for name in ("warmup_share", "decline_share", "cancel_share", "refund_share"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name}: 0 up to (not including) 1")

    @property
    def workers(self) -> int:
        """Visits in flight at once: enough that the pacer, not the latency, sets the rate
        (at 50/s, 25 workers keep up with a mean latency up to 0.5 s)."""
        return max(8, min(256, math.ceil(self.rate / 2)))


async def run_soak(settings: Settings, cfg: SoakConfig) -> dict[str, Any]:
    cfg.validate()
    started = datetime.now(UTC)
    workdir = Path("bench/out")
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    processes = await asyncio.to_thread(platform_processes, settings.namespace)
    if not processes:
        raise BenchRefused(
            f"no process of the platform of namespace {settings.namespace!r} found on this "
            "machine: start it with `snapshoe up` (the soak samples its processes from /proc)"
        )
    bench = Bench(
        settings, DropConfig(buyers=cfg.workers * BUYERS_PER_WORKER, seed=cfg.seed), workdir
    )
    await bench.make_buyers()
    duration = cfg.minutes * 60
    async with soak_load.session_for(settings.gateway_url, cfg.workers + 4) as session:
        await _platform_answers(session, settings.gateway_url)
        items = await soak_load.create_products(
            session,
            bench.admin,
            bench.run_id,
            products=cfg.products,
            sizes=cfg.sizes,
            stock=cfg.stock,
            price=PRICE,
        )
        bench.log(
            f"soak {cfg.minutes:g} min at {cfg.rate:g} req/s: {cfg.workers} workers, "
            f"{len(bench.buyer_ids)} buyers, {sum(map(len, items.values()))} items; "
            f"sampling {len(processes)} processes every {cfg.sample_seconds:g}s"
        )
        recorder, sampler = await _load(bench, cfg, session, items, duration)
    bench.log("load done")
    result = assemble(cfg, started, duration, items, recorder, sampler)
    result.update(machine=machine(), git=git_commit())
    soak_result.evaluate(result)
    await _write(bench, cfg, result, cfg.out or workdir / f"soak-{started:%Y%m%dT%H%M%S}.json")
    return result


BUYERS_PER_WORKER = 2


async def _platform_answers(session: aiohttp.ClientSession, url: str) -> None:
    try:
        async with session.get("/api/products?limit=1") as r:
            status = r.status
    except (aiohttp.ClientError, TimeoutError):
        status = 0
    if not 200 <= status < 500:
        raise BenchRefused(f"the platform is not answering at {url}")


async def _load(
    bench: Bench,
    cfg: SoakConfig,
    session: aiohttp.ClientSession,
    items: dict[str, Any],
    duration: float,
) -> tuple[soak_load.Recorder, ProcessSampler]:
    """The steady load for ``duration`` seconds, with the sampler, the restocker and fresh
    tokens beside it."""
    t0 = time.time()
    recorder = soak_load.Recorder(t0)
    load = soak_load.Load(
        session,
        soak_load.Pacer(cfg.rate),
        recorder,
        items,
        token=lambda buyer: bench.tokens[buyer],
        decline_share=cfg.decline_share,
        cancel_share=cfg.cancel_share,
        refund_share=cfg.refund_share,
    )
    sampler = ProcessSampler(bench.settings.namespace, t0, cfg.sample_seconds)
    background = [
        asyncio.create_task(sampler.run()),
        asyncio.create_task(
            soak_load.restocker(load, lambda: admin_headers(bench), cfg.stock // 2, cfg.stock)
        ),
        asyncio.create_task(keep_tokens_fresh(bench)),
    ]
    try:
        deadline = t0 + duration
        await asyncio.gather(
            *(
                load.worker(bench.buyer_ids[k :: cfg.workers], deadline, bench.rng.randrange(2**32))
                for k in range(cfg.workers)
            )
        )
        await sampler.sample_once()
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
    return recorder, sampler


async def _write(bench: Bench, cfg: SoakConfig, result: dict[str, Any], path: Path) -> None:
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    # The JSON first: a report that fails to render must not lose half an hour's record
    # (``soak_report.render_file`` makes it again from the JSON).
    await asyncio.to_thread(path.write_text, json.dumps(result, indent=1, default=str))
    if cfg.html:
        html = await asyncio.to_thread(soak_report.write_html, result, path.with_suffix(".html"))
        result["report"] = str(html)
        await asyncio.to_thread(path.write_text, json.dumps(result, indent=1, default=str))
    bench.log(f"result: {path}")


def admin_headers(bench: Bench) -> dict[str, str]:
    """A fresh admin token (``bench.admin`` is minted once and lives 15 minutes at most)."""
    token, _ = bench.issuer.issue_access(
        f"bench-admin-{bench.run_id}", email_verified=True, roles=("admin",)
    )
    return {"Authorization": f"Bearer {token}"}


async def keep_tokens_fresh(bench: Bench, every: float = 10.0) -> None:
    while True:
        await asyncio.sleep(every)
        bench.ensure_fresh_tokens(120)


def assemble(
    cfg: SoakConfig,
    started: datetime,
    duration: float,
    items: dict[str, list[str]],
    recorder: soak_load.Recorder,
    sampler: ProcessSampler,
) -> dict[str, Any]:
    """The result's record (before the verdict): requests by kind, latency bins, answers per
    second, the samples."""
    records = recorder.records
    bin_s = soak_result.bin_seconds_for(duration)
    in_run = [r for r in records if r[0] < duration]
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in soak_result.KINDS:
        mine = sorted(ms for _, k, ms, status in records if k == kind and status)
        by_kind[kind] = {
            "count": sum(1 for r in records if r[1] == kind),
            "answered": len(mine),
            "statuses": recorder.statuses.get(kind, {}),
            "p50_ms": soak_result.percentile(mine, 0.5),
            "p99_ms": soak_result.percentile(mine, 0.99),
        }
    server_by_kind = {
        kind: n
        for kind, statuses in recorder.statuses.items()
        if (n := sum(c for s, c in statuses.items() if s[0] == "5"))
    }
    labels = sampler.labels()
    config = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
    return {
        "bench": "soak",
        "started_at": started.isoformat(),
        "config": {**config, "workers": cfg.workers},
        "duration_s": duration,
        "warmup_s": round(cfg.warmup_share * duration, 2),
        "bin_seconds": bin_s,
        "products": items,
        "requests": {
            "total": len(records),
            "answered": sum(1 for r in records if r[3]),
            "answered_per_s": round(sum(1 for r in in_run if r[3]) / duration, 2),
            "by_kind": by_kind,
            "server_errors_by_kind": server_by_kind,
            "errors": recorder.errors,
            "unexpected": recorder.unexpected,
        },
        "outcomes": recorder.outcomes,
        "server_errors": sum(server_by_kind.values()),
        "no_answer": sum(1 for r in records if not r[3]),
        "latency": soak_result.latency_bins(in_run, bin_s),
        "per_second": soak_result.per_second(in_run),
        "processes": labels,
        "samples_per_process": {
            label: sum(1 for s in sampler.samples if label in s["processes"]) for label in labels
        },
        "restarts": sampler.restarts,
        "samples": sampler.samples,
    }


def summary_lines(r: dict[str, Any]) -> list[str]:
    req = r["requests"]
    lines = [
        f"soak: {r['duration_s'] / 60:g} min, {req['answered']} answers "
        f"({req['answered_per_s']}/s), {r['server_errors']} 5xx, {r['no_answer']} unanswered",
        f"outcomes: {r['outcomes']}",
    ]
    for kind, k in req["by_kind"].items():
        lines.append(
            f"  {kind:13} {k['answered']:7} answered  p50 {k['p50_ms']} ms  p99 {k['p99_ms']} ms"
        )
    lines.append(f"targets: {r['targets']}")
    lines += [f"FAILED: {f}" for f in r["failures"]] or ["OK: every check passed"]
    if r.get("report"):
        lines.append(f"report: {r['report']}")
    return lines
