"""What tracing costs a drop, in one run (``--compare`` on a platform that exports traces):
the stampede ran at the platform's sample ratio; the same drop on a fresh product then runs with
every process's ratio set to 0 (``snapshoe tracing sample``'s live key), and the ratio of the
two attempt rates is the cost of recording and exporting every span. What it leaves out: with
the ratio at 0 the instrumentation is still installed (its wrappers run and make unsampled
spans); a platform without ``SNAPSHOE_OTLP_ENDPOINT`` installs none (docs/tracing.md)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from snapshoe.bench.drop_model import Drop, Stampede
from snapshoe.bench.drop_setup import Bench
from snapshoe.bench.drop_stampede import stampede
from snapshoe.bench.http import fetch
from snapshoe.kernel.tracing import RATIO_REFRESH_SECONDS, sample_ratio_key


@dataclass
class Untraced:
    figures: dict[str, Any]
    drop: Drop | None = None
    run: Stampede | None = None


async def platform_sample_ratio(bench: Bench) -> float | None:
    """The orders service's ``snapshoe_tracing_sample_ratio`` (-1: tracing off), or None when
    the service does not say (an older platform)."""
    url = bench.settings.service_url("orders") + "/metrics"
    text = (await fetch("GET", url, seconds=5)).text
    for family in text_string_to_metric_families(text):
        if family.name == "snapshoe_tracing_sample_ratio" and family.samples:
            return float(family.samples[0].value)
    return None


async def measure(bench: Bench, main: Stampede) -> Untraced:
    """The untraced drop and its figures against ``main``; a note when the platform traces
    nothing (there is no cost to measure)."""
    ratio = await platform_sample_ratio(bench)
    if ratio is None or ratio <= 0:
        why = "tracing export off in the platform" if ratio is not None else "not reported"
        return Untraced({"measured": False, "sample_ratio": ratio, "why": why})
    redis = Redis.from_url(bench.settings.redis_url)
    key = sample_ratio_key(bench.settings)
    try:
        async with bench.client() as client:
            drop = await bench.create_drop(client, "gate")
            tokens = bench.write_tokens(drop, "untraced", bench.buyer_ids)
            await redis.set(key, "0")
            await bench.schedule_release(client, drop)
        await asyncio.sleep(2 * RATIO_REFRESH_SECONDS)  # every process has read it
        bench.log(f"compare: the same drop untraced, at most {bench.cfg.compare_seconds:.0f}s")
        run = await stampede(bench, drop, "untraced", tokens, bench.cfg.compare_seconds)
    finally:
        await redis.delete(key)
        await redis.aclose()
    untraced = run.per_second
    return Untraced(
        {
            "measured": True,
            "sample_ratio": ratio,
            "product_id": drop.product_id,
            "traced_attempts_per_s": round(main.per_second, 1),
            "untraced_attempts_per_s": round(untraced, 1),
            "traced_vs_untraced": round(main.per_second / untraced, 3) if untraced else None,
            "untraced_responses_5xx": run.five_xx(),
        },
        drop,
        run,
    )
