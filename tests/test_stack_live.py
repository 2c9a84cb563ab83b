"""LIVE: a real Prometheus scrapes a real demo run; the dashboards and alerts work on it.

What runs:

- ``prometheus`` (Debian's 2.42) on 127.0.0.1, a free port, a temporary TSDB, 1 s
  scrape and rule evaluation, with ``prometheus/prometheus-local.yml`` (its demo
  target moved to the demo's port, the collector job dropped: there is none here)
  and a test copy of ``prometheus/alerts.yml``: the same rules and thresholds with
  every ``for:`` shortened to 5s and every range window to 40s (:func:`live_alerts`),
  because a test cannot wait 5-10 minutes.
- ``akto-otel demo --prometheus PORT`` in a subprocess, once Prometheus scrapes its
  target: 4 deny-heavy runs (every tool call denied), three runs against an
  unreachable Akto (``--fault akto-down``: error verdicts that fail open, export
  retries, failures and queue drops) and one against a slow Akto (``--fault
  akto-slow``: 0.75 s verdicts), 1.5 s apart. Prometheus takes the first sample of a
  new series (the first deny, the first error, ...) as its baseline, so only later
  increments count: hence several runs of each kind.

Then every PromQL expression of the dashboards must return data, every alert of
alerts.yml must reach ``firing`` in ``/api/v1/alerts`` (the deny-rate one for
PreToolUse only), and the exported series must have the names and labels the
dashboards and rules assume. The one expression that cannot return data is listed
in :data:`NO_DATA` with the reason. Both processes are killed (process group) at
the end. Without the prometheus binary the test fails in CI and skips elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.servers import free_port
from tests.test_stack_promql import (
    ALERTS,
    ROOT,
    alert_rules,
    concrete,
    dashboard_expressions,
    require_binary,
)

LIVE_FOR = "5s"
LIVE_WINDOW = "40s"
# Grafana's range variables for the live queries: the whole test fits in 5m.
LIVE_DURATIONS = {"$__rate_interval": LIVE_WINDOW, "$__interval": LIVE_WINDOW, "$__range": "5m"}
DEMO_ARGS = [
    "--runs",
    "4",
    "--deny-heavy",
    *("--fault", "akto-down") * 3,
    *("--fault", "akto-slow"),
    # Prometheus takes the first sample of a new series as its baseline: runs
    # farther apart than a scrape interval make every run's increments visible.
    *("--pause", "1.5"),
    *("--linger", "450"),
]
RUNS = 8
# Eight real CLI runs take 1-4 minutes on a loaded 2-core machine; the wait ends as soon
# as every alert fires, so a generous bound costs nothing when the machine is idle.
DEADLINE_S = 400.0
# Alerts no demo run may fire, and why (their expressions run against the guard's
# real series in tests/test_stack_promql.py, their cases are in alerts_test.yml).
NEVER_FROM_THE_DEMO = {
    "AktoGuardrailBreach": (
        "a denied tool call that ran anyway: the real CLI honours every deny "
        "(tests/security/test_breach.py uses a transport stand-in)"
    ),
    "AktoGuardrailNotArmed": (
        "a CLI that cannot block on a failed hook: the demo's bundled CLI can "
        "(tests/security/test_armed.py uses a transport stand-in)"
    ),
}
# Expressions that cannot return data from a healthy run, and why.
NO_DATA = {
    "akto_hook_errors_total": (
        "counts hook callbacks that raised inside akto_otel (a library bug); no fault "
        "injection makes a hook fail internally, and a counter that never moved has no "
        "series. The query still runs (status success)."
    ),
}


def live_alerts(text: str) -> str:
    """alerts.yml with ``for: 5s`` and 40s range windows (thresholds unchanged)."""
    text = re.sub(r"(?m)^(\s+for:\s*)\d+[smh]\s*$", rf"\g<1>{LIVE_FOR}", text)
    return re.sub(r"\[\d+[smh]\]", f"[{LIVE_WINDOW}]", text)


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def _process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[Any]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=ROOT,
        )
        try:
            yield proc
        finally:
            _stop(proc)


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        data = _get(url)
        assert data["status"] == "success", data
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        data = _get(f"{self.base}/api/v1/alerts")
        assert data["status"] == "success", data
        alerts: list[dict[str, Any]] = data["data"]["alerts"]
        return alerts

    def has_target(self, address: str) -> bool:
        data = _get(f"{self.base}/api/v1/targets")
        return any(t["labels"].get("instance") == address for t in data["data"]["activeTargets"])

    def rule_health(self) -> dict[str, str]:
        data = _get(f"{self.base}/api/v1/rules")
        return {
            rule["name"]: f"{rule['health']} {rule.get('lastError', '')}".strip()
            for group in data["data"]["groups"]
            for rule in group["rules"]
        }


def _write_config(tmp_path: Path, demo_port: int) -> Path:
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus-local.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = ["alerts-live.yml"]
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == "akto-demo"]
    assert len(jobs) == 1
    jobs[0]["static_configs"] = [{"targets": [f"127.0.0.1:{demo_port}"]}]
    config["scrape_configs"] = jobs
    (tmp_path / "alerts-live.yml").write_text(live_alerts(ALERTS.read_text()))
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_live_alerts_substitution() -> None:
    """The test copy keeps every rule and threshold; only waits and windows shrink."""
    original = yaml.safe_load(ALERTS.read_text())
    live = yaml.safe_load(live_alerts(ALERTS.read_text()))
    rules = [r for g in original["groups"] for r in g["rules"]]
    live_rules = [r for g in live["groups"] for r in g["rules"]]
    assert [r["alert"] for r in rules] == [r["alert"] for r in live_rules]
    for rule, short in zip(rules, live_rules, strict=True):
        assert short["for"] == LIVE_FOR
        assert not re.search(r"\[\d+m\]", short["expr"])
        assert re.sub(r"\[\d+[smh]\]", "[W]", rule["expr"]) == (
            re.sub(r"\[\d+[smh]\]", "[W]", short["expr"])
        )
        assert short["labels"] == rule["labels"]


def _demo_env() -> dict[str, str]:
    # No OTLP export from the demo here: only the Prometheus endpoint.
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


@pytest.mark.timeout(540)
def test_live_prometheus_dashboards_and_alerts(tmp_path: Path) -> None:
    prometheus_bin = require_binary("prometheus")
    prom_port, demo_port = free_port(), free_port()
    config = _write_config(tmp_path, demo_port)
    prom = Prometheus(prom_port)
    started = time.monotonic()
    prom_args = [
        prometheus_bin,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        "--log.level=warn",
    ]
    demo_cmd = [sys.executable, "-m", "akto_otel.cli", "demo", "--prometheus", str(demo_port)]
    with _process(prom_args, tmp_path / "prometheus.log") as prom_proc:
        # Ready, and the demo target is in the scrape pool (Prometheus applies
        # discovered targets on a 5 s tick), so the demo's first runs are scraped.
        while not (prom.ready() and prom.has_target(f"127.0.0.1:{demo_port}")):
            assert prom_proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            assert time.monotonic() - started < 60, "prometheus did not become ready"
            time.sleep(0.2)
        demo_log = tmp_path / "demo.log"
        with _process([*demo_cmd, *DEMO_ARGS], demo_log, _demo_env()) as demo_proc:
            _check_live(prom, demo_proc, demo_log, time.monotonic())
    assert prom_proc.poll() is not None and demo_proc.poll() is not None


def _check_live(prom: Prometheus, demo: Any, demo_log: Path, start: float) -> None:
    expected_alerts = {rule["alert"] for rule in alert_rules()} - set(NEVER_FROM_THE_DEMO)
    exprs = {
        where: concrete(expr, durations=LIVE_DURATIONS) for where, expr in dashboard_expressions()
    }
    must_have_data = {w: e for w, e in exprs.items() if not any(k in e for k in NO_DATA)}
    assert len(must_have_data) == len(exprs) - 1, "NO_DATA should exempt exactly one query"
    with_data: dict[str, float] = {}
    firing: dict[str, list[dict[str, str]]] = {}
    while True:
        elapsed = time.monotonic() - start
        for where, expr in exprs.items():
            if where not in with_data and prom.query(expr):
                with_data[where] = elapsed
        for alert in prom.alerts():
            if alert["state"] == "firing":
                firing.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        if set(must_have_data) <= set(with_data) and expected_alerts <= set(firing):
            break
        if elapsed > DEADLINE_S or (demo.poll() is not None and demo.returncode != 0):
            pytest.fail(
                f"after {elapsed:.0f} s:\n"
                f"expressions without data: {sorted(set(must_have_data) - set(with_data))}\n"
                f"alerts not firing: {sorted(expected_alerts - set(firing))}\n"
                f"alert states: {[(a['labels'], a['state']) for a in prom.alerts()]}\n"
                f"rule health: {prom.rule_health()}\n"
                f"demo (exit {demo.poll()}):\n{demo_log.read_text()[-3000:]}"
            )
        time.sleep(1.0)

    # The exempt query is valid and runs, it just has nothing to count.
    for where, expr in exprs.items():
        if where not in must_have_data:
            prom.query(expr)

    # The deny-rate alert fired for PreToolUse (every tool call denied), not for the
    # prompt (never denied) nor Stop (one deny in two or fewer).
    deny_hooks = {labels["hook"] for labels in firing["AktoGuardrailDenyRateHigh"]}
    assert deny_hooks == {"PreToolUse"}, firing["AktoGuardrailDenyRateHigh"]
    assert not set(NEVER_FROM_THE_DEMO) & set(firing), firing
    assert firing and all(a["job"] == "akto-demo" for alerts in firing.values() for a in alerts)
    assert {a["reason"] for a in firing["AktoExporterDroppingRecords"]} == {"queue_full"}

    _check_exported_series(prom)
    log = demo_log.read_text()
    assert f"run {RUNS}/{RUNS} (akto-slow)" in log, log[-3000:]


def _check_exported_series(prom: Prometheus) -> None:
    """The names and labels the dashboards and rules rely on, as really exported."""
    names = {r["metric"]["__name__"] for r in prom.query('count by (__name__) ({job="akto-demo"})')}
    assert {
        "akto_guardrail_decisions_total",
        "akto_guardrail_duration_seconds_bucket",
        "akto_guardrail_duration_seconds_sum",
        "akto_guardrail_duration_seconds_count",
        "akto_hook_duration_seconds_bucket",
        "akto_exporter_records_total",
        "akto_exporter_duration_seconds_bucket",
        "akto_exporter_queue_size",
        "traces_span_metrics_calls_total",
        "target_info",
    } <= names, names
    decisions = prom.query("akto_guardrail_decisions_total")
    label_names = set().union(*(r["metric"] for r in decisions))
    assert {"hook", "decision", "behaviour", "fail_open", "error_type"} <= label_names
    seen = {(r["metric"]["hook"], r["metric"]["decision"]) for r in decisions}
    assert {
        ("UserPromptSubmit", "allow"),
        ("PreToolUse", "deny"),
        ("Stop", "deny"),
        ("Stop", "allow"),
        ("PreToolUse", "error"),
    } <= seen, seen
    assert {r["metric"]["fail_open"] for r in decisions} == {"true", "false"}
    errors = prom.query('akto_guardrail_decisions_total{decision="error"}')
    assert {r["metric"]["error_type"] for r in errors} == {"connection_refused"}
    outcomes = {r["metric"]["outcome"] for r in prom.query("akto_exporter_records_total")}
    assert {"exported", "retried", "failed", "dropped"} <= outcomes
    tools = prom.query(
        'traces_span_metrics_calls_total{span_name="execute_tool Bash", '
        'akto_guardrail_decision="deny"}'
    )
    assert tools and all(r["metric"]["gen_ai_tool_name"] == "Bash" for r in tools)
    assert {r["metric"]["span_kind"] for r in tools} == {"SPAN_KIND_INTERNAL"}
    assert {r["metric"]["status_code"] for r in tools} == {"STATUS_CODE_ERROR"}
