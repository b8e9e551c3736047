"""The chart primitives of the bench reports: round ticks inside the range, the sell-out zoom,
ticks placed where the data is (the old curve put its ticks 0.5 s off), bars on one scale."""

from __future__ import annotations

import itertools
import math
import re

import pytest

from snapshoe.bench.charts import (
    Bar,
    Chart,
    Frame,
    Marker,
    Series,
    bar_widths,
    fmt_num,
    hbars,
    line_chart,
    nice_ticks,
    stacked_columns,
    zoom_window,
)


def _step_is_round(step: float) -> bool:
    mantissa = step / 10 ** math.floor(math.log10(step))
    return any(math.isclose(mantissa, m) for m in (1, 2, 5, 10))


@pytest.mark.parametrize(
    ("lo", "hi", "n"), [(0, 1000, 5), (-0.35, 2.3, 8), (0, 0.012, 5), (3.2, 3.9, 4), (-40, 7, 6)]
)
def test_ticks_are_round_evenly_spaced_and_inside(lo: float, hi: float, n: int) -> None:
    ticks = nice_ticks(lo, hi, n)
    assert len(ticks) >= 2
    assert all(lo - 1e-9 <= t <= hi + 1e-9 for t in ticks)
    steps = [b - a for a, b in itertools.pairwise(ticks)]
    assert all(math.isclose(s, steps[0], rel_tol=1e-6) for s in steps)
    assert _step_is_round(steps[0])
    assert len(ticks) <= 2 * n + 1


def test_ticks_of_a_known_range() -> None:
    assert nice_ticks(0, 1000) == [0, 200, 400, 600, 800, 1000]
    assert nice_ticks(-0.35, 2.3, 8) == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert nice_ticks(5, 5) == [5]
    assert nice_ticks(2, 1) == []


# A 1,000-pair drop sampled every 100 ms from 3 s before the release: sold from 0.05 s to
# 1.95 s, then 5 s more of samples at 0 (the stampede's sold_out answers).
CURVE = [(round(-3 + k / 10, 2), 1000) for k in range(31)] + [
    (round(0.05 + k / 10, 2), max(0, 1000 - 53 * k)) for k in range(1, 80)
]


def test_zoom_is_the_sale_not_the_run() -> None:
    window = zoom_window(CURVE)
    assert window is not None
    lo, hi = window
    first_sale = min(t for t, n in CURVE if n < 1000)
    sold_out = min(t for t, n in CURVE if n == 0)
    assert lo < first_sale
    assert lo > -1.0  # not the 3 s lead-in
    assert sold_out < hi <= sold_out + 0.5  # a small margin, not the 5 s tail
    # The sale fills most of the window.
    assert (sold_out - first_sale) / (hi - lo) > 0.75


def test_zoom_of_a_drop_that_did_not_sell_out_ends_with_the_samples() -> None:
    curve = [(0.0, 100), (0.1, 100), (0.2, 90), (0.3, 80), (0.4, 80)]
    assert zoom_window(curve) == pytest.approx((0.0, 0.4))


def test_zoom_without_a_sale_is_the_whole_curve_and_none_without_samples() -> None:
    assert zoom_window([(0.0, 5), (1.0, 5)]) == (0.0, 1.0)
    assert zoom_window([]) is None


def _points(svg: str) -> list[tuple[float, float]]:
    found = re.search(r'class="data"[^>]* points="([^"]+)"', svg)
    assert found is not None
    return [(float(a), float(b)) for a, b in (p.split(",") for p in found.group(1).split())]


def _tick_x(svg: str, value: str) -> float:
    found = re.search(rf'class="tick-x" data-value="{value}" x="([\d.]+)"', svg)
    assert found is not None, value
    return float(found.group(1))


def test_ticks_sit_where_the_data_is() -> None:
    # The old curve drew its axis from -0.5 but labelled it from 0: the 1 s tick sat at 0.5 s.
    chart = Chart("c", "curve", "s", "left", x_range=(-0.5, 2.0))
    svg = line_chart(chart, [Series("left", [(0.0, 100.0), (1.0, 50.0), (2.0, 0.0)])])
    xs = [x for x, _ in _points(svg)]
    assert _tick_x(svg, "0") == pytest.approx(xs[0], abs=0.1)
    assert _tick_x(svg, "1") == pytest.approx(xs[1], abs=0.1)
    assert _tick_x(svg, "2") == pytest.approx(xs[2], abs=0.1)


def test_a_zoomed_line_leaves_out_what_is_outside() -> None:
    chart = Chart("c", "curve", "s", "left", x_range=(1.0, 2.0))
    svg = line_chart(chart, [Series("left", [(0.0, 9.0), (1.0, 5.0), (1.5, 3.0), (3.0, 0.0)])])
    assert len(_points(svg)) == 2


def test_frame_maps_the_range_onto_the_plot() -> None:
    f = Frame(0, 10, 0, 100)
    assert f.x(0) < f.x(5) < f.x(10)
    assert f.y(0) == f.bottom
    assert f.y(100) < f.y(0)  # SVG's y grows downwards


def test_markers_outside_the_range_are_not_drawn() -> None:
    chart = Chart("c", "t", "x", "y", x_range=(0, 1), markers=[Marker(0.5, "in"), Marker(5, "out")])
    svg = line_chart(chart, [Series("s", [(0.0, 1.0), (1.0, 2.0)])])
    assert svg.count('class="marker"') == 1
    assert ">in<" in svg
    assert ">out<" not in svg


def test_bars_share_one_scale() -> None:
    assert bar_widths([2.0, 1.0, None, -3.0], 100) == [100.0, 50.0, 0.0, 0.0]
    assert bar_widths([0.0, None], 100) == [0.0, 0.0]


def test_hbars_draw_one_bar_each_longest_for_the_largest() -> None:
    svg = hbars("b", "rate", [Bar("a", 331.0), Bar("b", 2694.0), Bar("c", 3758.0)], "/s")
    widths = [float(w) for w in re.findall(r'class="data"[^>]* width="([\d.]+)"', svg)]
    assert len(widths) == 3
    assert widths[2] > widths[1] > widths[0]
    assert widths[1] / widths[2] == pytest.approx(2694 / 3758, rel=0.01)
    assert "2,694 /s" in svg


def test_hbars_without_values_say_so() -> None:
    assert "no-data" in hbars("b", "rate", [Bar("a", None), Bar("b", 0.0)])


def test_columns_stack_per_bin() -> None:
    chart = Chart("t", "answers", "s", "per s")
    svg = stacked_columns(
        chart,
        [0.0, 0.25],
        0.25,
        [Series("201", [(0.0, 4.0), (0.25, 0.0)]), Series("409", [(0.0, 4.0), (0.25, 8.0)])],
    )
    rects = re.findall(r'<rect class="data" data-series="([^"]+)"[^>]* height="([\d.]+)"', svg)
    assert [name for name, _ in rects] == ["201", "409", "409"]  # nothing drawn for a 0
    heights = [float(h) for _, h in rects]
    assert heights[0] + heights[1] == pytest.approx(heights[2], abs=0.2)  # 4 + 4 == 8


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (2770, "2,770"),
        (2694.4, "2,694"),
        (0.717, "0.717"),
        (1.5, "1.5"),
        (20000, "20,000"),
    ],
)
def test_numbers_read_well(value: float, text: str) -> None:
    assert fmt_num(value) == text
