"""Chart primitives of the bench reports, as inline SVG (no plotting dependency): a frame that
maps data to pixels with its axes and ticks, line charts, stacked columns per time bin,
horizontal bars, and a histogram with markers. Every mark that stands for data carries
``class="data"`` and every chart ``data-chart="<name>"``, which the browser test counts.

The pure parts (``nice_ticks``, ``zoom_window``, ``bar_widths``, ``Frame``) are what the unit
tests check; the rest only writes SVG from them."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

W, H = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 44
# Colour-blind-safe enough (Okabe-Ito), in the order series take them.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#666")
OK, REFUSED, ERROR, MUTED = "#009e73", "#8a9bb0", "#d62728", "#999"


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt_num(v: float) -> str:
    """A tick or bar label: integers with thousands separators, others to 3 significant
    digits (0.25, 1.5, 2,150)."""
    if v == 0:
        return "0"
    if abs(v - round(v)) < 1e-9 and abs(v) < 1e15:
        return f"{round(v):,}"
    text = f"{v:,.{max(0, 2 - math.floor(math.log10(abs(v))))}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round values (steps of 1, 2 or 5 times a power of ten) inside [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        return []
    if hi == lo:
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + step * 1e-9:
        ticks.append(round(k * step, 10) + 0.0)  # + 0.0: no "-0"
        k += 1
    return ticks


def zoom_window(
    curve: Sequence[Sequence[float]], margin: float = 0.1, min_margin: float = 0.2
) -> tuple[float, float] | None:
    """The part of a sell-out curve ((seconds, pairs left) samples) worth looking at: from the
    last sample before the first sale to the first sample at 0 left (or the last sample, if
    it never sold out), plus a margin on each side of ``margin`` of that span, at least
    ``min_margin`` seconds, clipped to the samples. None without samples."""
    points = sorted((float(t), float(n)) for t, n in curve)
    if not points:
        return None
    start_level = points[0][1]
    first_sale = next((k for k, (_, n) in enumerate(points) if n < start_level), None)
    if first_sale is None:
        return points[0][0], points[-1][0]
    lo = points[max(0, first_sale - 1)][0]
    hi = next((t for t, n in points[first_sale:] if n <= 0), points[-1][0])
    pad = max(min_margin, margin * (hi - lo))
    return max(points[0][0], lo - pad), min(points[-1][0], hi + pad)


def bar_widths(values: Sequence[float | None], width: float) -> list[float]:
    """Pixel lengths of horizontal bars on one scale: the largest is ``width``; missing or
    negative values are 0."""
    clean = [max(0.0, v) if v is not None and math.isfinite(v) else 0.0 for v in values]
    top = max(clean, default=0.0)
    return [v / top * width if top else 0.0 for v in clean]


@dataclass(frozen=True)
class Frame:
    """The plot area of one chart and the data ranges it shows."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int = W
    height: int = H

    def x(self, v: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return LEFT + (v - self.x0) / span * (self.width - LEFT - RIGHT)

    def y(self, v: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.height - BOTTOM - (v - self.y0) / span * (self.height - BOTTOM - TOP)

    @property
    def bottom(self) -> float:
        return self.height - BOTTOM

    def axes(self, x_label: str, y_label: str) -> list[str]:
        """Both axes with gridlines and labels at ``nice_ticks``, each placed with the same
        mapping as the data (so a tick at 2 s is where the data at 2 s is)."""
        right, bottom = self.width - RIGHT, self.bottom
        out = []
        for v in nice_ticks(self.y0, self.y1):
            y = self.y(v)
            out.append(
                f'<line x1="{LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#e5e5e5"/>'
                f'<text class="tick-y" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                f"{fmt_num(v)}</text>"
            )
        for v in nice_ticks(self.x0, self.x1, 8):
            x = self.x(v)
            out.append(
                f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 5}" stroke="#333"/>'
                f'<text class="tick-x" data-value="{v:g}" x="{x:.1f}" y="{bottom + 18}" '
                f'text-anchor="middle">{fmt_num(v)}</text>'
            )
        out.append(
            f'<line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333"/>'
            f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#333"/>'
            f'<text x="{(LEFT + right) / 2}" y="{self.height - 6}" text-anchor="middle">'
            f"{esc(x_label)}</text>"
            f'<text x="14" y="{(TOP + bottom) / 2}" transform="rotate(-90 14 '
            f'{(TOP + bottom) / 2})" text-anchor="middle">{esc(y_label)}</text>'
        )
        return out


def svg(name: str, title: str, parts: list[str], width: int = W, height: int = H) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{esc(name)}" '
        f'role="img" aria-label="{esc(title)}" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" font-family="system-ui, sans-serif" font-size="11">'
        f"<title>{esc(title)}</title>" + "".join(parts) + "</svg>"
    )


