"""``bench soak``'s figures and verdict, pure functions of the run's record (unit-tested with
synthetic series): latency percentiles per request kind per minute (per bin: a short run uses
bins shorter than a minute), answers per second, and whether memory, open files, connections
and latency stayed flat after the warm-up.

The rules (docs/reliability.md, "Soak"), evaluated on the samples after the warm-up (the first
``WARMUP_SHARE`` of the run):

- memory flat: per process, the least-squares slope of its RSS over the post-warm-up samples,
  extrapolated over the whole run, grows it by at most max(``MEMORY_SHARE`` of its median,
  ``MEMORY_FLOOR_MB``) (noise moves single samples, a leak moves the slope);
  (a process that keeps data by design, ``MEMORY_BY_DESIGN``: the dev mail sink's inbox,
  is sampled but its memory not judged);
- open files flat: the same rule for the count of open fds, at most max(``COUNT_SHARE`` of
  its median, ``OPEN_FILES_FLOOR``) over the run (a process's fds include its client and
  upstream sockets, which follow the load's concurrency up and down: noise, not a leak);
- connections flat: per process and per store (MariaDB, Redis, RabbitMQ), max - min after
  the warm-up at most max(``COUNT_FLOOR``, ``COUNT_SHARE`` of its post-warm-up median) (pools
  open to their size and stay there; a leak climbs without end);
- latency flat: per request kind, the p99 of the last bin at most max(``LATENCY_FACTOR`` x,
  + ``LATENCY_SLACK_MS``) the p99 of the first bin after the warm-up;
- 0 5xx (and 0 requests without an answer).

Any of them missed, or a check of the run broken (a request kind never answered, an
unexpected 4xx, a process without samples or restarted), fails the run."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

WARMUP_SHARE = 0.2
MEMORY_SHARE = 0.05
MEMORY_FLOOR_MB = 5.0
COUNT_SHARE = 0.25
COUNT_FLOOR = 4
OPEN_FILES_FLOOR = 8.0
LATENCY_FACTOR = 2.0
LATENCY_SLACK_MS = 25.0
MIN_SAMPLES = 3
# Processes whose memory is data they keep by design, bounded: sampled and plotted, their
# memory not judged (their fds and connections are).
MEMORY_BY_DESIGN = {
    "mail_sink": "the dev mail sink keeps the last 10,000 mails in memory (the users worker "
    "mails every order's buyer); dev and test only",
}
STORES = ("mariadb", "redis", "rabbitmq")
# The workload's request kinds, in the order a buyer makes them (soak_load).
KINDS = (
    "catalog",
    "product",
    "cart_add",
    "cart_read",
    "cart_remove",
    "order",
    "pg_authorize",
    "pay",
    "order_read",
    "cancel",
)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest rank: the smallest value with at least ``q`` (0..1) of the values at or below
    it; None without values."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return round(float(sorted_values[k]), 2)


def bin_seconds_for(duration_s: float) -> float:
    """A minute per bin from 5 minutes on; a shorter run gets 6 bins (at least 5 s each), so
    that its first and last bins after the warm-up are still apart."""
    if duration_s >= 300:
        return 60.0
    return max(5.0, round(duration_s / 6, 1))


def latency_bins(
    records: Iterable[tuple[float, str, float, int]], bin_seconds: float
) -> dict[str, list[dict[str, Any]]]:
    """kind -> one row per bin with requests (``bin``, ``start_s``, ``count``, ``p50_ms``,
    ``p99_ms``, ``max_ms``, ``server_errors``, ``no_answer``), bins in order, from records of
    (seconds since the start, kind, latency ms, status; 0 when there was no answer). A request
    without an answer counts but is not timed."""
    grouped: dict[str, dict[int, list[tuple[float, int]]]] = {}
    for t, kind, ms, status in records:
        grouped.setdefault(kind, {}).setdefault(int(t // bin_seconds), []).append((ms, status))
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, bins in grouped.items():
        rows = []
        for b in sorted(bins):
            answered = sorted(ms for ms, status in bins[b] if status)
            rows.append(
                {
                    "bin": b,
                    "start_s": round(b * bin_seconds, 2),
                    "count": len(bins[b]),
                    "p50_ms": percentile(answered, 0.5),
                    "p99_ms": percentile(answered, 0.99),
                    "max_ms": round(answered[-1], 2) if answered else None,
                    "server_errors": sum(status >= 500 for _, status in bins[b]),
                    "no_answer": sum(status == 0 for _, status in bins[b]),
                }
            )
        out[kind] = rows
    return out


def per_second(records: Iterable[tuple[float, str, float, int]]) -> dict[str, int]:
    """``{"<second>": answers}`` (answered requests by the second they were sent in)."""
    out: dict[str, int] = {}
    for t, _kind, _ms, status in records:
        if status:
            key = str(int(t))
            out[key] = out.get(key, 0) + 1
    return out


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """The least-squares slope of y over x; None with fewer than 2 distinct x."""
    n = len(points)
    if n < 2:
        return None
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return float(s[mid]) if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def trend_flat(
    points: Sequence[tuple[float, float]], run_seconds: float, *, share: float, floor: float
) -> dict[str, Any]:
    """A figure's least-squares growth over post-warm-up (seconds, value) samples, extrapolated
    over ``run_seconds``, against max(``share`` of its median, ``floor``); ``flat`` None with
    fewer than ``MIN_SAMPLES``."""
    if len(points) < MIN_SAMPLES:
        return {"samples": len(points), "flat": None}
    per_s = slope(points) or 0.0
    growth = per_s * run_seconds
    values = [y for _, y in points]
    allowed = max(share * _median(values), floor)
    return {
        "samples": len(points),
        "min": min(values),
        "max": max(values),
        "slope_per_min": round(per_s * 60, 3),
        "growth_over_run": round(growth, 2),
        "allowed": round(allowed, 2),
        "flat": growth <= allowed,
    }


def memory_flat(points: Sequence[tuple[float, float]], run_seconds: float) -> dict[str, Any]:
    """The memory rule over post-warm-up (seconds, MB) samples."""
    return trend_flat(points, run_seconds, share=MEMORY_SHARE, floor=MEMORY_FLOOR_MB)


def open_files_flat(points: Sequence[tuple[float, float]], run_seconds: float) -> dict[str, Any]:
    """The open files rule over post-warm-up (seconds, fds) samples."""
    return trend_flat(points, run_seconds, share=COUNT_SHARE, floor=OPEN_FILES_FLOOR)


def count_flat(
    values: Sequence[float], *, share: float = COUNT_SHARE, floor: float = COUNT_FLOOR
) -> dict[str, Any]:
    """The rule for a connection count over its post-warm-up samples."""
    if len(values) < MIN_SAMPLES:
        return {"samples": len(values), "flat": None}
    spread = max(values) - min(values)
    allowed = max(floor, share * _median(values))
    return {
        "samples": len(values),
        "min": min(values),
        "max": max(values),
        "spread": spread,
        "allowed": round(allowed, 2),
        "flat": spread <= allowed,
    }


def latency_flat(
    rows: Sequence[Mapping[str, Any]],
    warmup_s: float,
    *,
    factor: float = LATENCY_FACTOR,
    slack_ms: float = LATENCY_SLACK_MS,
) -> dict[str, Any]:
    """The latency rule for one kind's bins: the first bin starting at or after the warm-up
    against the last bin; ``flat`` None without two such bins that were timed."""
    after = [r for r in rows if r["start_s"] >= warmup_s and r.get("p99_ms") is not None]
    if len(after) < 2:
        return {"bins": len(after), "flat": None}
    first, last = after[0], after[-1]
    allowed = max(factor * first["p99_ms"], first["p99_ms"] + slack_ms)
    return {
        "bins": len(after),
        "first_p99_ms": first["p99_ms"],
        "first_start_s": first["start_s"],
        "last_p99_ms": last["p99_ms"],
        "last_start_s": last["start_s"],
        "allowed_ms": round(allowed, 2),
        "flat": last["p99_ms"] <= allowed,
    }


def series(samples: Sequence[Mapping[str, Any]], label: str, key: str) -> list[tuple[float, float]]:
    """(seconds, value) of one process's figure across the samples that have it."""
    out = []
    for s in samples:
        figures = s["processes"].get(label)
        if figures is not None and figures.get(key) is not None:
            out.append((float(s["t"]), float(figures[key])))
    return out


