"""The HTML report of a drop run: the figures, the latency distribution and the sell-out
curve as inline SVG (no plotting dependency)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

W, H, PAD = 720, 260, 48


def _axes(x_label: str, y_label: str, x_max: float, y_max: float) -> list[str]:
    out = [
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="#333"/>',
        f'<line x1="{PAD}" y1="10" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>',
        f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle">{html.escape(x_label)}</text>',
        f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" '
        f'text-anchor="middle">{html.escape(y_label)}</text>',
    ]
    for k in range(5):
        fx, fy = k / 4, k / 4
        x = PAD + fx * (W - 10 - PAD)
        y = H - PAD - fy * (H - PAD - 10)
        out.append(
            f'<text x="{x:.0f}" y="{H - PAD + 16}" text-anchor="middle">{x_max * fx:.4g}</text>'
        )
        out.append(f'<text x="{PAD - 4}" y="{y + 4:.0f}" text-anchor="end">{y_max * fy:.4g}</text>')
    return out


def _svg(parts: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'font-family="sans-serif" font-size="11">' + "".join(parts) + "</svg>"
    )


def latency_svg(
    quantiles: list[list[float]] | list[tuple[float, float]], successes: list[float]
) -> str:
    """Histogram of all attempts (from wrk's quantiles: each step of percentiles spreads its
    share evenly between its two latencies), with the successes (exact) on top, both as a
    share of their own total. The axis stops at the 99.9th percentile of all attempts."""
    q = [(float(p), float(v)) for p, v in quantiles]
    if not q:
        return "<p>no latency data</p>"
    cut = next((v for p, v in q if p >= 99.9), q[-1][1]) or 1.0
    nbins = 60
    width = cut / nbins
    all_bins = [0.0] * nbins
    prev_p, prev_v = 0.0, q[0][1]
    for p, v in q:
        share = (p - prev_p) / 100
        lo, hi = min(prev_v, cut), min(v, cut)
        a, b = int(lo / width), int(hi / width)
        span = range(min(a, nbins - 1), min(b, nbins - 1) + 1)
        for k in span:
            all_bins[k] += share / len(span)
        prev_p, prev_v = p, v
    ok_bins = [0.0] * nbins
    for ms in successes:
        ok_bins[min(nbins - 1, int(ms / width))] += 1 / len(successes)
    peak = max(*all_bins, *ok_bins) or 1.0
    bw = (W - 10 - PAD) / nbins
    parts = _axes("latency (ms)", "share of responses", cut, peak)
    for k in range(nbins):
        for bins, color, inset in ((all_bins, "#9ab", 0.0), (ok_bins, "#d62", bw / 3)):
            h = bins[k] / peak * (H - PAD - 10)
            if h > 0:
                parts.append(
                    f'<rect x="{PAD + k * bw + inset:.1f}" y="{H - PAD - h:.1f}" '
                    f'width="{max(1.0, bw - 1 - 2 * inset):.1f}" height="{h:.1f}" fill="{color}"/>'
                )
    parts.append(f'<text x="{W - 200}" y="20" fill="#789">■ all attempts (wrk)</text>')
    parts.append(f'<text x="{W - 200}" y="34" fill="#d62">■ successes (201)</text>')
    return _svg(parts)


def curve_svg(
    curve: list[list[float]] | list[tuple[float, int]],
    pairs: int,
    x_label: str = "seconds since the release (axis starts at -0.5)",
    y_label: str = "pairs left",
) -> str:
    points = [(float(t), float(n)) for t, n in curve if float(t) >= -0.5]
    if not points:
        return "<p>no samples</p>"
    t_max = max(0.5, max(t for t, _ in points))
    y_max = max(float(pairs), max(n for _, n in points), 1.0)

    def xy(t: float, n: float) -> str:
        x = PAD + (t + 0.5) / (t_max + 0.5) * (W - 10 - PAD)
        y = H - PAD - n / y_max * (H - PAD - 10)
        return f"{x:.1f},{y:.1f}"

    parts = _axes(x_label, y_label, t_max, y_max)
    parts.append(
        '<polyline fill="none" stroke="#d62" stroke-width="2" points="'
        + " ".join(xy(t, n) for t, n in points)
        + '"/>'
    )
    return _svg(parts)


def write_html(result: dict[str, Any], path: Path) -> Path:
    keys = [
        "attempts",
        "stampede_seconds",
        "attempts_per_s",
        "orders_created",
        "sold_out_responses",
        "errors",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "max_ms",
        "success_p50_ms",
        "success_p90_ms",
        "success_p99_ms",
        "success_max_ms",
        "sell_out_seconds",
        "oversold",
        "limit_violations",
        "ledger_consistent",
        "generator_cpu_share",
        "floor_rps",
        "db_lock_attempts_per_s",
        "vs_floor",
        "vs_db_lock",
        "ok",
    ]
    rows = "".join(
        f"<tr><th>{k}</th><td>{html.escape(json.dumps(result[k]))}</td></tr>"
        for k in keys
        if k in result
    )
    setup = html.escape(json.dumps(result["setup"], indent=1))
    targets = html.escape(json.dumps(result.get("targets", {}), indent=1))
    failures = "".join(f"<li>{html.escape(f)}</li>" for f in result.get("failures", []))
    pairs = int(result["setup"]["pairs"])
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>snapshoe bench drop</title>
<style>body{{font-family:sans-serif;max-width:800px;margin:2em auto}}
th{{text-align:left;padding-right:1em}}pre{{background:#f4f4f4;padding:.5em}}</style></head>
<body><h1>snapshoe bench drop</h1>
<p>{html.escape(result["started_at"])} &mdash; {"OK" if result["ok"] else "FAILED"}</p>
<ul>{failures}</ul>
<table>{rows}</table>
<h2>Latency distribution</h2>{
        latency_svg(result["latency_quantiles_ms"], result["success_latencies_ms"])
    }
<p>{html.escape(result["latency_source"])}</p>
<h2>Sell-out curve (pairs left, sampled every 100 ms)</h2>
{curve_svg(result["sell_out_curve"], pairs)}
<h2>Targets</h2><pre>{targets}</pre>
<h2>Setup</h2><pre>{setup}</pre>
</body></html>
"""
    path.write_text(page)
    return path
