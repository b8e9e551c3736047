"""A short `snapshoe bench soak` against the real platform: a minute of browse, cart, buy, pay
and cancel at a low steady rate through the gateway, every platform process sampled from
/proc. At this size the flatness targets are noise (the 30-minute run is in
docs/reliability.md); what must hold at any size: every process sampled throughout, every
request kind answered as expected, 0 5xx, and the report with its charts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.support.platform import Platform

from snapshoe.bench.soak import SoakConfig, run_soak, summary_lines
from snapshoe.bench.soak_result import KINDS

# The services and workers the test platform runs (SNAPSHOE_HTTP_WORKERS=1: one process
# each), its gateway and the supervisor.
EXPECTED_PROCESSES = {
    "up",
    "gateway",
    "users",
    "users-worker",
    "products",
    "products-worker",
    "products_streams",
    "orders",
    "orders-worker",
    "payments",
    "payments-worker",
    "web",
    "mail_sink",
    "sandbox_pg",
}


@pytest.mark.slow
async def test_bench_soak_small(platform: Platform, tmp_path: Path) -> None:
    cfg = SoakConfig(minutes=1, rate=20, sample_seconds=2, seed=18, out=tmp_path / "soak.json")
    result = await run_soak(platform.settings, cfg)
    print("\n".join(summary_lines(result)))

    assert result["check_failures"] == [], result["check_failures"]
    # Every platform process, sampled from the start to the end.
    assert set(result["processes"]) >= EXPECTED_PROCESSES, result["processes"]
    assert result["restarts"] == {}
    for label in result["processes"]:
        assert result["samples_per_process"][label] >= 20, label  # 60 s / 2 s, on a busy machine
    for sample in result["samples"]:
        for label, figures in sample["processes"].items():
            assert figures["rss_mb"] > 0, label
            assert figures["open_files"] > 0, label
    last = result["samples"][-1]["processes"]
    # The services hold their pools: orders and products talk to MariaDB and Redis, the
    # workers to RabbitMQ.
    for label in ("orders", "products", "payments"):
        assert last[label]["mariadb"] > 0, (label, last[label])
    assert last["products"]["redis"] > 0
    for label in ("orders-worker", "payments-worker", "users-worker"):
        assert last[label]["rabbitmq"] > 0, (label, last[label])
    # Every kind answered as expected, 0 5xx, nothing lost.
    by_kind = result["requests"]["by_kind"]
    for kind in KINDS:
        assert by_kind[kind]["answered"] > 0, kind
        assert by_kind[kind]["p99_ms"] is not None, kind
    assert result["server_errors"] == 0
    assert result["no_answer"] == 0
    assert result["requests"]["unexpected"] == {}
    assert result["outcomes"]["paid"] > 0
    assert result["outcomes"]["cancelled_unpaid"] > 0
    assert result["outcomes"]["cancelled_paid"] > 0
    assert result["outcomes"]["declined"] > 0
    # The offered rate was held (20/s, less the tail of the minute's last visits).
    assert result["requests"]["answered_per_s"] > 0.8 * 20
    # Latency per bin for every kind, and the verdict of each rule was reached.
    for kind in KINDS:
        assert len(result["latency"][kind]) >= 5, kind
    assert result["targets"]["no_5xx"] is True
    for key in ("memory_flat", "open_files_flat", "connections_flat", "latency_flat"):
        assert result["targets"][key] in (True, False), key
    stored = json.loads(cfg.out.read_text())  # type: ignore[union-attr]
    assert stored["requests"]["total"] == result["requests"]["total"]
    page = Path(result["report"]).read_text()
    for chart in (
        "rss",
        "open-files",
        "connections-mariadb",
        "connections-redis",
        "connections-rabbitmq",
        "latency",
        "rps",
    ):
        assert f'data-chart="{chart}"' in page, chart
