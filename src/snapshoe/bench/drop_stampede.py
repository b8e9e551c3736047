"""The timed part of a drop: the wrk stampede (``drop.lua``) with the stock sampled meanwhile
(the sell-out curve), and the floor (``floor.lua``) that ``--compare`` measures it against."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from snapshoe.bench.drop_model import QUIET_SECONDS, Drop, Stampede
from snapshoe.bench.drop_setup import Bench
from snapshoe.bench.http import HTTP_ERRORS, Client
from snapshoe.bench.wrk import WrkRun, read_pairs, run_wrk, script_path


async def sample_stock(client: Client, drop: Drop, stop: asyncio.Event, into: list[Any]) -> None:
    while not stop.is_set():
        with contextlib.suppress(*HTTP_ERRORS, KeyError, ValueError):
            r = await client.get(f"/api/products/{drop.product_id}")
            if r.status == 200:
                left = sum(int(i["stock_remaining"]) for i in r.json()["items"])
                into.append((round(time.time() - drop.release_ts, 3), left))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.1)


def all_threads_done(prefix: Path, threads: int, finished_at: list[float]) -> Callable[[], bool]:
    """wrk's stop condition: every thread wrote its done file or went quiet; the first time it
    holds is appended to ``finished_at``."""

    def thread_done(t: int) -> bool:
        if Path(f"{prefix}.done.{t}").exists():
            return True
        # Every request sent, no answer for QUIET_SECONDS, and each missing answer matched
        # by a 408 (a request lost as HAProxy closed an idle connection; see drop.lua).
        tail = Path(f"{prefix}.tail.{t}")
        try:
            answered, n408, mine = (int(x) for x in tail.read_text().split())
            quiet = time.time() - tail.stat().st_mtime > QUIET_SECONDS
        except (OSError, ValueError):
            return False
        return quiet and answered + n408 >= mine

    def finished() -> bool:
        if all(thread_done(t) for t in range(threads)):
            if not finished_at:
                finished_at.append(time.monotonic())
            return True
        return False

    return finished


def read_stampede(
    tag: str, prefix: Path, run: WrkRun, share: float | None, curve: list[tuple[float, int]]
) -> Stampede:
    """What drop.lua wrote under ``prefix``, as one record."""
    counts = {k: int(v) for k, v in read_pairs(Path(f"{prefix}.counts")).items()}
    ok = {k: int(v) for k, v in read_pairs(Path(f"{prefix}.ok")).items()}
    sent = {k: int(v) for k, v in read_pairs(Path(f"{prefix}.sent")).items()}
    hist = sorted(
        (float(k), float(v) / 1000) for k, v in read_pairs(Path(f"{prefix}.hist")).items()
    )
    # The answers per time bin ride along in the summary, under "timeline:" (drop_result).
    bins = {f"timeline:{k}": v for k, v in read_pairs(Path(f"{prefix}.timeline")).items()}
    return Stampede(
        tag=tag,
        run=run,
        counts=counts,
        summary={**read_pairs(Path(f"{prefix}.summary")), **bins},
        ok=ok,
        sent=sent,
        quantiles_ms=hist,
        cpu_share=share,
        sell_out=curve,
    )


async def stampede(
    bench: Bench, drop: Drop, tag: str, tokens_path: Path, max_seconds: float
) -> Stampede:
    cfg = bench.cfg
    threads = max(1, min(cfg.threads, cfg.buyers))
    connections = max(threads, cfg.connections)
    prefix = bench.workdir / tag
    env = {
        "TOKENS_FILE": str(tokens_path),
        "OUT_PREFIX": str(prefix),
        "RELEASE_US": str(int(drop.release_ts * 1_000_000)),
        "THREADS": str(threads),
    }
    lead = max(0.0, drop.release_ts - time.time())
    release_mono = time.monotonic() + lead
    args = [
        f"-t{threads}",
        f"-c{connections}",
        f"-d{int(lead + max_seconds + 30)}s",
        "--timeout",
        "60s",
        "-s",
        str(script_path("drop.lua")),
        bench.settings.gateway_url,
    ]
    finished_at: list[float] = []
    finished = all_threads_done(prefix, threads, finished_at)
    curve: list[tuple[float, int]] = []
    stop = asyncio.Event()
    async with bench.client() as sampler_client:
        sampler = asyncio.create_task(sample_stock(sampler_client, drop, stop, curve))
        run = await run_wrk(args, env, finished=finished, deadline=release_mono + max_seconds)
        # A few samples past the end show where the curve settled.
        await asyncio.sleep(0.3)
        stop.set()
        await sampler
    if run.returncode != 0:
        raise RuntimeError(f"wrk failed ({run.returncode}): {run.stderr}{run.stdout}")
    end = finished_at[0] if finished_at else time.monotonic()
    cpu = run.cpu_between(release_mono, end)
    ncpu = os.cpu_count() or 1
    share = round(cpu[0] / (cpu[1] * ncpu), 3) if cpu and cpu[1] > 0 else None
    return read_stampede(tag, prefix, run, share, curve)


async def floor(bench: Bench, tokens_path: Path, seconds: float) -> dict[str, Any]:
    cfg = bench.cfg
    prefix = bench.workdir / "floor"
    duration = max(2, math.ceil(seconds))
    threads = max(1, cfg.threads)
    run = await run_wrk(
        [
            f"-t{threads}",
            f"-c{max(threads, cfg.connections)}",
            f"-d{duration}s",
            "--timeout",
            "30s",
            "-s",
            str(script_path("floor.lua")),
            bench.settings.gateway_url,
        ],
        {"TOKENS_FILE": str(tokens_path), "OUT_PREFIX": str(prefix)},
    )
    if run.returncode != 0:
        raise RuntimeError(f"wrk (floor) failed: {run.stderr}{run.stdout}")
    out = read_pairs(Path(f"{prefix}.floor"))
    secs = int(out.get("duration_us", "0")) / 1e6
    statuses = {
        k.removeprefix("status_"): int(v) for k, v in out.items() if k.startswith("status_")
    }
    good = statuses.get("200", 0)
    return {
        "floor_rps": round(good / secs, 1) if secs else 0.0,
        "seconds": round(secs, 3),
        "requests": int(out.get("requests", "0")),
        "statuses": statuses,
        "p50_ms": round(float(out.get("latency_p50_us", "0")) / 1000, 2),
        "p99_ms": round(float(out.get("latency_p99_us", "0")) / 1000, 2),
    }
