"""The report pages of ``bench queue`` and ``bench draw``, from their JSON results, laid out
as the drop's (``report.py``): verdict, targets, figures, what happened over time, the
comparison or the outcome as bars, the setup."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    line_chart,
    no_data,
    stacked_columns,
)
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
    measured,
    page,
    section,
)


def per_second_series(
    name: str, counts: Mapping[str, int], color: str, span: tuple[int, int] | None = None
) -> Series:
    """``{"<second>": n}`` as points at each second's start, 0 for the seconds of ``span``
    (first, last) it lacks."""
    lo, hi = span or (min(map(int, counts), default=0), max(map(int, counts), default=-1))
    return Series(
        name, [(float(k), float(counts.get(str(k), 0))) for k in range(lo, hi + 1)], color
    )


def span_of(*tables: Mapping[str, Mapping[str, int]]) -> tuple[int, int]:
    seconds = [int(k) for t in tables for counts in t.values() for k in counts]
    return (min(seconds), max(seconds)) if seconds else (0, -1)


def _seconds(series: list[Series]) -> list[float]:
    return sorted({t for s in series for t, _ in s.points})


# --- queue -----------------------------------------------------------------------------------


def queue_targets(r: Mapping[str, Any]) -> list[TargetRow]:
    t, q, sales = r.get("targets") or {}, r.get("queue") or {}, r.get("sales") or {}
    fcfs = (r.get("compare") or {}).get("fcfs") or {}
    rho = q.get("spearman_join_vs_place")
    fcfs_s = fcfs.get("seconds_to_every_pair_taken")
    rows = [
        checks_row(r),
        TargetRow(
            "fair: join order does not predict place (Spearman ρ)",
            measured(rho),
            "|ρ| < 0.05",
            t.get("rho_below_0.05"),
        ),
        TargetRow(
            "streams held at once",
            measured(r.get("streams_held_at_once")),
            "≥ 20,000",
            t.get("streams_held_20000"),
        ),
        TargetRow(
            "stream delay p99",
            measured(r.get("stream_delay_p99_ms"), "ms"),
            "≤ 1,000 ms",
            t.get("stream_delay_p99_le_1s"),
        ),
        TargetRow(
            "every fate seen after the last payment",
            measured(r.get("last_fate_seen_after_last_payment_s"), "s"),
            "≤ 5 s",
            t.get("every_fate_within_5s_of_last_sale"),
        ),
        TargetRow(
            "sells out no slower than fcfs",
            f"{fmt(sales.get('seconds_to_every_pair_taken'), 's')} vs fcfs {fmt(fcfs_s, 's')}"
            if fcfs
            else f"{NOT_MEASURED} (run with --compare)",
            "≤ fcfs, same run",
            t.get("sells_out_no_slower_than_fcfs"),
        ),
    ]
    return rows


def queue_figures(r: Mapping[str, Any]) -> list[tuple[str, Any]]:
    q, sales, seen = r.get("queue") or {}, r.get("sales") or {}, r.get("seen") or {}
    return [
        ("tickets", q.get("tickets")),
        ("tickets by state", q.get("states")),
        ("admitted buyers", r.get("admitted_buyers")),
        ("admitted buyers who met sold_out", fmt(r.get("admitted_met_sold_out_share"))),
        ("orders without an admission", r.get("orders_without_admission")),
        ("join p50 / p99", _pair(r, "join_p50_ms", "join_p99_ms")),
        ("stream delay p50 / p99", _pair(r, "stream_delay_p50_ms", "stream_delay_p99_ms")),
        ("sold_out told p50 / p99", _pair(r, "sold_out_p50_ms", "sold_out_p99_ms")),
        ("every pair taken after", fmt(sales.get("seconds_to_every_pair_taken"), "s")),
        ("last payment after", fmt(sales.get("seconds_to_last_payment"), "s")),
        ("paid orders", sales.get("paid_orders")),
        ("client errors", seen.get("errors") or "none"),
        ("answers by request", seen.get("statuses")),
    ]


def _pair(r: Mapping[str, Any], a: str, b: str) -> str:
    return f"{fmt(r.get(a))} / {fmt(r.get(b))} ms"


def queue_timeline(r: Mapping[str, Any]) -> str:
    """Tickets taken, admitted and ended, and orders, per second since the release."""
    per = (r.get("queue") or {}).get("per_second") or {}
    orders = (r.get("sales") or {}).get("orders_per_second") or {}
    if not per and not orders:
        return no_data("Queue over time", "this result predates the per-second series")
    colors = {"joined": PALETTE[0], "admitted": PALETTE[1], "ended sold_out": REFUSED}
    span = span_of(per, {"orders": orders})
    series = [
        per_second_series(k, v, colors.get(k, PALETTE[(i + 3) % len(PALETTE)]), span)
        for i, (k, v) in enumerate(sorted(per.items()))
    ]
    series.append(per_second_series("orders", orders, OK, span))
    chart = Chart(
        "timeline",
        "Queue over time, per second",
        "seconds since the release",
        "per second",
        markers=[Marker(0.0, "release")],
    )
    return line_chart(chart, series)


def streams_chart(r: Mapping[str, Any]) -> str:
    """Streams held and the platform's CPU (cores per group), every sample."""
    samples = r.get("samples") or []
    if not samples:
        return no_data("Streams held")
    t0 = float(samples[0]["t"])
    held = Series("streams held", [(s["t"] - t0, float(s.get("streams_held", 0))) for s in samples])
    chart = Chart("streams", "Streams held", "seconds since the load started", "streams")
    groups = sorted({g for s in samples for g, v in s.items() if isinstance(v, Mapping)})
    cores = [
        Series(
            g,
            [(s["t"] - t0, float(s[g]["cores"])) for s in samples if g in s],
            PALETTE[k % len(PALETTE)],
        )
        for k, g in enumerate(groups)
    ]
    cpu = Chart("cpu", "CPU by group", "seconds since the load started", "cores")
    return figure("Streams held at once", line_chart(chart, [held])) + (
        figure("The platform's CPU by group (cores)", line_chart(cpu, cores)) if cores else ""
    )


