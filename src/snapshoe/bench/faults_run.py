"""``snapshoe bench drop --faults SCHEDULE`` (issue 18): a drop on a platform of the run's own
while a nemesis breaks it on a schedule, then a checker.

1. The environment (``faults_env``): private Redis and MariaDB, the shared RabbitMQ, and
   ``snapshoe up --no-seed`` pointed at them with ports and a namespace of its own.
2. The drop, set up as ``bench drop`` does it (``drop_setup.Bench``): buyers, a drop product,
   its release a few seconds ahead. A snapshot of Redis is taken then (what ``redis-stale``
   restarts from when the schedule takes none of its own).
3. From the release: the wrk stampede (``drop_stampede.stampede``) of ``buyers`` buyers; then
   the winners pay (a share declines); meanwhile, and until the last fault is over, late
   buyers keep trying to buy at ``trickle_per_second`` (the pairs that declines put back on
   sale are bought by them) and pay. Every client here behaves as a real one: an answer that is
   not final (5xx, no answer, ``idempotency_key_in_use``) is asked again with the same
   Idempotency-Key. The nemesis (``faults_nemesis``) applies each fault at its time; a probe
   asks the product page through the gateway and each service's ``/readyz`` every 150 ms.
4. Once the last fault is over and the platform answers normally, the orders the buyers never
   saw a 201 for are replayed with their keys (each must answer that same order) and paid by
   their buyers; then the checker: the stock checks (``checks.check_product``), the money
   (``settle_checks``), messaging drained, the outbox drained. Every anomaly with its evidence.
5. A JSON result and an HTML report (``faults_report``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from snapshoe.bench.drop_model import Drop, DropConfig, Stampede
from snapshoe.bench.drop_result import git_commit, machine
from snapshoe.bench.drop_setup import Bench, check_platform
from snapshoe.bench.faults_check import anomaly, check, fault_rows, throughput
from snapshoe.bench.faults_env import FaultEnv
from snapshoe.bench.faults_nemesis import FaultRecord, Nemesis
from snapshoe.bench.faults_schedule import Fault, parse, span, text_of
from snapshoe.bench.faults_workload import (
    HEALTHY_FOR,
    SELL_OUT_EXTRA,
    Record,
    healthy_for,
    probe,
    stampede_answers,
    workload,
)
from snapshoe.kernel.settings import Settings


@dataclass
class FaultsConfig:
    schedule: str = "small"
    buyers: int = 400  # in the stampede
    pairs: int = 40
    sizes: int = 4
    connections: int = 50
    threads: int = 2
    decline_share: float = 0.2
    trickle_per_second: float = 8.0  # late buyers' order attempts per second
    lead_seconds: float = 3.0
    max_seconds: float = 60.0  # the stampede's cap
    # The platform's payment window (SNAPSHOE_ORDER_PAYMENT_TTL_SECONDS, 600 s in dev): the
    # time an orphan reservation holds its pair (faults_env) and the checker may wait for.
    order_ttl_seconds: int = 90
    settle_seconds: float = 180.0  # the payment window + the sweeper's 30 s, and more
    http_workers: int = 1
    seed: int | None = None
    out: Path | None = None
    html: bool = True
    keep: bool = False  # keep the env's temp dir (logs, datadir)

    def validate(self) -> list[Fault]:
        DropConfig(
            buyers=self.buyers, pairs=self.pairs, sizes=self.sizes, connections=self.connections
        ).validate()
        if self.trickle_per_second <= 0:
            raise ValueError("trickle_per_second must be positive")
        return parse(self.schedule)


def out_path_of(cfg: FaultsConfig, started_at: datetime) -> Path:
    stamp = started_at.strftime("%Y%m%d-%H%M%S")
    path = cfg.out or Path("bench/out") / f"faults-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


async def run_faults(cfg: FaultsConfig) -> dict[str, Any]:
    """The whole fault run; returns the result (also written to ``cfg.out``, with its HTML)."""
    faults = cfg.validate()
    started_at = datetime.now(UTC)
    out_path = out_path_of(cfg, started_at)
    workdir = out_path.parent / f"{out_path.stem}.work"
    workdir.mkdir(parents=True, exist_ok=True)
    env = FaultEnv(http_workers=cfg.http_workers, order_ttl_seconds=cfg.order_ttl_seconds)
    t_env = time.monotonic()
    try:
        settings = await asyncio.to_thread(env.start)
        env_seconds = time.monotonic() - t_env
        return await _run(cfg, faults, env, settings, started_at, out_path, workdir, env_seconds)
    finally:
        await asyncio.to_thread(env.close, cfg.keep)


@dataclass
class Ran:
    """What the drop under faults left for the checker and the result."""

    bench: Bench
    drop: Drop
    rec: Record
    main: Stampede
    records: list[FaultRecord]
    healthy: bool
    late_buyers: int
    run_end: float = 0.0
    client_answers: list[tuple[float, str]] = field(default_factory=list)


async def set_up(
    cfg: FaultsConfig, faults: list[Fault], env: FaultEnv, settings: Settings, workdir: Path
) -> tuple[Bench, Drop, Path, list[str], Nemesis]:
    """The drop as ``bench drop`` sets it up; the stampede's buyers and the late ones apart;
    Redis's snapshot before the release (what ``redis-stale`` goes back to by default)."""
    late = math.ceil((span(faults) + 3 + SELL_OUT_EXTRA) * cfg.trickle_per_second) + 10
    drop_cfg = DropConfig(
        buyers=cfg.buyers + late,
        pairs=cfg.pairs,
        sizes=cfg.sizes,
        per_user_limit=1,
        connections=cfg.connections,
        threads=cfg.threads,
        decline_share=cfg.decline_share,
        lead_seconds=cfg.lead_seconds,
        max_seconds=cfg.max_seconds,
        seed=cfg.seed,
        html=False,
    )
    bench = Bench(settings, drop_cfg, workdir)
    bench.log(f"faults: schedule {text_of(faults)}")
    async with bench.client() as client:
        await check_platform(bench, client)
        await bench.make_buyers()
        drop = await bench.create_drop(client, "gate")
        tokens = bench.write_tokens(drop, "gate", bench.buyer_ids[: cfg.buyers])
        nemesis = Nemesis(env, faults, 0.0, bench.log)
        await asyncio.to_thread(nemesis.take_first_snapshot)
        await bench.schedule_release(client, drop)
    nemesis.release_ts = drop.release_ts
    return bench, drop, tokens, bench.buyer_ids[cfg.buyers :], nemesis


