"""Prometheus config, alert and recording rules: promtool accepts them and the unit tests pass.

Runs the real promtool (Debian's prometheus package, 2.42): ``check config``,
``check rules`` and ``test rules``. In CI a missing promtool fails the tests.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.servers import free_port
from tests.test_docs import base_env, commands, doc_block, run_commands
from tests.test_stack_promql import ALERTS, ROOT, alert_rules, check_parses, require_binary

PROMETHEUS_DIR = ROOT / "prometheus"
CONFIGS = ("prometheus.yml", "prometheus-local.yml")
ALERT_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
RECORDING = PROMETHEUS_DIR / "recording-rules.yml"
RECORDING_TESTS = PROMETHEUS_DIR / "recording-rules_test.yml"
DENY_SHARE = "job_service_name_akto_hook:akto_guardrail_spans_denied:ratio_rate5m"
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


def recording_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RECORDING.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


@pytest.mark.parametrize("path", [ALERTS, RECORDING], ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    rules = yaml.safe_load(path.read_text())["groups"]
    count = sum(len(group["rules"]) for group in rules)
    assert count
    result = _promtool("check", "rules", path.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {count} rules found" in result.stdout


@pytest.mark.parametrize("path", [ALERT_TESTS, RECORDING_TESTS], ids=lambda p: p.name)
def test_promtool_test_rules(path: Path) -> None:
    result = _promtool("test", "rules", path.name)
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


def test_recording_rule_tests_can_fail(tmp_path: Path) -> None:
    """Drop the zero fill of the deny share and promtool must say FAILED."""
    zero_fill = "or\n              0 * job_service_name_akto_hook:akto_guardrail_spans:rate5m\n"
    text = RECORDING.read_text()
    assert zero_fill in text
    (tmp_path / RECORDING.name).write_text(text.replace(zero_fill, ""))
    (tmp_path / RECORDING_TESTS.name).write_text(RECORDING_TESTS.read_text())
    result = _promtool("test", "rules", str(tmp_path / RECORDING_TESTS.name))
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


#: Recording rules that rebuild a counter the library exports, for services whose own
#: counter does not reach Prometheus (only traces to the collector).
REBUILT_COUNTERS = frozenset({"akto_guardrail_decisions_total"})


def test_every_recording_rule_is_tested_and_named_by_convention() -> None:
    data = yaml.safe_load(RECORDING_TESTS.read_text())
    tested = {
        case["expr"].split("{", 1)[0]
        for test in data["tests"]
        for case in test["promql_expr_test"]
        if case["exp_samples"]
    }
    rules = recording_rules()
    assert rules and tested
    for rule in rules:
        assert rule["record"] in tested, f"{rule['record']}: no promql_expr_test"
        if rule["record"] in REBUILT_COUNTERS:
            continue  # keeps the app's own name: the alerts read either
        level, metric, operations = rule["record"].split(":")  # level:metric:operations
        assert level and metric and operations, rule["record"]


def test_documented_queries_on_recorded_series_parse(tmp_path: Path) -> None:
    queries = [line for line in doc_block("recording-rules-queries").code.splitlines() if line]
    assert queries
    check_parses([(f"doc query {i}", q) for i, q in enumerate(queries)], tmp_path)
    recorded = {rule["record"] for rule in recording_rules()}
    for query in queries:
        names = set(re.findall(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", query))
        assert names and names <= recorded, query


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
    assert "akto_guardrail_unjudged_total" in exprs["AktoGuardrailUnjudged"]
    assert fors["AktoGuardrailUnjudged"] == "0s"  # any unjudged call, at once
    assert "histogram_quantile(0.95" in exprs["AktoGuardrailLatencyHigh"]
    assert 'outcome="dropped"' in exprs["AktoExporterDroppingRecords"]
    assert 'outcome="failed"' in exprs["AktoExporterFailing"]
    assert "akto_guardrail_breaches_total" in exprs["AktoGuardrailBreach"]
    assert "akto_guardrail_unarmed_total" in exprs["AktoGuardrailNotArmed"]
    assert fors["AktoGuardrailBreach"] == fors["AktoGuardrailNotArmed"] == "0s"


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_load_the_alerts_and_scrape_the_collector_and_the_demo(name: str) -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / name).read_text())
    # The local recipe loads the generated quick copy of alerts.yml (see below).
    assert config["rule_files"] == [
        "alerts-local.yml" if name == "prometheus-local.yml" else "alerts.yml",
        RECORDING.name,
    ]
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert any(t.endswith(":8889") for t in targets["otel-collector"])
    assert any(t.endswith(":9464") for t in targets["akto-demo"])


# ------------------------------------------------------------ the local recipe


LOCAL_ALERTS = PROMETHEUS_DIR / "alerts-local.yml"
LOCAL_FOR = "30s"
LOCAL_WINDOW = "1m"
_LOCAL_HEADER = """\
# GENERATED from alerts.yml for the local recipe (prometheus-local.yml,
# docs/observability.md "Local stack mode"): the same rules, expressions and
# thresholds, with every range window 1m and every `for:` 30s, so that a few
# minutes of `akto-otel demo` traffic make them fire. Do not edit: change alerts.yml
# and run `python -m tests.test_stack_prometheus` to regenerate.
"""


def local_alerts(text: str) -> str:
    """alerts.yml as the local recipe loads it (1m windows, ``for: 30s``)."""
    text = re.sub(r"(?m)^(\s+for:\s*)\d+[smh]\s*$", rf"\g<1>{LOCAL_FOR}", text)
    return _LOCAL_HEADER + re.sub(r"\[\d+[smh]\]", f"[{LOCAL_WINDOW}]", text)


def test_local_alerts_are_generated_from_alerts_yml() -> None:
    assert LOCAL_ALERTS.read_text() == local_alerts(ALERTS.read_text()), (
        "prometheus/alerts-local.yml is stale: python -m tests.test_stack_prometheus"
    )
    production = {r["alert"]: r for r in alert_rules()}
    local = {
        r["alert"]: r
        for group in yaml.safe_load(LOCAL_ALERTS.read_text())["groups"]
        for r in group["rules"]
    }
    assert production and set(local) == set(production)
    for name, rule in local.items():
        assert rule["for"] == LOCAL_FOR
        same = re.sub(r"\[\d+[smh]\]", "[W]", production[name]["expr"])
        assert re.sub(r"\[\d+[smh]\]", "[W]", rule["expr"]) == same, name


def test_promtool_check_local_rules() -> None:
    result = _promtool("check", "rules", LOCAL_ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def _alerts(base: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{base}/api/v1/alerts", timeout=5) as response:
        data = json.loads(response.read())
    alerts: list[dict[str, Any]] = data["data"]["alerts"]
    return alerts


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        data = json.loads(response.read())
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


@pytest.mark.timeout(420)
def test_local_recipe_fires_deny_rate_high_on_real_prometheus(tmp_path: Path) -> None:
    """Runs the documented commands (own ports and data folder) until the alert fires."""
    require_binary("prometheus")
    demo_port, prom_port = str(free_port()), str(free_port())
    config_dir = tmp_path / "prometheus"
    config_dir.mkdir()
    config = (PROMETHEUS_DIR / "prometheus-local.yml").read_text()
    assert "127.0.0.1:9464" in config
    (config_dir / "prometheus-local.yml").write_text(
        config.replace("127.0.0.1:9464", f"127.0.0.1:{demo_port}")
    )
    (config_dir / LOCAL_ALERTS.name).write_text(LOCAL_ALERTS.read_text())
    (config_dir / RECORDING.name).write_text(RECORDING.read_text())
    lines = commands(
        doc_block("local-recipe"),
        {"9464": demo_port, "9091": prom_port, "/tmp/akto-prom": str(tmp_path / "data")},
    )
    base = f"http://127.0.0.1:{prom_port}"
    with run_commands(lines, base_env(), tmp_path) as background:
        assert len(background) == 2, lines  # the demo and Prometheus
        deadline = time.monotonic() + 360
        firing: set[str] = set()
        # The recording rules work in the local mode too (the demo counts its spans).
        recorded: list[dict[str, Any]] = []
        while "AktoGuardrailDenyRateHigh" not in firing or not recorded:
            assert all(p.poll() is None for p in background), "a recipe process exited"
            assert time.monotonic() < deadline, f"not in time; firing: {firing}, {recorded}"
            time.sleep(5)
            try:
                firing = {
                    a["labels"]["alertname"]
                    for a in _alerts(base)
                    if a["state"] == "firing" and a["labels"].get("hook") == "PreToolUse"
                }
                recorded = _query(base, f'{DENY_SHARE}{{akto_hook="PreToolUse"}}')
            except OSError:
                continue
        # One series per (job, service): each says every PreToolUse span was a deny.
        assert recorded and {float(r["value"][1]) for r in recorded} == {1.0}, recorded
        # The URLs the doc gives for Debian's Prometheus 2.42 work on it.
        for path in ("/classic/alerts", "/classic/graph", "/api/v1/alerts"):
            with urllib.request.urlopen(base + path, timeout=5) as response:
                assert response.status == 200, path
    text = DOCS.read_text()
    for path in ("9091/classic/alerts", "9091/classic/graph", "9091/api/v1/alerts"):
        assert path in text, path


if __name__ == "__main__":
    LOCAL_ALERTS.write_text(local_alerts(ALERTS.read_text()))
    print(f"wrote {LOCAL_ALERTS}")