def queue_compare(r: Mapping[str, Any]) -> str:
    cmp = r.get("compare") or {}
    if not cmp:
        return no_data("Queue vs fcfs", "not run (bench queue --compare)")
    q, f = cmp.get("queue") or {}, cmp.get("fcfs") or {}
    bars = []
    for key, label in (
        ("seconds_to_every_pair_taken", "every pair taken"),
        ("seconds_to_last_payment", "last payment"),
    ):
        bars += [
            Bar(f"{label}: queue", q.get(key), color=PALETTE[0]),
            Bar(f"{label}: fcfs", f.get(key), color=PALETTE[1]),
        ]
    return hbars("compare", "Queue vs fcfs, seconds after the release", bars, "s")


def queue_latency(r: Mapping[str, Any]) -> str:
    bars = []
    for key, label in (
        ("join", "join"),
        ("stream_delay", "stream delay"),
        ("sold_out", "sold_out told"),
    ):
        bars += [
            Bar(f"{label} p50", r.get(f"{key}_p50_ms"), color=PALETTE[0]),
            Bar(f"{label} p99", r.get(f"{key}_p99_ms"), color=PALETTE[5]),
        ]
    return hbars("latency", "Latency p50 and p99", bars, "ms")


def queue_page(r: Mapping[str, Any]) -> str:
    cfg = r.get("config") or {}
    c = r.get("check") or {}
    subtitle = (
        f"{r.get('started_at', '')} · {cfg.get('buyers')} buyers for {cfg.get('pairs')} pairs · "
        f"{commit_line(r.get('git'))}"
    )
    check_rows = [(k, v) for k, v in c.items() if k not in ("items", "gate_differences")]
    sections = [
        section("Figures", kv_table(queue_figures(r))),
        section(
            "Over time",
            figure("Tickets and orders per second", queue_timeline(r)),
            streams_chart(r),
            note="client errors are counted, not timed: see Figures",
        ),
        section("Comparison runs (--compare)", queue_compare(r)),
        section("Latency", queue_latency(r)),
        section("Checks from the databases", kv_table(check_rows, "checks")),
        section(
            "Setup",
            kv_table(flatten({"config": cfg, "machine": r.get("machine") or {}}), "setup"),
        ),
    ]
    return page("snapshoe bench queue", r, subtitle, queue_targets(r), sections)


# --- draw ------------------------------------------------------------------------------------

DRAW_COLORS = {
    "entered": PALETTE[4],
    "charging": PALETTE[1],
    "won": OK,
    "lost": REFUSED,
    "payment_failed": ERROR,
    "sold": PALETTE[0],
}


