"""Every PromQL expression of the stack parses: dashboards, alert rules, datasource links.

promtool has no "parse this expression" command, so each expression goes into a
throwaway rules file as a recording rule and ``promtool check rules`` parses it.
Grafana variables are replaced first (``$__rate_interval`` -> ``1m``, ``$job`` ->
``.*``, ...). The helpers here are shared with test_stack_live.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
ALERTS = ROOT / "prometheus" / "alerts.yml"
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "datasources.yaml"

# Grafana's interval variables -> durations a plain Prometheus accepts.
_GRAFANA_DURATIONS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
# Trace-to-metrics link variables (Grafana fills them from the span).
_SPAN_VARIABLES = {
    "$__tags": 'service_name="akto-otel-demo"',
    "${__span.name}": "execute_tool Bash",
    '${__span.tags["akto.hook"]}': "PreToolUse",
}
_TEMPLATE_VARIABLE = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}?")


def require_binary(name: str) -> str:
    """The path of ``name``; fails in CI (which installs it), skips elsewhere."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not found (Debian: apt-get install prometheus)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; .ci/run must install it")
    pytest.skip(message)


def load_dashboards_module() -> ModuleType:
    """grafana/dashboards.py, imported from its path (it is a script, not a package)."""
    path = ROOT / "grafana" / "dashboards.py"
    spec = importlib.util.spec_from_file_location("akto_grafana_dashboards", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, expr) of every Prometheus target in the committed dashboards."""
    module = load_dashboards_module()
    found: list[tuple[str, str]] = []
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        for title, expr in module.expressions(data):
            found.append((f"{path.name}: {title}", expr))
    return found


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def alert_expressions() -> list[tuple[str, str]]:
    return [(f"alert {rule['alert']}", str(rule["expr"])) for rule in alert_rules()]


def datasource_expressions() -> list[tuple[str, str]]:
    """The trace-to-metrics queries of the provisioned datasources (``$$`` unescaped)."""
    data = yaml.safe_load(DATASOURCES.read_text())
    found: list[tuple[str, str]] = []
    for source in data["datasources"]:
        links = source.get("jsonData", {}).get("tracesToMetrics", {})
        for query in links.get("queries", []):
            expr = str(query["query"]).replace("$$", "$")
            found.append((f"datasource {source['name']}: {query['name']}", expr))
    return found


def concrete(
    expr: str,
    *,
    durations: dict[str, str] | None = None,
    variable: str = ".*",
) -> str:
    """``expr`` with Grafana's variables replaced, ready for a plain Prometheus."""
    text = expr
    for name, value in {**_GRAFANA_DURATIONS, **(durations or {})}.items():
        text = text.replace(name, value)
    for name, value in _SPAN_VARIABLES.items():
        text = text.replace(name, value)
    text = _TEMPLATE_VARIABLE.sub(variable, text)
    assert "$" not in text, f"unresolved variable in {text!r}"
    return text


def check_parses(expressions: list[tuple[str, str]], tmp_path: Path) -> None:
    """Fail unless promtool parses every expression (one recording rule each)."""
    promtool = require_binary("promtool")
    rules = [
        {"record": f"akto_check:expr_{i}", "expr": concrete(expr)}
        for i, (_, expr) in enumerate(expressions)
    ]
    path = tmp_path / "expressions.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        index = {f"expr_{i}": where for i, (where, _) in enumerate(expressions)}
        detail = result.stdout + result.stderr
        for key, where in index.items():
            detail = detail.replace(f"akto_check:{key}", f"{key} ({where})")
        pytest.fail(f"promtool rejected an expression:\n{detail}")
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout, result.stdout


def test_dashboards_have_expressions() -> None:
    exprs = dashboard_expressions()
    assert len(exprs) >= 15, exprs
    assert all(expr.strip() for _, expr in exprs)


def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    check_parses(dashboard_expressions(), tmp_path)


def test_alert_expressions_parse_one_by_one(tmp_path: Path) -> None:
    check_parses(alert_expressions(), tmp_path)


def test_datasource_link_expressions_parse(tmp_path: Path) -> None:
    exprs = datasource_expressions()
    assert len(exprs) == 6, exprs
    check_parses(exprs, tmp_path)


def test_a_broken_expression_is_caught(tmp_path: Path) -> None:
    """The check itself can fail: a typo'd expression is rejected with its origin."""
    with pytest.raises(pytest.fail.Exception, match=r"expr_1 \(panel B\)"):
        check_parses([("panel A", "sum(up)"), ("panel B", "sum(rate(up[5m])")], tmp_path)


def test_variable_substitution() -> None:
    assert concrete('rate(x{job=~"$job"}[$__rate_interval])') == 'rate(x{job=~".*"}[1m])'
    assert concrete("increase(x[$__range])", durations={"$__range": "5m"}) == "increase(x[5m])"
    assert concrete('x{$__tags, span_name="${__span.name}"}') == (
        'x{service_name="akto-otel-demo", span_name="execute_tool Bash"}'
    )


def _prometheus_series(name: str, attributes: dict[str, Any]) -> str:
    """How the OpenTelemetry Prometheus exporter names a counter point (unit ``1``)."""
    labels = ",".join(f'{k.replace(".", "_")}="{v}"' for k, v in sorted(attributes.items()))
    return f'{name.replace(".", "_")}_total{{job="agent",{labels}}}'


@pytest.mark.parametrize(
    ("alert", "metric", "record"),
    [
        ("AktoGuardrailBreach", "akto.guardrail.breaches", ("record_breach", "PostToolUse")),
        (
            "AktoGuardrailNotArmed",
            "akto.guardrail.unarmed",
            ("record_unarmed", "hooks_not_applied"),
        ),
    ],
)
def test_the_guard_alerts_fire_on_the_series_the_guard_exports(
    tmp_path: Path, alert: str, metric: str, record: tuple[str, str]
) -> None:
    """The guard's own counter (started at 0, then one breach or one unarmed session)
    as promtool input: the shipped alert's expression selects it at its first count,
    by the labels the guard exports (alerts_test.yml has the alerts' full cases)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from akto_otel.metrics import GuardrailMetrics

    promtool = require_binary("promtool")
    reader = InMemoryMetricReader()
    metrics = GuardrailMetrics(MeterProvider(metric_readers=[reader]))
    started = _points(reader, metric)
    method, label = record
    getattr(metrics, method)(label)
    counted = _points(reader, metric)
    assert started and all(value == 0 for value in started.values())
    series = [
        {
            "series": _prometheus_series(metric, dict(attributes)),
            # Scraped at 0 for two minutes, then the count.
            "values": f"{started[attributes]:g} {started[attributes]:g} {counted[attributes]:g}x5",
        }
        for attributes in counted
    ]
    fired = next(dict(a) for a, value in counted.items() if value == 1)
    [rule] = [r for r in alert_rules() if r["alert"] == alert]
    assert str(rule.get("for", "0s")) in ("0s", "0m")  # pages on the first count
    labels = ",".join(f'{k}="{v}"' for k, v in sorted({"job": "agent", **fired}.items()))
    tests = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {"expr": str(rule["expr"]), "eval_time": "1m", "exp_samples": []},
                    {
                        "expr": str(rule["expr"]),
                        "eval_time": "2m",
                        "exp_samples": [{"labels": "{" + labels + "}", "value": 1}],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "guard_alerts_test.yml"
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [promtool, "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _points(reader: Any, name: str) -> dict[Any, float]:
    data = reader.get_metrics_data()
    found: dict[Any, float] = {}
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        found[frozenset(point.attributes.items())] = point.value
    return found
