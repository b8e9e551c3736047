"""The HTML report of a fault run (``snapshoe bench drop --faults``): the verdict, the faults
with their time, recovery and the errors buyers saw, every anomaly with its evidence, and the
answers per second with the faults marked. Made of ``report_parts`` and ``charts``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from snapshoe.bench.charts import PALETTE, Chart, Marker, Series, esc, stacked_columns
from snapshoe.bench.report_parts import (
    TargetRow,
    commit_line,
    figure,
    flatten,
    grid_table,
    kv_table,
    page,
    section,
)

# The evidence column holds JSON: wrap it rather than widen the page.
FAULTS_STYLE = (
    "<style>table.faults td{font-size:.85em}table.faults td:nth-child(2){white-space:nowrap}"
    "table.evidence td{text-align:left}"
    "ul.anomalies pre{white-space:pre-wrap;word-break:break-word;font-size:.8em}</style>"
)


def targets(r: Mapping[str, Any]) -> list[TargetRow]:
    faults = list(r.get("faults") or [])
    anomalies = list(r.get("anomalies") or [])
    applied = sum(1 for f in faults if f.get("applied"))
    recovered = [f for f in faults if f.get("recovery_seconds") is not None]
    worst = max((f["recovery_seconds"] for f in recovered), default=None)
    five_hundreds = sum(
        n for k, n in (r.get("answers_total") or {}).items() if k.split(":")[0] == "500"
    )
    return [
        TargetRow(
            "anomalies found by the checker",
            str(len(anomalies))
            if not anomalies
            else f"{len(anomalies)}: " + "; ".join(a["anomaly"] for a in anomalies),
            "0",
            not anomalies,
        ),
        TargetRow("faults applied", f"{applied} of {len(faults)}", "all", applied == len(faults)),
        TargetRow(
            "faults the platform recovered from before the next",
            f"{len(recovered)} of {len(faults)}"
            + (f" (slowest {worst:g} s)" if worst is not None else ""),
            "all",
            len(recovered) == len(faults),
        ),
        TargetRow("500 answers to buyers", str(five_hundreds), "0", five_hundreds == 0),
    ]


def short_evidence(evidence: Mapping[str, Any]) -> str:
    """The evidence in a line: ``key value`` pairs, long ids cut to 8 characters (in full in
    the JSON)."""

    def cut(v: Any) -> str:
        text = v if isinstance(v, str) else json.dumps(v, default=str)
        return text if len(text) <= 12 else text[:8] + "…"

    return "; ".join(f"{k} {cut(v)}" for k, v in evidence.items()) or "—"


def fault_table(faults: list[Mapping[str, Any]]) -> str:
    rows = []
    for f in faults:
        rec = f.get("recovery_seconds")
        rows.append(
            [
                f.get("started"),
                f.get("fault"),
                "yes" if f.get("applied") else f"no: {f.get('error')}",
                "not recovered" if rec is None else rec,
                f.get("probe_rounds_not_normal"),
                ", ".join(f"{k} ×{n}" for k, n in (f.get("errors_seen") or {}).items()) or "none",
            ]
        )
    evidence = [[f.get("fault"), short_evidence(f.get("evidence") or {})] for f in faults]
    return grid_table(
        [
            "t (s)",
            "fault",
            "applied",
            "recovery (s)",
            "probe rounds not normal",
            "errors buyers saw",
        ],
        rows,
        cls="faults",
    ) + grid_table(["fault", "evidence that it happened"], evidence, cls="faults evidence")


def evidence_text(evidence: Any) -> str:
    """One line per item of a list (a difference, an order), compact JSON otherwise."""
    if isinstance(evidence, list):
        text = "\n".join(json.dumps(e, default=str) for e in evidence)
    else:
        text = json.dumps(evidence, default=str)
    return text[:4000]


def anomaly_list(anomalies: list[Mapping[str, Any]]) -> str:
    if not anomalies:
        return '<p class="none">No anomaly: every check passed.</p>'
    items = "".join(
        f"<li><b>{esc(a['anomaly'])}</b><pre>{esc(evidence_text(a.get('evidence')))}</pre></li>"
        for a in anomalies
    )
    return f'<ul class="anomalies">{items}</ul>'


def throughput_chart(r: Mapping[str, Any]) -> str:
    tp = r.get("throughput") or {}
    starts = [float(t) for t in tp.get("t") or []]
    width = float(tp.get("bin_seconds") or 1.0)
    markers = [
        Marker(float(f["started"]), str(f["fault"]).split(":", 1)[1], "#a11")
        for f in r.get("faults") or []
        if f.get("started") is not None
    ]
    chart = Chart(
        "faults-throughput",
        f"Buyers' answers per second ({width:g} s bins), faults marked",
        "seconds since the release",
        "answers per second",
        markers=markers,
    )
    stacks = [
        Series(
            "answered (2xx, 4xx)",
            [(t, n / width) for t, n in zip(starts, tp.get("answered") or [], strict=False)],
            PALETTE[0],
        ),
        Series(
            "errors (5xx, no answer)",
            [(t, n / width) for t, n in zip(starts, tp.get("errors") or [], strict=False)],
            "#d62728",
        ),
    ]
    return stacked_columns(chart, starts, width, stacks)


def render(r: Mapping[str, Any]) -> str:
    setup = r.get("setup") or {}
    subtitle = (
        f"{r.get('started_at', '')} · schedule {r.get('schedule_name') or 'custom'} · "
        f"{setup.get('buyers_stampede')} buyers for {setup.get('pairs')} pairs, "
        f"{setup.get('buyers_late')} late buyers · {commit_line(setup.get('git'))}"
    )
    checks = dict(r.get("checks") or {})
    product = checks.pop("product", {}) or {}
    figures = [
        ("run seconds", r.get("run_seconds")),
        ("probe rounds", r.get("probe_rounds")),
        ("probe rounds not normal", r.get("probe_rounds_not_normal")),
        ("stampede attempts", (r.get("stampede") or {}).get("attempts")),
        ("answers by kind", r.get("answers_total")),
        ("late buyers' final answers", r.get("late_buyers")),
        ("payments' final answers", r.get("payments")),
        ("pairs sold", product.get("pairs_sold")),
        ("orders paid", product.get("orders_paid")),
        ("oversold", product.get("oversold")),
        ("ledger consistent", product.get("ledger_consistent")),
        *flatten(checks, "checks."),
    ]
    sections = [
        section(
            "Faults",
            FAULTS_STYLE,
            fault_table(list(r.get("faults") or [])),
            note="recovery: from the fault until the probes (the product page through the "
            "gateway, each service's /readyz, every 150 ms) all answered 200 again, within the "
            "fault's window (until the next fault); 0 when they never failed",
        ),
        section("Anomalies", anomaly_list(list(r.get("anomalies") or []))),
        section("Throughput", figure("Answers per second, faults marked", throughput_chart(r))),
        section("Figures", kv_table(figures)),
        section(
            "Setup", kv_table(flatten(setup), cls="setup"), note=f"schedule: {r.get('schedule')}"
        ),
    ]
    return page("SnapShoe bench: a drop under faults", r, subtitle, targets(r), sections)


def write_html(result: Mapping[str, Any], path: Path) -> Path:
    path.write_text(render(result))
    return path
