"""``bench soak``'s report page, from its JSON result, made of the shared parts
(``report_parts``: verdict, targets, tables, setup; ``charts``: line charts): memory, open
files and connections per process over time, latency per request kind per minute, answers per
second; the warm-up's end marked on each chart (the verdict looks only after it)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from snapshoe.bench.charts import PALETTE, Chart, Marker, Series, line_chart
from snapshoe.bench.report_parts import (
    NOT_MEASURED,
    TargetRow,
    checks_row,
    commit_line,
    figure,
    flatten,
    fmt,
    grid_table,
    kv_table,
    page,
    section,
)
from snapshoe.bench.soak_result import (
    COUNT_FLOOR,
    COUNT_SHARE,
    KINDS,
    LATENCY_FACTOR,
    LATENCY_SLACK_MS,
    MEMORY_FLOOR_MB,
    MEMORY_SHARE,
    OPEN_FILES_FLOOR,
    series,
)

TITLE = "snapshoe bench soak"
STORES = (("mariadb", "MariaDB"), ("redis", "Redis"), ("rabbitmq", "RabbitMQ"))


def _series(names: Sequence[str], points: Mapping[str, list[tuple[float, float]]]) -> list[Series]:
    """One line per name, colours from the palette, dashed on its second round."""
    out = []
    for k, name in enumerate(names):
        if points.get(name):
            out.append(
                Series(
                    name,
                    points[name],
                    PALETTE[k % len(PALETTE)],
                    dashed=(k // len(PALETTE)) % 2 == 1,
                )
            )
    return out


def _warmup(r: Mapping[str, Any]) -> list[Marker]:
    w = r.get("warmup_s")
    return [Marker(float(w), "warm-up ends", "#777")] if w else []


def process_chart(r: Mapping[str, Any], name: str, key: str, title: str, unit: str) -> str:
    """One figure of every process over the run (processes where it is always 0 left out)."""
    samples = r.get("samples") or []
    labels = list(r.get("processes") or [])
    points = {label: series(samples, label, key) for label in labels}
    shown = [label for label in labels if any(v for _, v in points[label])]
    return line_chart(
        Chart(name, title, "seconds since the start", unit, markers=_warmup(r)),
        _series(shown, points),
    )


def growth_chart(r: Mapping[str, Any]) -> str:
    """RSS per process less its value at the first sample after the warm-up: a leak is a
    line that keeps climbing, whatever the process's size."""
    samples = r.get("samples") or []
    warmup = float(r.get("warmup_s") or 0)
    labels = list(r.get("processes") or [])
    points = {}
    for label in labels:
        pts = series(samples, label, "rss_mb")
        base = next((v for t, v in pts if t >= warmup), None)
        if base is not None:
            points[label] = [(t, round(v - base, 2)) for t, v in pts if t >= warmup]
    lows = [v for pts in points.values() for _, v in pts]
    return line_chart(
        Chart(
            "rss-growth",
            "RSS change since the warm-up",
            "seconds since the start",
            "MB",
            y_min=min([0.0, *lows]),
        ),
        _series(labels, points),
    )


def latency_chart(r: Mapping[str, Any], key: str, name: str) -> str:
    lat = r.get("latency") or {}
    kinds = [k for k in KINDS if k in lat] + [k for k in lat if k not in KINDS]
    points = {
        k: [(float(row["start_s"]), float(row[key])) for row in lat[k] if row.get(key) is not None]
        for k in kinds
    }
    bin_s = r.get("bin_seconds", 60)
    return line_chart(
        Chart(
            name,
            f"{key.split('_')[0]} latency per {fmt(bin_s, 's')} bin, by request kind",
            "bin start, seconds since the start",
            "ms",
            markers=_warmup(r),
        ),
        _series(kinds, points),
    )


def rps_chart(r: Mapping[str, Any]) -> str:
    counts = r.get("per_second") or {}
    end = int(float(r.get("duration_s") or 0))
    top = max([int(k) for k in counts] + [end - 1, 0])
    pts = [(float(s), float(counts.get(str(s), 0))) for s in range(top + 1)]
    target = (r.get("config") or {}).get("rate")
    target_pts = [(0.0, float(target)), (float(top), float(target))] if target else []
    lines = [Series("answers per second", pts, PALETTE[0])]
    if target_pts:
        lines.append(Series("offered rate", target_pts, "#999", dashed=True))
    return line_chart(
        Chart("rps", "Answers per second", "seconds since the start", "answers / s"), lines
    )