def legend(entries: Sequence[tuple[str, str]], width: int = W) -> list[str]:
    """Coloured labels along the top edge, left to right."""
    out, x = [], float(LEFT)
    for label, color in entries:
        out.append(
            f'<rect x="{x:.0f}" y="8" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14:.0f}" y="17">{esc(label)}</text>'
        )
        x += 24 + 6.5 * len(label)
        if x > width - 80:
            break
    return out


@dataclass(frozen=True)
class Series:
    name: str
    points: list[tuple[float, float]]
    color: str = PALETTE[0]
    dashed: bool = False


@dataclass(frozen=True)
class Marker:
    """A vertical line at ``x`` with its label (p50, p99, sold out, drawn...)."""

    x: float
    label: str
    color: str = "#333"


@dataclass(frozen=True)
class Chart:
    name: str
    title: str
    x_label: str
    y_label: str
    x_range: tuple[float, float] | None = None
    y_min: float = 0.0
    markers: list[Marker] = field(default_factory=list)


def _markers(frame: Frame, markers: Sequence[Marker]) -> list[str]:
    out = []
    for k, m in enumerate(markers):
        if not frame.x0 <= m.x <= frame.x1:
            continue
        x = frame.x(m.x)
        # Near the right edge the label goes on the line's left.
        left = x > frame.width - RIGHT - 7 * len(m.label)
        anchor, tx = ("end", x - 3) if left else ("start", x + 3)
        out.append(
            f'<line class="marker" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{frame.bottom}" '
            f'stroke="{m.color}" stroke-dasharray="4 3"/>'
            f'<text x="{tx:.1f}" y="{TOP + 12 + 12 * (k % 4)}" fill="{m.color}" '
            f'text-anchor="{anchor}">{esc(m.label)}</text>'
        )
    return out


def line_chart(chart: Chart, series: Sequence[Series]) -> str:
    """Lines of (x, y) points; points outside ``chart.x_range`` are left out (a zoom).
    Without a range, the axis spans the points and the markers (a moment after the last
    sample is still shown)."""
    xs = [x for s in series for x, _ in s.points] + [m.x for m in chart.markers]
    lo, hi = chart.x_range or (min(xs, default=0.0), max(xs, default=1.0))
    shown = [(s, [(x, y) for x, y in s.points if lo <= x <= hi]) for s in series if s.points]
    if not any(points for _, points in shown):
        return no_data(chart.title)
    top = max((y for _, points in shown for _, y in points), default=1.0)
    frame = Frame(lo, hi if hi > lo else lo + 1, chart.y_min, top * 1.05 if top > 0 else 1.0)
    parts = frame.axes(chart.x_label, chart.y_label)
    for s, points in shown:
        dash = ' stroke-dasharray="6 3"' if s.dashed else ""
        coords = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in points)
        parts.append(
            f'<polyline class="data" data-series="{esc(s.name)}" fill="none" '
            f'stroke="{s.color}" stroke-width="2"{dash} points="{coords}"/>'
        )
    parts += _markers(frame, chart.markers)
    if len(series) > 1:
        parts += legend([(s.name, s.color) for s in series])
    return svg(chart.name, chart.title, parts)


