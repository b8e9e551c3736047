"""The parts every bench report page is made of (drop, queue and draw now; faults and soak
later): the page shell with its verdict, the headline table of targets met or missed, tables
of figures and of the setup (nested records flattened to dotted keys), and sections. Pages
are laid out in ``report.py``; charts come from ``charts.py``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from snapshoe.bench.charts import esc, fmt_num

NOT_MEASURED = "not measured"

STYLE = """
body{font-family:system-ui,sans-serif;max-width:800px;margin:1.5em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0;width:100%}
th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #eee;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-size:1.3em;font-weight:bold;padding:.4em .7em;border-radius:4px;display:inline-block}
.verdict.ok{background:#e3f5ec;color:#0a6b44}.verdict.failed{background:#fde8e8;color:#a11}
tr.met td.mark{color:#0a6b44}tr.missed td.mark{color:#a11}tr.na td.mark{color:#777}
tr.missed{background:#fff4f4}td.mark{font-weight:bold;white-space:nowrap}
.note{color:#666;font-size:.9em}.tally{margin-left:.6em;font-weight:bold}.no-data{color:#777;font-style:italic}
svg.chart{max-width:100%;height:auto;display:block;margin:.4em 0}
figure{margin:.8em 0}figcaption{font-weight:bold;font-size:.95em}
"""


def fmt(value: Any, unit: str = "") -> str:
    """A figure as a reader wants it: None is "—", booleans yes/no, numbers grouped."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{fmt_num(float(value))} {unit}".strip()
    if isinstance(value, Mapping | list):
        return json.dumps(value, default=str) if value else "none"
    return f"{value} {unit}".strip()


def measured(value: Any, unit: str = "") -> str:
    """A target's measured figure, or "not measured" when the run has none."""
    return NOT_MEASURED if value is None else fmt(value, unit)


@dataclass(frozen=True)
class TargetRow:
    """One line of the headline: what was aimed at, what the run measured, and whether it
    met it (None: the run did not measure it, ``measured`` says why)."""

    name: str
    measured: str
    goal: str
    met: bool | None


def target_rows_from_thresholds(
    targets: Mapping[str, Any], labels: Mapping[str, tuple[str, str]]
) -> list[TargetRow]:
    """Targets recorded as ``{"value", "max" | "min", "met"}`` (the drop's shape); ``labels``
    maps a key to (what it is, its unit)."""
    rows = []
    for key, t in targets.items():
        if not isinstance(t, Mapping) or "value" not in t:
            continue
        label, unit = labels.get(key, (key, ""))
        if "max" in t:
            goal = f"≤ {fmt(t['max'], unit)}"
        elif "min" in t:
            goal = f"≥ {fmt(t['min'], unit)}"
        else:
            goal = ""
        rows.append(TargetRow(label, measured(t["value"], unit), goal, bool(t.get("met"))))
    return rows


def checks_row(result: Mapping[str, Any]) -> TargetRow:
    """The run's own checks (any failure fails it) as the first headline row."""
    failures = list(result.get("failures") or [])
    measured = "all passed" if not failures else f"{len(failures)} failed: " + "; ".join(failures)
    return TargetRow("every check of the run", measured, "no failure", not failures)


def mark(met: bool | None) -> tuple[str, str]:
    """The row's class and its mark."""
    if met is None:
        return "na", "– not measured"
    return ("met", "✔ met") if met else ("missed", "✘ missed")


def target_table(rows: Sequence[TargetRow]) -> str:
    body = []
    for r in rows:
        cls, sign = mark(r.met)
        body.append(
            f'<tr class="target {cls}"><td>{esc(r.name)}</td><td class="num">{esc(r.measured)}'
            f'</td><td>{esc(r.goal)}</td><td class="mark">{sign}</td></tr>'
        )
    return (
        '<table class="targets"><thead><tr><th>target</th><th>measured</th><th>goal</th>'
        "<th>verdict</th></tr></thead><tbody>" + "".join(body) + "</tbody></table>"
    )


def flatten(record: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested records as (dotted key, value) rows; lists of plain values stay one value."""
    out: list[tuple[str, Any]] = []
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out += flatten(value, name + ".")
        else:
            out.append((name, value))
    return out


def kv_table(rows: Sequence[tuple[str, Any]], cls: str = "figures") -> str:
    body = "".join(
        f'<tr><th>{esc(k)}</th><td class="num">{esc(v if isinstance(v, str) else fmt(v))}</td></tr>'
        for k, v in rows
    )
    return f'<table class="{esc(cls)}">{body}</table>'


def grid_table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "grid") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{esc(fmt(c))}</td>' for c in row) + "</tr>"
        for row in rows
    )
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def figure(caption: str, chart: str) -> str:
    return f"<figure><figcaption>{esc(caption)}</figcaption>{chart}</figure>"


def section(title: str, *parts: str, note: str = "") -> str:
    extra = f'<p class="note">{esc(note)}</p>' if note else ""
    return f"<section><h2>{esc(title)}</h2>{''.join(parts)}{extra}</section>"


def tally(rows: Sequence[TargetRow]) -> str:
    """The headline in words: how many targets were met, missed and not measured."""
    met = sum(r.met is True for r in rows)
    missed = sum(r.met is False for r in rows)
    unknown = sum(r.met is None for r in rows)
    words = [f"{met} of {len(rows)} targets met"]
    if missed:
        words.append(f"{missed} missed")
    if unknown:
        words.append(f"{unknown} not measured")
    return ", ".join(words)


def page(
    title: str,
    result: Mapping[str, Any],
    subtitle: str,
    targets: Sequence[TargetRow],
    sections: Sequence[str],
) -> str:
    """The whole HTML file: its title, when and where the run was, the verdict (the run's
    checks) with the targets in words, the headline table, then the sections in order."""
    ok = bool(result.get("ok"))
    verdict = (
        '<span class="verdict ok">✔ OK: every check passed</span>'
        if ok
        else '<span class="verdict failed">✘ FAILED: a check failed</span>'
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head>
<body><h1>{esc(title)}</h1>
<p>{esc(subtitle)}</p>
<p>{verdict} <span class="tally">{esc(tally(targets))}</span></p>
{section("Targets", target_table(targets))}
{"".join(sections)}
</body></html>
"""


def commit_line(git: Mapping[str, Any] | None) -> str:
    if not git or not git.get("commit"):
        return "commit unknown"
    return f"commit {str(git['commit'])[:10]}" + (" (dirty)" if git.get("dirty") else "")