async def under_faults(
    cfg: FaultsConfig, faults: list[Fault], env: FaultEnv, settings: Settings, workdir: Path
) -> Ran:
    """The drop while the nemesis runs and the probe watches; then the wait for the platform
    to answer normally for ``HEALTHY_FOR`` seconds."""
    bench, drop, tokens, pool, nemesis = await set_up(cfg, faults, env, settings, workdir)
    late = len(pool)
    rec = Record(release_ts=drop.release_ts)
    stop = asyncio.Event()
    prober = asyncio.create_task(probe(settings, drop, rec, stop))
    nemesis_task = asyncio.create_task(nemesis.run())
    try:
        until = span(faults) + 3
        main = await workload(bench, rec, drop, tokens, pool, until, cfg.trickle_per_second)
        records = await nemesis_task
        healthy = await healthy_for(rec, HEALTHY_FOR, 90)
    finally:
        nemesis_task.cancel()
        with contextlib.suppress(BaseException):
            await nemesis_task
        stop.set()
        await prober
    return Ran(bench, drop, rec, main, records, healthy, late, client_answers=list(rec.answers))


def result_of(
    cfg: FaultsConfig,
    faults: list[Fault],
    env: FaultEnv,
    ran: Ran,
    rows: list[dict[str, Any]],
    checked: tuple[list[dict[str, Any]], dict[str, Any]],
    started_at: datetime,
    env_seconds: float,
) -> dict[str, Any]:
    rec, settings = ran.rec, ran.bench.settings
    anomalies, figures = checked
    return {
        "bench": "faults",
        "started_at": started_at.isoformat(),
        "schedule": text_of(faults),
        "schedule_name": cfg.schedule if cfg.schedule in ("small", "default") else None,
        "setup": {
            "buyers_stampede": cfg.buyers,
            "buyers_late": ran.late_buyers,
            "trickle_per_second": cfg.trickle_per_second,
            "pairs": cfg.pairs,
            "sizes": cfg.sizes,
            "connections": cfg.connections,
            "decline_share": cfg.decline_share,
            "http_workers": cfg.http_workers,
            "order_payment_ttl_seconds": cfg.order_ttl_seconds,
            "namespace": settings.namespace,
            "gateway": settings.gateway_url,
            "product_id": ran.drop.product_id,
            "env_start_seconds": round(env_seconds, 1),
            "git": git_commit(),
            "machine": machine(),
            "load_avg_end": [round(x, 2) for x in os.getloadavg()],
            "up_log": str(env.log_path if cfg.keep else env.kept_log),
        },
        "stampede": {
            "attempts": ran.main.attempts,
            "seconds": round(ran.main.seconds, 3),
            "responses": ran.main.counts,
        },
        "late_buyers": dict(rec.placed),
        "payments": dict(rec.paid),
        "run_seconds": ran.run_end,
        "faults": rows,
        "probe_rounds": len(rec.samples),
        "probe_rounds_not_normal": sum(1 for s in rec.samples if not s.ok),
        # Each round not normal: when, and what each failing probe answered (0: nothing).
        "probes_not_normal": rec.bad_probes[:500],
        "answers_total": dict(sorted(Counter(k for _, k in rec.answers).items())),
        "throughput": throughput(rec.answers),
        # Every answer the Python clients got (late buyers, payments), in time order; wrk's
        # are in the throughput by time bin.
        "client_answers": [[t, k] for t, k in ran.client_answers],
        "checks": figures,
        "anomalies": anomalies,
        "failures": [a["anomaly"] for a in anomalies],
        "ok": not anomalies,
    }


