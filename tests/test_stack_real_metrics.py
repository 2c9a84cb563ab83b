"""The deny-rate alert fires from span-derived metrics: app -> collector -> Prometheus.

What runs (127.0.0.1, free ports, stopped after): the OpenTelemetry Collector built
by collector/build.sh with collector/otel-collector.yaml unchanged (its
``span_metrics`` connector flushes every 15 s, as in compose); Debian's Prometheus
2.42 with the compose scrape jobs of prometheus/prometheus.yml for the collector
(``otel-collector`` on the prometheus exporter, ``otel-collector-internal`` on the
collector's own metrics) pointed at the test's ports, 1 s scrape and evaluation;
``akto-otel demo --deny-heavy`` (real CLI sessions, every tool call denied) sending
only OTLP traces to the collector, as the compose demo does. Prometheus scrapes
nothing else: every series it has went through the collector.

The rules are prometheus/alerts.yml's, with every ``for:`` shortened to 5s and
every range window to 60s (the real deny-rate rule waits 5m). They read
``akto_guardrail_decisions_total{hook, decision}``, the counter the app exports; the
demo sends only traces, so the counter Prometheus has is the one
prometheus/recording-rules.yml (loaded unchanged, as both shipped Prometheus configs
load it) rebuilds from the span metrics' ``run_guardrail`` calls.
``AktoGuardrailDenyRateHigh`` must reach ``firing`` for PreToolUse and the demo's
job, and every dashboard or datasource-link query that reads collector metrics
(``traces_span_metrics_*``) must return data. The deny share per hook must be
recorded from the real span metrics too (:data:`RECORDED`).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.servers import free_port
from tests.test_stack_live import Prometheus, _process
from tests.test_stack_promql import (
    ALERTS,
    ROOT,
    concrete,
    dashboard_expressions,
    datasource_expressions,
    require_binary,
)
from tests.test_stack_real_programs import Collector, closed_port, run_collector

pytestmark = pytest.mark.timeout(300)
SERVICE = "akto-otel-demo"  # the datasource links' $__tags filter on this name
FOR = "5s"
WINDOW = "60s"
DEADLINE_S = 180.0
DEMO_ARGS = ["--runs", "12", "--deny-heavy", "--pause", "1.5"]
RECORDING = ROOT / "prometheus" / "recording-rules.yml"
RECORDED = "job_service_name_akto_hook:akto_guardrail_spans_denied:ratio_rate5m"


def span_alerts(text: str) -> dict[str, Any]:
    """alerts.yml with short waits and windows."""
    text = re.sub(r"(?m)^(\s+for:\s*)\d+[smh]\s*$", rf"\g<1>{FOR}", text)
    text = re.sub(r"\[\d+[smh]\]", f"[{WINDOW}]", text)
    rules: dict[str, Any] = yaml.safe_load(text)
    return rules


def collector_queries() -> dict[str, str]:
    """Every dashboard and datasource-link query that reads the collector's metrics."""
    durations = {"$__rate_interval": WINDOW, "$__interval": WINDOW, "$__range": "5m"}
    found = {
        where: concrete(expr, durations=durations)
        for where, expr in [*dashboard_expressions(), *datasource_expressions()]
        if "traces_span_metrics_" in expr
    }
    return found


def _prometheus_config(tmp_path: Path, collector: Collector) -> Path:
    compose = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in compose["scrape_configs"]}
    targets = {
        "otel-collector": collector.prometheus,
        "otel-collector-internal": collector.telemetry,
    }
    scrape = []
    for name, url in targets.items():
        job = dict(jobs[name])
        job["static_configs"] = [{"targets": [url.split("//", 1)[1].split("/", 1)[0]]}]
        scrape.append(job)
    (tmp_path / "alerts-span.yml").write_text(yaml.safe_dump(span_alerts(ALERTS.read_text())))
    (tmp_path / RECORDING.name).write_text(RECORDING.read_text())
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts-span.yml", RECORDING.name],
        "scrape_configs": scrape,
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _demo_env(collector: Collector) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AKTO_"))}
    env.update(
        {
            "OTEL_SERVICE_NAME": SERVICE,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.otlp_http,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_BSP_SCHEDULE_DELAY": "500",
        }
    )
    return env


def test_span_alerts_keep_the_real_rules() -> None:
    original = yaml.safe_load(ALERTS.read_text())
    derived = span_alerts(ALERTS.read_text())
    real = [r for g in original["groups"] for r in g["rules"]]
    short = [r for g in derived["groups"] for r in g["rules"]]
    assert real and [r["alert"] for r in real] == [r["alert"] for r in short]
    for rule, test_rule in zip(real, short, strict=True):
        assert test_rule["for"] == FOR
        assert re.sub(r"\[\d+[smh]\]", "[W]", rule["expr"]) == (
            re.sub(r"\[\d+[smh]\]", "[W]", test_rule["expr"])
        )
        assert test_rule["labels"] == rule["labels"]


