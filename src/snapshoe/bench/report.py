"""The HTML reports of the benchmarks (drop here; queue and draw in ``report_kinds``), each
one self-contained file that answers at a glance whether the run was good: the verdict and
the targets met or missed first, then the charts (inline SVG, ``charts.py``), then the setup.
``render_file`` re-renders a report from its JSON result."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from snapshoe.bench import report_kinds
from snapshoe.bench.charts import (
    ERROR,
    OK,
    PALETTE,
    REFUSED,
    Bar,
    Chart,
    Marker,
    Series,
    hbars,
    histogram,
    line_chart,
    no_data,
    stacked_columns,
    zoom_window,
)
from snapshoe.bench.report_parts import (
    NOT_MEASURED,
    TargetRow,
    checks_row,
    commit_line,
    figure,
    flatten,
    fmt,
    kv_table,
    page,
    section,
    target_rows_from_thresholds,
)

DROP_LABELS = {
    "p99_ms": ("p99 latency, all attempts", "ms"),
    "stampede_seconds": ("stampede, first send to last answer", "s"),
    "vs_floor": ("throughput vs the floor, same run", "×"),
    "vs_db_lock": ("throughput vs row locks (db_lock), same run", "×"),
}
NBINS = 60


def quantile_bins(quantiles: Sequence[Sequence[float]], cut: float, nbins: int) -> list[float]:
    """Shares of all attempts per latency bin of width ``cut / nbins``, from wrk's quantiles
    (percentile, ms): each step between two percentiles spreads its share evenly over the
    bins between its two latencies; beyond ``cut`` counts in the last bin."""
    q = [(float(p), float(v)) for p, v in quantiles]
    bins = [0.0] * nbins
    if not q or cut <= 0:
        return bins
    width = cut / nbins
    prev_p, prev_v = 0.0, q[0][1]
    for p, v in q:
        a = min(nbins - 1, int(min(prev_v, cut) / width))
        b = min(nbins - 1, int(min(v, cut) / width))
        for k in range(a, b + 1):
            bins[k] += (p - prev_p) / 100 / (b - a + 1)
        prev_p, prev_v = p, v
    return bins


def value_bins(values: Sequence[float], cut: float, nbins: int) -> list[float]:
    """Shares of ``values`` per bin of width ``cut / nbins`` (beyond ``cut``: the last)."""
    bins = [0.0] * nbins
    if not values or cut <= 0:
        return bins
    for v in values:
        bins[min(nbins - 1, max(0, int(v / (cut / nbins))))] += 1 / len(values)
    return bins


def latency_chart(r: Mapping[str, Any]) -> str:
    """All attempts (wrk's histogram) and the successes (exact), each as a share of its own
    total, up to the 99.9th percentile of all attempts (or the p99s, if further), with p50
    and p99 marked."""
    q = r.get("latency_quantiles_ms") or []
    if not q:
        return no_data("Latency distribution")
    cut = next((float(v) for p, v in q if float(p) >= 99.9), float(q[-1][1])) or 1.0
    # Wide enough for every marker (the successes' p99 may lie beyond all attempts' p99.9).
    cut = max(cut, *(1.02 * float(r[k]) for k in ("p99_ms", "success_p99_ms") if r.get(k)))
    edges = [cut * k / NBINS for k in range(NBINS + 1)]
    markers = [
        Marker(float(r[k]), f"{label} {fmt(r[k], 'ms')}", color)
        for k, label, color in (
            ("p50_ms", "p50", "#245"),
            ("p99_ms", "p99", "#245"),
            ("success_p50_ms", "201 p50", "#a40"),
            ("success_p99_ms", "201 p99", "#a40"),
        )
        if r.get(k) is not None
    ]
    chart = Chart("latency", "Latency distribution", "latency (ms)", "share", markers=markers)
    layers = [(Series("all attempts (wrk)", [], "#9ab"), quantile_bins(q, cut, NBINS))]
    if r.get("success_latencies_ms"):
        ok = value_bins(r["success_latencies_ms"], cut, NBINS)
        layers.append((Series("successes (201)", [], "#d62"), ok))
    return histogram(chart, edges, layers)


def sell_out_chart(r: Mapping[str, Any]) -> str:
    """Pairs left, zoomed from the first sale to sold out (plus a margin)."""
    curve = [(float(t), float(n)) for t, n in r.get("sell_out_curve") or []]
    window = zoom_window(curve)
    if window is None:
        return no_data("Sell-out curve")
    markers = [Marker(0.0, "release")]
    if r.get("sell_out_seconds") is not None:
        markers.append(Marker(float(r["sell_out_seconds"]), f"sold out {r['sell_out_seconds']} s"))
    chart = Chart(
        "sell-out",
        "Sell-out curve",
        "seconds since the release",
        "pairs left",
        x_range=window,
        markers=markers,
    )
    return line_chart(chart, [Series("pairs left", curve, "#d62")])


def answer_color(key: str, k: int) -> str:
    if key == "201":
        return OK
    if key == "409:sold_out":
        return REFUSED
    if key[:1] == "5":
        return ERROR
    return PALETTE[(k + 1) % len(PALETTE)]


EXPECTED_ANSWERS = ("201", "409:sold_out")


def answer_columns(
    tl: Mapping[str, Any], keys: Sequence[str], colors: Mapping[str, str], name: str, title: str
) -> str:
    width = float(tl["bin_seconds"])
    stacks = [
        Series(
            k, [(t, n / width) for t, n in zip(tl["t"], tl["answers"][k], strict=True)], colors[k]
        )
        for k in keys
    ]
    chart = Chart(name, title, "seconds since the release", "answers per second")
    return stacked_columns(chart, [float(t) for t in tl["t"]], width, stacks)


def timeline_chart(r: Mapping[str, Any]) -> str:
    """Answers per second by kind per time bin: all of them (orders, sold out, the rest),
    then the rest alone on its own scale (refusals by other reasons, errors), which would
    be a sliver on top of the first. For a result from before the timeline was recorded,
    the pairs sold per second from the stock samples."""
    tl = r.get("timeline") or {}
    if tl.get("t"):
        keys = sorted(tl["answers"], key=lambda k: (k != "201", k[:1] == "5", k))
        others = [k for k in keys if k not in EXPECTED_ANSWERS]
        width = float(tl["bin_seconds"])
        colors = {k: answer_color(k, i) for i, k in enumerate(keys)}
        every = answer_columns(
            tl, keys, colors, "timeline", f"Answers per second ({width:g} s bins)"
        )
        rest = (
            answer_columns(
                tl, others, colors, "timeline-other", "Other refusals and errors per second"
            )
            if others
            else '<p class="none-other">No other refusal and no error in this run.</p>'
        )
        return figure("Every answer: orders (201), sold out (409) and the rest", every) + figure(
            "Other refusals (by reason) and errors", rest
        )
    curve = sorted((float(t), float(n)) for t, n in r.get("sell_out_curve") or [])
    window = zoom_window(curve)
    if window is None:
        return no_data("Answers per second")
    sold = [
        (t0, max(0.0, n0 - n1) / (t1 - t0))
        for (t0, n0), (t1, n1) in itertools.pairwise(curve)
        if t1 > t0 and window[0] <= t0 <= window[1]
    ]
    chart = Chart(
        "timeline",
        "Pairs sold per second (from the stock samples)",
        "seconds since the release",
        "pairs per second",
        x_range=window,
    )
    starts = [t for t, _ in sold]
    width = min((b - a for a, b in itertools.pairwise(starts)), default=0.1)
    return stacked_columns(chart, starts, width, [Series("pairs sold", sold, OK)]) + (
        '<p class="note">This result predates the answers per time bin (drop.lua records '
        "them since issue 17): these are the pairs sold between two stock samples.</p>"
    )


def compare_charts(r: Mapping[str, Any]) -> str:
    cmp = r.get("compare") or {}
    if not cmp:
        return no_data("Comparison runs", "not run (bench drop --compare)")
    lock, floor = cmp.get("db_lock", {}), cmp.get("floor", {})
    rate = [
        Bar("this drop (Redis gate)", r.get("attempts_per_s"), color=PALETTE[0]),
        Bar("floor (GET, same path)", floor.get("floor_rps"), color=MUTED_BAR),
        Bar("db_lock (row locks)", lock.get("attempts_per_s"), color=PALETTE[1]),
    ]
    p99 = [
        Bar("this drop (Redis gate)", r.get("p99_ms"), color=PALETTE[0]),
        Bar("floor (GET, same path)", floor.get("p99_ms"), color=MUTED_BAR),
        Bar("db_lock (row locks)", lock.get("p99_ms"), color=PALETTE[1]),
    ]
    sold = [
        Bar("this drop (Redis gate)", r.get("sell_out_seconds"), color=PALETTE[0]),
        Bar("db_lock (row locks)", lock.get("sell_out_seconds"), color=PALETTE[1]),
    ]
    return (
        hbars("compare-throughput", "Answers per second", rate, "/s")
        + hbars("compare-p99", "p99 latency", p99, "ms")
        + hbars("compare-sell-out", "Seconds to sold out", sold, "s")
    )


MUTED_BAR = "#999"


def drop_targets(r: Mapping[str, Any]) -> list[TargetRow]:
    rows = [checks_row(r)]
    t = r.get("targets") or {}
    if "correct" in t:
        c = t["correct"]
        measured = (
            f"oversold {c.get('oversold')}, over the limit {c.get('limit_violations')}, "
            f"ledger {'consistent' if c.get('ledger_consistent') else 'INCONSISTENT'}, "
            f"5xx {c.get('responses_5xx')}"
        )
        rows.append(TargetRow("sold exactly once", measured, "no oversell, no 5xx", c.get("met")))
    return rows + target_rows_from_thresholds(t, DROP_LABELS)


def cpu_share(r: Mapping[str, Any]) -> str:
    share = r.get("generator_cpu_share")
    if share is None:
        return f"{NOT_MEASURED}: wrk's CPU was not sampled on both sides of the stampede window"
    return f"{share:.1%} of the machine"


def drop_figures(r: Mapping[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("attempts", r.get("attempts")),
        ("answers per second", fmt(r.get("attempts_per_s"), "/s")),
        ("stampede", fmt(r.get("stampede_seconds"), "s")),
        ("orders created (201)", r.get("orders_created")),
        ("sold out (409)", r.get("sold_out_responses")),
        ("other answers (errors)", r.get("errors") or "none"),
        ("socket errors", {k: v for k, v in (r.get("socket_errors") or {}).items() if v} or "none"),
        ("latency p50 / p90 / p99 / max, all", _ms(r, "p50_ms", "p90_ms", "p99_ms", "max_ms")),
        (
            "latency p50 / p90 / p99 / max, 201s",
            _ms(r, "success_p50_ms", "success_p90_ms", "success_p99_ms", "success_max_ms"),
        ),
        ("sold out after", fmt(r.get("sell_out_seconds"), "s")),
        ("last 201 after", fmt(r.get("last_success_seconds"), "s")),
        ("first send after the release", fmt(r.get("first_send_after_release_ms"), "ms")),
        ("load generator (wrk) CPU", cpu_share(r)),
        ("pairs sold (after payments)", r.get("pairs_sold")),
    ]
    if r.get("payment"):
        p = r["payment"]
        rows.append(("payments", f"{p.get('approved')} approved; answers {fmt(p.get('payments'))}"))
    return rows


def _ms(r: Mapping[str, Any], *keys: str) -> str:
    return " / ".join(fmt(r.get(k)) for k in keys) + " ms"


def drop_page(r: Mapping[str, Any]) -> str:
    s = r.get("setup") or {}
    subtitle = (
        f"{r.get('started_at', '')} · {s.get('buyers')} buyers for {s.get('pairs')} pairs · "
        f"{commit_line(s.get('git'))}"
    )
    sections = [
        section("Figures", kv_table(drop_figures(r))),
        section(
            "Sell-out curve",
            figure("Pairs left, from the first sale to sold out", sell_out_chart(r)),
            note="the stock sampled every 100 ms; the whole run is in the JSON result",
        ),
        section(
            "Throughput, refusals and errors over time",
            timeline_chart(r),
            note="by receive time since the release; 409:sold_out is the expected refusal",
        ),
        section("Comparison runs (--compare)", compare_charts(r)),
        section(
            "Latency",
            figure("Latency distribution, p50 and p99 marked", latency_chart(r)),
            note=str(r.get("latency_source", "")),
        ),
        section("Setup", kv_table(flatten(s), "setup")),
    ]
    return page("snapshoe bench drop", r, subtitle, drop_targets(r), sections)


def write_html(result: Mapping[str, Any], path: Path) -> Path:
    """The drop report (``bench drop`` calls this with its result)."""
    path.write_text(drop_page(result))
    return path


PAGES = {
    "drop": drop_page,
    "queue": report_kinds.queue_page,
    "draw": report_kinds.draw_page,
}


def render(result: Mapping[str, Any]) -> str:
    """The report page of any bench result, by its ``bench`` key."""
    kind = str(result.get("bench", "drop"))
    if kind not in PAGES:
        raise ValueError(f"no report for bench {kind!r}; known: {sorted(PAGES)}")
    return PAGES[kind](result)


def render_file(json_path: Path, html_path: Path | None = None) -> Path:
    """Re-render the report of a result file (next to it, ``.html``, unless ``html_path``)."""
    result = json.loads(Path(json_path).read_text())
    out = html_path or Path(json_path).with_suffix(".html")
    out.write_text(render(result))
    return out