async def _run(
    cfg: FaultsConfig,
    faults: list[Fault],
    env: FaultEnv,
    settings: Settings,
    started_at: datetime,
    out_path: Path,
    workdir: Path,
    env_seconds: float,
) -> dict[str, Any]:
    ran = await under_faults(cfg, faults, env, settings, workdir)
    rec, bench = ran.rec, ran.bench
    run_end = ran.run_end = rec.now()
    rec.answers += stampede_answers(ran.main, ran.drop.release_ts)
    rec.answers.sort()
    rows = fault_rows(ran.records, rec, run_end)
    bench.log("checks: after the run settles")
    anomalies, figures = await check(bench, env, rec, ran.drop, rows, cfg.settle_seconds)
    if not ran.healthy:
        why = "the platform did not answer normally after the last fault"
        anomalies.append(anomaly(why, rec.bad_probes[-5:]))
    result = result_of(cfg, faults, env, ran, rows, (anomalies, figures), started_at, env_seconds)
    await asyncio.to_thread(out_path.write_text, json.dumps(result, indent=1, default=str) + "\n")
    result["out"] = str(out_path)
    if cfg.html:
        from snapshoe.bench.faults_report import write_html

        result["report"] = str(write_html(result, out_path.with_suffix(".html")))
    tally = "0 anomalies" if not anomalies else f"{len(anomalies)} ANOMALIES: {result['failures']}"
    bench.log(f"result: {out_path}; {tally}")
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = [
        f"faults run: {'OK' if result['ok'] else 'FAILED'}, {len(result['anomalies'])} anomalies",
        f"schedule: {result['schedule']}",
    ]
    for f in result["faults"]:
        rec = f["recovery_seconds"]
        lines.append(
            f"  t={f['started']}s {f['fault']}: applied={f['applied']} "
            f"recovery={'not recovered' if rec is None else f'{rec:g}s'} errors={f['errors_seen']}"
        )
    lines += [
        f"  ANOMALY {a['anomaly']}: {json.dumps(a['evidence'], default=str)[:300]}"
        for a in result["anomalies"]
    ]
    lines.append(
        f"result: {result.get('out')}"
        + (f", report: {result['report']}" if result.get("report") else "")
    )
    return lines
