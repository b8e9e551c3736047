"""``bench soak``'s verdict with synthetic series: flat, growing and noisy memory and counts,
latency that stays or climbs, and the per-bin percentiles."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from snapshoe.bench import soak_result as sr


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert sr.percentile(values, 0.5) == 50.0
    assert sr.percentile(values, 0.99) == 99.0
    assert sr.percentile(values, 1.0) == 100.0
    assert sr.percentile([7.0], 0.99) == 7.0
    assert sr.percentile([], 0.5) is None


def test_latency_bins_per_kind_and_bin() -> None:
    records = []
    for t in range(120):  # two minutes, one catalog request a second
        records.append((t + 0.5, "catalog", 10.0 if t < 60 else 30.0, 200))
    records.append((61.0, "catalog", 0.0, 0))  # no answer: counted, not timed
    records.append((62.0, "catalog", 900.0, 503))
    records.append((5.0, "pay", 40.0, 402))
    bins = sr.latency_bins(records, 60)
    first, second = bins["catalog"]
    assert (first["bin"], first["start_s"], first["count"]) == (0, 0, 60)
    assert (first["p50_ms"], first["p99_ms"], first["max_ms"]) == (10.0, 10.0, 10.0)
    assert second["count"] == 62
    assert second["no_answer"] == 1
    assert second["server_errors"] == 1
    assert second["p50_ms"] == 30.0
    assert second["max_ms"] == 900.0  # a 5xx is still an answer with its time
    assert bins["pay"] == [
        {
            "bin": 0,
            "start_s": 0,
            "count": 1,
            "p50_ms": 40.0,
            "p99_ms": 40.0,
            "max_ms": 40.0,
            "server_errors": 0,
            "no_answer": 0,
        }
    ]


def test_latency_bins_p99_sees_the_tail() -> None:
    records = [(1.0, "order", 5.0, 201)] * 990 + [(2.0, "order", 500.0, 201)] * 10
    (row,) = sr.latency_bins(records, 60)["order"]
    assert row["p50_ms"] == 5.0
    assert row["p99_ms"] == 5.0  # the 990th of 1,000 is still fast
    records += [(3.0, "order", 500.0, 201)] * 2
    (row,) = sr.latency_bins(records, 60)["order"]
    assert row["p99_ms"] == 500.0


def test_bins_are_minutes_from_five_minutes_on() -> None:
    assert sr.bin_seconds_for(1800) == 60
    assert sr.bin_seconds_for(300) == 60
    assert sr.bin_seconds_for(60) == 10
    assert sr.bin_seconds_for(12) == 5


def test_per_second_counts_answers_only() -> None:
    records = [(0.1, "catalog", 1.0, 200), (0.9, "cart_read", 1.0, 200), (1.2, "pay", 1.0, 0)]
    assert sr.per_second(records) == {"0": 2}


def test_slope() -> None:
    assert sr.slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    assert sr.slope([(0, 4), (1, 4), (2, 4)]) == 0.0
    assert sr.slope([(1, 1)]) is None
    assert sr.slope([(1, 1), (1, 2)]) is None


def _samples(f: Any, seconds: int = 1800, every: int = 5) -> list[tuple[float, float]]:
    return [(float(t), f(t)) for t in range(360, seconds + 1, every)]


def test_memory_flat_series_passes() -> None:
    v = sr.memory_flat(_samples(lambda t: 120.0), 1800)
    assert v["flat"] is True
    assert v["growth_over_run"] == 0.0
    assert v["allowed"] == 6.0  # 5 % of 120 MB beats the 5 MB floor


def test_memory_noisy_but_flat_series_passes() -> None:
    rng = random.Random(1)
    v = sr.memory_flat(_samples(lambda t: 120.0 + rng.uniform(-4, 4)), 1800)
    assert v["flat"] is True, v


def test_memory_step_once_then_flat_passes_if_small() -> None:
    # An allocator arena taken once, early after the warm-up, then kept: 3 MB.
    v = sr.memory_flat(_samples(lambda t: 120.0 if t < 500 else 123.0), 1800)
    assert v["flat"] is True, v


def test_memory_growing_series_fails() -> None:
    # A slow leak: 1 MB a minute is 30 MB over the run, far above 6 MB.
    v = sr.memory_flat(_samples(lambda t: 120.0 + t / 60), 1800)
    assert v["flat"] is False
    assert v["slope_per_min"] == pytest.approx(1.0)
    assert v["growth_over_run"] == pytest.approx(30.0)


def test_memory_growing_under_noise_still_fails() -> None:
    rng = random.Random(2)
    v = sr.memory_flat(_samples(lambda t: 120.0 + t / 150 + rng.uniform(-4, 4)), 1800)
    assert v["flat"] is False, v  # 12 MB over the run, through ±4 MB of noise


def test_memory_small_process_gets_the_floor() -> None:
    # HAProxy at 16 MB: 5 % would be 0.8 MB, the floor allows 5.
    assert sr.memory_flat(_samples(lambda t: 16.0 + t / 720), 1800)["flat"] is True
    assert sr.memory_flat(_samples(lambda t: 16.0 + t / 200), 1800)["flat"] is False


def test_memory_too_few_samples_is_not_measured() -> None:
    assert sr.memory_flat([(1.0, 100.0), (2.0, 101.0)], 60)["flat"] is None


def test_count_flat_noisy_and_growing() -> None:
    assert sr.count_flat([10, 10, 10, 10])["flat"] is True
    assert sr.count_flat([10, 12, 9, 11, 10])["flat"] is True  # pool noise, spread 3 ≤ 4
    grow = sr.count_flat(list(range(10, 30)))
    assert grow["flat"] is False
    assert (grow["min"], grow["max"], grow["spread"]) == (10, 29, 19)
    # A big pool may move by a quarter of its size.
    assert sr.count_flat([100, 110, 95, 120])["flat"] is True
    assert sr.count_flat([100, 140, 95])["flat"] is False
    assert sr.count_flat([1, 2])["flat"] is None


def _bins(p99s: Sequence[float | None], width: float = 60) -> list[dict[str, Any]]:
    return [{"start_s": k * width, "p99_ms": v} for k, v in enumerate(p99s)]


def test_latency_flat_compares_first_after_warmup_with_last() -> None:
    # Warm-up bins (the first 6 of 30) may be slow: they are not judged.
    flat = sr.latency_flat(_bins([400.0] * 6 + [40.0] * 23 + [70.0]), warmup_s=360)
    assert flat["flat"] is True
    assert (flat["first_p99_ms"], flat["last_p99_ms"], flat["allowed_ms"]) == (40.0, 70.0, 80.0)
    grown = sr.latency_flat(_bins([40.0] * 29 + [90.0]), warmup_s=360)
    assert grown["flat"] is False


def test_latency_slack_for_fast_requests() -> None:
    # 4 ms to 20 ms is 5x, but within the 25 ms slack: noise at that scale.
    assert sr.latency_flat(_bins([4.0] * 10 + [20.0]), 120)["flat"] is True
    assert sr.latency_flat(_bins([4.0] * 10 + [40.0]), 120)["flat"] is False


def test_latency_needs_two_timed_bins() -> None:
    assert sr.latency_flat(_bins([10.0, 10.0, None]), 60)["flat"] is None


def _result(rss: Any, conns: Any, p99s: list[float], **extra: Any) -> dict[str, Any]:
    samples = [
        {
            "t": float(t),
            "processes": {
                "orders": {
                    "rss_mb": rss(t),
                    "open_files": 30,
                    "mariadb": conns(t),
                    "redis": 4,
                    "rabbitmq": 0,
                },
            },
        }
        for t in range(0, 601, 5)
    ]
    latency = {kind: _bins(p99s) for kind in sr.KINDS}
    answered = {kind: {"answered": 10} for kind in sr.KINDS}
    return {
        "duration_s": 600,
        "warmup_s": 120,
        "samples": samples,
        "latency": latency,
        "processes": ["orders"],
        "samples_per_process": {"orders": len(samples)},
        "restarts": {},
        "server_errors": 0,
        "no_answer": 0,
        "requests": {
            "by_kind": answered,
            "server_errors_by_kind": {},
            "errors": {},
            "unexpected": {},
        },
        **extra,
    }


def test_evaluate_a_flat_run_is_ok() -> None:
    r = _result(lambda t: 110.0, lambda t: 8, [30.0] * 10)
    sr.evaluate(r)
    assert r["failures"] == []
    assert r["ok"] is True
    assert r["targets"] == {
        "memory_flat": True,
        "open_files_flat": True,
        "connections_flat": True,
        "latency_flat": True,
        "no_5xx": True,
    }


def test_evaluate_names_each_miss() -> None:
    r = _result(lambda t: 110.0 + t / 10, lambda t: 8 + t // 30, [30.0] * 9 + [200.0])
    r["server_errors"] = 2
    r["requests"]["server_errors_by_kind"] = {"pay": 2}
    sr.evaluate(r)
    assert r["ok"] is False
    assert r["targets"]["memory_flat"] is False
    assert r["targets"]["connections_flat"] is False
    assert r["targets"]["open_files_flat"] is True
    assert r["targets"]["latency_flat"] is False
    assert r["targets"]["no_5xx"] is False
    text = "\n".join(r["failures"])
    assert "memory of orders grows" in text
    assert "mariadb connections of orders move" in text
    assert "latency of catalog grows" in text
    assert r["check_failures"] == ["5xx answers: 2 ({'pay': 2})"]


def test_evaluate_a_kind_never_answered_fails() -> None:
    r = _result(lambda t: 110.0, lambda t: 8, [30.0] * 10)
    r["requests"]["by_kind"]["cancel"] = {"answered": 0}
    sr.evaluate(r)
    assert r["check_failures"] == ["request kinds never answered: cancel"]


def test_evaluate_warmup_growth_is_not_judged() -> None:
    # Pools fill and caches warm in the first 20 %: then flat.
    r = _result(lambda t: min(110.0 + t, 200.0), lambda t: min(2 + t // 10, 12), [30.0] * 10)
    sr.evaluate(r)
    assert r["ok"] is True, r["failures"]


def test_open_files_follow_the_load_but_must_not_climb() -> None:
    rng = random.Random(3)
    # A gateway's fds: client and upstream sockets, up and down with the load's concurrency.
    noisy = sr.open_files_flat(_samples(lambda t: 30 + rng.randint(-6, 6)), 1800)
    assert noisy["flat"] is True, noisy
    # A leak of one fd a minute: 30 over the run, beyond max(25 % of ~45, 8).
    leak = sr.open_files_flat(_samples(lambda t: 30 + t // 60), 1800)
    assert leak["flat"] is False, leak
    assert leak["growth_over_run"] == pytest.approx(30, abs=1)


def test_the_mail_sinks_inbox_is_not_a_leak() -> None:
    # The dev mail sink keeps the last 10,000 mails: its memory is sampled, not judged.
    r = _result(lambda t: 110.0, lambda t: 8, [30.0] * 10)
    for s in r["samples"]:
        s["processes"]["mail_sink"] = {**s["processes"]["orders"], "rss_mb": 100 + s["t"] / 10}
    sr.evaluate(r)
    assert r["flatness"]["memory"]["mail_sink"]["flat"] is False
    assert "excused" in r["flatness"]["memory"]["mail_sink"]
    assert r["targets"]["memory_flat"] is True
    assert r["ok"] is True, r["failures"]
