"""A small `snapshoe bench draw` against the real platform: 600 entries over 3 sizes of 10 pairs,
a fifth of the cards declining. The run fails on any broken check (draw_checks.evaluate); the
full-size figures are in bench/RESULTS.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.platform import Platform

from snapshoe.bench.draw import DrawConfig, run_draw


@pytest.mark.slow
async def test_bench_draw_small(platform: Platform, tmp_path: Path) -> None:
    cfg = DrawConfig(
        entries=600,
        sizes=3,
        pairs_per_size=10,
        decline_share=0.2,
        max_seconds=180,
        seed=5,
        out=tmp_path / "draw.json",
    )
    result = await run_draw(platform.settings, cfg)

    assert result["failures"] == [], result["failures"]
    assert result["ok"] is True
    c = result["check"]
    assert c["entries"] == 600
    assert c["won"] == 30
    assert c["pairs_sold"] == 30
    assert c["undecided"] == 0
    assert c["lost"] == 600 - 30 - c["payment_failed"]
    # Some winners-to-be declined and passed their pair on (a fifth of 600 cards decline: with
    # 30 pairs drawn the chance that none of the charged declined is about 0.8^30 = 0.1 %).
    assert c["payment_failed"] > 0
    assert c["verify_ok"] is True
    assert result["charges"]["payments"] == 30 + c["payment_failed"]
    assert result["timing"]["seconds_close_to_settled"] is not None
    assert "snapshoe bench draw" in (tmp_path / "draw.html").read_text()
