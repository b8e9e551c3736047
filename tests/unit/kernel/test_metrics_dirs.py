"""kernel.metrics: where a service's processes write their samples, and when the directory is
emptied (tests/integration/kernel/test_operability.py runs two real processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapshoe.kernel import metrics
from snapshoe.kernel.settings import Settings


@pytest.fixture(autouse=True)
def _restores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare_serve sets PROMETHEUS_MULTIPROC_DIR in os.environ, as serve must for its
    workers; here it must not outlive the test (every later in-process app would render its
    /metrics from that directory). Recorded as absent, so it is removed again at the end."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")


def settings(tmp_path: Path) -> Settings:
    return Settings(metrics_dir=str(tmp_path), namespace="snapshoe_unit")


def test_up_gives_a_service_and_its_worker_one_emptied_directory(tmp_path: Path) -> None:
    s = settings(tmp_path)
    stale = metrics.service_dir(s, "orders") / "counter_123.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    env = metrics.multiprocess_env(s, "orders")
    assert env == {
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "snapshoe-metrics-snapshoe_unit" / "orders")
    }
    assert Path(env["PROMETHEUS_MULTIPROC_DIR"]).is_dir()
    assert not stale.exists()


def test_serve_sets_a_directory_only_for_several_processes_and_none_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings(tmp_path)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics.prepare_serve(s, "users", 1)
    assert metrics.multiprocess_dir() is None
    metrics.prepare_serve(s, "users", 2)
    assert metrics.multiprocess_dir() == str(metrics.service_dir(s, "users"))
    # Given by up: kept as it is (up emptied it before the worker started writing there).
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "given"))
    metrics.prepare_serve(s, "users", 4)
    assert metrics.multiprocess_dir() == str(tmp_path / "given")


def test_render_serves_the_default_registry_without_a_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert metrics.registry() is None
    import snapshoe.kernel.http  # noqa: F401  (registers the HTTP metrics)

    assert b"# TYPE snapshoe_http_requests_total counter" in metrics.render()
