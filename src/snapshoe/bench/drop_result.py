"""The figures of a drop run and their verdict: the machine and commit it ran on, the
stampede's figures (attempts, latencies, sell-out), the failures the database checks found,
the targets met or not, and the lines ``snapshoe bench drop`` prints."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import subprocess
from typing import Any

from snapshoe.bench import checks
from snapshoe.bench.drop_model import NOT_ATTEMPTS, TARGETS, DropConfig, Stampede
from snapshoe.bench.wrk import wrk_binary
from snapshoe.kernel.settings import Settings


def _percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return round(sorted_values[k], 2)


def machine() -> dict[str, Any]:
    wrk_version = ""
    with contextlib.suppress(OSError, RuntimeError):
        out = subprocess.run(  # noqa: S603 (our own fixed argv)
            [wrk_binary(), "--version"], capture_output=True, text=True, check=False
        )
        text = out.stdout or out.stderr
        wrk_version = text.splitlines()[0] if text else ""
    return {
        "node": platform.node(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "wrk": wrk_version,
    }


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(  # noqa: S603 (fixed git sub-commands)
                ["git", *args],  # noqa: S607 (git from PATH, like a developer runs it)
                capture_output=True,
                text=True,
                check=False,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


async def success_latencies(settings: Settings, s: Stampede) -> list[float]:
    keys = await checks.order_keys(settings, list(s.ok))
    out = [
        (recv - s.sent[keys[oid]]) / 1000
        for oid, recv in s.ok.items()
        if oid in keys and keys[oid] in s.sent
    ]
    return sorted(out)


def sell_out_seconds(curve: list[tuple[float, int]]) -> float | None:
    for t, left in curve:
        if t >= 0 and left == 0:
            return t
    return None


def timeline(summary: dict[str, str]) -> dict[str, Any]:
    """The answers per time bin since the release (drop.lua's ``.timeline``, carried in the
    summary under ``timeline:``): the bins' start times and, per response key (``201``,
    ``409:sold_out``, ...), the answers received in each bin. Not order attempts (the rare
    GET, HAProxy's 408 on an idle connection) are left out."""
    bin_us = int(summary.get("timeline:bin_us", "0"))
    counts: dict[str, dict[int, int]] = {}
    for key, n in summary.items():
        b, sep, k = key.removeprefix("timeline:").partition("|")
        if key.startswith("timeline:") and sep and k not in NOT_ATTEMPTS:
            counts.setdefault(k, {})[int(b)] = int(n)
    if not bin_us or not counts:
        return {}
    lo = min(min(c) for c in counts.values())
    hi = max(max(c) for c in counts.values())
    return {
        "bin_seconds": bin_us / 1e6,
        "t": [round(b * bin_us / 1e6, 3) for b in range(lo, hi + 1)],
        "answers": {k: [c.get(b, 0) for b in range(lo, hi + 1)] for k, c in sorted(counts.items())},
    }


def stampede_figures(s: Stampede, successes: list[float], release_ts: float) -> dict[str, Any]:
    last_ok = max(s.ok.values()) if s.ok else None
    first = int(s.summary.get("first_send_us", "0"))
    return {
        "attempts": s.attempts,
        "stampede_seconds": round(s.seconds, 3),
        # The stampede's clock starts at the first request sent; it must be at the release.
        "first_send_after_release_ms": round(first / 1000 - release_ts * 1000, 1),
        "attempts_per_s": round(s.per_second, 1),
        "orders_created": s.status_total(201),
        "sold_out_responses": s.counts.get("409:sold_out", 0),
        "responses": dict(sorted(s.counts.items())),
        "errors": {
            k: n
            for k, n in sorted(s.counts.items())
            if k not in ("201", "409:sold_out", *NOT_ATTEMPTS)
        },
        "socket_errors": {
            k.removeprefix("errors_"): int(v)
            for k, v in s.summary.items()
            if k.startswith("errors_") and k not in ("errors_status", "errors_timeout")
        },
        "p50_ms": s.pct_ms("50"),
        "p90_ms": s.pct_ms("90"),
        "p99_ms": s.pct_ms("99"),
        "max_ms": round(float(s.summary.get("latency_max_us", "0")) / 1000, 2),
        "success_p50_ms": _percentile(successes, 50),
        "success_p90_ms": _percentile(successes, 90),
        "success_p99_ms": _percentile(successes, 99),
        "success_max_ms": round(successes[-1], 2) if successes else None,
        "success_latencies_paired": len(successes),
        "sell_out_seconds": sell_out_seconds(s.sell_out),
        "last_success_seconds": round((last_ok - first) / 1e6, 3) if last_ok and first else None,
        "generator_cpu_share": s.cpu_share,
        "stopped_at_deadline": s.run.stopped_early,
        "timeline": timeline(s.summary),
    }


LATENCY_SOURCE = (
    "all attempts: wrk's own latency histogram (per request, from write to full response); "
    "successes: per-request clock_gettime in drop.lua, the send time keyed by Idempotency-Key "
    "and the 201's receive time by order id, paired through the orders database"
)


def stampede_failures(
    s: Stampede, cfg: DropConfig, first_send_after_release_ms: float
) -> list[str]:
    failures = []
    # HAProxy answers 408 to a connection that idled past `timeout http-request` (its wrk
    # thread had no buyer left for it); a request written at that very moment is lost before
    # it reaches a service. Such a buyer has no answer and no order: not a platform error.
    closed_idle = s.counts.get("408", 0)
    if s.run.stopped_early or s.attempts + closed_idle < cfg.buyers:
        failures.append(f"stampede incomplete: {s.attempts} of {cfg.buyers} answered")
    if s.five_xx():
        failures.append(f"{s.five_xx()} responses of 5xx in the stampede")
    if first_send_after_release_ms < -50:
        failures.append("the stampede's first request was sent before the release moment")
    return failures


def product_failures(
    product_checks: list[checks.ProductCheck],
    lock_run: Stampede | None,
    connections: int,
) -> list[str]:
    """What the database checks of the drop (first) and the db_lock drop (if any) found."""
    failures = []
    for c in product_checks:
        name = c.stock_mode
        if c.oversold:
            failures.append(f"{name}: {c.oversold} pairs oversold")
        if c.limit_violations:
            failures.append(f"{name}: {c.limit_violations} buyers over the limit")
        if not c.ledger_consistent:
            failures.append(f"{name}: ledger inconsistent")
        if c.pairs_sold + c.pairs_reserved > c.pairs:
            failures.append(f"{name}: sold + reserved > pairs")
        if c.client_only_ids:
            failures.append(f"{name}: {len(c.client_only_ids)} 201s with no order in the DB")
    main_check = product_checks[0]
    if main_check.db_only_ids:
        failures.append(f"gate: {len(main_check.db_only_ids)} orders no client got a 201 for")
    if main_check.orders_paid != main_check.pairs_sold:
        failures.append(
            f"gate: {main_check.orders_paid} paid orders but {main_check.pairs_sold} pairs sold"
        )
    if lock_run is not None and len(product_checks) > 1:
        extra = len(product_checks[1].db_only_ids)
        # A db_lock run stopped at its time cap leaves up to one request per connection in
        # flight: the server may have created those orders after wrk stopped listening.
        allowed = connections if lock_run.run.stopped_early else 0
        if extra > allowed:
            failures.append(f"db_lock: {extra} orders no client got a 201 for")
    return failures


def evaluate_targets(r: dict[str, Any]) -> dict[str, Any]:
    five = sum(n for k, n in r.get("errors", {}).items() if k.startswith("5"))
    t: dict[str, Any] = {
        "correct": {
            "met": r["oversold"] == 0
            and r["limit_violations"] == 0
            and r["ledger_consistent"]
            and five == 0,
            "oversold": r["oversold"],
            "limit_violations": r["limit_violations"],
            "ledger_consistent": r["ledger_consistent"],
            "responses_5xx": five,
        },
        "p99_ms": {"value": r["p99_ms"], "max": TARGETS["p99_ms_max"]},
        "stampede_seconds": {
            "value": r["stampede_seconds"],
            "max": TARGETS["stampede_seconds_max"],
        },
    }
    t["p99_ms"]["met"] = r["p99_ms"] is not None and r["p99_ms"] <= TARGETS["p99_ms_max"]
    t["stampede_seconds"]["met"] = r["stampede_seconds"] < TARGETS["stampede_seconds_max"]
    if "vs_floor" in r:
        t["vs_floor"] = {
            "value": r["vs_floor"],
            "min": TARGETS["vs_floor_min"],
            "met": (r["vs_floor"] or 0) >= TARGETS["vs_floor_min"],
        }
        t["vs_db_lock"] = {
            "value": r["vs_db_lock"],
            "min": TARGETS["vs_db_lock_min"],
            "met": (r["vs_db_lock"] or 0) >= TARGETS["vs_db_lock_min"],
        }
    return t


def summary_lines(r: dict[str, Any]) -> list[str]:
    s = r["setup"]
    lines = [
        f"drop: N={s['buyers']} S={s['pairs']} sizes={s['sizes']} limit={s['per_user_limit']} "
        f"connections={s['connections']} commit={(s['git']['commit'] or '?')[:10]}"
        f"{' (dirty)' if s['git']['dirty'] else ''} load {s['load_avg_start'][0]}",
        f"  attempts {r['attempts']} in {r['stampede_seconds']}s = {r['attempts_per_s']}/s; "
        f"201: {r['orders_created']}, sold_out: {r['sold_out_responses']}, errors: {r['errors']}",
        f"  latency all: p50 {r['p50_ms']} p90 {r['p90_ms']} p99 {r['p99_ms']} "
        f"max {r['max_ms']} ms; successes: p50 {r['success_p50_ms']} p99 {r['success_p99_ms']} "
        f"max {r['success_max_ms']} ms",
        f"  sold out after {r['sell_out_seconds']}s; generator cpu share "
        f"{r['generator_cpu_share']}",
        f"  oversold {r['oversold']}, limit violations {r['limit_violations']}, "
        f"ledger consistent {r['ledger_consistent']}",
    ]
    if "vs_floor" in r:
        lines.append(
            f"  floor {r['floor_rps']}/s, db_lock {r['db_lock_attempts_per_s']}/s: "
            f"vs_floor {r['vs_floor']}, vs_db_lock {r['vs_db_lock']}"
        )
    if r.get("stopped"):
        lines.append(f"  {r['stopped']}")
    lines.append(
        "  targets: "
        + ", ".join(f"{k} {'met' if v['met'] else 'NOT met'}" for k, v in r["targets"].items())
    )
    lines.append(("OK" if r["ok"] else "FAILED: " + "; ".join(r["failures"])) + f"  -> {r['out']}")
    return lines
