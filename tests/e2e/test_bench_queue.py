"""A small `snapshoe bench queue` against the real platform: 240 buyers take tickets over a
10 s pre-queue from two load processes (24 a second: on a loaded CI machine the joins of a 4 s
window came late), most holding the event stream and the rest polling; 24 pairs; admitted
buyers order with their admission and pay, a fifth of them declining. The run fails on any
broken check (queue_result.failures); the full-size figures are in bench/RESULTS.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.platform import Platform

from snapshoe.bench.queue import QueueConfig, run_queue


@pytest.mark.slow
async def test_bench_queue_small(platform: Platform, tmp_path: Path) -> None:
    cfg = QueueConfig(
        buyers=240,
        pairs=24,
        sizes=4,
        window_seconds=10,
        stream_share=0.75,
        poll_seconds=1.0,
        decline_share=0.2,
        processes=2,
        max_seconds=120,
        seed=11,
        out=tmp_path / "queue.json",
    )
    result = await run_queue(platform.settings, cfg)

    assert result["failures"] == [], result["failures"]
    assert result["ok"] is True
    # Each load process stopped once its buyers were done, not at the deadline.
    assert result["seen"]["ended"] == {"buyers done": 2}
    assert result["queue"]["tickets"] == 240
    # Every pair sold, to a buyer who was admitted; declines admitted the next ones.
    assert result["check"]["pairs_sold"] == 24
    assert result["admitted_buyers"] > 24
    assert result["seen"]["paid"].get("declined:402", 0) > 0
    assert result["queue"]["states"]["sold_out"] == 240 - result["admitted_buyers"]
    # Streams were held at once and told buyers their admission and their end.
    assert result["streams_held_at_once"] > 100
    assert result["stream_delay_p99_ms"] is not None
    assert result["sold_out_p50_ms"] is not None
    page = (tmp_path / "queue.html").read_text()
    for chart in ("timeline", "streams", "latency"):
        assert f'data-chart="{chart}"' in page, chart
