"""The bench report pages' pure parts: the headline of targets met or missed, the answers per
time bin drop.lua records, wrk's CPU over a window shorter than its sampling, the queue's
per-second series, and a page per kind from a real drop result."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from snapshoe.bench.drop_result import timeline
from snapshoe.bench.queue_figures import per_second, ticket_timeline
from snapshoe.bench.report import (
    cpu_share,
    drop_targets,
    latency_chart,
    quantile_bins,
    render,
    render_file,
    timeline_chart,
    value_bins,
)
from snapshoe.bench.report_kinds import draw_targets, queue_targets
from snapshoe.bench.report_parts import (
    TargetRow,
    checks_row,
    flatten,
    tally,
    target_rows_from_thresholds,
    target_table,
)
from snapshoe.bench.wrk import WrkRun

RESULTS = Path(__file__).resolve().parents[3] / "bench" / "results"
DROP = RESULTS / "drop-2026-11-24-c6.json"
DRAW_SHAPE = RESULTS / "draw-2026-12-07-ci-small.json"


def _drop() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DROP.read_text())
    return result


def test_threshold_targets_say_the_goal_and_whether_it_was_met() -> None:
    rows = target_rows_from_thresholds(
        {
            "p99_ms": {"value": 2149.47, "max": 250.0, "met": False},
            "vs_floor": {"value": 0.717, "min": 0.6, "met": True},
            "vs_db_lock": {"value": None, "min": 5.0, "met": False},
            "correct": {"met": True, "oversold": 0},  # no value: not a threshold
        },
        {"p99_ms": ("p99", "ms")},
    )
    assert [(r.name, r.goal, r.met) for r in rows] == [
        ("p99", "≤ 250 ms", False),
        ("vs_floor", "≥ 0.6", True),
        ("vs_db_lock", "≥ 5", False),
    ]
    assert rows[0].measured == "2,149 ms"
    assert rows[2].measured == "not measured"


def test_the_drop_headline_marks_what_was_missed() -> None:
    rows = drop_targets(_drop())
    verdicts = {r.name: r.met for r in rows}
    assert verdicts["p99 latency, all attempts"] is False  # 2,149 ms against 250
    assert verdicts["every check of the run"] is True
    assert verdicts["sold exactly once"] is True
    assert verdicts["throughput vs the floor, same run"] is True
    assert verdicts["throughput vs row locks (db_lock), same run"] is True
    table = target_table(rows)
    assert table.count('class="target met"') == 5
    assert table.count('class="target missed"') == 1
    missed = re.search(r'<tr class="target missed">(.*?)</tr>', table)
    assert missed is not None
    assert "p99" in missed.group(1)
    assert "✘ missed" in missed.group(1)


def test_a_failed_check_is_a_missed_headline_row() -> None:
    row = checks_row({"failures": ["gate: 3 pairs oversold"]})
    assert row.met is False
    assert "3 pairs oversold" in row.measured
    assert checks_row({"failures": []}).met is True


def test_an_unmeasured_target_is_neither_met_nor_missed() -> None:
    table = target_table([TargetRow("faster than fcfs", "not measured", "≤ fcfs", None)])
    assert 'class="target na"' in table
    assert "missed" not in table


def test_queue_without_compare_does_not_claim_the_fcfs_target() -> None:
    r = {
        "failures": [],
        "targets": {"rho_below_0.05": True, "sells_out_no_slower_than_fcfs": None},
        "queue": {"spearman_join_vs_place": 0.01},
        "sales": {"seconds_to_every_pair_taken": 3.0},
        "streams_held_at_once": 240,
    }
    rows = {r.name: r for r in queue_targets(r)}
    fcfs = rows["sells out no slower than fcfs"]
    assert fcfs.met is None
    assert "--compare" in fcfs.measured
    assert rows["fair: join order does not predict place (Spearman ρ)"].met is True


def test_draw_not_settled_is_missed_and_says_so() -> None:
    rows = draw_targets({"failures": [], "targets": {"settled_under_60s": False}, "timing": {}})
    assert rows[1].met is False
    assert "not settled" in rows[1].measured


def test_the_timeline_fills_the_gaps_and_leaves_out_what_is_not_an_order() -> None:
    summary = {
        "duration_us": "123",
        "timeline:bin_us": "250000",
        "timeline:0|201": "30",
        "timeline:0|409:sold_out": "28",
        "timeline:2|409:sold_out": "50",
        "timeline:3|408": "2",
        "timeline:-1|200": "1",
    }
    tl = timeline(summary)
    assert tl["bin_seconds"] == 0.25
    assert tl["t"] == [0.0, 0.25, 0.5]
    assert tl["answers"] == {"201": [30, 0, 0], "409:sold_out": [28, 0, 50]}
    assert timeline({"duration_us": "1"}) == {}


def test_wrk_cpu_over_a_window_shorter_than_the_sampling() -> None:
    run = WrkRun(0, "", "", 2.0, cpu_samples=[(10.0, 1.0), (11.0, 1.5), (12.0, 2.5)])
    # No sample inside [10.2, 10.4]: the old code returned None (generator_cpu_share: null).
    cpu = run.cpu_between(10.2, 10.4)
    assert cpu is not None
    assert cpu[0] == pytest.approx(0.1)
    assert cpu[1] == pytest.approx(0.2)
    assert run.cpu_between(10.5, 11.5) == pytest.approx((0.75, 1.0))
    # Partly outside the samples: over the part they cover (wrk exits just after the last
    # answer, so a short sale often ends after the last sample).
    assert run.cpu_between(9.0, 11.0) == pytest.approx((0.5, 1.0))
    assert run.cpu_between(11.5, 13.0) == pytest.approx((0.5, 0.5))
    assert run.cpu_between(12.5, 13.0) is None  # wholly after the last sample
    assert run.cpu_between(11.0, 10.0) is None


def test_an_unmeasured_generator_share_says_why() -> None:
    assert cpu_share({"generator_cpu_share": None}).startswith("not measured: ")
    assert cpu_share({"generator_cpu_share": 0.041}) == "4.1% of the machine"


def test_queue_per_second_counts_from_the_release() -> None:
    release = datetime(2026, 12, 7, 23, 0, 0)
    rows = [
        # id, joined_at, place, state, ended_at, order_id, release_at, admitted_at
        ("a", release - timedelta(seconds=1.5), 1, "used", release + timedelta(seconds=2.2),
         "o1", release, release + timedelta(seconds=0.1)),
        ("b", release - timedelta(seconds=0.5), 2, "sold_out", release + timedelta(seconds=2.9),
         None, release, None),
        ("c", release + timedelta(seconds=0.3), 3, "waiting", None, None, release, None),
    ]  # fmt: skip
    assert ticket_timeline(rows) == {
        "joined": {"-2": 1, "-1": 1, "0": 1},
        "admitted": {"0": 1},
        "ended used": {"2": 1},
        "ended sold_out": {"2": 1},
    }
    assert per_second([0.2, 0.9, 1.0, -0.1]) == {"-1": 1, "0": 2, "1": 1}


def test_latency_bins_are_shares() -> None:
    q = [(50.0, 9.0), (99.0, 90.0), (100.0, 500.0)]
    bins = quantile_bins(q, 100.0, 10)
    assert sum(bins) == pytest.approx(1.0)
    assert bins[0] > 0.5  # half the attempts below 10 ms
    assert value_bins([5.0, 15.0, 500.0], 100.0, 10) == pytest.approx(
        [1 / 3, 1 / 3, 0, 0, 0, 0, 0, 0, 0, 1 / 3]
    )


def test_setup_is_flattened_to_dotted_keys() -> None:
    rows = dict(flatten({"buyers": 5, "git": {"commit": "abc", "dirty": False}, "load": [1, 2]}))
    assert rows == {"buyers": 5, "git.commit": "abc", "git.dirty": False, "load": [1, 2]}


def test_the_drop_page_has_every_chart_and_no_raw_json(tmp_path: Path) -> None:
    out = render_file(DROP, tmp_path / "drop.html")
    text = out.read_text()
    for name in ("sell-out", "timeline", "compare-throughput", "compare-p99", "latency"):
        assert f'data-chart="{name}"' in text, name
    assert "<pre>" not in text  # the setup and targets are tables now
    assert '"commit":' not in text
    assert "ea33058613" in text


def test_render_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="soak"):
        render({"bench": "soak"})


def _draw_result() -> dict[str, Any]:
    """A real draw result: the CI-size run of tests/e2e/test_bench_draw.py, checked in."""
    result: dict[str, Any] = json.loads(DRAW_SHAPE.read_text())
    return result


def test_the_draw_page_has_its_charts_and_marks_the_moments() -> None:
    text = render(_draw_result())
    for name in ("timeline", "charges", "outcome"):
        assert f'data-chart="{name}"' in text, name
    assert text.count('class="marker"') == 3  # drawn, pairs decided, settled
    assert 'class="target met"' in text
    # The charges chart: one stacked bar per (second, status) with payments in it.
    r = _draw_result()
    charges = text[text.index('data-chart="charges"') :]
    charges = charges[: charges.index("</svg>")]
    assert len(re.findall(r'<rect class="data"', charges)) >= 1
    assert r["charges"]["payments"] > 0


def test_the_queue_page_draws_the_per_second_series() -> None:
    r = json.loads((RESULTS / "queue-2026-12-07-ci-small.json").read_text())
    text = render(r)
    timeline_svg = text[text.index('data-chart="timeline"') :]
    timeline_svg = timeline_svg[: timeline_svg.index("</svg>")]
    assert 'data-series="joined"' in timeline_svg
    assert r["ok"]  # every check passed; the speed targets of a full run are marked apart
    missed = sum(1 for v in r["targets"].values() if v is False)
    assert text.count('class="target missed"') == missed


def test_the_verdict_line_counts_the_targets() -> None:
    rows = [
        TargetRow("a", "1", "≤ 2", True),
        TargetRow("b", "3", "≤ 2", False),
        TargetRow("c", "not measured", "≤ 2", None),
        TargetRow("d", "1", "≤ 2", True),
    ]
    assert tally(rows) == "2 of 4 targets met, 1 missed, 1 not measured"
    assert tally(rows[:1]) == "1 of 1 targets met"
    page = render(_drop())
    assert "✔ OK: every check passed" in page
    assert "5 of 6 targets met, 1 missed" in page


def test_other_refusals_and_errors_get_a_scale_of_their_own() -> None:
    tl: dict[str, Any] = {
        "bin_seconds": 0.25,
        "t": [0.0, 0.25, 0.5],
        "answers": {"201": [100, 20, 0], "409:sold_out": [400, 500, 600], "503:x": [0, 2, 0]},
    }
    page = timeline_chart({"timeline": tl})
    other = page[page.index('data-chart="timeline-other"') :]
    other = other[: other.index("</svg>")]
    bars = re.findall(r'<rect class="data" data-series="([^"]+)"[^>]* fill="([^"]+)"', other)
    assert [name for name, _ in bars] == ["503:x"]
    every = page[page.index('data-chart="timeline"') :]
    assert bars[0][1] in re.findall(r'data-series="503:x"[^>]* fill="([^"]+)"', every)
    tl["answers"].pop("503:x")
    assert "No other refusal and no error" in timeline_chart({"timeline": tl})


def test_the_latency_chart_marks_p50_and_p99_inside_its_axis() -> None:
    chart = latency_chart(_drop())  # its successes' p99 (2,770 ms) lies beyond p99.9 of all
    labels = re.findall(r'<line class="marker"[^>]*/><text[^>]*>([^<]+)</text>', chart)
    assert [label.split()[0:2] for label in labels] == [
        ["p50", "285"],
        ["p99", "2,149"],
        ["201", "p50"],
        ["201", "p99"],
    ]