def flatness(r: Mapping[str, Any]) -> dict[str, Any]:
    """Every rule of every process and kind, from a result's samples and latency bins."""
    duration = float(r["duration_s"])
    warmup = float(r["warmup_s"])
    samples = r["samples"]
    labels = sorted({label for s in samples for label in s["processes"]})
    memory, open_files, connections = {}, {}, {}
    for label in labels:

        def after(key: str, label: str = label) -> list[tuple[float, float]]:
            return [p for p in series(samples, label, key) if p[0] >= warmup]

        memory[label] = memory_flat(after("rss_mb"), duration)
        if label in MEMORY_BY_DESIGN:
            memory[label]["excused"] = MEMORY_BY_DESIGN[label]
        open_files[label] = open_files_flat(after("open_files"), duration)
        connections[label] = {key: count_flat([v for _, v in after(key)]) for key in STORES}
    latency = {kind: latency_flat(rows, warmup) for kind, rows in r["latency"].items()}
    return {
        "memory": memory,
        "open_files": open_files,
        "connections": connections,
        "latency": latency,
    }


def _all_flat(verdicts: Iterable[Mapping[str, Any]]) -> bool | None:
    flags = [v["flat"] for v in verdicts]
    if not flags or any(f is None for f in flags):
        return None
    return all(flags)