def _worst(rows: Mapping[str, Mapping[str, Any]], key: str) -> tuple[str, Mapping[str, Any]] | None:
    found = [(name, v) for name, v in rows.items() if v.get(key) is not None]
    return max(found, key=lambda p: p[1][key]) if found else None


def _flag(verdicts: Sequence[Mapping[str, Any]]) -> bool | None:
    flags = [v.get("flat") for v in verdicts]
    if not flags or any(f is None for f in flags):
        return None
    return all(flags)


def soak_targets(r: Mapping[str, Any]) -> list[TargetRow]:
    f = r.get("flatness") or {}
    t = r.get("targets") or {}
    rows = [checks_row({"failures": r.get("check_failures") or []})]
    rows += _growth_rows(f, t)
    rows.append(_connections_row(f.get("connections") or {}, t))
    rows.append(_latency_row(f.get("latency") or {}, t))
    rows.append(
        TargetRow(
            "no 5xx, every request answered",
            f"{fmt(r.get('server_errors'))} 5xx, {fmt(r.get('no_answer'))} without an answer",
            "0",
            t.get("no_5xx"),
        )
    )
    return rows


def _growth_rows(f: Mapping[str, Any], t: Mapping[str, Any]) -> list[TargetRow]:
    rows = []
    for what, verdicts, unit, share, floor in (
        ("memory", f.get("memory") or {}, "MB", MEMORY_SHARE, f"{MEMORY_FLOOR_MB:g} MB"),
        ("open files", f.get("open_files") or {}, "", COUNT_SHARE, f"{OPEN_FILES_FLOOR:g}"),
    ):
        judged = {k: v for k, v in verdicts.items() if "excused" not in v}
        w = _worst(judged, "growth_over_run")
        rows.append(
            TargetRow(
                f"{what} flat after the warm-up (every process)",
                f"worst: {w[0]} {fmt(w[1]['growth_over_run'], unit)} over the run "
                f"(allowed {fmt(w[1]['allowed'], unit)})"
                if w
                else NOT_MEASURED,
                f"least-squares growth over the run ≤ max({share:.0%}, {floor})",
                t.get("memory_flat" if what == "memory" else "open_files_flat"),
            )
        )
    return rows


def _connections_row(connections: Mapping[str, Any], t: Mapping[str, Any]) -> TargetRow:
    spreads = {
        f"{proc} {store}": v
        for proc, by_store in connections.items()
        for store, v in by_store.items()
    }
    w = _worst(spreads, "spread")
    return TargetRow(
        "MariaDB/Redis/RabbitMQ connections flat after the warm-up (every process)",
        f"worst: {w[0]} {fmt(w[1]['min'])}–{fmt(w[1]['max'])} (spread allowed "
        f"{fmt(w[1]['allowed'])})"
        if w
        else NOT_MEASURED,
        f"max − min ≤ max({COUNT_FLOOR}, {COUNT_SHARE:.0%} of the median)",
        t.get("connections_flat"),
    )


def _latency_row(latency: Mapping[str, Any], t: Mapping[str, Any]) -> TargetRow:
    ratios = {
        kind: {"ratio": v["last_p99_ms"] / v["first_p99_ms"], **v}
        for kind, v in latency.items()
        if v.get("first_p99_ms")
    }
    w = _worst(ratios, "ratio")
    return TargetRow(
        "latency flat (p99, last bin vs first after the warm-up)",
        f"worst: {w[0]} {fmt(w[1]['first_p99_ms'])} → {fmt(w[1]['last_p99_ms'], 'ms')}"
        if w
        else NOT_MEASURED,
        f"≤ max({LATENCY_FACTOR:g}×, +{LATENCY_SLACK_MS:g} ms)",
        t.get("latency_flat"),
    )


def _range(c: Mapping[str, Any] | None) -> str:
    if not c or c.get("flat") is None:
        return "—"
    return f"{fmt(c['min'])}–{fmt(c['max'])}"


def process_table(r: Mapping[str, Any]) -> str:
    f = r.get("flatness") or {}
    memory, opened = f.get("memory") or {}, f.get("open_files") or {}
    connections = f.get("connections") or {}
    rows = []
    for label in r.get("processes") or []:
        m, o, c = memory.get(label) or {}, opened.get(label) or {}, connections.get(label) or {}
        verdict = _flag([o, *c.values()] + ([] if "excused" in m else [m]))
        rows.append(
            [
                label,
                m.get("slope_per_min"),
                m.get("growth_over_run"),
                _range(o),
                o.get("growth_over_run"),
                *(_range(c.get(k)) for k, _ in STORES),
                "flat" if verdict else ("—" if verdict is None else "moves"),
            ]
        )
    header = ["process", "RSS MB/min", "RSS growth over run MB", "open files", "fd growth"]
    header += [f"{name} conns" for _, name in STORES] + ["verdict"]
    return grid_table(header, rows, "processes")


