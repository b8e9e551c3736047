"""`snapshoe bench drop --compare` refuses, before its setup, a platform without the benchmark
baselines (SNAPSHOE_BENCH_BASELINES off: no floor route, no db_lock products)."""

from snapshoe.bench.drop_model import baselines_problem

URL = "http://127.0.0.1:8000"


def test_floor_answering_means_baselines_on() -> None:
    assert baselines_problem(URL, 200) is None


def test_floor_missing_refuses_naming_the_setting() -> None:
    problem = baselines_problem(URL, 404)
    assert problem is not None
    assert "SNAPSHOE_BENCH_BASELINES=true" in problem
    assert "404" in problem
    assert URL in problem


def test_any_other_answer_refuses_too() -> None:
    for status in (401, 422, 503, 0):
        assert baselines_problem(URL, status) is not None