def targets(r: Mapping[str, Any]) -> dict[str, Any]:
    f = r["flatness"]
    conns = [c for by_store in f["connections"].values() for c in by_store.values()]
    errors = r["server_errors"] + r["no_answer"]
    return {
        "memory_flat": _all_flat(v for v in f["memory"].values() if "excused" not in v),
        "open_files_flat": _all_flat(f["open_files"].values()),
        "connections_flat": _all_flat(conns),
        "latency_flat": _all_flat(f["latency"].values()),
        "no_5xx": errors == 0,
    }


def check_failures(r: Mapping[str, Any]) -> list[str]:
    """The run's own checks: every kind answered, no 5xx or lost request, nothing unexpected,
    every process sampled and none restarted."""
    out = []
    kinds = r["requests"]["by_kind"]
    missing = [k for k in KINDS if not kinds.get(k, {}).get("answered")]
    if missing:
        out.append(f"request kinds never answered: {', '.join(missing)}")
    if r["server_errors"]:
        out.append(f"5xx answers: {r['server_errors']} ({r['requests']['server_errors_by_kind']})")
    if r["no_answer"]:
        out.append(f"requests without an answer: {r['no_answer']} ({r['requests']['errors']})")
    unexpected = r["requests"]["unexpected"]
    if unexpected:
        out.append(f"unexpected answers: {unexpected}")
    if not r["processes"]:
        out.append("no platform process found to sample")
    unsampled = [p for p, n in r["samples_per_process"].items() if n < MIN_SAMPLES]
    if unsampled:
        out.append(f"processes with fewer than {MIN_SAMPLES} samples: {', '.join(unsampled)}")
    if r["restarts"]:
        out.append(f"processes restarted during the run: {r['restarts']}")
    return out


def target_failures(r: Mapping[str, Any]) -> list[str]:
    """Each target missed (per process, count or kind) or not measured, named."""
    out = []
    f = r["flatness"]
    for what, unit in (("memory", " MB"), ("open_files", "")):
        for label, m in f[what].items():
            if m["flat"] is False and "excused" not in m:
                out.append(
                    f"{what} of {label} grows: {m['growth_over_run']:g}{unit} over the run "
                    f"(allowed {m['allowed']:g}{unit})"
                )
    for label, by_store in f["connections"].items():
        for key, c in by_store.items():
            if c["flat"] is False:
                out.append(
                    f"{key} connections of {label} move: {c['min']:g}..{c['max']:g} "
                    f"(spread allowed {c['allowed']:g})"
                )
    for kind, lat in f["latency"].items():
        if lat["flat"] is False:
            out.append(
                f"latency of {kind} grows: p99 {lat['first_p99_ms']} -> {lat['last_p99_ms']} ms "
                f"(allowed {lat['allowed_ms']} ms)"
            )
    unmeasured = [k for k, v in r["targets"].items() if v is None]
    if unmeasured:
        out.append(f"not measured (too short a run?): {', '.join(unmeasured)}")
    return out


def evaluate(r: dict[str, Any]) -> None:
    """Adds ``flatness``, ``targets``, ``check_failures``, ``failures`` (the checks', then
    the targets') and ``ok`` to a result."""
    r["flatness"] = flatness(r)
    r["targets"] = targets(r)
    r["check_failures"] = check_failures(r)
    r["failures"] = r["check_failures"] + target_failures(r)
    r["ok"] = not r["failures"]