def draw_targets(r: Mapping[str, Any]) -> list[TargetRow]:
    t, timing = r.get("targets") or {}, r.get("timing") or {}
    settled = timing.get("seconds_close_to_settled")
    return [
        checks_row(r),
        TargetRow(
            "settled: every entry decided and charged",
            fmt(settled, "s") if settled is not None else f"{NOT_MEASURED} (not settled)",
            "< 60 s after the close",
            t.get("settled_under_60s"),
        ),
    ]


def draw_timeline(r: Mapping[str, Any]) -> str:
    """Entries by state and pairs sold, every sample; the draw's moments marked."""
    samples = r.get("samples") or []
    if not samples:
        return no_data("Entries over time")
    order = list(DRAW_COLORS)
    keys = sorted(
        {k for s in samples for k in s if k != "t"},
        key=lambda k: (order.index(k) if k in order else len(order), k),
    )
    series = [
        Series(
            k,
            [(float(s["t"]), float(s.get(k, 0))) for s in samples],
            DRAW_COLORS.get(k, PALETTE[7]),
        )
        for k in keys
    ]
    timing = r.get("timing") or {}
    markers = [
        Marker(float(timing[k]), label)
        for k, label in (
            ("seconds_close_to_drawn", "drawn"),
            ("seconds_close_to_every_pair_decided", "pairs decided"),
            ("seconds_close_to_settled", "settled"),
        )
        if timing.get(k) is not None
    ]
    chart = Chart(
        "timeline", "Entries by state", "seconds since the close", "entries", markers=markers
    )
    return line_chart(chart, series)


def charges_chart(r: Mapping[str, Any]) -> str:
    per = (r.get("charges") or {}).get("per_second") or {}
    if not per:
        return no_data("Charges per second", "this result predates the per-second series")
    colors = {"DONE": OK, "APPROVED": OK, "DECLINED": REFUSED, "FAILED": ERROR}
    span = span_of(per)
    stacks = [
        per_second_series(k, v, colors.get(k, PALETTE[(i + 1) % len(PALETTE)]), span)
        for i, (k, v) in enumerate(sorted(per.items()))
    ]
    chart = Chart(
        "charges",
        "PG answers per second by payment status",
        "seconds since the close",
        "payments per second",
    )
    return stacked_columns(chart, _seconds(stacks), 1.0, stacks)


def draw_outcome(r: Mapping[str, Any]) -> str:
    c = r.get("check") or {}
    bars = [
        Bar("won", c.get("won"), color=OK),
        Bar("payment failed (passed on)", c.get("payment_failed"), color=ERROR),
        Bar("lost", c.get("lost"), color=REFUSED),
        Bar("undecided", c.get("undecided"), color=PALETTE[1]),
    ]
    return hbars("outcome", "Entries by outcome", bars)


def draw_timing(r: Mapping[str, Any]) -> list[tuple[str, Any]]:
    t = r.get("timing") or {}
    return [
        ("close → drawn", fmt(t.get("seconds_close_to_drawn"), "s")),
        ("close → every pair decided", fmt(t.get("seconds_close_to_every_pair_decided"), "s")),
        ("close → settled", fmt(t.get("seconds_close_to_settled"), "s")),
    ]


def draw_page(r: Mapping[str, Any]) -> str:
    cfg = r.get("config") or {}
    subtitle = (
        f"{r.get('started_at', '')} · {cfg.get('entries')} entries for "
        f"{fmt(cfg.get('sizes'))} sizes × {fmt(cfg.get('pairs_per_size'))} pairs · "
        f"{commit_line(r.get('git'))}"
    )
    per_size = r.get("entries_per_size") or {}
    charges = r.get("charges") or {}
    sections = [
        section("Timing", kv_table(draw_timing(r))),
        section(
            "Over time",
            figure("Entries by state (every half second)", draw_timeline(r)),
            figure("PG answers per second, by payment status", charges_chart(r)),
        ),
        section("Outcome", draw_outcome(r)),
        section(
            "Charges",
            kv_table(flatten({k: v for k, v in charges.items() if k != "per_second"})),
        ),
        section(
            "Checks from the databases, the PG and the published draw",
            kv_table(list((r.get("check") or {}).items()), "checks"),
        ),
        section("Entries per size", grid_table(["item", "entries"], list(per_size.items()))),
        section(
            "Setup",
            kv_table(
                flatten(
                    {
                        "config": cfg,
                        "setup": r.get("setup") or {},
                        "machine": r.get("machine") or {},
                    }
                ),
                "setup",
            ),
        ),
    ]
    return page("snapshoe bench draw", r, subtitle, draw_targets(r), sections)