def stacked_columns(
    chart: Chart, starts: Sequence[float], width: float, stacks: Sequence[Series]
) -> str:
    """One column per time bin (``starts``, each ``width`` wide), the series stacked in it
    bottom up; each series' points are (bin start, value)."""
    if not starts:
        return no_data(chart.title)
    values = [dict(s.points) for s in stacks]
    totals = [sum(v.get(t, 0.0) for v in values) for t in starts]
    lo, hi = chart.x_range or (min(starts), max(starts) + width)
    frame = Frame(lo, hi, 0.0, max(max(totals, default=1.0) * 1.05, 1.0))
    parts = frame.axes(chart.x_label, chart.y_label)
    px = max(1.0, frame.x(lo + width) - frame.x(lo) - 1)
    for t in starts:
        if not lo <= t <= hi - width / 2:
            continue
        base = 0.0
        for s, v in zip(stacks, values, strict=True):
            n = v.get(t, 0.0)
            if n <= 0:
                continue
            y_top, y_base = frame.y(base + n), frame.y(base)
            parts.append(
                f'<rect class="data" data-series="{esc(s.name)}" x="{frame.x(t):.1f}" '
                f'y="{y_top:.1f}" width="{px:.1f}" height="{y_base - y_top:.1f}" '
                f'fill="{s.color}"><title>{esc(s.name)} {fmt_num(t)} s: {fmt_num(n)}</title>'
                "</rect>"
            )
            base += n
    parts += _markers(frame, chart.markers)
    parts += legend([(s.name, s.color) for s in stacks])
    return svg(chart.name, chart.title, parts)


@dataclass(frozen=True)
class Bar:
    label: str
    value: float | None
    text: str = ""  # shown after the bar; the value with a unit when empty
    color: str = PALETTE[0]


def hbars(name: str, title: str, bars: Sequence[Bar], unit: str = "") -> str:
    """Horizontal bars on one scale, a label on the left and the value on the right."""
    if not any(b.value for b in bars):
        return no_data(title)
    label_w, row, width = 200, 28, W
    height = TOP + row * len(bars) + 8
    lengths = bar_widths([b.value for b in bars], width - label_w - 150)
    parts = []
    for k, (b, length) in enumerate(zip(bars, lengths, strict=True)):
        y = TOP + k * row
        value = b.text or (f"{fmt_num(b.value)} {unit}".strip() if b.value is not None else "—")
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{esc(b.label)}</text>'
            f'<rect class="data" x="{label_w}" y="{y + 4}" width="{max(length, 1):.1f}" '
            f'height="{row - 10}" fill="{b.color}"/>'
            f'<text x="{label_w + length + 6:.1f}" y="{y + 16}">{esc(value)}</text>'
        )
    parts.append(f'<text x="{LEFT}" y="17" font-weight="bold">{esc(title)}</text>')
    return svg(name, title, parts, width, height)


def histogram(
    chart: Chart, edges: Sequence[float], layers: Sequence[tuple[Series, Sequence[float]]]
) -> str:
    """Bins between ``edges`` (n + 1 of them); each layer is a series (name, colour) with one
    height per bin, drawn narrower than the one before so both show; ``chart.markers`` as
    vertical lines (p50, p99)."""
    if len(edges) < 2 or not layers:
        return no_data(chart.title)
    peak = max((v for _, hs in layers for v in hs), default=0.0) or 1.0
    frame = Frame(edges[0], edges[-1], 0.0, peak * 1.05)
    parts = frame.axes(chart.x_label, chart.y_label)
    for depth, (s, heights) in enumerate(layers):
        for k, v in enumerate(heights):
            if v <= 0:
                continue
            x0, x1 = frame.x(edges[k]), frame.x(edges[k + 1])
            inset = (x1 - x0) * 0.18 * depth
            parts.append(
                f'<rect class="data" data-series="{esc(s.name)}" x="{x0 + inset:.1f}" '
                f'y="{frame.y(v):.1f}" width="{max(1.0, x1 - x0 - 1 - 2 * inset):.1f}" '
                f'height="{frame.bottom - frame.y(v):.1f}" fill="{s.color}"/>'
            )
    parts += _markers(frame, chart.markers)
    parts += legend([(s.name, s.color) for s, _ in layers])
    return svg(chart.name, chart.title, parts)


def no_data(title: str, why: str = "no data in this result") -> str:
    return f'<p class="no-data" data-missing="{esc(title)}">{esc(title)}: {esc(why)}</p>'
