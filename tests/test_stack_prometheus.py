"""Prometheus config and alert rules: promtool accepts them and the unit tests pass.

Runs the real promtool (Debian's prometheus package, 2.42): ``check config``,
``check rules`` and ``test rules``. In CI a missing promtool fails the tests.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_stack_promql import ALERTS, ROOT, alert_rules, require_binary

PROMETHEUS_DIR = ROOT / "prometheus"
CONFIGS = ("prometheus.yml", "prometheus-local.yml")
ALERT_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
DOCS = ROOT / "docs" / "observability.md"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_binary("promtool")
    return subprocess.run(
        [promtool, *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("name", CONFIGS)
def test_promtool_check_config(name: str) -> None:
    result = _promtool("check", "config", name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_test_rules() -> None:
    result = _promtool("test", "rules", ALERT_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_catches_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests can fail: flip one expectation and promtool must say FAILED."""
    data: dict[str, Any] = yaml.safe_load(ALERT_TESTS.read_text())
    data["rule_files"] = [str(ALERTS)]
    case = data["tests"][0]["alert_rule_test"][1]
    assert case["exp_alerts"], "the second case of the first test is expected to fire"
    case["exp_alerts"] = []
    broken = tmp_path / "broken_test.yml"
    broken.write_text(yaml.safe_dump(data))
    result = _promtool("test", "rules", str(broken))
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    data = yaml.safe_load(ALERT_TESTS.read_text())
    firing: set[str] = set()
    silent: set[str] = set()
    for test in data["tests"]:
        for case in test["alert_rule_test"]:
            (firing if case["exp_alerts"] else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names == firing, f"alerts without a firing case: {names - firing}"
    assert names <= silent, f"alerts without a silent case: {names - silent}"


def test_alerts_are_documented_and_labelled() -> None:
    docs = DOCS.read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in docs.splitlines()
        if line.startswith("#")
    }
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        anchor = annotations["runbook"].split("#", 1)[1]
        assert annotations["runbook"] == f"docs/observability.md#{anchor}"
        assert anchor == rule["alert"].lower()
        assert anchor in anchors, f"{rule['alert']}: no section '{rule['alert']}' in {DOCS}"


def test_alerts_cover_the_brief() -> None:
    """Deny rate per hook, errors and fail-open, latency p95, exporter drops and failures."""
    exprs = {rule["alert"]: str(rule["expr"]) for rule in alert_rules()}
    fors = {rule["alert"]: str(rule.get("for", "0s")) for rule in alert_rules()}
    assert 'decision="deny"' in exprs["AktoGuardrailDenyRateHigh"]
    assert "by (job, hook)" in exprs["AktoGuardrailDenyRateHigh"]
    assert fors["AktoGuardrailDenyRateHigh"] == "5m"
    assert 'decision="error"' in exprs["AktoGuardrailErrors"]
    assert 'fail_open="true"' in exprs["AktoGuardrailFailOpen"]
    assert "histogram_quantile(0.95" in exprs["AktoGuardrailLatencyHigh"]
    assert 'outcome="dropped"' in exprs["AktoExporterDroppingRecords"]
    assert 'outcome="failed"' in exprs["AktoExporterFailing"]


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_load_the_alerts_and_scrape_the_collector_and_the_demo(name: str) -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / name).read_text())
    assert config["rule_files"] == ["alerts.yml"]
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert any(t.endswith(":8889") for t in targets["otel-collector"])
    assert any(t.endswith(":9464") for t in targets["akto-demo"])
