"""The real Prometheus tools on deploy/prometheus (issue 17): ``promtool check rules`` and
``check config`` accept the files as they are, and ``promtool test rules`` runs
deploy/prometheus/tests.yml, which feeds every alert synthetic series: each fires for its
condition after its ``for:``, and not without it. ``promtool`` comes from Debian's
``prometheus`` package (scripts/ensure-services installs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed (scripts/ensure-services installs prometheus)"
    return subprocess.run(
        [binary, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_accepts_the_alert_rules() -> None:
    r = promtool("check", "rules", "alerts.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_accepts_the_scrape_config_and_its_rule_files() -> None:
    # check config also loads and checks the rule files the config names.
    r = promtool("check", "config", "prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout, r.stdout


def test_every_alert_fires_for_its_condition_and_not_without_it() -> None:
    r = promtool("test", "rules", "tests.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_rule_tests_cover_every_alert_both_ways() -> None:
    """Every alert has a case where it fires and an earlier or separate one where it does not
    (a new alert without tests fails here)."""
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((PROMETHEUS / "tests.yml").read_text())
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fired == alerts, f"alerts never seen firing in tests.yml: {sorted(alerts - fired)}"
    assert quiet == alerts, f"alerts never checked quiet in tests.yml: {sorted(alerts - quiet)}"
