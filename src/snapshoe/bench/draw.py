"""``snapshoe bench draw``: a draw through a running platform, at scale.

Setup (not timed): a draw-mode product through the admin API; billing keys issued at the PG's
card endpoint (the sandbox's, over HTTP, as a buyer's browser would: a share of the cards
declines, number ending 0002); the entries written in bulk into the products database (the
issue says "made in bulk, not through sign-ups": these buyers have no accounts, so no result
mail goes out for them). Then the entry window is closed and the draw is due at once, and the
run times what the platform does by itself: the draw, every charge through the sandbox PG, and
the settling of every entry. Checks come from the databases, the PG and the published draw
(docs/draws.md). Setup in draw_setup.py, checks in draw_checks.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from snapshoe.bench import checks
from snapshoe.bench.draw_checks import charges, check, evaluate
from snapshoe.bench.draw_model import DrawConfig as DrawConfig
from snapshoe.bench.draw_setup import close_now, create_product, insert_entries, issue_keys
from snapshoe.bench.drop_result import git_commit, machine
from snapshoe.bench.http import Client
from snapshoe.bench.report_kinds import draw_page
from snapshoe.kernel.settings import Settings


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


async def watch(
    settings: Settings, pid: str, cfg: DrawConfig, t0: float
) -> tuple[list[dict[str, float]], dict[str, float | None]]:
    """Entry states every half second until the draw is settled (or the time cap)."""
    samples: list[dict[str, float]] = []
    marks: dict[str, float | None] = {"drawn": None, "all_pairs_decided": None, "settled": None}
    pairs = cfg.sizes * cfg.pairs_per_size
    while time.time() - t0 < cfg.max_seconds:
        async with checks.connection(settings, "products") as conn:
            states: dict[str, int] = dict(
                (
                    await conn.execute(
                        text(
                            "SELECT state, COUNT(*) FROM draw_entries WHERE product_id = :p"
                            " GROUP BY state"
                        ),
                        {"p": pid},
                    )
                ).all()
            )
            draw_state = (
                await conn.execute(
                    text("SELECT state FROM draws WHERE product_id = :p"), {"p": pid}
                )
            ).scalar_one()
            sold = (
                await conn.execute(
                    text("SELECT SUM(sold), SUM(available) FROM items WHERE product_id = :p"),
                    {"p": pid},
                )
            ).one()
        t = time.time() - t0
        sample = {"t": round(t, 2), **{str(k): float(v) for k, v in states.items()}}
        sample["sold"] = float(sold[0] or 0)
        samples.append(sample)
        if draw_state != "open" and marks["drawn"] is None:
            marks["drawn"] = t
        if marks["all_pairs_decided"] is None and (
            int(sold[0] or 0) >= pairs or (draw_state == "settled")
        ):
            marks["all_pairs_decided"] = t
        if draw_state == "settled":
            marks["settled"] = t
            break
        await asyncio.sleep(0.5)
    return samples, marks


def write_html(r: dict[str, Any], path: Path) -> Path:
    """The report page (report_kinds.draw_page)."""
    path.write_text(draw_page(r))
    return path


async def run_draw(settings: Settings, cfg: DrawConfig) -> dict[str, Any]:
    started = datetime.now(UTC)
    rng = random.Random(cfg.seed)  # noqa: S311  (a workload, not a secret)
    run_id = secrets.token_hex(4)
    async with Client(settings.gateway_url, timeout=60) as client:
        pid, items = await create_product(settings, cfg, client, run_id)
    log(f"draw {pid}: {cfg.entries} entries over {cfg.sizes} sizes of {cfg.pairs_per_size}")
    t = time.time()
    keys = await issue_keys(settings, cfg, run_id, rng)
    issue_s = time.time() - t
    log(f"{len(keys)} billing keys issued in {issue_s:.1f}s")
    per_item = await insert_entries(settings, pid, items, keys, rng)
    log("entries written; closing the entries and drawing now")
    closed_at = await close_now(settings, pid)
    t0 = closed_at.timestamp()
    samples, marks = await watch(settings, pid, cfg, t0)
    log(f"settled after {marks['settled']}s; checking")
    out: dict[str, Any] = {
        "bench": "draw",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()},
        "product_id": pid,
        "entries_per_size": per_item,
        "setup": {"billing_keys_seconds": round(issue_s, 1)},
        "timing": {
            "seconds_close_to_drawn": marks["drawn"],
            "seconds_close_to_every_pair_decided": marks["all_pairs_decided"],
            "seconds_close_to_settled": marks["settled"],
        },
        "charges": await charges(settings, pid, closed_at),
        "check": await check(settings, pid),
        "samples": samples,
        "started_at": started.isoformat(),
        "machine": machine(),
        "git": git_commit(),
    }
    evaluate(out, cfg)
    workdir = Path("bench/out")
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    path = cfg.out or workdir / f"draw-{started:%Y%m%dT%H%M%S}.json"
    await asyncio.to_thread(path.write_text, json.dumps(out, indent=2, default=str))
    write_html(out, path.with_suffix(".html"))
    log(f"result: {path}")
    return out