def test_span_metrics_fire_the_deny_rate_alert(tmp_path: Path) -> None:
    prometheus_bin = require_binary("prometheus")
    queries = collector_queries()
    assert len(queries) >= 5, queries  # 3 dashboard panels, 2 links per trace datasource
    queries["recording rule"] = f'{RECORDED}{{akto_hook="PreToolUse"}}'
    with run_collector(tmp_path, closed_port(), closed_port()) as collector:
        port = free_port()
        prom = Prometheus(port)
        args = [
            prometheus_bin,
            f"--config.file={_prometheus_config(tmp_path, collector)}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        started = time.monotonic()
        with _process(args, tmp_path / "prometheus.log") as prom_proc:
            target = collector.prometheus.split("//", 1)[1].split("/", 1)[0]
            while not (prom.ready() and prom.has_target(target)):
                assert prom_proc.poll() is None, (tmp_path / "prometheus.log").read_text()
                assert time.monotonic() - started < 60, "prometheus did not become ready"
                time.sleep(0.2)
            demo_log = tmp_path / "demo.log"
            demo_cmd = [sys.executable, "-m", "akto_otel.cli", "demo", *DEMO_ARGS]
            with _process(demo_cmd, demo_log, _demo_env(collector)) as demo:
                firing = _wait_for_alert_and_data(prom, queries, demo, demo_log)
                _check_series(prom)
                recorded = prom.query(RECORDED)
    deny = firing["AktoGuardrailDenyRateHigh"]
    # Every tool call is denied. Each run's Stop is denied once (the leaking answer)
    # and allowed once (its rewrite): exactly half, which a rate() window cut between
    # the two can tip over 0.5, so Stop may fire too; no other hook may.
    hooks = {a["hook"] for a in deny}
    assert "PreToolUse" in hooks and hooks <= {"PreToolUse", "Stop"}, deny
    assert {a["job"] for a in deny} == {SERVICE}
    # The recording rule's deny share per hook, from the same span metrics: every tool
    # call was denied, every prompt allowed (recorded as 0, not left out).
    share = {r["metric"]["akto_hook"]: float(r["value"][1]) for r in recorded}
    assert {r["metric"]["job"] for r in recorded} == {SERVICE}, recorded
    assert share.get("PreToolUse") == 1.0 and share.get("UserPromptSubmit") == 0.0, share


def _wait_for_alert_and_data(
    prom: Prometheus, queries: dict[str, str], demo: Any, demo_log: Path
) -> dict[str, list[dict[str, str]]]:
    start = time.monotonic()
    with_data: set[str] = set()
    firing: dict[str, list[dict[str, str]]] = {}
    while True:
        for where, expr in queries.items():
            if where not in with_data and prom.query(expr):
                with_data.add(where)
        for alert in prom.alerts():
            if alert["state"] == "firing":
                firing.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        if set(queries) <= with_data and "AktoGuardrailDenyRateHigh" in firing:
            return firing
        elapsed = time.monotonic() - start
        if elapsed > DEADLINE_S or (demo.poll() is not None and demo.returncode != 0):
            pytest.fail(
                f"after {elapsed:.0f} s:\n"
                f"queries without data: {sorted(set(queries) - with_data)}\n"
                f"alerts: {[(a['labels'], a['state']) for a in prom.alerts()]}\n"
                f"rule health: {prom.rule_health()}\n"
                f"demo (exit {demo.poll()}):\n{demo_log.read_text()[-3000:]}"
            )
        time.sleep(1.0)


def _check_series(prom: Prometheus) -> None:
    """What the collector's exporters really produced: names, labels, jobs."""
    names = {
        r["metric"]["__name__"]
        for r in prom.query('count by (__name__) ({__name__=~"traces_span_metrics_.+"})')
    }
    assert {
        "traces_span_metrics_calls_total",
        "traces_span_metrics_duration_seconds_bucket",
        "traces_span_metrics_duration_seconds_count",
    } <= names, names
    verdicts = prom.query('traces_span_metrics_calls_total{span_name=~"run_guardrail.*"}')
    assert verdicts
    assert {r["metric"]["job"] for r in verdicts} == {SERVICE}
    seen = {(r["metric"]["akto_hook"], r["metric"]["akto_guardrail_decision"]) for r in verdicts}
    assert {("UserPromptSubmit", "allow"), ("PreToolUse", "deny")} <= seen, seen
    denied = prom.query(
        'traces_span_metrics_calls_total{span_name="execute_tool Bash", '
        'akto_guardrail_decision="deny"}'
    )
    assert denied and {r["metric"]["gen_ai_tool_name"] for r in denied} == {"Bash"}
    # The collector's own telemetry was scraped too and counts what it accepted (its
    # counters carry no _total suffix in 0.161).
    accepted = prom.query('sum(otelcol_receiver_accepted_spans{receiver="otlp"})')
    assert accepted and float(accepted[0]["value"][1]) > 0, accepted
