"""Tracing's deployment files, checked offline: compose runs an OpenTelemetry collector fed by
every SnapShoe container and a trace viewer the collector exports to; the collector's config is
a complete pipeline; Kubernetes has the switch, off by default (docs/tracing.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "compose.yml").read_text())
    return doc


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "deploy/otel/collector.yaml").read_text())
    return doc


def test_every_snapshoe_container_exports_to_the_collector(compose: dict[str, Any]) -> None:
    env = compose["x-snapshoe-env"]
    assert env["SNAPSHOE_OTLP_ENDPOINT"].endswith("http://otel-collector:4318}")
    services = compose["services"]
    collector = services["otel-collector"]
    mounted = [v.split(":")[0] for v in collector["volumes"]]
    assert "./deploy/otel/collector.yaml" in mounted
    assert "jaeger" in collector["depends_on"]
    # Every long-running SnapShoe container shares the env (the anchor), so all of them trace.
    snapshoe = [
        n
        for n, s in services.items()
        if str(s.get("command", "")).startswith("['snapshoe', ") and "environment" in s
    ]
    assert {"users", "orders", "payments", "orders-worker", "web"} <= set(snapshoe)
    for name in snapshoe:
        assert (
            services[name]["environment"]["SNAPSHOE_OTLP_ENDPOINT"]
            == (env["SNAPSHOE_OTLP_ENDPOINT"])
        ), name


def test_the_viewer_takes_otlp_and_is_on_loopback(compose: dict[str, Any]) -> None:
    jaeger = compose["services"]["jaeger"]
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert jaeger["ports"] == ["127.0.0.1:16686:16686"]


def test_the_collector_pipeline_is_complete(collector: dict[str, Any]) -> None:
    pipeline = collector["service"]["pipelines"]["traces"]
    for part in ("receivers", "processors", "exporters"):
        for name in pipeline[part]:
            assert name in collector[part], (part, name)
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert pipeline["processors"][0] == "memory_limiter"  # first, or it protects nothing
    assert collector["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"


def test_kubernetes_has_the_switch_off_by_default() -> None:
    text = (ROOT / "deploy/k8s/base/kustomization.yaml").read_text()
    assert "- SNAPSHOE_OTLP_ENDPOINT=\n" in text
    assert "- SNAPSHOE_TRACE_SAMPLE_RATIO=" in text