def excused_note(r: Mapping[str, Any]) -> str:
    memory = (r.get("flatness") or {}).get("memory") or {}
    notes = [f"{label}: {m['excused']}" for label, m in memory.items() if "excused" in m]
    return ("memory sampled but not judged, " + "; ".join(notes)) if notes else ""


def kinds_table(r: Mapping[str, Any]) -> str:
    by_kind = (r.get("requests") or {}).get("by_kind") or {}
    lat = (r.get("flatness") or {}).get("latency") or {}
    rows = [
        [
            kind,
            k.get("answered"),
            k.get("p50_ms"),
            k.get("p99_ms"),
            (lat.get(kind) or {}).get("first_p99_ms"),
            (lat.get(kind) or {}).get("last_p99_ms"),
            ", ".join(f"{s}: {n}" for s, n in sorted((k.get("statuses") or {}).items())),
        ]
        for kind, k in by_kind.items()
    ]
    header = ["kind", "answered", "p50 ms", "p99 ms", "first p99", "last p99", "statuses"]
    return grid_table(header, rows, "kinds")


def soak_figures(r: Mapping[str, Any]) -> list[tuple[str, Any]]:
    req = r.get("requests") or {}
    return [
        ("duration", fmt(r.get("duration_s"), "s")),
        ("warm-up (not judged)", fmt(r.get("warmup_s"), "s")),
        ("latency bins", fmt(r.get("bin_seconds"), "s")),
        ("requests", req.get("total")),
        ("answered per second", req.get("answered_per_s")),
        ("5xx", r.get("server_errors")),
        ("without an answer", r.get("no_answer")),
        ("unexpected answers", req.get("unexpected") or "none"),
        ("client errors", req.get("errors") or "none"),
        ("outcomes", r.get("outcomes")),
        ("processes sampled", len(r.get("processes") or [])),
        ("restarts", r.get("restarts") or "none"),
    ]


def soak_page(r: Mapping[str, Any]) -> str:
    cfg = r.get("config") or {}
    subtitle = (
        f"{r.get('started_at', '')} · {fmt(cfg.get('minutes'))} min at {fmt(cfg.get('rate'))} "
        f"requests/s · {commit_line(r.get('git'))}"
    )
    note = "sampled from /proc every " + fmt(cfg.get("sample_seconds"), "s")
    sections = [
        section("Figures", kv_table(soak_figures(r))),
        section(
            "Memory",
            figure("Resident memory per process", process_chart(r, "rss", "rss_mb", "RSS", "MB")),
            figure("Resident memory per process, change since the warm-up", growth_chart(r)),
            note=note,
        ),
        section(
            "Open files",
            figure(
                "Open files per process",
                process_chart(r, "open-files", "open_files", "Open files", "fds"),
            ),
        ),
        section(
            "Connections",
            *(
                figure(
                    f"Connections to {title} per process",
                    process_chart(r, f"connections-{key}", key, f"{title} connections", "conns"),
                )
                for key, title in STORES
            ),
            note="established TCP connections to 3306, 6379 and 5672 among each process's fds",
        ),
        section("Per process, after the warm-up", process_table(r), note=excused_note(r)),
        section(
            "Latency",
            figure("p99 per bin", latency_chart(r, "p99_ms", "latency")),
            figure("p50 per bin", latency_chart(r, "p50_ms", "latency-p50")),
            kinds_table(r),
        ),
        section("Throughput", figure("Answers per second", rps_chart(r))),
        section(
            "Setup",
            kv_table(
                flatten(
                    {
                        "config": cfg,
                        "machine": r.get("machine") or {},
                        "products": {k: len(v) for k, v in (r.get("products") or {}).items()},
                    }
                ),
                "setup",
            ),
        ),
    ]
    return page(TITLE, r, subtitle, soak_targets(r), sections)


def write_html(r: Mapping[str, Any], path: Path) -> Path:
    path.write_text(soak_page(r))
    return path


def render_file(json_path: Path, html_path: Path | None = None) -> Path:
    """Re-render a soak report from its JSON result (next to it, ``.html``, unless given)."""
    result = json.loads(Path(json_path).read_text())
    out = html_path or Path(json_path).with_suffix(".html")
    return write_html(result, out)
