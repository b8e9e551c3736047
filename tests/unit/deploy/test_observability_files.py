"""Prometheus, its alert rules and the Grafana dashboard of a drop (deploy/prometheus,
deploy/grafana), checked offline: they parse, compose runs and provisions them, every service
and worker is scraped (compose and Kubernetes), the gateway too, and every ``snapshoe_*`` metric
they use is one the code defines (the gateway's ``haproxy_*`` come from HAProxy's exporter).
tests/e2e/test_metric_names.py checks every name against a running platform, the gateway's
included; tests/unit/deploy/test_prometheus_rules.py runs promtool on these files."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import snapshoe

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "drop.json"
SERVICES = {"users": 8101, "products": 8102, "orders": 8103, "payments": 8104, "web": 8107}
WORKERS = ("users", "products", "orders", "payments")
WORKER_METRICS_PORT = 9100
# The gateway's HAProxy exporter, on its internal stats frontend (never the public 8000).
GATEWAY_METRICS_PORT = 8404
METRIC = re.compile(r"\b(?:snapshoe|haproxy)_[a-z0-9_]+")
SUFFIXES = ("_bucket", "_count", "_sum")


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text())
    assert isinstance(doc, dict)
    return doc


def used_metrics() -> set[str]:
    """Every ``snapshoe_*`` and ``haproxy_*`` name in an alert expression or a dashboard query
    (a histogram's ``_bucket`` is its family's)."""
    exprs = [rule["expr"] for rule in alert_rules()]
    exprs += [t["expr"] for panel in dashboard()["panels"] for t in panel["targets"]]
    names = set()
    for expr in exprs:
        for name in METRIC.findall(expr):
            for suffix in SUFFIXES:
                name = name.removesuffix(suffix)
            names.add(name)
    return names


def defined_metrics() -> set[str]:
    """The metric names the code registers (every module of src imported)."""
    for module in pkgutil.walk_packages(snapshoe.__path__, "snapshoe."):
        if ".migrations" in module.name or module.name.endswith("__main__"):
            continue
        importlib.import_module(module.name)
    return set(REGISTRY._names_to_collectors)


def test_alert_rules_parse_and_cover_what_operators_asked_for() -> None:
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert names >= {
        "DeadLetters",
        "OutboxStuck",
        "HighServerErrorRate",
        "GateDrift",
        "PaymentGatewayErrors",
        "BrokerDown",
    }
    for rule in rules:
        assert rule["expr"].strip(), rule
        assert rule["annotations"]["summary"], rule
        assert rule["labels"]["severity"] in ("warning", "critical"), rule
    outbox = next(r for r in rules if r["alert"] == "OutboxStuck")
    assert "> 30" in outbox["expr"]


def test_the_dashboard_parses_and_shows_a_drop() -> None:
    doc = dashboard()
    assert doc["uid"] == "snapshoe-drop"
    titles = " | ".join(p["title"] for p in doc["panels"]).lower()
    for needed in ("attempts", "refusals", "orders by status", "payments", "pg latency p99"):
        assert needed in titles, needed
    for needed in ("tickets", "outbox", "dlq", "gateway requests", "gateway 5xx"):
        assert needed in titles, needed
    for panel in doc["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "prometheus"


def test_every_metric_the_alerts_and_dashboard_use_is_defined() -> None:
    used = {name for name in used_metrics() if name.startswith("snapshoe_")}
    assert len(used) > 10, used
    missing = used - defined_metrics()
    assert not missing, f"not defined in src/: {sorted(missing)}"


def test_prometheus_scrapes_every_service_and_worker_and_loads_the_rules() -> None:
    doc = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    # Relative to prometheus.yml: /etc/prometheus/alerts.yml in compose, promtool finds it here.
    assert "alerts.yml" in doc["rule_files"]
    targets = {}
    for job in doc["scrape_configs"]:
        (sd,) = job["dns_sd_configs"]
        (name,) = sd["names"]
        targets[job["job_name"]] = (name, sd["port"])
    for service, port in SERVICES.items():
        assert targets[service] == (service, port), service
    for worker in WORKERS:
        name = f"{worker}-worker"
        assert targets[name] == (name, WORKER_METRICS_PORT), name
    assert targets["gateway"] == ("gateway", GATEWAY_METRICS_PORT)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "compose.yml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_compose_runs_prometheus_and_a_provisioned_grafana(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    for svc in (prometheus, grafana):
        for port in svc["ports"]:
            assert port.startswith("127.0.0.1:"), port
    # Every compose service Prometheus scrapes exists, and workers serve their metrics.
    for job in yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]:
        assert job["dns_sd_configs"][0]["names"][0] in services, job["job_name"]
    assert compose["x-snapshoe-env"]["SNAPSHOE_WORKER_METRICS_PORT"] == str(WORKER_METRICS_PORT)
    # Grafana's provisioning points at the Prometheus service and the mounted dashboards.
    source = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    assert source["datasources"][0]["uid"] == "prometheus"
    boards = yaml.safe_load((GRAFANA / "provisioning/dashboards/snapshoe.yml").read_text())
    assert boards["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_kubernetes_pods_carry_the_scrape_annotations() -> None:
    expected = {
        **SERVICES,
        **{f"{w}-worker": WORKER_METRICS_PORT for w in WORKERS},
        "gateway": GATEWAY_METRICS_PORT,
    }
    seen = {}
    for path in (DEPLOY / "k8s" / "base").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "Deployment":
                continue
            name = doc["metadata"]["name"]
            notes = doc["spec"]["template"]["metadata"].get("annotations", {})
            if name in expected:
                assert notes.get("prometheus.io/scrape") == "true", name
                assert notes.get("prometheus.io/path") == "/metrics", name
                seen[name] = int(notes["prometheus.io/port"])
    assert seen == expected
    config = yaml.safe_load((DEPLOY / "k8s" / "base" / "kustomization.yaml").read_text())
    literals = config["configMapGenerator"][0]["literals"]
    assert f"SNAPSHOE_WORKER_METRICS_PORT={WORKER_METRICS_PORT}" in literals
